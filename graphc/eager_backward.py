"""``loss.backward()`` in eager mode: the recorded ops as an ir.Graph, differentiated by autodiff.

The ops that lead from trainable parameters to the loss (each remembered on its output
:class:`~graphc.eager.EagerValue`) become the nodes of a graph whose inputs are the leaves: the
parameters (``param`` inputs, the differentiation targets) and every other value they read
(``const`` inputs). ``passes.autodiff.grad`` appends the backward graph with the same VJP rules
``compile_train`` uses; only the appended nodes run, over the forward values already computed.
Each parameter's gradient (summed over every read of it) is added to ``param.grad``.
"""

from __future__ import annotations

import functools
import operator
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc.eager_composite import COMPOSITE
from graphc.ir import Graph, GraphcError, Node
from graphc.tensor import Tensor, _at, user_source

if TYPE_CHECKING:
    from graphc.eager import EagerContext, EagerValue

_FREED = "<freed>"


def _collect(loss: EagerValue) -> tuple[list[EagerValue], list[EagerValue]]:
    """(leaves, computed values in execution order) of the ops the loss was made by."""
    leaves: dict[int, EagerValue] = {}
    computed: dict[int, EagerValue] = {}
    stack = [loss]
    while stack:
        v = stack.pop()
        key = id(v)
        if key in leaves or key in computed:
            continue
        if v.op == _FREED:
            raise GraphcError(
                f"{_at(user_source())}backward(): trying to differentiate through ops whose record an "
                "earlier backward() freed; compute the loss again (or pass retain_graph=True to the first "
                "backward())"
            )
        if v.op is None:
            leaves[key] = v
            continue
        computed[key] = v
        stack.extend(v.inputs or ())
    return list(leaves.values()), sorted(computed.values(), key=lambda v: v.seq)


def _records(leaves: list[EagerValue], computed: list[EagerValue]) -> list[tuple]:
    """The recorded ops as ``(op, attrs, operands, output)``, in execution order, with each
    composite tape entry (graphc/eager_composite.py) replaced by its small graph's ops over its
    residuals (whose leaves are appended to ``leaves``)."""
    from graphc.eager_composite import expand

    records = []
    for v in computed:
        if v.op == COMPOSITE:
            expand(v, leaves, records)
        else:
            records.append((v.op, v.attrs, v.inputs, v))
    return records


def _graph(leaves: list[EagerValue], records: list[tuple], loss: EagerValue) -> Graph:
    g = Graph("eager_backward")
    for v in leaves:
        g.inputs.append(v)
        g.kinds[v.name] = "param" if v.param is not None else "const"
        g._names.add(v.name)
    for op, attrs, inputs, v in records:
        g.nodes.append(Node(op, list(inputs), dict(attrs), [v], v.source))
        g._names.add(v.name)
    g.invalidate_uses()
    g.outputs = [loss]
    return g


class _Program:
    """The backward nodes of one recorded structure, over slots: leaves, computed values, then
    the backward values (autodiff runs once per structure, not per call)."""

    def __init__(self, joint: Graph, n_forward: int, grad_names: list[str]) -> None:
        slot: dict[str, int] = {}
        for x in joint.inputs:
            slot[x.name] = len(slot)
        for node in joint.nodes[:n_forward]:
            slot[node.outputs[0].name] = len(slot)
        self.steps = []
        for node in joint.nodes[n_forward:]:
            outs = []
            for o in node.outputs:
                slot[o.name] = len(slot)
                outs.append(slot[o.name])
            types = [o.type for o in node.outputs]
            ins = [slot[i.name] for i in node.inputs]
            dtypes = [t.np_dtype for t in types]
            self.steps.append((node.op, node.attrs, ins, outs, types, dtypes, node.source, list(node.inputs)))
        self.grads = [slot[name] for name in grad_names]
        self.n_values = len(slot)
        self.plan: list[tuple] | None = None  # the steps for _run_reference, flattened at its first run
        self.consts: list[tuple[int, np.ndarray]] = []  # (slot, array) of each operand-less step


_PROGRAMS: dict[tuple, _Program] = {}
_MAX_PROGRAMS = 64


