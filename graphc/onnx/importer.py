"""ONNX import: ``load(path_or_model)`` gives an nn.Module that replays the ONNX graph in graphc ops.

The module's parameters are the model's float initializers (names sanitized into identifiers;
``onnx_names`` maps them back); its ``forward`` takes the graph inputs in order and walks the
nodes through the converter table (graphc.onnx.registry). Values known while converting
(integer initializers, Constant nodes, Shape of a static shape and arithmetic on them) stay
NumPy arrays, so shape computations fold away; the rest are graphc Tensors.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import numpy as np

from graphc.ir import GraphcError, to_numpy_dtype
from graphc.nn import Module, Parameter
from graphc.tensor import Tensor, current_context

from . import ops  # noqa: F401  (fills the converter table)
from .context import Initializer
from .proto import MAX_RANK, graphc_dtype, identifier, to_array
from .registry import prescan
from .walk import convert_nodes

MAX_NODES = 1_000_000


def _opset(model, where: str) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if len(versions) != 1:
        raise GraphcError(f"{where}: the model must import the default ONNX opset exactly once")
    version = int(versions[0])
    if not 1 <= version <= 10_000:
        raise GraphcError(f"{where}: opset version {version} is not valid")
    return version


def read_model(path_or_model: Any):
    """The ModelProto of a path or a ModelProto; a GraphcError for an unreadable file."""
    import onnx

    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model, "ONNX model"
    if not isinstance(path_or_model, (str, os.PathLike)):
        raise GraphcError(
            f"graphc.onnx.load takes a path or an onnx.ModelProto, got {type(path_or_model).__name__}"
        )
    path = os.fspath(path_or_model)
    if not os.path.isfile(path):
        raise GraphcError(f"ONNX file {path!r} does not exist")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends
        raise GraphcError(f"{path} is not a readable ONNX model: {type(err).__name__}: {err}") from None
    return model, path


def _value_info(vi, where: str) -> tuple[str, tuple[int | None, ...]]:
    t = vi.type
    if not t.HasField("tensor_type"):
        raise GraphcError(
            f"{where}: input {vi.name[:60]!r} is not a tensor (sequences and maps are not supported)"
        )
    dtype = graphc_dtype(t.tensor_type.elem_type, f"{where}: input {vi.name[:60]!r}")
    dims: list[int | None] = []
    if t.tensor_type.HasField("shape"):
        if len(t.tensor_type.shape.dim) > MAX_RANK:
            raise GraphcError(f"{where}: input {vi.name[:60]!r} has more than {MAX_RANK} axes")
        for d in t.tensor_type.shape.dim:
            dims.append(int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0 else None)
        return dtype, tuple(dims)
    return dtype, None


class OnnxModule(Module):
    """An ONNX graph as a graphc Module: parameters = float initializers, forward = the nodes."""

    def __init__(self, model, where: str = "ONNX model") -> None:
        super().__init__()
        graph = model.graph
        opset = _opset(model, where)
        if len(graph.node) > MAX_NODES:
            raise GraphcError(f"{where}: more than {MAX_NODES} nodes")
        prescan(graph, opset, where)
        self.__dict__.update(_where=where, _opset=opset, _graph=graph)
        self.onnx_names: dict[str, str] = {}
        statics: dict[str, np.ndarray] = {}
        params: dict[str, str] = {}
        used: set[str] = set()
        for init in graph.initializer:
            arr = to_array(init, f"{where}: initializer")
            if init.name in statics or init.name in params:
                raise GraphcError(f"{where}: initializer {init.name[:60]!r} is defined twice")
            if arr.dtype.kind == "f":
                pname = identifier(init.name, "param")
                while pname in used or hasattr(type(self), pname):
                    pname += "_"
                used.add(pname)
                # The file's dtype, float64 too (Parameter alone would apply the default dtype).
                self.register_parameter(pname, Parameter(arr, dtype=arr.dtype))
                self.onnx_names[pname] = init.name
                params[init.name] = pname
            else:
                statics[init.name] = arr
        inputs = []
        produced = {o for node in graph.node for o in node.output}
        for vi in graph.input:
            if vi.name in statics or vi.name in params or vi.name in produced:
                continue  # an initializer (or node output) that old models also list as an input
            dtype, dims = _value_info(vi, where)
            inputs.append((vi.name, dtype, dims))
        self.__dict__.update(_statics=statics, _params=params, _inputs=inputs)
        self.__dict__["output_names"] = [o.name for o in graph.output]
        self.__dict__["input_names"] = [n for n, _, _ in inputs]
        arg_names, seen = [], set()
        for name, _, _ in inputs:
            arg = identifier(name)
            while arg in seen:
                arg += "_"
            seen.add(arg)
            arg_names.append(arg)

        def forward(*args: Any) -> Any:
            return self._run(args)

        forward.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(a, inspect.Parameter.POSITIONAL_ONLY) for a in arg_names]
        )
        self.__dict__["forward"] = forward

    def input_specs(self) -> list[tuple[str, str, tuple[int | None, ...] | None]]:
        """(ONNX name, graphc dtype, dims or None) of each graph input; None dims are dynamic."""
        return list(self._inputs)

    def _bind_inputs(self, args: tuple) -> dict[str, Any]:
        if len(args) != len(self._inputs):
            raise GraphcError(f"{self._where}: takes {len(self._inputs)} input(s), got {len(args)}")
        env: dict[str, Any] = {}
        for (name, dtype, dims), t in zip(self._inputs, args):
            if not isinstance(t, Tensor):
                raise GraphcError(f"{self._where}: input {name[:60]!r} must be a traced Tensor")
            if t.value.dtype != dtype:
                raise GraphcError(f"{self._where}: input {name[:60]!r} must be {dtype}, got {t.value.dtype}")
            if dims is not None and (
                len(dims) != t.ndim or any(d is not None and d != s for d, s in zip(dims, t.shape))
            ):
                shown = ["?" if d is None else d for d in dims]
                raise GraphcError(
                    f"{self._where}: input {name[:60]!r} must have shape {shown}, got {list(t.shape)}"
                )
            env[name] = t
        return env

    def _run(self, args: tuple) -> Any:
        ctx = current_context()
        if ctx is None:
            raise GraphcError(f"{self._where}: call the module on arrays or inside graphc.trace")
        env: dict[str, Any] = dict(self._statics)
        for oname, pname in self._params.items():
            env[oname] = Initializer(oname, self._parameters[pname], lambda p=pname: getattr(self, p))
        env.update(self._bind_inputs(args))
        convert_nodes(self._graph.node, env, ctx, self._opset, self._where)
        results = []
        for name in self.output_names:
            if name not in env:
                raise GraphcError(f"{self._where}: graph output {name[:60]!r} is never computed")
            v = env[name]
            results.append(v.tensor() if isinstance(v, Initializer) else v)
        return results[0] if len(results) == 1 else tuple(results)

    def example_inputs(self, seed: int = 0) -> tuple[np.ndarray, ...]:
        """Random arrays of the graph inputs' dtypes and shapes (dynamic dims become 1)."""
        rng = np.random.default_rng(seed)
        out = []
        for _, dtype, dims in self._inputs:
            shape = tuple(1 if d is None else d for d in (dims or ()))
            if dtype in ("f16", "f32", "f64"):
                out.append(rng.standard_normal(shape).astype(dtype.replace("f", "float")))
            elif dtype == "bool":
                out.append(rng.random(shape) < 0.5)
            else:
                out.append(rng.integers(0, 2, shape).astype(to_numpy_dtype(dtype)))  # bf16, f8, i4, ... too
        return tuple(out)


def load(path_or_model: Any) -> OnnxModule:
    """Import an ONNX model (a path or an onnx.ModelProto) as a graphc Module.

    Every unsupported op is listed in one GraphcError before anything is converted; the
    returned module's parameters are the float initializers, so ``graphc.compile(m, x)`` and
    ``graphc.compile_train`` take it (``freeze=True`` makes them constants).
    """
    model, where = read_model(path_or_model)
    return OnnxModule(model, where)
