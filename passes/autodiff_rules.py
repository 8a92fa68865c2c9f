"""VJP rules: for each primitive, how the adjoint of its output becomes adjoints of its inputs.

A rule is ``rule(e, node, g, needs) -> list[Value | None]``: ``e`` is an :class:`Emitter` that
appends primitive nodes to the joint graph (tagged with the forward node's source), ``node`` the
forward node, ``g`` the adjoint of its (single) output, ``needs[i]`` whether input ``i`` wants a
gradient (rules skip work for inputs that do not). The result has one entry per input: a Value of
exactly that input's type, or None for "no gradient".

Conventions worth knowing (they match PyTorch):
- Broadcasting binary ops sum the adjoint over the broadcast axes and reshape it back.
- ``maximum``/``minimum``: on ties each operand gets half the gradient, and a NaN operand all of it
  (torch's derivatives.yaml).
- ``max``/``min`` reductions: the gradient is split evenly over all positions equal to the
  result (torch's ``amax``/``max()`` rule, "evenly distribute"), not routed to one arbitrary index.
- ``abs``: gradient ``sign(x)``, so 0 at 0.
- ``prod``: each element gets the product of the others in its group, exact with zeros (one zero:
  the zero gets the product of the rest, the others 0; two or more: all 0), torch's rule.
- ``pow``: d/d(exponent) = y * log(base) where base > 0 and 0 elsewhere (the real derivative does
  not exist for base < 0; at base == 0 the limit for a positive exponent is 0).
- ``cast``: float -> float casts the adjoint back; a cast to int/bool has no gradient, and int ->
  float gives none because integer values never take gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from graphc.ir import Graph, GraphcError, Node, TensorType, Value, to_numpy_dtype
from graphc.ir.types import FLOAT_DTYPES


class Emitter:
    """Appends backward nodes to a graph; every node gets ``source`` (the forward node's)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.source: str | None = None

    def op(self, name: str, *inputs: Value, **attrs: object) -> Value:
        """Append a one-output primitive node and return its output."""
        return self.graph.add_node(name, inputs, attrs, self.source).output

    def const(self, value: float, dtype: str) -> Value:
        """A scalar constant of the given dtype."""
        return self.op("const", value=float(value) if dtype in FLOAT_DTYPES else value, dtype=dtype)

    def zeros(self, type: TensorType) -> Value:
        """A zero tensor of the given type (a broadcast scalar, so fusion can inline it)."""
        return self.op("broadcast_to", self.const(0.0, type.dtype), shape=type.shape)

    def neg(self, x: Value) -> Value:
        """-x."""
        return self.op("neg", x)

    def add(self, a: Value, b: Value) -> Value:
        """a + b."""
        return self.op("add", a, b)

    def sub(self, a: Value, b: Value) -> Value:
        """a - b."""
        return self.op("sub", a, b)

    def mul(self, a: Value, b: Value) -> Value:
        """a * b."""
        return self.op("mul", a, b)

    def div(self, a: Value, b: Value) -> Value:
        """a / b."""
        return self.op("div", a, b)

    def scale(self, x: Value, factor: float) -> Value:
        """x * factor (a scalar constant of x's dtype)."""
        return self.mul(x, self.const(factor, x.dtype))

    def reshape(self, x: Value, shape: tuple[int, ...]) -> Value:
        """x reshaped, or x itself when the shape already matches."""
        return x if x.shape == tuple(shape) else self.op("reshape", x, shape=tuple(shape))

    def sum_to(self, x: Value, shape: tuple[int, ...]) -> Value:
        """Sum ``x`` over the axes NumPy broadcasting added or stretched to reach its shape."""
        shape = tuple(shape)
        if x.shape == shape:
            return x
        lead = x.type.rank - len(shape)
        axes = list(range(lead))
        axes += [lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1]
        if axes:
            x = self.op("sum", x, axes=tuple(axes), keepdims=True)
        return self.reshape(x, shape)


Rule = Callable[[Emitter, Node, Value, list[bool]], list[Value | None]]
VJP_RULES: dict[str, Rule] = {}

# Ops whose output is piecewise constant in (or independent of) their float inputs, or that have
# no float inputs at all: their gradient is zero by definition, and autodiff stops there.
NON_DIFFERENTIABLE: frozenset[str] = frozenset(
    {"lt", "le", "eq", "ne", "gt", "ge", "argmax", "sign", "rng_uniform", "const", "quantize", "qmatmul"}
    | {"floor", "ceil", "round", "trunc", "floordiv"}
    | {"stop_gradient"}  # Tensor.detach() / .data (graphc's PyTorch surface)
    # integer (and bool) operands only: no float gradient to pass on
    | {"bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "left_shift", "right_shift"}
)


def _rule(*names: str) -> Callable[[Rule], Rule]:
    def wrap(fn: Rule) -> Rule:
        for name in names:
            VJP_RULES[name] = fn
        return fn

    return wrap


def _x(node: Node) -> Value:
    return node.inputs[0]


# ---------------------------------------------------------------- pointwise unary
@_rule("neg")
def _neg(e: Emitter, node: Node, g: Value, needs: list[bool]) -> list[Value | None]:
    return [e.neg(g)]


@_rule("exp")
def _exp(e, node, g, needs):
    return [e.mul(g, node.output)]


@_rule("log")
def _log(e, node, g, needs):
    return [e.div(g, _x(node))]


@_rule("sqrt")
def _sqrt(e, node, g, needs):
    # d sqrt(x) = 1 / (2 sqrt(x)): reuse the forward result instead of recomputing it.
    return [e.div(g, e.scale(node.output, 2.0))]


@_rule("rsqrt")
def _rsqrt(e, node, g, needs):
    # d x^(-1/2) = -1/2 x^(-3/2) = -1/2 y^3.
    y = node.output
    return [e.mul(g, e.scale(e.mul(y, e.mul(y, y)), -0.5))]


@_rule("tanh")
def _tanh(e, node, g, needs):
    y = node.output
    return [e.mul(g, e.sub(e.const(1.0, y.dtype), e.mul(y, y)))]


@_rule("erf")
def _erf(e, node, g, needs):
    x = _x(node)
    bump = e.op("exp", e.neg(e.mul(x, x)))
    return [e.mul(g, e.scale(bump, 2.0 / math.sqrt(math.pi)))]


@_rule("abs")
def _abs(e, node, g, needs):
    return [e.mul(g, e.op("sign", _x(node)))]


@_rule("sin")
def _sin(e, node, g, needs):
    return [e.mul(g, e.op("cos", _x(node)))]


@_rule("cos")
def _cos(e, node, g, needs):
    return [e.neg(e.mul(g, e.op("sin", _x(node))))]


@_rule("reciprocal")
def _reciprocal(e, node, g, needs):
    y = node.output
    return [e.neg(e.mul(g, e.mul(y, y)))]


def _one_minus_square(e: Emitter, x: Value) -> Value:
    return e.sub(e.const(1.0, x.dtype), e.mul(x, x))


@_rule("acos", "asin")
def _acos_asin(e, node, g, needs):
    # d asin(x) = 1 / sqrt(1 - x^2) = -d acos(x) (torch's rsqrt form: inf at +-1, NaN outside).
    d = e.mul(g, e.op("rsqrt", _one_minus_square(e, _x(node))))
    return [e.neg(d) if node.op == "acos" else d]


@_rule("atan")
def _atan(e, node, g, needs):
    x = _x(node)
    return [e.div(g, e.add(e.const(1.0, x.dtype), e.mul(x, x)))]


@_rule("acosh", "asinh")
def _acosh_asinh(e, node, g, needs):
    # d acosh(x) = 1 / sqrt(x^2 - 1), d asinh(x) = 1 / sqrt(x^2 + 1).
    x = _x(node)
    one = e.const(1.0, x.dtype)
    square = e.mul(x, x)
    return [e.mul(g, e.op("rsqrt", e.sub(square, one) if node.op == "acosh" else e.add(square, one)))]


@_rule("atanh")
def _atanh(e, node, g, needs):
    return [e.div(g, _one_minus_square(e, _x(node)))]


@_rule("cast")
def _cast(e, node, g, needs):
    x = _x(node)
    if x.dtype not in FLOAT_DTYPES or node.output.dtype not in FLOAT_DTYPES:
        return [None]
    return [g if g.dtype == x.dtype else e.op("cast", g, dtype=x.dtype)]


# ---------------------------------------------------------------- broadcast binary
@_rule("add")
def _add(e, node, g, needs):
    a, b = node.inputs
    return [e.sum_to(g, a.shape) if needs[0] else None, e.sum_to(g, b.shape) if needs[1] else None]


@_rule("sub")
def _sub(e, node, g, needs):
    a, b = node.inputs
    return [e.sum_to(g, a.shape) if needs[0] else None, e.sum_to(e.neg(g), b.shape) if needs[1] else None]


@_rule("mul")
def _mul(e, node, g, needs):
    a, b = node.inputs
    return [
        e.sum_to(e.mul(g, b), a.shape) if needs[0] else None,
        e.sum_to(e.mul(g, a), b.shape) if needs[1] else None,
    ]


@_rule("div")
def _div(e, node, g, needs):
    a, b = node.inputs
    # y = a / b: dy/da = 1/b, dy/db = -a/b^2 = -(1/b) * y.
    t = e.div(g, b)
    return [
        e.sum_to(t, a.shape) if needs[0] else None,
        e.sum_to(e.neg(e.mul(t, node.output)), b.shape) if needs[1] else None,
    ]


@_rule("pow")
def _pow(e, node, g, needs):
    a, b = node.inputs
    y = node.output
    ga = gb = None
    if needs[0]:
        # b * a^(b-1), not b * y / a, so a == 0 with b >= 1 stays finite.
        da = e.mul(b, e.op("pow", a, e.sub(b, e.const(1.0, b.dtype))))
        ga = e.sum_to(e.mul(g, da), a.shape)
    if needs[1]:
        # log(a) only where a > 0 (see the module docstring); elsewhere the gradient is 0.
        positive = e.op("gt", a, e.const(0.0, a.dtype))
        safe_a = e.op("where", positive, a, e.const(1.0, a.dtype))
        gb = e.sum_to(e.mul(g, e.mul(y, e.op("log", safe_a))), b.shape)
    return [ga, gb]


def _remainder_rule(quotient: str) -> Rule:
    # y = a - q(a / b) * b with q = trunc (fmod) or floor (remainder), piecewise constant:
    # dy/da = 1, dy/db = -q(a / b), as torch's derivatives.yaml.
    def rule(e, node, g, needs):
        a, b = node.inputs
        ga = e.sum_to(g, a.shape) if needs[0] else None
        gb = None
        if needs[1]:
            q = e.op(quotient, e.div(a, b))
            gb = e.sum_to(e.neg(e.mul(g, q)), b.shape)
        return [ga, gb]

    return rule


VJP_RULES["fmod"] = _remainder_rule("trunc")
VJP_RULES["remainder"] = _remainder_rule("floor")


def _select_rule(winner: str, loser: str) -> Rule:
    # maximum (winner "gt") / minimum (winner "lt"): an operand gets the gradient unless it
    # loses, a tie gives half to each, and a NaN operand (no comparison holds) gets all of it, as
    # torch's derivatives.yaml does.
    def rule(e, node, g, needs):
        a, b = node.inputs
        zero = e.const(0.0, g.dtype)
        share = e.op("where", e.op("eq", a, b), e.scale(g, 0.5), g)
        ga = e.op("where", e.op(loser, a, b), zero, share) if needs[0] else None
        gb = e.op("where", e.op(winner, a, b), zero, share) if needs[1] else None
        return [
            e.sum_to(ga, a.shape) if ga is not None else None,
            e.sum_to(gb, b.shape) if gb is not None else None,
        ]

    return rule


VJP_RULES["maximum"] = _select_rule("gt", "lt")
VJP_RULES["minimum"] = _select_rule("lt", "gt")


@_rule("where")
def _where(e, node, g, needs):
    cond, a, b = node.inputs
    zero = e.const(0.0, g.dtype)
    return [
        None,
        e.sum_to(e.op("where", cond, g, zero), a.shape) if needs[1] else None,
        e.sum_to(e.op("where", cond, zero, g), b.shape) if needs[2] else None,
    ]


@_rule("broadcast_to")
def _broadcast_to(e, node, g, needs):
    return [e.sum_to(g, _x(node).shape)]


# ---------------------------------------------------------------- reductions
def _keepdims_shape(x: Value, axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axes else d for i, d in enumerate(x.shape))


@_rule("sum")
def _sum(e, node, g, needs):
    x = _x(node)
    gk = e.reshape(g, _keepdims_shape(x, node.attrs["axes"]))
    return [e.op("broadcast_to", gk, shape=x.shape)]


@_rule("max", "min")
def _max(e, node, g, needs):
    x = _x(node)
    axes = node.attrs["axes"]
    kshape = _keepdims_shape(x, axes)
    hit = e.op("cast", e.op("eq", x, e.reshape(node.output, kshape)), dtype=x.dtype)
    # Split evenly over ties: divide by how many positions attain the extreme.
    count = e.op("sum", hit, axes=axes, keepdims=True)
    return [e.mul(hit, e.div(e.reshape(g, kshape), count))]


@_rule("prod")
def _prod(e, node, g, needs):
    # Each element's gradient is the product of the others in its group, found by counting
    # zeros: none, the group's product over the element (torch's result / x); exactly one, the
    # product of the nonzeros at the zero and 0 elsewhere; two or more, 0 everywhere.
    x = _x(node)
    axes = node.attrs["axes"]
    kshape = _keepdims_shape(x, axes)
    zero, one = e.const(0.0, x.dtype), e.const(1.0, x.dtype)
    is_zero = e.op("eq", x, zero)
    safe = e.op("where", is_zero, one, x)
    nonzero_prod = e.op("prod", safe, axes=axes, keepdims=True)
    zeros = e.op("sum", e.op("cast", is_zero, dtype=x.dtype), axes=axes, keepdims=True)
    no_zero = e.op("div", nonzero_prod, safe)
    one_zero = e.op("where", e.op("eq", zeros, one), e.op("where", is_zero, nonzero_prod, zero), zero)
    others = e.op("where", e.op("eq", zeros, zero), no_zero, one_zero)
    return [e.mul(others, e.reshape(g, kshape))]


# ---------------------------------------------------------------- matmul
def _swap_last(e: Emitter, x: Value) -> Value:
    r = x.type.rank
    return e.op("transpose", x, perm=(*range(r - 2), r - 1, r - 2))


@_rule("matmul")
def _matmul(e, node, g, needs):
    a, b = node.inputs
    # Batched with broadcasting: the products have the full batch shape; sum_to folds the
    # batch dims an operand was broadcast over.
    ga = e.sum_to(e.op("matmul", g, _swap_last(e, b)), a.shape) if needs[0] else None
    gb = e.sum_to(e.op("matmul", _swap_last(e, a), g), b.shape) if needs[1] else None
    return [ga, gb]


# ---------------------------------------------------------------- movement
@_rule("reshape")
def _reshape(e, node, g, needs):
    return [e.reshape(g, _x(node).shape)]


@_rule("transpose")
def _transpose(e, node, g, needs):
    perm = node.attrs["perm"]
    inverse = tuple(perm.index(i) for i in range(len(perm)))
    return [e.op("transpose", g, perm=inverse)]


@_rule("slice")
def _slice(e, node, g, needs):
    x = _x(node)
    if g.type.numel == 0:
        return [e.zeros(x.type)]
    starts, steps = node.attrs["starts"], node.attrs["steps"]
    # Strided axes: interleave step-1 zeros after each element ([n] -> [n,1] -> pad [n,step] ->
    # [n*step]) so element j lands at j*step, trim the tail that would run past the input, and
    # finally pad by `start` in front. All ops are injective, so the result fuses well and needs
    # no index tensor (a scatter_add would).
    strided = [ax for ax in range(x.type.rank) if steps[ax] > 1 and g.shape[ax] > 1]
    cur = g
    lengths = list(g.shape)
    if strided:
        expanded, pads, flat = [], [], []
        for ax, n in enumerate(g.shape):
            if ax in strided:
                expanded += [n, 1]
                pads += [(0, 0), (0, steps[ax] - 1)]
                flat.append(n * steps[ax])
                lengths[ax] = min(n * steps[ax], x.shape[ax] - starts[ax])
            else:
                expanded.append(n)
                pads.append((0, 0))
                flat.append(n)
        cur = e.reshape(cur, tuple(expanded))
        cur = e.op("pad", cur, pads=tuple(pads))
        cur = e.reshape(cur, tuple(flat))
        if tuple(lengths) != tuple(flat):
            cur = e.op("slice", cur, starts=(0,) * len(flat), stops=tuple(lengths), steps=(1,) * len(flat))
    pads = tuple((s, d - s - n) for s, d, n in zip(starts, x.shape, lengths))
    if any(lo or hi for lo, hi in pads):
        cur = e.op("pad", cur, pads=pads)
    return [cur]


@_rule("pad")
def _pad(e, node, g, needs):
    x = _x(node)
    starts = tuple(lo for lo, _ in node.attrs["pads"])
    stops = tuple(lo + d for (lo, _), d in zip(node.attrs["pads"], x.shape))
    return [e.op("slice", g, starts=starts, stops=stops, steps=(1,) * len(starts))]


@_rule("concat")
def _concat(e, node, g, needs):
    axis = node.attrs["axis"]
    out: list[Value | None] = []
    offset = 0
    for v, need in zip(node.inputs, needs):
        size = v.shape[axis]
        if need:
            starts = tuple(offset if i == axis else 0 for i in range(g.type.rank))
            stops = tuple(offset + size if i == axis else d for i, d in enumerate(g.shape))
            out.append(e.op("slice", g, starts=starts, stops=stops, steps=(1,) * g.type.rank))
        else:
            out.append(None)
        offset += size
    return out


# ---------------------------------------------------------------- indexing
@_rule("gather")
def _gather(e, node, g, needs):
    x, idx = node.inputs
    # Repeated indices add up: exactly what scatter_add does.
    return [e.op("scatter_add", idx, g, axis=node.attrs["axis"], shape=x.shape), None]


@_rule("scatter_add")
def _scatter_add(e, node, g, needs):
    idx, _ = node.inputs
    return [None, e.op("gather", g, idx, axis=node.attrs["axis"])]


@_rule("scatter_reduce")
def _scatter_reduce(e, node, g, needs):
    idx, upd = node.inputs
    axis = node.attrs["axis"]
    if node.attrs["reduction"] == "mul":
        raise GraphcError(
            f"autodiff: scatter_reduce with reduction='mul' ({node.source or 'no source'}) has no "
            "gradient rule (max and min have one)"
        )
    # max/min: an output's gradient goes to the updates that attain it, split evenly over ties.
    hit = e.op("cast", e.op("eq", upd, e.op("gather", node.output, idx, axis=axis)), dtype=upd.dtype)
    count = e.op("scatter_add", idx, hit, axis=axis, shape=node.output.shape)
    count = e.op("maximum", count, e.const(1.0, count.dtype))  # 0 only where no update landed
    return [None, e.mul(hit, e.op("gather", e.div(g, count), idx, axis=axis))]


# ---------------------------------------------------------------- image
_WINDOW_ATTRS = ("kernel", "stride", "padding", "dilation")


@_rule("im2col")
def _im2col(e, node, g, needs):
    window = {k: node.attrs[k] for k in _WINDOW_ATTRS}
    # col2im is im2col's transpose: overlapping windows add up, padding is cropped away.
    return [e.op("col2im", g, image_shape=_x(node).shape, **window)]


@_rule("col2im")
def _col2im(e, node, g, needs):
    window = {k: node.attrs[k] for k in _WINDOW_ATTRS}
    return [e.op("im2col", g, **window)]


@_rule("depthwise_conv2d")
def _depthwise_conv2d(e, node, g, needs):
    # Through the im2col form y[n, c, l] = sum_k cols[n, c, k, l] * w[c, k]: dx is col2im of
    # g * w spread over the window, dw sums cols * g over the batch and the output positions.
    x, w = node.inputs
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    k, size = kh * kw, g.shape[2] * g.shape[3]
    window = {"kernel": (kh, kw), **{a: node.attrs[a] for a in ("stride", "padding", "dilation")}}
    g4 = e.reshape(g, (n, c, 1, size))
    dx = dw = None
    if needs[0]:
        spread = e.mul(g4, e.reshape(w, (1, c, k, 1)))
        dx = e.op("col2im", e.reshape(spread, (n, c * k, size)), image_shape=x.shape, **window)
    if needs[1]:
        cols = e.reshape(e.op("im2col", x, **window), (n, c, k, size))
        dw = e.reshape(e.op("sum", e.mul(cols, g4), axes=(0, 3), keepdims=False), w.shape)
    return [dx, dw]


_POOL_ATTRS = ("kernel", "stride", "dilation", "padding")


@_rule("max_pool2d")
def _max_pool2d(e, node, g, needs):
    pool = {k: node.attrs[k] for k in _POOL_ATTRS}
    return [e.op("max_pool2d_grad", _x(node), g, **pool)]


@_rule("max_pool2d_grad")
def _max_pool2d_grad(e, node, g, needs):
    # dx = S^T dy where S picks each window's first maximal element of x (piecewise constant in
    # x), so the adjoint of dy is S g: g's window entries at x's per-window argmax.
    x, dy = node.inputs
    if not needs[1]:
        return [None, None]
    (kh, kw), pool = node.attrs["kernel"], {k: node.attrs[k] for k in _POOL_ATTRS}
    n, c, oh, ow = dy.shape
    kk = kh * kw
    top, left, bottom, right = pool["padding"]

    def windows(v: Value, fill: float) -> Value:
        if any(pool["padding"]):  # the pool's padding cells: -inf in x, 0 in g (picked, they add 0)
            v = e.op("pad", v, pads=((0, 0), (0, 0), (top, bottom), (left, right)), value=fill)
        cols = e.op("im2col", v, kernel=pool["kernel"], stride=pool["stride"], dilation=pool["dilation"])
        return e.reshape(cols, (n, c, kk, oh * ow))

    low = -math.inf if x.dtype in FLOAT_DTYPES else float(np.iinfo(to_numpy_dtype(x.dtype)).min)
    first = e.op("argmax", windows(x, low), axis=2, keepdims=True)
    iota = e.op("concat", *(e.reshape(e.const(k, first.dtype), (1,)) for k in range(kk)), axis=0)
    picked = e.op("cast", e.op("eq", first, e.reshape(iota, (kk, 1))), dtype=g.dtype)
    selected = e.op("sum", e.mul(windows(g, 0.0), picked), axes=(2,), keepdims=False)
    return [None, e.reshape(selected, dy.shape)]


# ---------------------------------------------------------------- quantization
# quantize and qmatmul have integer results (no gradient); dequantize passes the adjoint to its
# scale; fake_quantize is the straight-through estimator: the adjoint passes unchanged where
# x / scale lies within [lo - z - 1/2, hi - z + 1/2] (it rounds into the dtype's range), else 0.
@_rule("dequantize")
def _dequantize(e, node, g, needs):
    q, scale, zero = node.inputs
    if not needs[1]:
        return [None, None, None]
    centered = e.op(
        "cast", e.sub(e.op("cast", q, dtype="i64"), e.op("cast", zero, dtype="i64")), dtype=g.dtype
    )
    return [None, e.sum_to(e.mul(g, centered), scale.shape), None]


@_rule("fake_quantize")
def _fake_quantize(e, node, g, needs):
    x, scale, zero = node.inputs
    if not needs[0]:
        return [None, None, None]
    info = np.iinfo(zero.type.np_dtype)  # the quantized dtype's range (i8, u8, i16, u16)
    info_lo, info_hi = int(info.min), int(info.max)
    t = e.div(x, scale)
    z = e.op("cast", zero, dtype=x.dtype)
    low = e.sub(e.const(info_lo - 0.5, x.dtype), z)
    high = e.sub(e.const(info_hi + 0.5, x.dtype), z)
    zero_g = e.const(0.0, g.dtype)
    inside = e.op("where", e.op("ge", t, low), e.op("where", e.op("le", t, high), g, zero_g), zero_g)
    return [e.sum_to(inside, x.shape), None, None]


# qlinear/qconv2d (quantize_matmuls' int8 GEMMs with epilogues) exist only in inference plans: refused.
@_rule("qlinear", "qconv2d")
def _qlinear(e, node, g, needs):
    raise GraphcError(
        f"autodiff: {node.op} ({node.source or 'no source'}) is an inference-only int8 kernel; "
        "differentiate the float model (or its fake_quantize form) instead"
    )


def rule_for(node: Node) -> Rule | None:
    """The VJP rule of a node's op; None for a non-differentiable op; an error for fused/unknown."""
    if node.op in NON_DIFFERENTIABLE:
        return None
    if node.op == "fused":
        raise GraphcError(
            f"autodiff: cannot differentiate a fused node ({node.source or 'no source'}); "
            "run autodiff before fusion (the training pipeline does)"
        )
    try:
        return VJP_RULES[node.op]
    except KeyError:
        raise GraphcError(f"autodiff: no VJP rule for op {node.op!r}") from None


# ---------------------------------------------------------------- distributed
# The gradient allreduce is appended after autodiff (graphc.distributed); differentiating
# through it is refused rather than given a silent zero.
@_rule("allreduce_start", "allreduce_wait")
def _collective(e, node, g, needs):
    raise GraphcError(
        f"autodiff: {node.op} (the gradient allreduce of compile_train(distributed=True)) has no "
        "gradient; it belongs after the backward graph, not inside the differentiated function"
    )