def _structure(leaves: list[EagerValue], computed: list[EagerValue], loss: EagerValue) -> tuple | None:
    """What the backward graph depends on: ops, attributes, types and wiring (None: unhashable)."""
    pos: dict[int, int] = {}
    parts: list[tuple] = []
    # Types as (shape, dtype): tuples of ints and strings hash in C, a TensorType in Python.
    for x in leaves:
        pos[id(x)] = len(pos)
        t = x.type
        parts.append((t.shape, t.dtype, x.param is not None))
    for x in computed:
        pos[id(x)] = len(pos)
        t = x.type
        op = x.op
        # a composite entry stands for its small graph: its signature says all of it
        what = x.attrs["composite"].key if op == COMPOSITE else tuple(x.attrs.items())
        parts.append((op, what, tuple([pos[id(i)] for i in x.inputs]), t.shape, t.dtype))
    key = (tuple(parts), pos[id(loss)])
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _program(
    leaves: list[EagerValue], computed: list[EagerValue], loss: EagerValue, params: list[EagerValue]
) -> _Program:
    from graphc.passes import autodiff

    key = _structure(leaves, computed, loss)
    program = _PROGRAMS.get(key) if key is not None else None
    if program is None:
        leaves = list(leaves)
        records = _records(leaves, computed)
        graph = _graph(leaves, records, loss)
        joint, grad_index = autodiff.grad(graph, loss_index=0, wrt=[p.name for p in params])
        grad_names = [joint.outputs[grad_index[p.name]].name for p in params]
        program = _Program(joint, len(records), grad_names)
        if key is not None:
            if len(_PROGRAMS) >= _MAX_PROGRAMS:
                _PROGRAMS.clear()
            _PROGRAMS[key] = program
    return program


def _run_reference(program: _Program, env: list[np.ndarray | None]) -> None:
    """Run the program's backward steps with the NumPy reference kernels, as ``_run_kernel`` does
    (C-contiguous results of exactly the node's types), under one NumPy error state for them all.

    The steps are flattened at the first run into ``program.plan`` (one tuple a step, its inputs'
    slots unpacked); a ``const`` step (no operands) runs then only and its array is reused.
    """
    from graphc.eager_fast import _quiet_off, _quiet_on

    plan = program.plan
    if plan is None:
        plan = _plan(program)
    for slot, arr in program.consts:
        env[slot] = arr
    token = _quiet_on()
    try:
        for kernel, attrs, ins, mode, out, dt, shape, step in plan:
            try:
                if mode == _UFUNC2:  # the NumPy function a binary kernel applies, called directly
                    arr = kernel(env[ins[0]], env[ins[1]])
                elif mode == _UFUNC1 or mode == _CALL1:
                    arr = kernel(env[ins])
                elif mode == _CALL2:
                    arr = kernel(env[ins[0]], env[ins[1]])
                else:
                    if mode == 1:
                        results = kernel([env[ins]], attrs)
                    elif mode == 2:
                        results = kernel([env[ins[0]], env[ins[1]]], attrs)
                    else:
                        results = kernel([env[i] for i in ins], attrs)
                    arr = results[0]
            except GraphcError as err:
                raise GraphcError(f"{_at(step[6] or user_source())}{err}") from None
            if out >= 0:  # one output
                if dt is None:  # a ufunc whose results have the output's dtype and shape: the layout
                    if not arr.flags.c_contiguous:
                        arr = np.ascontiguousarray(arr)
                elif (
                    type(arr) is not np.ndarray
                    or arr.dtype != dt
                    or arr.shape != shape
                    or not arr.flags.c_contiguous
                ):
                    arr = np.ascontiguousarray(arr, dtype=dt).reshape(shape)
                env[out] = arr
            else:
                for o, arr, t, dt in zip(step[3], results, step[4], step[5]):
                    if (
                        type(arr) is not np.ndarray
                        or arr.dtype != dt
                        or arr.shape != t.shape
                        or not arr.flags.c_contiguous
                    ):
                        arr = np.ascontiguousarray(arr, dtype=dt).reshape(t.shape)
                    env[o] = arr
    finally:
        _quiet_off(token)


