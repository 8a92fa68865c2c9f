"""Algebraic and movement simplifications: rewrite rules as data, applied to a fixed point.

Each rule is a pattern and a function of what it binds (``passes/rewrite.py``); the rules
for one op are tried in the order listed in ``RULES``.

Every rule keeps the value exactly (bit for bit) except where noted:

- ``x + 0``, ``0 + x``, ``x - 0``, ``x * 1``, ``1 * x``, ``x / 1``, ``x ** 1`` -> ``x`` when the
  result has x's type (``x + 0.0`` turns -0.0 into +0.0; nothing else differs).
- ``x * 0`` -> zeros only for integer dtypes, or floats with ``unsafe_math=True`` (it is wrong
  for inf and nan).
- ``x * -1`` -> ``neg x``; ``neg(neg x)`` -> ``x``; ``x + neg y`` -> ``x - y``; ``x - neg y`` -> ``x + y``.
- ``x ** 2`` -> ``x * x``; ``x ** -1`` -> ``reciprocal x``; ``1 / x`` -> ``reciprocal x``;
  ``reciprocal(sqrt x)`` and ``1 / sqrt x`` -> ``rsqrt x``.
- ``x / c`` -> ``x * (1/c)`` for a scalar constant c that is a power of two (exact).
- ``abs(abs x)``, ``abs(neg x)`` -> ``abs x``; ``maximum(x, x)``, ``minimum(x, x)``,
  ``where(c, x, x)`` -> ``x``; ``cast`` to the same dtype -> ``x``.
- movement: reshape to the same shape, ``reshape(reshape x)``, identity or composed transposes,
  ``transpose(a @ b)`` -> ``b^T @ a^T`` (last two axes; the matmul read only there),
  ``broadcast_to`` to the same shape or of a ``broadcast_to``, full slices, zero pads,
  one-operand concats.
- ``max_pool2d(pad(x, -inf))`` -> ``max_pool2d(x)`` with the H/W pads as its padding (its padding
  cells are -inf: exact), where they fit the pool's limits; likewise the gradient,
  ``slice(max_pool2d_grad(pad(x, -inf), dy))`` cropped back to x -> ``max_pool2d_grad(x, dy)``.
- a ``broadcast_to`` operand of a broadcasting op is dropped when the op broadcasts it anyway
  (so ``x + broadcast_to(0.5, shape)`` reads the scalar).
- slices of a transpose whose every reader is a slice reaching a matmul through reshapes:
  ``slice(transpose y)`` -> ``transpose(slice y)``, so each piece is a strided view of y that
  fusion hands the matmul (no transpose copy).
- reshape sinking: ``f(reshape z)`` -> ``reshape(f z)`` for a pointwise f, and
  ``g(reshape z, c)`` -> ``reshape(g(z, c'))`` for a broadcasting g where c regroups to z's
  layout (c' is folded for a constant, ``reshape c`` for a small operand such as a per-channel
  parameter, whose reshapes then merge), or where ``c = reshape w`` and w has z's shape. Elementwise
  ops then sit next to their producer, so fusion can put them in a matmul epilogue, and
  per-channel constants after a conv reach its matmul.
"""

from __future__ import annotations

import numpy as np

from graphc.ir import Graph, GraphcError, Node, TensorType, Value
from graphc.ir.ops import infer_types, normalize_attrs
from graphc.ir.types import INT_DTYPES
from graphc.kernels.windows import pool_fill

from .control_flow import in_bodies
from .rewrite import Pat, PatternMatcher, Rewriter, graph_rewrite
from .util import fusion_class, graph_pass

# A non-constant operand this small may be reshaped to follow an op sunk below a reshape.
SMALL_OPERAND = 1 << 12

x, y, b = Pat.var("x"), Pat.var("y"), Pat.var("b")


def _zeros(rw: Rewriter, node: Node) -> Value:
    out = node.output
    zero = rw.scalar(0 if out.dtype in INT_DTYPES else 0.0, out.dtype)
    return zero if out.shape == () else rw.emit("broadcast_to", [zero], shape=out.shape)


def _zeros_if_exact(rw: Rewriter, node: Node, x: Value) -> Value | None:
    """``x * 0`` is 0 for integers; for floats only with ``unsafe_math`` (inf * 0 is NaN)."""
    if node.output.dtype in INT_DTYPES or rw.options.get("unsafe_math"):
        return _zeros(rw, node)
    return None


