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
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from graphc import ir
from graphc.ir import Graph, GraphcError, TensorType
from graphc.structure import describe
from graphc.tensor import Tensor, TraceContext, current_context, user_source

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
        fn(*(Tensor(graph.add_input(f"x{i}", TensorType.of(a), "data"), ctx) for i, a in enumerate(arrays)))


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