def _plan(program: _Program) -> list[tuple]:
    """``program.plan`` and ``program.consts`` (see :func:`_run_reference`), made once."""
    from graphc.eager import _kernels
    from graphc.eager_fast import _exact, _reference_fns, direct_reduce
    from graphc.kernels import reference

    table = _kernels()
    binary_fns, unary_fns = _reference_fns()
    # The ops whose kernel is still the wrapper of one NumPy function (graphc/kernels/reference).
    table_binary = {
        op: table[op] for op in binary_fns if _wraps(table.get(op), binary_fns[op], reference._binary)
    }
    table_unary = {
        op: table[op] for op in unary_fns if _wraps(table.get(op), unary_fns[op], reference._unary)
    }
    plan, consts = [], []
    for step in program.steps:
        op, attrs, ins, outs, types, dtypes, source, _ = step
        kernel = table.get(op)
        if kernel is None:
            raise GraphcError(f"{_at(source or user_source())}{op}: no eager kernel for this op")
        single = len(outs) == 1
        if op == "const" and not ins and single:
            arr = _run_reference_step(kernel, attrs, types[0], dtypes[0], source)
            arr.flags.writeable = False  # shared by every run of the program
            consts.append((outs[0], arr))
            continue
        n_in = len(ins)
        packed = ins[0] if n_in == 1 else tuple(ins)
        mode = n_in if n_in < 3 else 3
        fn = None
        if single and n_in == 2 and kernel is table_binary.get(op):
            fn, mode = binary_fns[op], _UFUNC2  # the kernel is np.asarray(fn(a, b))
        elif single and n_in == 1 and kernel is table_unary.get(op) and step[7][0].type.np_dtype == dtypes[0]:
            fn, mode = unary_fns[op], _UFUNC1  # the kernel casts fn(x) to x's dtype: the output's here
        elif single and n_in == 1:
            fn = direct_reduce(op, kernel, attrs, step[7][0].type.np_dtype, dtypes[0])
            mode = mode if fn is None else _UFUNC1
        if fn is None and single and n_in in (1, 2):
            fn = _structural(op, kernel, attrs)
            mode = mode if fn is None else (_CALL1 if n_in == 1 else _CALL2)
        dt = dtypes[0]
        if mode in (_UFUNC1, _UFUNC2, _CALL2) and isinstance(fn, np.ufunc):
            if _exact(fn, [v.type for v in step[7]], dt, types[0].shape):
                dt = None  # only the layout of its results is checked (eager_fast._exact)
        if single:
            plan.append((fn or kernel, attrs, packed, mode, outs[0], dt, types[0].shape, step))
        else:
            plan.append((kernel, attrs, packed, mode, -1, None, None, step))
    program.consts = consts
    program.plan = plan
    return plan


_UFUNC1, _UFUNC2 = 4, 5  # plan modes: a unary / binary NumPy function called directly (else: n operands)
_CALL1, _CALL2 = 6, 7  # the same for a structural op's NumPy call (_structural)


def _structural(op: str, kernel: Any, attrs: dict) -> Any:
    """The NumPy call that gives the values of ``op``'s reference kernel (``transpose``,
    ``broadcast_to``, ``reshape``, ``cast``, ``matmul``) where ``kernel`` is that very kernel,
    without its Python wrappers (``np.transpose``, ``np.broadcast_to``, an ``np.errstate``: the plan
    runs under "ignore" already); None otherwise. A result in another layout is made C-contiguous
    by the plan's check, as the kernel's own ``ascontiguousarray``/``copy`` does."""
    from graphc.ir import to_numpy_dtype
    from graphc.kernels import reference

    name = _STRUCTURAL.get(op)
    if name is None or kernel is not getattr(reference, name, None):
        return None
    if op == "transpose":
        return operator.methodcaller("transpose", tuple(attrs["perm"]))
    if op == "broadcast_to":
        return functools.partial(_broadcast_copy, shape=tuple(attrs["shape"]))
    if op == "reshape":
        return operator.methodcaller("reshape", tuple(attrs["shape"]))
    if op == "cast":
        return operator.methodcaller("astype", to_numpy_dtype(attrs["dtype"]))
    return np.matmul  # matmul: [np.matmul(a, b)]


# op -> the name of its reference kernel that _structural stands in for
_STRUCTURAL = {
    "transpose": "_transpose",
    "broadcast_to": "_broadcast_to",
    "reshape": "_reshape",
    "cast": "_cast",
    "matmul": "_matmul",
}


