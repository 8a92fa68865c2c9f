"""legalize_half: every op computing on 16-bit floats becomes cast -> the op in f32 -> cast.

numba's CPU target has no float16 type, so the numba backends never see an f16 value except in
a ``cast``: a node that reads or makes f16 values is rewritten to read each f16 operand through
``cast(x, f32)`` (exact), compute in f32, and round each f16 result once with ``cast(r, f16)``,
which is what ONNX Runtime's CPU provider and NumPy's float16 ufuncs do per op. Movement ops,
``where`` and comparisons are exact this way. What stays f16 is storage: graph inputs and
outputs, the values between ops (each rounded once where it is made), and the casts themselves,
which ``passes.util.fusion_class`` marks opaque so fusion never puts them in a numba body (the
backends run them with NumPy's conversion: ``kernels/cpu/half.py``).

A cast from f16 to a dtype other than f32 goes through f32 (exact: f32 holds every f16 value),
so the backends' f16 casts are only ``f16 -> f32`` and ``any dtype -> f16`` (rounded once, to
nearest even, straight from the source dtype). Control-flow bodies are legalized the same way;
the control node keeps its f16 operands (its carries are moved, not computed, by the backends).

bf16 (ml_dtypes' bfloat16, where installed) is legalized the same way. The pass runs before
``optimize`` (``graphc.compiler.compile_graph``): for every dtype in ``HALF_DTYPES`` on the numba
backends; on the NumPy reference for bf16 only, since NumPy computes on f16 natively (each ufunc
in float32, rounded once) but has no bf16 arithmetic of its own. A graph without those values is
returned as is.
"""

from __future__ import annotations

import numpy as np

from graphc.ir import Graph, GraphcError, Node, TensorType, Value, infer_types, to_numpy_dtype
from graphc.ir.control import CONTROL_OPS
from graphc.ir.ops import normalize_attrs
from graphc.ir.types import HALF_DTYPES

from .util import graph_pass

COMPUTE_DTYPE = "f32"  # what an f16 op computes in
# Ops whose f32 result on f16-exact operands is f16-exact: their readers take the f32 result
# itself instead of a cast there and back (which would be the identity).
EXACT_OPS = frozenset(
    {"reshape", "transpose", "slice", "concat", "gather", "broadcast_to", "where", "maximum", "minimum"}
    | {"neg", "abs"}
)


def has_half(graph: Graph, dtypes: tuple[str, ...] = HALF_DTYPES) -> bool:
    """Whether any value of ``graph`` (bodies included) has one of ``dtypes`` (the 16-bit floats)."""
    if any(v.dtype in dtypes for v in graph.inputs):
        return True
    for node in graph.nodes:
        if any(v.dtype in dtypes for v in node.outputs) or any(has_half(b, dtypes) for b in node.bodies):
            return True
    return False


def is_half_cast(node: Node) -> bool:
    """A ``cast`` from or to a 16-bit float: the one op the backends run on f16 values (in NumPy)."""
    return node.op == "cast" and (node.inputs[0].dtype in HALF_DTYPES or node.attrs["dtype"] in HALF_DTYPES)


class _Legalizer:
    def __init__(self, graph: Graph, dtypes: tuple[str, ...]) -> None:
        self.graph = graph
        self.dtypes = dtypes
        self.nodes: list[Node] = []
        self.wide: dict[Value, Value] = {}  # f16 value -> its f32 cast (made once)
        self.exact: set[Value] = set()  # f32 values holding f16 values exactly

    def _cast(self, x: Value, dtype: str, source: str | None, out: Value | None = None) -> Value:
        if out is None:
            name = self.graph._claim(self.graph.fresh_name(f"{x.name}_{dtype}"))
            out = Value(name, TensorType(x.shape, dtype))
        self.nodes.append(Node("cast", [x], normalize_attrs("cast", {"dtype": dtype}), [out], source))
        return out

    def widened(self, x: Value, source: str | None) -> Value:
        if x not in self.wide:
            self.wide[x] = self._cast(x, COMPUTE_DTYPE, source)
            self.exact.add(self.wide[x])
        return self.wide[x]

    def visit(self, node: Node) -> None:
        if node.op in CONTROL_OPS:
            node.bodies = [legalize_half(b, self.dtypes) for b in node.bodies]
            self.nodes.append(node)
            return
        if not any(v.dtype in self.dtypes for v in (*node.inputs, *node.outputs)):
            self.nodes.append(node)
            return
        if node.op == "fused":
            raise GraphcError(
                f"legalize_half: fused node %{node.outputs[0].name} computes on 16-bit floats; "
                "the pass runs before fusion"
            )
        if node.op == "cast":
            src, dst = node.inputs[0].dtype, node.attrs["dtype"]
            if src in self.dtypes and dst not in HALF_DTYPES and dst != COMPUTE_DTYPE:
                node.inputs = [self.widened(node.inputs[0], node.source)]
            self.nodes.append(node)
            return
        self._compute_wide(node)

    def _compute_wide(self, node: Node) -> None:
        inputs = [self.widened(v, node.source) if v.dtype in self.dtypes else v for v in node.inputs]
        attrs = dict(node.attrs)
        if attrs.get("dtype") in self.dtypes:  # const, rng_uniform, ...: made in f32, then rounded
            if node.op == "const":  # the f16 value itself (exact in f32: no second rounding)
                with np.errstate(over="ignore"):  # a value beyond f16's range is inf, as in NumPy
                    attrs["value"] = float(np.asarray(attrs["value"]).astype(to_numpy_dtype(attrs["dtype"])))
            attrs["dtype"] = COMPUTE_DTYPE
        attrs = normalize_attrs(node.op, attrs)
        types = infer_types(node.op, [v.type for v in inputs], attrs)
        outputs: list[Value] = []
        rounded: list[tuple[Value, Value]] = []
        for old, t in zip(node.outputs, types):
            want = TensorType(old.shape, COMPUTE_DTYPE) if old.dtype in self.dtypes else old.type
            if t != want:
                raise GraphcError(
                    f"legalize_half: {node.op} on f32 operands gives {t}, expected {want} "
                    f"(node %{old.name}{f' at {node.source}' if node.source else ''})"
                )
            if old.dtype in self.dtypes:
                wide = Value(self.graph._claim(self.graph.fresh_name(f"{old.name}_{COMPUTE_DTYPE}")), t)
                outputs.append(wide)
                rounded.append((wide, old))
            else:
                outputs.append(old)
        self.nodes.append(Node(node.op, inputs, attrs, outputs, node.source))
        for wide, old in rounded:  # the f16 value keeps its name: it is the rounding cast's output
            # cast(cast(w, f16), f32) is not w: a reader widens the rounded value again
            self._cast(wide, old.dtype, node.source, out=old)
            floats = [v for v in inputs if v.dtype == COMPUTE_DTYPE]
            if node.op in EXACT_OPS and all(v in self.exact for v in floats):
                self.wide[old] = wide
                self.exact.add(wide)


@graph_pass("legalize_half")
def legalize_half(graph: Graph, dtypes: tuple[str, ...] = HALF_DTYPES) -> Graph:
    """A copy of ``graph`` whose ops compute in f32 instead of the 16-bit floats ``dtypes`` (see the
    module docstring); ``graph`` itself when it has no value of those dtypes."""
    if not has_half(graph, dtypes):
        return graph
    graph = graph.copy()
    legalizer = _Legalizer(graph, dtypes)
    for node in graph.nodes:
        legalizer.visit(node)
    graph.set_nodes(legalizer.nodes)
    return graph