def _power_of_two_reciprocal(c: np.ndarray | None) -> float | None:
    if c is None or c.size != 1 or c.dtype.kind != "f":
        return None
    value = float(c.reshape(()))
    if value == 0 or not np.isfinite(value) or abs(np.frexp(value)[0]) != 0.5:
        return None
    return 1.0 / value


def _is_pow2_const(rw: Rewriter, v: Value) -> bool:
    return _power_of_two_reciprocal(rw.const(v)) is not None


def _times_reciprocal(rw: Rewriter, node: Node, x: Value, c: Value) -> Value | None:
    """``x / c`` -> ``x * (1/c)`` for a power-of-two scalar c (exact)."""
    inv = _power_of_two_reciprocal(rw.const(c))
    if infer_types("mul", [x.type, TensorType((), c.dtype)], {}) != [node.output.type]:
        return None
    return rw.emit("mul", [x, rw.scalar(inv, c.dtype)])


def _if_same(make):
    """A rule function that applies ``make`` only when ``x`` has the node's type."""
    return lambda rw, node, x, **kw: make(rw, node, x, **kw) if rw.same(node, x) else None


# ------------------------------------------------------------------ movement
def _reshape_of_reshape(rw: Rewriter, node: Node, x: Value) -> Value:
    shape = node.output.shape
    return x if x.shape == shape else rw.emit("reshape", [x], shape=shape)


def _is_identity_perm(node: Node) -> bool:
    perm = tuple(node.attrs["perm"])
    return perm == tuple(range(len(perm)))


def _compose_transposes(rw: Rewriter, node: Node, t: Value, x: Value) -> Value:
    first = rw.producer(t).attrs["perm"]
    composed = tuple(first[p] for p in node.attrs["perm"])
    if composed == tuple(range(len(composed))):
        return x
    return rw.emit("transpose", [x], perm=composed)


def _swap_last(v: Value) -> tuple[int, ...]:
    rank = v.type.rank
    return (*range(rank - 2), rank - 1, rank - 2)


def _transpose_matmul(rw: Rewriter, node: Node, m: Value, a: Value, b: Value) -> Value | None:
    """(a @ b)^T = b^T @ a^T when the product is read only here: the transposes become BLAS operand
    flags (matmul prologues), and autodiff's transpose(x^T @ g) turns into g^T @ x with no copy."""
    if tuple(node.attrs["perm"]) != _swap_last(node.output) or rw.uses(m) != 1:
        return None
    a_t = rw.emit("transpose", [a], perm=_swap_last(a))
    b_t = rw.emit("transpose", [b], perm=_swap_last(b))
    return rw.emit("matmul", [b_t, a_t])


def _is_full_slice(node: Node) -> bool:
    a = node.attrs
    shape = node.inputs[0].shape
    return all(s == 0 and e == d and t == 1 for s, e, t, d in zip(a["starts"], a["stops"], a["steps"], shape))


