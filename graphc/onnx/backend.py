"""graphc as an ONNX backend (``onnx.backend.base.Backend``), for onnx's backend test suite.

``GraphcBackend.prepare(model)`` imports the model; ``rep.run(inputs)`` compiles a plan for the
inputs' shapes and dtypes (cached per signature) and runs it. Graph inputs that feed a slot
graphc needs while compiling (a Reshape's shape, Slice's starts, ...: registry.STATIC_SLOTS),
directly or through the nodes computing it, are folded into the model as Constant nodes, so the
plan is compiled for their values (and compiled again for other values).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import GraphProto, ModelProto, NodeProto, TensorProto, helper, numpy_helper
from onnx.backend.base import Backend, BackendRep

from graphc.ir import DTYPES, GraphcError

from .importer import load
from .registry import STATIC_SLOTS

_SUPPORTED = (
    np.float16,
    np.float32,
    np.float64,
    np.uint8,
    np.int8,
    np.uint16,
    np.int16,
    np.int32,
    np.uint32,
    np.int64,
    np.uint64,
    np.bool_,
    *(d.type for d in DTYPES.values() if d.type.__module__.startswith("ml_dtypes")),  # bfloat16, float8...
)


# Ops whose output depends on their input's shape only, which graphc knows while compiling.
SHAPE_ONLY = frozenset({"Shape", "Size"})


def _subgraphs(node: NodeProto) -> list[GraphProto]:
    return [
        g for attr in node.attribute for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
    ]


def _captured(node: NodeProto) -> list[str]:
    """The names the nodes of ``node``'s subgraphs read, at any depth (outer names among them)."""
    names = []
    for graph in _subgraphs(node):
        for inner in graph.node:
            names += [*inner.input, *_captured(inner)]
    return names


def static_inputs(model: ModelProto) -> set[str]:
    """Names of graph inputs whose values graphc needs while compiling: those feeding a
    compile-time slot of some node (registry.STATIC_SLOTS), directly or through the nodes that
    compute the slot's value (a window's size cast and divided before a Range, a crop's pads
    computed from the input's shape), in the graph or in a subgraph of one of its nodes."""
    names = {vi.name for vi in model.graph.input}
    producers: dict[str, NodeProto] = {}
    slots: list[str] = []

    def scan(graph: GraphProto) -> None:
        for node in graph.node:
            for out in node.output:
                producers.setdefault(out, node)
            slots.extend(node.input[i] for i in STATIC_SLOTS.get(node.op_type, ()) if i < len(node.input))
            for sub in _subgraphs(node):
                scan(sub)

    scan(model.graph)
    found: set[str] = set()
    seen: set[str] = set()
    while slots:
        name = slots.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        if name in names:
            found.add(name)
        elif name in producers and producers[name].op_type not in SHAPE_ONLY:
            slots.extend(producers[name].input)
            slots.extend(_captured(producers[name]))  # an If's outputs depend on what its branches read
    return found


def _fold(model: ModelProto, values: dict[str, np.ndarray]) -> ModelProto:
    """``model`` with the inputs in ``values`` replaced by Constant nodes of their values (not
    initializers: a float initializer is a parameter, which graphc does not read while compiling)."""
    folded = ModelProto()
    folded.CopyFrom(model)
    keep = [vi for vi in folded.graph.input if vi.name not in values]
    del folded.graph.input[:]
    folded.graph.input.extend(keep)
    constants = [
        helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(arr)))
        for name, arr in values.items()
    ]
    nodes = constants + list(folded.graph.node)
    del folded.graph.node[:]
    folded.graph.node.extend(nodes)
    return folded


def _array(x: Any, name: str) -> np.ndarray:
    arr = numpy_helper.to_array(x) if isinstance(x, TensorProto) else np.asarray(x)
    if arr.dtype.type not in _SUPPORTED:
        raise GraphcError(f"input {name!r}: dtype {arr.dtype} is not supported")
    return arr


class GraphcRep(BackendRep):
    """A prepared model: plans compiled per input signature."""

    def __init__(self, model: ModelProto, backend: str = "cpu") -> None:
        self.model = model
        self.backend = backend
        self.static = static_inputs(model)
        self.input_names = [
            vi.name for vi in model.graph.input if vi.name not in {i.name for i in model.graph.initializer}
        ]
        self._plans: dict[tuple, Any] = {}
        if not self.static:
            self.module = load(model)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Run on ``inputs`` (a list in graph-input order, or a dict by name)."""
        import graphc

        if isinstance(inputs, dict):
            arrays = {n: _array(inputs[n], n) for n in self.input_names if n in inputs}
        else:
            arrays = {n: _array(x, n) for n, x in zip(self.input_names, list(inputs))}
        fixed = {n: a for n, a in arrays.items() if n in self.static}
        data = [a for n, a in arrays.items() if n not in self.static]
        key = (
            tuple((a.shape, a.dtype.str) for a in data),
            tuple((n, a.dtype.str, a.tobytes()) for n, a in sorted(fixed.items())),
        )
        plan = self._plans.get(key)
        if plan is None:
            module = load(_fold(self.model, fixed)) if self.static else self.module
            plan = self._plans[key] = graphc.compile(module, *data, backend=self.backend)
        out = plan(*data)
        return tuple(out) if isinstance(out, tuple) else (out,)


class GraphcBackend(Backend):
    """The ``onnx.backend.base.Backend`` interface over graphc (CPU)."""

    @classmethod
    def prepare(cls, model: ModelProto, device: str = "CPU", **kwargs: Any) -> GraphcRep:
        """Import ``model``; ``backend="reference"`` runs graphc's NumPy oracle kernels."""
        if not cls.supports_device(device):
            raise GraphcError(f"graphc's ONNX backend runs on CPU, not {device!r}")
        return GraphcRep(model, kwargs.get("backend", "cpu"))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """Only CPU."""
        return str(device).upper().startswith("CPU")
