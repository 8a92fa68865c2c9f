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

The low-bit storage types (``LOWBIT_DTYPES``: float8 (float8e8m0 too), float4, int4/uint4,
int2/uint2, ml_dtypes' types) are legalized on every backend, whatever ``dtypes`` says: the floats
compute in f32, the integers in i32 (``wide_dtype``), and the rounding cast back is ml_dtypes'
conversion (round to nearest even, NaN or saturation out of range as ml_dtypes does; integers wrap;
f8e8m0, unsigned, makes 0 and negative values NaN, so its neg is not exact). Casts to and from
them stay direct (the backends run them with NumPy, ``kernels/cpu/half.py``).
"""

from __future__ import annotations

import numpy as np

from graphc.ir import Graph, GraphcError, Node, TensorType, Value, infer_types, to_numpy_dtype
from graphc.ir.control import CONTROL_OPS
from graphc.ir.ops import normalize_attrs
from graphc.ir.types import HALF_DTYPES, LOWBIT_DTYPES, LOWBIT_INT_DTYPES, STORAGE_DTYPES

from .util import graph_pass

COMPUTE_DTYPE = "f32"  # what an f16 op computes in
INT_COMPUTE_DTYPE = "i32"  # what an op on i4/u4/i2/u2 computes in
# Ops whose f32 result on f16-exact operands is f16-exact: their readers take the f32 result
# itself instead of a cast there and back (which would be the identity).
EXACT_OPS = frozenset(
    {"reshape", "transpose", "slice", "concat", "gather", "broadcast_to", "where", "maximum", "minimum"}
    | {"neg", "abs"}
)
# neg and abs of an integer can leave its range (-(-8) is 8, not an int4): exact on floats only.
_EXACT_INT_OPS = EXACT_OPS - {"neg", "abs"}
# f8e8m0 has no sign: a negated value is not one of its values (the rounding cast makes it NaN).
_EXACT_UNSIGNED_OPS = EXACT_OPS - {"neg"}


def wide_dtype(dtype: str) -> str:
    """The dtype an op on ``dtype`` (a storage type) computes in: i32 for the low-bit integers, else f32."""
    return INT_COMPUTE_DTYPE if dtype in LOWBIT_INT_DTYPES else COMPUTE_DTYPE


def has_half(graph: Graph, dtypes: tuple[str, ...] = STORAGE_DTYPES) -> bool:
    """Whether any value of ``graph`` (bodies included) has one of ``dtypes`` (by default the storage
    types: the 16-bit floats and the low-bit types)."""
    if any(v.dtype in dtypes for v in graph.inputs):
        return True
    for node in graph.nodes:
        if any(v.dtype in dtypes for v in node.outputs) or any(has_half(b, dtypes) for b in node.bodies):
            return True
    return False


def is_half_cast(node: Node) -> bool:
    """A ``cast`` from or to a storage type (f16, bf16, the low-bit types): the one op the backends
    run on such values (in NumPy)."""
    return node.op == "cast" and (
        node.inputs[0].dtype in STORAGE_DTYPES or node.attrs["dtype"] in STORAGE_DTYPES
    )


class _Legalizer:
    def __init__(self, graph: Graph, dtypes: tuple[str, ...]) -> None:
        self.graph = graph
        self.dtypes = dtypes
        self.nodes: list[Node] = []
        self.wide: dict[Value, Value] = {}  # f16 value -> its f32 cast (made once; i4 -> i32 likewise)
        self.exact: set[Value] = set()  # f32 (i32) values holding f16 (i4, ...) values exactly

    def _cast(self, x: Value, dtype: str, source: str | None, out: Value | None = None) -> Value:
        if out is None:
            name = self.graph._claim(self.graph.fresh_name(f"{x.name}_{dtype}"))
            out = Value(name, TensorType(x.shape, dtype))
        self.nodes.append(Node("cast", [x], normalize_attrs("cast", {"dtype": dtype}), [out], source))
        return out

    def widened(self, x: Value, source: str | None) -> Value:
        if x not in self.wide:
            self.wide[x] = self._cast(x, wide_dtype(x.dtype), source)
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
                f"legalize_half: fused node %{node.outputs[0].name} computes on a storage type; "
                "the pass runs before fusion"
            )
        if node.op == "cast":
            src, dst = node.inputs[0].dtype, node.attrs["dtype"]
            if src in self.dtypes and dst not in STORAGE_DTYPES and dst != wide_dtype(src):
                node.inputs = [self.widened(node.inputs[0], node.source)]
            self.nodes.append(node)
            return
        self._compute_wide(node)

    def _compute_wide(self, node: Node) -> None:
        inputs = [self.widened(v, node.source) if v.dtype in self.dtypes else v for v in node.inputs]
        attrs = dict(node.attrs)
        if attrs.get("dtype") in self.dtypes:  # const, rng_uniform, ...: made in f32, then rounded
            made = wide_dtype(attrs["dtype"])
            if node.op == "const":  # the f16 value itself (exact in f32: no second rounding)
                with np.errstate(over="ignore", invalid="ignore"):  # beyond f16's range: inf, as in NumPy
                    value = np.asarray(attrs["value"]).astype(to_numpy_dtype(attrs["dtype"]))
                attrs["value"] = int(value.astype(np.int64)) if made == INT_COMPUTE_DTYPE else float(value)
            attrs["dtype"] = made
        attrs = normalize_attrs(node.op, attrs)
        types = infer_types(node.op, [v.type for v in inputs], attrs)
        outputs: list[Value] = []
        rounded: list[tuple[Value, Value]] = []
        for old, t in zip(node.outputs, types):
            want = TensorType(old.shape, wide_dtype(old.dtype)) if old.dtype in self.dtypes else old.type
            if t != want:
                raise GraphcError(
                    f"legalize_half: {node.op} on widened operands gives {t}, expected {want} "
                    f"(node %{old.name}{f' at {node.source}' if node.source else ''})"
                )
            if old.dtype in self.dtypes:
                wide = Value(self.graph._claim(self.graph.fresh_name(f"{old.name}_{t.dtype}")), t)
                outputs.append(wide)
                rounded.append((wide, old))
            else:
                outputs.append(old)
        self.nodes.append(Node(node.op, inputs, attrs, outputs, node.source))
        for wide, old in rounded:  # the f16 value keeps its name: it is the rounding cast's output
            # cast(cast(w, f16), f32) is not w: a reader widens the rounded value again
            self._cast(wide, old.dtype, node.source, out=old)
            exact_ops = _EXACT_INT_OPS if old.dtype in LOWBIT_INT_DTYPES else EXACT_OPS
            if old.dtype == "f8e8m0":
                exact_ops = _EXACT_UNSIGNED_OPS
            operands = [v for v in inputs if v.dtype == wide.dtype]
            if node.op in exact_ops and all(v in self.exact for v in operands):
                self.wide[old] = wide
                self.exact.add(wide)


@graph_pass("legalize_half")
def legalize_half(graph: Graph, dtypes: tuple[str, ...] = HALF_DTYPES) -> Graph:
    """A copy of ``graph`` whose ops compute in f32 instead of the 16-bit floats ``dtypes`` and in
    f32/i32 instead of the low-bit types (always: see the module docstring); ``graph`` itself when it
    has no value of those dtypes."""
    dtypes = (*dtypes, *(d for d in LOWBIT_DTYPES if d not in dtypes))
    if not has_half(graph, dtypes):
        return graph
    graph = graph.copy()
    legalizer = _Legalizer(graph, dtypes)
    for node in graph.nodes:
        legalizer.visit(node)
    graph.set_nodes(legalizer.nodes)
    return graph
