"""Tracing: run a Module or function on symbolic Tensors and record an ir.Graph.

``trace(model_or_fn, *example_arrays)`` makes, in order: one ``data`` input per example array,
named after the forward/function parameters; one ``param`` input per parameter of the model
(``named_parameters()`` order and names, the arrays as initializers, each shared instance once);
then, as the code reads them, ``const`` inputs for buffers and NumPy-array attributes
(``"fixed.rand_weight"``). A buffer the code assigns (BatchNorm's running stats in training)
becomes a ``state`` input whose new value is an extra output registered in ``graph.updates``;
dropout adds the shared ``rng.offset`` state. Initializers share memory with the module's arrays.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc import ir
from graphc.ir import Graph, GraphcError, TensorType
from graphc.ir.types import INT_DTYPES
from graphc.structure import describe

if TYPE_CHECKING:  # at run time graphc.tensor is imported last (it imports this module)
    from graphc.tensor import Tensor

# ---------------------------------------------------------------------------- source locations
_INTERNAL_DIRS: tuple[str, ...] | None = None
_SHORT_NAMES: dict[str, str] = {}


def _internal_dirs() -> tuple[str, ...]:
    global _INTERNAL_DIRS
    if _INTERNAL_DIRS is None:
        import importlib.util

        dirs = {os.path.dirname(os.path.abspath(__file__))}
        for pkg in ("graphc.ir", "graphc.passes", "graphc.runtime", "graphc.kernels"):
            try:
                spec = importlib.util.find_spec(pkg)
            except (ImportError, ValueError):
                spec = None
            if spec is not None and spec.origin:
                dirs.add(os.path.dirname(os.path.abspath(spec.origin)))
        _INTERNAL_DIRS = tuple(d + os.sep for d in dirs)
    return _INTERNAL_DIRS


def _short(filename: str) -> str:
    short = _SHORT_NAMES.get(filename)
    if short is None:
        try:
            rel = os.path.relpath(filename)
            short = filename if rel.startswith("..") else rel
        except ValueError:
            short = filename
        _SHORT_NAMES[filename] = short
    return short


def user_source() -> str | None:
    """``file:line`` of the innermost stack frame outside the graphc package (the user's code)."""
    internal = _internal_dirs()
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(internal):
            return f"{_short(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def _at(source: str | None) -> str:
    return f"{source}: " if source else ""


# ---------------------------------------------------------------------------- trace context
_STACK: list[TraceContext] = []


def current_context() -> TraceContext | None:
    """The innermost active trace (or eager context), or None outside any."""
    return _STACK[-1] if _STACK else None


def const_key(value: bool | int | float, dtype: str) -> tuple[bool | int | float, tuple]:
    """``value`` as the Python number of graphc dtype ``dtype``, and the key that shares one
    constant per value: 0.0 and -0.0 compare equal but are different constants (``x * -0.0``)."""
    if dtype == "bool":
        value = bool(value)
    elif dtype in INT_DTYPES:
        value = int(value)
    else:
        value = float(value)
    return value, (value, dtype, math.copysign(1.0, value) if isinstance(value, float) else 0)


class TraceContext:
    """Records Tensor operations into ``graph``; a context manager that makes itself current.

    Arrays met during tracing (parameters, buffers, NumPy constants) become graph inputs once
    each, keyed by the array object's identity, so one module instance used twice shares its
    inputs. ``assign`` records the new value of a param/state input; ``finish`` (called by
    ``trace``) appends those as outputs registered in
    ``graph.updates``.
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        # id(array) -> (array, current tensor); holding the array keeps the id unique.
        self._arrays: dict[int, tuple[np.ndarray, Tensor]] = {}
        # id(array) -> preferred input name, for arrays that become inputs only when read.
        self.array_names: dict[int, str] = {}
        # value name -> id(array) for values that stand for an array's current contents.
        self._owner: dict[str, int] = {}
        self._input_of: dict[int, str] = {}
        self._updates: dict[str, Tensor] = {}
        self._consts: dict[tuple, Tensor] = {}
        self._rng_offset: Tensor | None = None
        self._rng_update: Tensor | None = None
        # Names of inputs that in-place ops must not write (the arrays an eager call was given).
        self.readonly: set[str] = set()
        self.active = False
        self._finished = False

    # ------------------------------------------------------------ activation
    def __enter__(self) -> TraceContext:
        _STACK.append(self)
        self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.active = False
        _STACK.remove(self)

    def lifts_from(self, ctx: TraceContext) -> bool:
        """Whether Tensors of ``ctx`` may be used here (a control-flow body lifts its enclosing traces')."""
        return ctx is self

    # ------------------------------------------------------------ building nodes
    def op(self, op: str, *inputs: Tensor, source: str | None = None, **attrs: object) -> Tensor:
        """Append a one-output node; a type error is re-raised naming the user's file:line."""
        return self.multi_op(op, *inputs, source=source, **attrs)[0]

    def multi_op(self, op: str, *inputs: Tensor, source: str | None = None, **attrs: object) -> list[Tensor]:
        """Append a node and return all its outputs as Tensors."""
        if not self.active:
            raise GraphcError(f"{_at(user_source())}a Tensor was used after its trace ended")
        inner = current_context()  # inside a control-flow body (graphc.control_flow): record there
        if inputs and inner is not self and inner is not None and inner.lifts_from(self):
            return inner.multi_op(op, *inputs, source=source, **attrs)
        source = source or user_source()
        values = []
        for t in inputs:
            if t.ctx is not self:
                raise GraphcError(f"{_at(source)}{op}: operand comes from a different trace")
            values.append(t.value)
        try:
            node = self.graph.add_node(op, values, attrs, source)
        except GraphcError as err:
            raise GraphcError(f"{_at(source)}{err}") from None
        return [_tensor_mod.Tensor(v, self) for v in node.outputs]

    def const(self, value: bool | int | float, dtype: str = "f32") -> Tensor:
        """A scalar ``const`` node of the given graphc dtype (one node per value and dtype)."""
        value, key = const_key(value, dtype)
        hit = self._consts.get(key)
        if hit is None:
            hit = self._consts[key] = self.op("const", value=value, dtype=dtype)
        # A fresh object each time: an in-place op rebinds the object it is called on.
        return _tensor_mod.Tensor(hit.value, self)

    def array(self, array: np.ndarray, name: str | None = None, kind: str = "const") -> Tensor:
        """The Tensor for an array: a graph input made on first use (then the current value)."""
        entry = self._arrays.get(id(array))
        if entry is not None and entry[0] is array:
            return entry[1]
        arr = np.asarray(array)
        if arr.dtype == np.float64 and not isinstance(array, np.ndarray):
            arr = arr.astype(np.float32)
        type_ = TensorType.of(arr)
        hint = name or self.array_names.get(id(array)) or "const"
        value = self.graph.add_input(self.graph.fresh_name(hint), type_, kind, arr)
        tensor = _tensor_mod.Tensor(value, self)
        self._arrays[id(array)] = (array, tensor)
        self._owner[value.name] = id(array)
        self._input_of[id(array)] = value.name
        return tensor

    def input(self, name: str) -> Tensor:
        """The Tensor of an existing graph value (for building on a graph made elsewhere)."""
        return _tensor_mod.Tensor(self.graph.value(name), self)

    def assign(self, target: Tensor, new: Tensor) -> None:
        """Record ``new`` as the next value of the param/state input that ``target`` stands for."""
        key = self._owner.get(target.value.name)
        if key is None:
            raise GraphcError(
                f"{_at(user_source())}cannot assign to %{target.value.name}: it is not a parameter, "
                "buffer or state of this trace"
            )
        name = self._input_of[key]
        g = self.graph
        in_type = g.value(name).type
        if new.value.type.shape != in_type.shape:
            new = new.broadcast_to(in_type.shape)
        if new.value.dtype != in_type.dtype:
            new = new.to(in_type.dtype)
        if g.kinds[name] == "const":
            g.kinds[name] = "state"
        self._updates[name] = new
        self._owner[new.value.name] = key
        array = self._arrays[key][0]
        self._arrays[key] = (array, new)

    eager = False  # EagerContext (graphc/eager.py) computes values; a trace has none

    def concrete(self, tensor: Tensor, what: str) -> np.ndarray:
        """A tensor's value: never known while tracing, so a GraphcError saying what to do."""
        if what in ("bool()", "int()", "float()", "using as an index"):
            raise _tensor_mod._control_flow_error(what)
        if what in ("item()", "numpy()", "tolist()"):
            raise _tensor_mod._concrete_value_error(what)
        raise GraphcError(
            f"{_at(user_source())}a traced Tensor has no NumPy value while tracing ({what}); "
            "run the compiled plan to get arrays"
        )

    def backward(self, loss: Tensor, gradient: object = None, retain_graph: bool = False) -> None:
        """Not while tracing: ``graphc.compile_train`` differentiates the whole step."""
        raise GraphcError(
            f"{_at(user_source())}backward() of a traced Tensor: graphc.compile_train builds the backward "
            "graph of a training step; backward() works in eager mode (modules called on arrays)"
        )

    def rng_offset(self) -> Tensor:
        """The shared ``rng.offset`` state input (i64[]), advanced by one per call."""
        if self._rng_offset is None:
            counter = np.zeros((), dtype=np.int64)
            self._rng_offset = self.array(counter, name="rng.offset", kind="state")
        return self._rng_offset

    def finish(self, outputs: object = None) -> Graph:
        """Append ``outputs`` (a Tensor or nested tuple/list) and the recorded updates."""
        if self._finished:
            raise GraphcError("trace already finished")
        for t in _flatten_outputs(outputs, self):
            self.graph.add_output(t.value)
        if self._rng_offset is not None and self._rng_offset.value.name not in self._updates:
            with _reactivated(self):
                self._updates[self._rng_offset.value.name] = self._rng_offset + 1
        for name, t in self._updates.items():
            if t.value is self.graph.value(name):
                continue
            self.graph.add_output(t.value, updates=name)
        self._finished = True
        return self.graph


class _reactivated:
    def __init__(self, ctx: TraceContext) -> None:
        self.ctx, self.was = ctx, ctx.active

    def __enter__(self) -> None:
        self.ctx.active = True

    def __exit__(self, *exc: object) -> None:
        self.ctx.active = self.was


def _flatten_outputs(outputs: object, ctx: TraceContext) -> list[Tensor]:
    if outputs is None:
        return []
    if isinstance(outputs, _tensor_mod.Tensor):
        return [outputs]
    if isinstance(outputs, (tuple, list)):
        return [t for o in outputs for t in _flatten_outputs(o, ctx)]
    if isinstance(outputs, dict):
        return [t for o in outputs.values() for t in _flatten_outputs(o, ctx)]
    if isinstance(outputs, (np.ndarray, int, float, bool, np.generic)):
        with _reactivated(ctx):
            return [ctx.array(np.asarray(outputs), name="out")]
    raise GraphcError(f"cannot return a {type(outputs).__name__} from a traced function")


__all__ = ["Tensor", "TraceContext", "current_context", "run_eager", "trace", "user_source"]


def _graph_name(obj: Any) -> str:
    raw = getattr(obj, "__name__", None) or type(obj).__name__
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", raw).strip("_") or "main"
    return name.lower() if not callable(obj) or hasattr(obj, "forward") else name


def _arg_names(fn: Callable, n: int) -> list[str]:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return [f"input{i}" for i in range(n)]
    names: list[str] = []
    for p in params:
        if len(names) == n:
            break
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
        elif p.kind == p.VAR_POSITIONAL:
            names.extend(f"{p.name}{i}" for i in range(n - len(names)))
    if len(names) < n:
        raise GraphcError(
            f"{getattr(fn, '__qualname__', fn)} takes {len(names)} positional input(s), "
            f"got {n} example arrays"
        )
    return names


def _example(a: Any) -> np.ndarray:
    if hasattr(a, "detach") and not isinstance(a, np.ndarray):  # a torch tensor
        a = a.detach().cpu().numpy()
    if isinstance(a, float):
        return np.array(a, dtype=np.float32)
    arr = np.asarray(a)
    TensorType.of(arr)  # rejects unsupported dtypes with a clear message
    return arr


def _closure_modules(fn: Callable) -> list[tuple[str, Any]]:
    """Modules a plain function reads through its closure or globals (to name their parameters)."""
    from graphc.nn import Module

    try:
        cv = inspect.getclosurevars(fn)
    except (TypeError, ValueError):
        return []
    found = {**cv.globals, **cv.nonlocals}
    return sorted((k, v) for k, v in found.items() if isinstance(v, Module))


def trace(
    model_or_fn: Callable,
    *example_arrays: Any,
    name: str | None = None,
    module: Any = None,
    input_names: Sequence[str] | None = None,
) -> Graph:
    """Trace a Module or a function of tensors on example arrays into a verified ir.Graph.

    ``module`` names the Module whose parameters a plain function uses (found automatically in
    the function's closure/globals otherwise), so its inputs get ``named_parameters()`` names.
    ``input_names`` names the data inputs (default: the forward/function parameter names).
    """
    from graphc.nn import Module

    arrays = [_example(a) for a in example_arrays]
    if isinstance(model_or_fn, Module):
        fn: Callable = model_or_fn
        names = _arg_names(model_or_fn.forward, len(arrays))
        roots = [("", model_or_fn)]
    else:
        if not callable(model_or_fn):
            raise GraphcError(f"trace needs a Module or a function, got {type(model_or_fn).__name__}")
        fn = model_or_fn
        names = _arg_names(fn, len(arrays))
        if module is not None:
            roots = [("", module)]
        else:
            found = _closure_modules(fn)
            roots = [("", found[0][1])] if len(found) == 1 else [(f"{k}.", m) for k, m in found]
    if input_names is not None:
        if len(input_names) != len(arrays):
            raise GraphcError(f"trace: {len(input_names)} input names for {len(arrays)} example arrays")
        names = list(input_names)
    _materialize_lazy(fn, [r for _, r in roots], arrays)
    graph = Graph(name or _graph_name(model_or_fn))
    ctx = TraceContext(graph)
    param_names = {
        pname for prefix, root in roots for pname, _ in root.named_parameters(prefix=prefix.rstrip("."))
    }
    with ctx:
        inputs = []
        for arg, arr in zip(names, arrays):
            arg_name = graph.fresh_name(arg if arg not in param_names else f"{arg}_input")
            inputs.append(_tensor_mod.Tensor(graph.add_input(arg_name, TensorType.of(arr), "data"), ctx))
        seen: set[int] = set()
        for prefix, root in roots:
            p = prefix.rstrip(".")
            for pname, param in root.named_parameters(prefix=p):
                if id(param) not in seen:
                    seen.add(id(param))
                    ctx.array(param, name=pname, kind="param")
            for bname, buf in root.named_buffers(prefix=p):
                ctx.array_names.setdefault(id(buf), bname)
            for cname, arr in root.named_constants(prefix=p):
                ctx.array_names.setdefault(id(arr), cname)
        out = fn(*inputs)
        ctx.finish(out)
    ir.verify(graph)
    # How the outputs nest (tuples, lists, dicts, None): compile() hands it to the plan.
    graph.output_structure = describe(out)
    return graph


def _materialize_lazy(fn: Callable, roots: list, arrays: list[np.ndarray]) -> None:
    """Run ``fn`` once on a scratch graph when a lazy module still waits for its sizes, so its
    parameters exist (and get their names) before the real trace makes the graph inputs."""
    from graphc.nn import LazyModuleMixin

    if not any(
        isinstance(m, LazyModuleMixin) and m.has_uninitialized_params() for r in roots for m in r.modules()
    ):
        return
    graph = Graph("lazy")
    with TraceContext(graph) as ctx:
        fn(
            *(
                _tensor_mod.Tensor(graph.add_input(f"x{i}", TensorType.of(a), "data"), ctx)
                for i, a in enumerate(arrays)
            )
        )


def run_eager(model_or_fn: Callable, *arrays: Any) -> Any:
    """Run a Module or function op by op in eager mode (graphc/eager.py) on ``arrays``.

    Returns eager Tensors (NumPy's array protocol makes them usable as arrays); buffers the code
    assigns are written at once. Arguments are inputs: in-place ops on them raise, as while tracing.
    """
    import graphc.eager as eager

    return eager.call(model_or_fn, tuple(_example(a) for a in arrays))


def run_eager_function(fn: Callable, args: tuple, kwargs: dict) -> Any:
    """Run a functional eagerly on NumPy arrays (array arguments are read-only inputs)."""
    import graphc.eager as eager

    return eager.call(fn, args, kwargs)


# Last: graphc.tensor imports the tracing state above from this module (either may load first).
from graphc import tensor as _tensor_mod  # noqa: E402


def __getattr__(name: str) -> Any:
    """``graphc.tracing.Tensor`` (the class lives in graphc.tensor, which may still be loading)."""
    if name == "Tensor":
        return _tensor_mod.Tensor
    raise AttributeError(f"module 'graphc.tracing' has no attribute {name!r}")