def _broadcast_copy(x: np.ndarray, shape: tuple) -> np.ndarray:
    """``np.broadcast_to(x, shape).copy()`` (the reference kernel), with no Python wrapper."""
    out = np.empty(shape, x.dtype)
    out[...] = x
    return out


def _wraps(kernel: Any, fn: Any, maker: Any) -> bool:
    """Whether ``kernel`` is the reference kernels' ``maker(fn)`` (``_unary``/``_binary``: the
    wrapper of one NumPy function), so that calling ``fn`` directly gives its values."""
    code = getattr(kernel, "__code__", None)
    cells = getattr(kernel, "__closure__", None) or ()
    return code is maker(fn).__code__ and len(cells) == 1 and cells[0].cell_contents is fn


def _run_reference_step(kernel: Any, attrs: dict, t: Any, dt: Any, source: str | None) -> np.ndarray:
    """One operand-less step's array (a constant), as :func:`_run_reference` makes it."""
    from graphc.eager_fast import run_quiet

    try:
        arr = run_quiet(kernel, [], attrs)[0]
    except GraphcError as err:
        raise GraphcError(f"{_at(source or user_source())}{err}") from None
    return np.array(arr, dtype=dt, order="C").reshape(t.shape)


def backward(ctx: EagerContext, loss: Tensor, gradient: Any = None, retain_graph: bool = False) -> None:
    """Differentiate ``loss`` (a scalar, or weighted by ``gradient``) and fill ``param.grad``."""
    from graphc.eager import EagerValue, _run_kernel, get_backend

    v = loss.value
    if not isinstance(v, EagerValue):
        raise GraphcError(
            f"{_at(user_source())}backward() works in eager mode only; while tracing, graphc.compile_train "
            "differentiates the whole step"
        )
    if gradient is not None:
        g = np.asarray(gradient.numpy() if isinstance(gradient, Tensor) else gradient)
        if g.shape != loss.shape:
            raise GraphcError(
                f"{_at(user_source())}backward(): gradient has shape {g.shape}, the tensor {loss.shape}"
            )
        loss = (loss * g.astype(loss.dtype)).sum()
        v = loss.value  # type: ignore[assignment]
    elif loss.shape != ():
        raise GraphcError(
            f"{_at(user_source())}backward(): the tensor has shape {loss.shape}; a gradient can be implied "
            "only for a scalar (one element) loss: reduce it (.sum(), .mean()) or pass gradient="
        )
    if not v.requires_grad or v.op is None and v.param is None:
        raise GraphcError(
            f"{_at(user_source())}backward(): the loss does not depend on any parameter that requires grad"
        )
    if v.op is None:  # the loss is a parameter itself
        leaves, computed = [v], []
    else:
        leaves, computed = _collect(v)
    params = [leaf for leaf in leaves if leaf.param is not None]
    program = _program(leaves, computed, v, params)
    env: list[np.ndarray | None] = [x.data for x in leaves]
    composites = [x for x in computed if x.op == COMPOSITE]
    if composites:  # the slots _records laid out: residual leaves after the leaves, then the ops
        for x in composites:
            env.extend(x.attrs["leaves"])
        for x in computed:
            if x.op == COMPOSITE:
                env.extend(x.attrs["values"])
            env.append(x.data)
    else:
        env.extend(x.data for x in computed)
    env.extend([None] * (program.n_values - len(env)))
    if get_backend() == "reference":
        _run_reference(program, env)
    else:
        for op, attrs, ins, outs, types, dtypes, source, operands in program.steps:
            results = _run_kernel(op, attrs, [env[i] for i in ins], types, source, dtypes, operands)
            for o, arr in zip(outs, results):
                env[o] = arr
    for leaf, slot in zip(params, program.grads):
        grad = env[slot]
        param = leaf.param
        if getattr(param, "grad", None) is None:
            param.grad = np.array(grad, dtype=param.dtype, copy=True)  # type: ignore[union-attr]
        else:
            param.grad += grad  # type: ignore[union-attr]
    if not retain_graph:
        for x in computed:
            x.op, x.inputs, x.attrs = _FREED, None, None
