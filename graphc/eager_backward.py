"""``loss.backward()`` in eager mode: the recorded ops as an ir.Graph, differentiated by autodiff.

The ops that lead from trainable parameters to the loss (each remembered on its output
:class:`~graphc.eager.EagerValue`) become the nodes of a graph whose inputs are the leaves: the
parameters (``param`` inputs, the differentiation targets) and every other value they read
(``const`` inputs). ``passes.autodiff.grad`` appends the backward graph with the same VJP rules
``compile_train`` uses; only the appended nodes run, over the forward values already computed.
Each parameter's gradient (summed over every read of it) is added to ``param.grad``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

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


def _graph(leaves: list[EagerValue], computed: list[EagerValue], loss: EagerValue) -> Graph:
    g = Graph("eager_backward")
    for v in leaves:
        g.inputs.append(v)
        g.kinds[v.name] = "param" if v.param is not None else "const"
        g._names.add(v.name)
    for v in computed:
        g.nodes.append(Node(v.op, list(v.inputs), dict(v.attrs), [v], v.source))
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
        self.kernels: list | None = None  # each step's reference kernel, looked up at its first run


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
        parts.append((x.op, tuple(x.attrs.items()), tuple([pos[id(i)] for i in x.inputs]), t.shape, t.dtype))
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
        graph = _graph(leaves, computed, loss)
        joint, grad_index = autodiff.grad(graph, loss_index=0, wrt=[p.name for p in params])
        grad_names = [joint.outputs[grad_index[p.name]].name for p in params]
        program = _Program(joint, len(computed), grad_names)
        if key is not None:
            if len(_PROGRAMS) >= _MAX_PROGRAMS:
                _PROGRAMS.clear()
            _PROGRAMS[key] = program
    return program


def _run_reference(program: _Program, env: list[np.ndarray | None]) -> None:
    """Run the program's backward steps with the NumPy reference kernels, as ``_run_kernel`` does
    (C-contiguous results of exactly the node's types), under one NumPy error state for them all."""
    from graphc.eager import _kernels
    from graphc.eager_fast import _quiet_off, _quiet_on

    kernels = program.kernels
    if kernels is None:
        table = _kernels()
        kernels = program.kernels = [table.get(step[0]) for step in program.steps]
    token = _quiet_on()
    try:
        for kernel, (op, attrs, ins, outs, types, dtypes, source, _) in zip(kernels, program.steps):
            if kernel is None:
                raise GraphcError(f"{_at(source or user_source())}{op}: no eager kernel for this op")
            try:
                results = kernel([env[i] for i in ins], attrs)
            except GraphcError as err:
                raise GraphcError(f"{_at(source or user_source())}{err}") from None
            for o, arr, t, dt in zip(outs, results, types, dtypes):
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
