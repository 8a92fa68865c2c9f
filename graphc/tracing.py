"""Tracing: run a Module or function on symbolic Tensors and record an ir.Graph.

``trace(model_or_fn, *example_arrays)`` makes, in order: one ``data`` input per example array,
named after the forward/function parameters; one ``param`` input per parameter of the model
(``named_parameters()`` order and names, the arrays as initializers, each shared instance once);
then, as the code reads them, ``const`` inputs for buffers and NumPy-array attributes
(``"fixed.rand_weight"``). A buffer the code assigns (BatchNorm's running stats in training)
becomes a ``state`` input whose new value is an extra output registered in ``graph.updates``;
dropout adds the shared ``rng.offset`` state. Initializers share memory with the module's arrays.

``building(graph)`` lets other stages (optimizers, autodiff helpers) append nodes to an existing
graph with Tensor operations::

    with building(graph) as ctx:
        w, g = ctx.input("fc.weight"), ctx.input("grad_fc.weight")   # or Tensor(value)
        ctx.assign(w, w - 0.1 * g)    # on leaving: output registered in graph.updates
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from graphc import ir
from graphc.ir import Graph, GraphcError, TensorType
from graphc.tensor import Tensor, TraceContext, current_context, user_source

__all__ = ["Tensor", "TraceContext", "building", "current_context", "run_eager", "trace", "user_source"]


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
    graph = Graph(name or _graph_name(model_or_fn))
    ctx = TraceContext(graph)
    param_names = {
        pname for prefix, root in roots for pname, _ in root.named_parameters(prefix=prefix.rstrip("."))
    }
    with ctx:
        inputs = []
        for arg, arr in zip(names, arrays):
            arg_name = graph.fresh_name(arg if arg not in param_names else f"{arg}_input")
            inputs.append(Tensor(graph.add_input(arg_name, TensorType.of(arr), "data"), ctx))
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
    return graph


@contextlib.contextmanager
def building(graph: Graph) -> Iterator[TraceContext]:
    """Append to ``graph`` with Tensor operations; assigned updates become outputs on exit."""
    ctx = TraceContext(graph)
    # Existing inputs with initializers are the arrays assign() can target.
    for v in graph.inputs:
        arr = graph.initializers.get(v.name)
        if arr is not None:
            ctx._arrays[id(arr)] = (arr, Tensor(v, ctx))
            ctx._owner[v.name] = id(arr)
            ctx._input_of[id(arr)] = v.name
    for v in graph.inputs:
        if v.name not in ctx._owner:
            key = id(v)
            ctx._arrays[key] = (v, Tensor(v, ctx))  # type: ignore[assignment]
            ctx._owner[v.name] = key
            ctx._input_of[key] = v.name
    with ctx:
        yield ctx
        ctx.finish()


def _split_outputs(graph: Graph, results: list[np.ndarray]) -> Any:
    for name, index in graph.updates.items():
        target = graph.initializers.get(name)
        if target is not None:
            np.copyto(target, results[index])
    update_idx = set(graph.updates.values())
    outs = [r for i, r in enumerate(results) if i not in update_idx]
    if len(outs) == 1:
        return outs[0]
    return tuple(outs)


def run_eager(model_or_fn: Callable, *arrays: Any) -> Any:
    """Trace on ``arrays`` and run with the NumPy reference kernels (updates written back)."""
    from graphc.kernels.reference import execute

    graph = trace(model_or_fn, *arrays)
    feeds = {v.name: _example(a) for v, a in zip(graph.data_inputs, arrays)}
    return _split_outputs(graph, execute(graph, feeds))


def run_eager_function(fn: Callable, args: tuple, kwargs: dict) -> Any:
    """Run a functional on NumPy arrays: arrays become const inputs, updates are written back."""
    from graphc.kernels.reference import execute

    graph = Graph(_graph_name(fn))
    ctx = TraceContext(graph)
    with ctx:
        conv = [ctx.array(a, name=f"arg{i}") if isinstance(a, np.ndarray) else a for i, a in enumerate(args)]
        kw = {k: ctx.array(v, name=k) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        # The given arrays are the call's inputs: in-place ops on them raise, as while tracing
        # (functionals that update state, like batch_norm's running stats, still write them).
        ctx.readonly.update(t.value.name for t in (*conv, *kw.values()) if isinstance(t, Tensor))
        ctx.finish(fn(*conv, **kw))
    ir.verify(graph)
    return _split_outputs(graph, execute(graph, {}))