def _slice_before_transpose(rw: Rewriter, node: Node, t: Value, y: Value) -> Value | None:
    """slice(transpose y) -> transpose(slice y) when every reader of the transpose is a slice that
    reaches a matmul: each piece is then one strided view of y (fusion's operand views), and the
    transpose's copy disappears."""
    if not _split_for_matmuls(rw, t):
        return None
    a = node.attrs
    perm = tuple(rw.producer(t).attrs["perm"])
    starts, stops, steps = [0] * len(perm), list(y.shape), [1] * len(perm)
    for i, p in enumerate(perm):
        starts[p], stops[p], steps[p] = a["starts"][i], a["stops"][i], a["steps"][i]
    piece = rw.emit("slice", [y], starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
    return rw.emit("transpose", [piece], perm=perm)


def _split_for_matmuls(rw: Rewriter, x: Value) -> bool:
    """Whether every reader of ``x`` is a slice whose result reaches a matmul through reshapes
    and transposes only."""
    readers = rw.readers.get(x, [])
    if x in rw.outputs or not readers:
        return False
    for s in readers:
        if s.op != "slice":
            return False
        v = s.output
        while True:
            users = rw.readers.get(v, [])
            if v in rw.outputs or len(users) != 1:
                return False
            if users[0].op == "matmul":
                break
            if users[0].op not in ("reshape", "transpose"):
                return False
            v = users[0].output
    return True


def reshape_groups(src: tuple[int, ...], dst: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pair up runs of axes of ``src`` and ``dst`` with equal products (a reshape's structure)."""
    if 0 in src or 0 in dst or int(np.prod(src)) != int(np.prod(dst)):
        return None
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(src) and j < len(dst):
        gi, gj, pi, pj = [i], [j], src[i], dst[j]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                if i == len(src):
                    return None
                gi.append(i)
                pi *= src[i]
                i += 1
            else:
                if j == len(dst):
                    return None
                gj.append(j)
                pj *= dst[j]
                j += 1
        groups.append((gi, gj))
    if not groups:
        return None
    groups[-1][0].extend(range(i, len(src)))
    groups[-1][1].extend(range(j, len(dst)))
    return groups


def regroup_operand(
    shape: tuple[int, ...], src: tuple[int, ...], dst: tuple[int, ...]
) -> tuple[int, ...] | None:
    """The shape an operand broadcasting against ``dst`` takes against ``src`` (reshape src->dst), or None.

    Works when, for each run of axes the reshape merges or splits, the operand is either all
    ones or all full there.
    """
    if len(shape) > len(dst):
        return None
    padded = (1,) * (len(dst) - len(shape)) + tuple(shape)
    groups = reshape_groups(src, dst)
    if groups is None:
        return None
    out: list[int] = [1] * len(src)
    for gi, gj in groups:
        dims = [padded[k] for k in gj]
        if all(d == 1 for d in dims):
            continue
        if all(padded[k] == dst[k] for k in gj):
            for k in gi:
                out[k] = src[k]
        else:
            return None
    return tuple(out)


def _sink_reshape(rw: Rewriter, node: Node) -> Value | None:
    """``f(reshape z, ...)`` -> ``reshape(f(z, ...))`` (see the module docstring)."""
    if (
        node.op == "broadcast_to"
        or fusion_class(node) not in ("pointwise", "broadcast")
        or len(node.outputs) != 1
    ):
        return None
    out = node.output
    # Any reshape, however many readers it has: a reshape is a free view, so the original one
    # stays for the others (a conv's ReLU reads its reshaped output twice: gt and where).
    shaped = [v for v in node.inputs if rw.op_of(v) == "reshape"]
    if not shaped:
        return None
    y = shaped[0]
    if y.shape != out.shape:
        return None
    z = rw.producer(y).inputs[0]
    new_inputs = []
    for v in node.inputs:
        if v is y:
            new_inputs.append(z)
            continue
        if v.type.numel == 1 and len(v.shape) <= len(z.shape):
            new_inputs.append(v)
            continue
        twin = rw.producer(v)
        if twin is not None and twin.op == "reshape" and twin.inputs[0].shape == z.shape:
            new_inputs.append(twin.inputs[0])  # reshaped the same way: combine before reshaping
            continue
        c = rw.const(v)
        if c is not None and c.size == 1:
            new_inputs.append(rw.const_input(c.reshape(()), f"{v.name}_r"))
            continue
        shape = regroup_operand(v.shape, z.shape, y.shape)
        if shape is None:
            return None
        if c is not None:
            padded = c.reshape((1,) * (len(y.shape) - c.ndim) + c.shape)
            new_inputs.append(rw.const_input(padded.reshape(shape), f"{v.name}_r"))
        elif v.type.numel <= SMALL_OPERAND and v.type.numel < y.type.numel:
            # e.g. a per-channel parameter: its own reshape merges with the one that made it
            new_inputs.append(rw.emit("reshape", [v], shape=shape))
        else:
            return None
    try:
        types = infer_types(node.op, [v.type for v in new_inputs], normalize_attrs(node.op, node.attrs))
    except Exception:
        return None
    if types != [TensorType(z.shape, out.dtype)]:
        return None
    inner = rw.emit(node.op, new_inputs, **node.attrs)
    return rw.emit("reshape", [inner], shape=out.shape)


def _when(test):
    """A rule function that returns ``x`` when ``test(node, x)`` holds."""
    return lambda rw, node, x: x if test(node, x) else None


def _node_is(test):
    """A rule function that returns ``x`` when ``test(node)`` holds."""
    return lambda rw, node, x: x if test(node) else None


def _same_shape(node: Node, x: Value) -> bool:
    return x.shape == node.output.shape


def _emit(op: str):
    """A rule function that makes ``op(x)`` (or ``op(x, y)``)."""
    return lambda rw, node, **v: rw.emit(op, [v[k] for k in ("x", "y") if k in v])


def _pointwise_window(rw: Rewriter, node: Node, x: Value) -> Value | None:
    a = node.attrs
    if (a["kernel"], a["stride"], a["padding"]) != ((1, 1), (1, 1), (0, 0)):
        return None
    return rw.emit("reshape", [x], shape=node.output.shape)


def _folded_pool_attrs(rw: Rewriter, pool: Node, x: Value, p: Value) -> dict | None:
    """The attributes of ``pool`` (a max_pool2d or its grad reading ``p = pad(x)``) with the pad
    folded into its padding: a pad of -inf (an integer's minimum) on H and W only, within the
    pool's limits; else None."""
    pads, value = rw.producer(p).attrs["pads"], rw.producer(p).attrs["value"]
    if len(x.shape) != 4 or pads[0] != (0, 0) or pads[1] != (0, 0) or value != pool_fill(x.dtype):
        return None
    top, left, bottom, right = pool.attrs["padding"]
    (h0, h1), (w0, w1) = pads[2], pads[3]
    attrs = {**pool.attrs, "padding": (top + h0, left + w0, bottom + h1, right + w1)}
    try:
        infer_types("max_pool2d", [x.type], normalize_attrs("max_pool2d", attrs))
    except GraphcError:  # the pads exceed the pool's limits: keep the pad
        return None
    return attrs


def _pad_into_pool(rw: Rewriter, node: Node, x: Value, p: Value) -> Value | None:
    """``max_pool2d(pad(x, -inf))`` -> ``max_pool2d(x)`` padded (exact: the padding cells are -inf)."""
    attrs = _folded_pool_attrs(rw, node, x, p)
    return None if attrs is None else rw.emit("max_pool2d", [x], **attrs)


def _pad_into_pool_grad(rw: Rewriter, node: Node, x: Value, p: Value, y: Value, gr: Value) -> Value | None:
    """``slice(max_pool2d_grad(pad(x, -inf), y))`` back to x's cells (the pad's VJP) ->
    ``max_pool2d_grad(x, y)`` padded (exact: y routed to a padding cell is dropped either way)."""
    lows = tuple(lo for lo, _ in rw.producer(p).attrs["pads"])
    crop = {"starts": lows, "stops": tuple(lo + n for lo, n in zip(lows, x.shape)), "steps": (1,) * len(lows)}
    if any(node.attrs[k] != v for k, v in crop.items()):
        return None
    attrs = _folded_pool_attrs(rw, rw.producer(gr), x, p)
    return None if attrs is None else rw.emit("max_pool2d_grad", [x, y], **attrs)


ELEMENTWISE = ("pointwise", "broadcast")

# Per op, tried in this order; the last rule (reshape sinking) applies to any elementwise op.
RULES = PatternMatcher(
    [
        # x + 0 -> x; x + neg y -> x - y; x - 0 -> x; x - neg y -> x + y
        (Pat.op("add", x, Pat.cst(0), commutative=True), lambda rw, node, x: rw.same(node, x)),
        (Pat.op("add", x, Pat.op("neg", y), commutative=True), lambda rw, node, x, y: rw.emit("sub", [x, y])),
        (Pat.op("sub", x, Pat.cst(0)), lambda rw, node, x: rw.same(node, x)),
        (Pat.op("sub", x, Pat.op("neg", y)), lambda rw, node, x, y: rw.emit("add", [x, y])),
        # x * 1 -> x; x * -1 -> neg x; x * 0 -> 0 (integers, or unsafe_math)
        (Pat.op("mul", x, Pat.cst(1), commutative=True), lambda rw, node, x: rw.same(node, x)),
        (Pat.op("mul", x, Pat.cst(-1), commutative=True), _if_same(lambda rw, node, x: rw.emit("neg", [x]))),
        (Pat.op("mul", x, Pat.cst(0), commutative=True), _zeros_if_exact),
        # x / 1 -> x; 1 / sqrt x -> rsqrt x; 1 / b -> reciprocal b; x / 2^k -> x * 2^-k
        (Pat.op("div", x, Pat.cst(1)), lambda rw, node, x: rw.same(node, x)),
        (
            Pat.op("div", Pat.cst(1), Pat.op("sqrt", x, name="b")),
            lambda rw, node, x, b: rw.emit("rsqrt", [x]) if rw.same(node, b) else None,
        ),
        (
            Pat.op("div", Pat.cst(1), b),
            lambda rw, node, b: rw.emit("reciprocal", [b]) if rw.same(node, b) else None,
        ),
        (Pat.op("div", x, Pat.var("c", where=_is_pow2_const)), _times_reciprocal),
        # x ** 1 -> x; x ** 2 -> x * x; x ** -1 -> reciprocal x
        (Pat.op("pow", x, Pat.cst(1)), lambda rw, node, x: rw.same(node, x)),
        (Pat.op("pow", x, Pat.cst(2)), _if_same(lambda rw, node, x: rw.emit("mul", [x, x]))),
        (Pat.op("pow", x, Pat.cst(-1)), _if_same(lambda rw, node, x: rw.emit("reciprocal", [x]))),
        # neg(neg x) -> x; abs(abs x) -> abs x; abs(neg x) -> abs x; reciprocal(sqrt x) -> rsqrt x
        (Pat.op("neg", Pat.op("neg", x)), lambda rw, node, x: x),
        (Pat.op("abs", Pat.op("abs", name="x")), lambda rw, node, x: x),
        (Pat.op("abs", Pat.op("neg", x)), _emit("abs")),
        (Pat.op("reciprocal", Pat.op("sqrt", x)), _emit("rsqrt")),
        # maximum(x, x), minimum(x, x), where(c, x, x) -> x; cast to the same dtype -> x
        (Pat.op(("maximum", "minimum"), x, x), lambda rw, node, x: rw.same(node, x)),
        (Pat.op("where", Pat.var("c"), x, x), lambda rw, node, c, x: rw.same(node, x)),
        (Pat.op("cast", x), _when(lambda node, x: node.attrs["dtype"] == x.dtype)),
        # reshape to the same shape -> x; reshape(reshape x) -> one reshape
        (Pat.op("reshape", x), _when(_same_shape)),
        (Pat.op("reshape", Pat.op("reshape", x)), _reshape_of_reshape),
        # identity transpose -> x; transpose(transpose x) -> one transpose; (a @ b)^T -> b^T @ a^T
        (Pat.op("transpose", x), _node_is(_is_identity_perm)),
        (Pat.op("transpose", Pat.op("transpose", x, name="t")), _compose_transposes),
        (Pat.op("transpose", Pat.op("matmul", Pat.var("a"), Pat.var("b"), name="m")), _transpose_matmul),
        # broadcast_to the same shape -> x; broadcast_to(broadcast_to x) -> one broadcast_to
        (Pat.op("broadcast_to", x), _when(_same_shape)),
        (
            Pat.op("broadcast_to", Pat.op("broadcast_to", x)),
            lambda rw, node, x: rw.emit("broadcast_to", [x], shape=node.output.shape),
        ),
        # full slice -> x; slice(transpose y) -> transpose(slice y) for matmul operands
        (Pat.op("slice", x), _node_is(_is_full_slice)),
        (Pat.op("slice", Pat.op("transpose", y, name="t")), _slice_before_transpose),
        # im2col/col2im of a 1x1 window, stride 1, no padding (a 1x1 convolution) -> reshape
        (Pat.op(("im2col", "col2im"), x), _pointwise_window),
        # zero pad -> x; one-operand concat -> x
        (Pat.op("pad", x), _node_is(lambda node: all(lo == 0 and hi == 0 for lo, hi in node.attrs["pads"]))),
        # max_pool2d(pad(x, -inf)) -> max_pool2d(x) with the pad as its padding
        (Pat.op("max_pool2d", Pat.op("pad", x, name="p")), _pad_into_pool),
        (
            Pat.op("slice", Pat.op("max_pool2d_grad", Pat.op("pad", x, name="p"), y, name="gr")),
            _pad_into_pool_grad,
        ),
        (Pat.op("concat", x), lambda rw, node, x: x),
        # f(reshape z, ...) -> reshape(f(z, ...)) for elementwise f
        (
            Pat(where=lambda rw, v: fusion_class(rw.producer(v)) in ELEMENTWISE),
            lambda rw, node: _sink_reshape(rw, node),
        ),
    ]
)


def _drop_broadcast_operands(rw: Rewriter, node: Node) -> bool:
    """Read ``x`` instead of ``broadcast_to(x)`` where the op's own broadcasting gives the same type."""
    if fusion_class(node) != "broadcast" or node.op == "broadcast_to":
        return False
    changed = False
    for i, v in enumerate(node.inputs):
        if rw.op_of(v) != "broadcast_to":
            continue
        trial = list(node.inputs)
        trial[i] = rw.producer(v).inputs[0]
        try:
            types = infer_types(node.op, [t.type for t in trial], node.attrs)
        except Exception:
            continue
        if types == [o.type for o in node.outputs]:
            node.inputs = trial
            changed = True
    return changed


@graph_pass("simplify")
def simplify(graph: Graph, unsafe_math: bool = False) -> Graph:
    """Apply ``RULES`` (see this module's docstring) until nothing changes (rewrites ``graph`` in place).

    Nodes nothing reads are dropped too (graph inputs are left to ``dce``).
    """
    in_bodies(graph, lambda body: simplify(body, unsafe_math))
    graph_rewrite(graph, RULES, canonicalize=_drop_broadcast_operands, unsafe_math=unsafe_math)
    return graph
