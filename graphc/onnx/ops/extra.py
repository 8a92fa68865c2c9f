"""More ONNX ops built from graphc primitives: normalizations, activations, rearrangements, tests."""

from __future__ import annotations

import math

import numpy as np

from graphc.ir import to_numpy_dtype
from graphc.tensor import Tensor
from graphc.tensor_reductions import running_product

from ..context import NodeContext
from ..registry import converter
from .elementwise import const_like
from .empty_reduce import empty_reduction
from .nn import _normalize, float_t, like
from .shape import check_static_size, shape_of


def _softplus(nc: NodeContext, x: Tensor) -> Tensor:
    pos = nc.op("maximum", x, const_like(nc, 0, x))
    tail = nc.op("log", nc.op("add", const_like(nc, 1, x), nc.op("exp", nc.op("neg", nc.op("abs", x)))))
    return nc.op("add", pos, tail)


@converter("Mish", since=18)
def mish(nc: NodeContext) -> list:
    """x * tanh(softplus(x))."""
    x = float_t(nc, 0)
    return [nc.op("mul", x, nc.op("tanh", _softplus(nc, x)))]


@converter("Swish", since=24)
def swish(nc: NodeContext) -> list:
    """x * sigmoid(alpha * x)."""
    x = float_t(nc, 0)
    alpha = nc.attrs.float("alpha", 1.0)
    return [nc.op("mul", x, nc.op("mul", x, const_like(nc, alpha, x)).sigmoid())]


@converter("ThresholdedRelu", since=10)
def thresholded_relu(nc: NodeContext) -> list:
    """x where x > alpha, else 0."""
    x = float_t(nc, 0)
    alpha = nc.attrs.float("alpha", 1.0)
    return [nc.op("where", nc.op("gt", x, const_like(nc, alpha, x)), x, const_like(nc, 0, x))]


@converter("Shrink", since=9)
def shrink(nc: NodeContext) -> list:
    """x + bias below -lambd, x - bias above lambd, 0 between."""
    x = float_t(nc, 0)
    lambd, bias = nc.attrs.float("lambd", 0.5), nc.attrs.float("bias", 0.0)
    low = nc.op("lt", x, const_like(nc, -lambd, x))
    high = nc.op("gt", x, const_like(nc, lambd, x))
    zero = const_like(nc, 0, x)
    out = nc.op("where", high, nc.op("sub", x, const_like(nc, bias, x)), zero)
    return [nc.op("where", low, nc.op("add", x, const_like(nc, bias, x)), out)]


@converter("Sinh", "Cosh", "Tan", since=7)
def hyperbolic(nc: NodeContext) -> list:
    """sinh, cosh from exp; tan = sin / cos."""
    x = float_t(nc, 0)
    if nc.op_type == "Tan":
        return [nc.op("div", nc.op("sin", x), nc.op("cos", x))]
    a, b = nc.op("exp", x), nc.op("exp", nc.op("neg", x))
    total = nc.op("sub" if nc.op_type == "Sinh" else "add", a, b)
    return [nc.op("mul", total, const_like(nc, 0.5, x))]


@converter("IsNaN", since=9)
def isnan(nc: NodeContext) -> list:
    """x != x."""
    x = float_t(nc, 0)
    return [nc.op("ne", x, x)]


@converter("IsInf", since=10)
def isinf(nc: NodeContext) -> list:
    """x == +inf (detect_positive) or x == -inf (detect_negative)."""
    x = float_t(nc, 0)
    pos = nc.attrs.int("detect_positive", 1, 0, 1)
    neg = nc.attrs.int("detect_negative", 1, 0, 1)
    hits = [nc.op("eq", x, const_like(nc, s * math.inf, x)) for s, on in ((1, pos), (-1, neg)) if on]
    if not hits:
        return [nc.op("ne", x, x) & nc.op("eq", x, x)]
    return [hits[0] if len(hits) == 1 else hits[0] | hits[1]]


def _reduce_axes_attr_or_input(nc: NodeContext, rank: int) -> tuple[int, ...] | None:
    if nc.opset >= 18:
        axes = nc.static_ints(1, "axes") if nc.has(1) else []
    else:
        axes = nc.attrs.ints("axes") or []
    if not axes:
        return None if nc.attrs.int("noop_with_empty_axes", 0, 0, 1) else tuple(range(rank))
    return tuple(sorted({nc.axis(a, rank) for a in axes}))


@converter("ReduceLogSumExp", "ReduceLogSum")
def reduce_log(nc: NodeContext) -> list:
    """log(sum(exp(x))) (stable: shifted by the max) and log(sum(x))."""
    x = float_t(nc, 0)
    keep = bool(nc.attrs.int("keepdims", 1, 0, 1))
    axes = _reduce_axes_attr_or_input(nc, x.ndim)
    if axes is None:
        return [x]
    empty = empty_reduction(nc, x, axes, keep)  # -inf, the log of an empty sum
    if empty is not None:
        return [empty]
    if nc.op_type == "ReduceLogSum":
        return [nc.op("log", nc.op("sum", x, axes=axes, keepdims=keep))]
    top = nc.op("max", x, axes=axes, keepdims=True)
    finite = nc.op("where", nc.op("eq", top, top), top, const_like(nc, 0, x))  # NaN max: no shift
    finite = nc.op(
        "where", nc.op("eq", nc.op("abs", finite), const_like(nc, math.inf, x)), const_like(nc, 0, x), finite
    )
    total = nc.op("sum", nc.op("exp", nc.op("sub", x, finite)), axes=axes, keepdims=True)
    out = nc.op("add", nc.op("log", total), finite)
    if not keep:
        out = nc.op("reshape", out, shape=tuple(d for i, d in enumerate(x.shape) if i not in axes))
    return [out]


@converter("Hardmax", since=13)
def hardmax(nc: NodeContext) -> list:
    """1 at the first maximum along ``axis``, 0 elsewhere."""
    x = float_t(nc, 0)
    axis = nc.axis(nc.attrs.int("axis", -1), x.ndim)
    idx = nc.op("argmax", x, axis=axis, keepdims=True)
    pos = np.arange(x.shape[axis], dtype=np.int64).reshape(
        [x.shape[axis] if a == axis else 1 for a in range(x.ndim)]
    )
    hit = nc.op("eq", nc.tensor(pos, "hardmax_positions"), idx)
    return [nc.op("cast", hit, dtype=x.value.dtype)]


@converter("MeanVarianceNormalization", since=13)
def mean_variance_normalization(nc: NodeContext) -> list:
    """(x - mean) / sqrt(var + 1e-9) over ``axes`` (default 0, 2, 3)."""
    x = float_t(nc, 0)
    axes = nc.attrs.ints("axes", [0, 2, 3])
    norm = tuple(sorted({nc.axis(a, x.ndim) for a in axes}))
    y, _, _ = _normalize(nc, x, norm, 1e-9)
    return [y]


@converter("GroupNormalization", since=18)
def group_norm(nc: NodeContext) -> list:
    """Normalize channel groups over (group channels, spatial), then per-channel scale and bias."""
    x = float_t(nc, 0)
    if x.ndim < 3:
        raise nc.fail(f"needs input [N, C, ...], got {list(x.shape)}")
    n, c = x.shape[:2]
    groups = nc.attrs.int("num_groups", None, 1, max(c, 1))
    if c % groups:
        raise nc.fail(f"{c} channels do not split into {groups} groups")
    eps = nc.attrs.float("epsilon", 1e-5)
    grouped = nc.op(
        "reshape", x, shape=(n, groups, -1) if False else (n, groups, (c // groups) * math.prod(x.shape[2:]))
    )
    y, _, _ = _normalize(nc, grouped, (2,), eps)
    y = nc.op("reshape", y, shape=tuple(x.shape))
    bshape = (1, c) + (1,) * (x.ndim - 2)
    scale, bias = like(nc, 1, x), like(nc, 2, x)
    if nc.opset < 21:  # opset 18's scale and bias are per group
        if scale.shape != (groups,) or bias.shape != (groups,):
            raise nc.fail(f"scale and bias must have shape [{groups}]")
        per = (1, groups, 1)
        g = nc.op("reshape", y, shape=(n, groups, -1 if False else (c // groups) * math.prod(x.shape[2:])))
        g = nc.op(
            "add", nc.op("mul", g, nc.op("reshape", scale, shape=per)), nc.op("reshape", bias, shape=per)
        )
        return [nc.op("reshape", g, shape=tuple(x.shape))]
    if scale.shape != (c,) or bias.shape != (c,):
        raise nc.fail(f"scale and bias must have shape [{c}]")
    return [
        nc.op(
            "add",
            nc.op("mul", y, nc.op("reshape", scale, shape=bshape)),
            nc.op("reshape", bias, shape=bshape),
        )
    ]


@converter("RMSNormalization", since=23)
def rms_norm(nc: NodeContext) -> list:
    """x / sqrt(mean(x^2) + eps) over the axes from ``axis`` on, times scale."""
    x = float_t(nc, 0)
    axis = nc.axis(nc.attrs.int("axis", -1), x.ndim)
    if nc.attrs.int("stash_type", 1, 1, 1) != 1:
        raise nc.fail("stash_type must be 1")
    eps = nc.attrs.float("epsilon", 1e-5)
    axes = tuple(range(axis, x.ndim))
    count = math.prod(x.shape[a] for a in axes)
    ms = nc.op(
        "mul",
        nc.op("sum", nc.op("mul", x, x), axes=axes, keepdims=True),
        const_like(nc, 1.0 / max(count, 1), x),
    )
    y = nc.op("mul", x, nc.op("rsqrt", nc.op("add", ms, const_like(nc, eps, x))))
    return [nc.op("mul", y, like(nc, 1, x))]


@converter("LpNormalization")
def lp_normalization(nc: NodeContext) -> list:
    """x / ||x||_p along ``axis`` (p = 1 or 2; a zero vector stays zero)."""
    x = float_t(nc, 0)
    axis = nc.axis(nc.attrs.int("axis", -1), x.ndim)
    p = nc.attrs.int("p", 2, 1, 2)
    mag = nc.op("abs", x) if p == 1 else nc.op("mul", x, x)
    norm = nc.op("sum", mag, axes=(axis,), keepdims=True)
    if p == 2:
        norm = nc.op("sqrt", norm)
    zero = nc.op("eq", norm, const_like(nc, 0, x))
    safe = nc.op("where", zero, const_like(nc, 1, x), norm)
    return [nc.op("where", zero, const_like(nc, 0, x), nc.op("div", x, safe))]  # a zero vector stays 0


@converter("DepthToSpace", "SpaceToDepth")
def depth_space(nc: NodeContext) -> list:
    """Move channel blocks into spatial blocks (DCR or CRD) and back, by reshape and transpose."""
    x = nc.t(0)
    if x.ndim != 4:
        raise nc.fail(f"needs input [N, C, H, W], got {list(x.shape)}")
    b = nc.attrs.int("blocksize", None, 1, 4096)
    n, c, h, w = x.shape
    if nc.op_type == "SpaceToDepth":
        if h % b or w % b:
            raise nc.fail(f"H and W must be multiples of blocksize {b}")
        crd = nc.attrs.string("mode", "DCR", ("DCR", "CRD")) == "CRD"
        t = nc.op("reshape", x, shape=(n, c, h // b, b, w // b, b))
        t = nc.op("transpose", t, perm=(0, 1, 3, 5, 2, 4) if crd else (0, 3, 5, 1, 2, 4))
        return [nc.op("reshape", t, shape=(n, c * b * b, h // b, w // b))]
    if c % (b * b):
        raise nc.fail(f"C must be a multiple of blocksize^2 = {b * b}")
    mode = nc.attrs.string("mode", "DCR", ("DCR", "CRD"))
    if mode == "DCR":
        t = nc.op("reshape", x, shape=(n, b, b, c // (b * b), h, w))
        t = nc.op("transpose", t, perm=(0, 3, 4, 1, 5, 2))
    else:
        t = nc.op("reshape", x, shape=(n, c // (b * b), b, b, h, w))
        t = nc.op("transpose", t, perm=(0, 1, 4, 2, 5, 3))
    return [nc.op("reshape", t, shape=(n, c // (b * b), h * b, w * b))]


@converter("OneHot", since=9)
def one_hot(nc: NodeContext) -> list:
    """values[1] where index == position along the new ``axis`` (negative indices wrap), else values[0]."""
    idx = nc.t(0)
    depth_arr = nc.static(1, "depth")
    if depth_arr.size != 1:
        raise nc.fail("depth must be one number")
    depth = int(depth_arr.reshape(-1)[0])
    if depth < 1:
        raise nc.fail(f"depth must be positive, got {depth}")
    values = nc.t(2)
    if values.shape != (2,):
        raise nc.fail("values must have two entries")
    rank = idx.ndim + 1
    axis = nc.axis(nc.attrs.int("axis", -1), rank)
    check_static_size(nc, (*idx.shape, depth))
    if idx.value.dtype not in ("i32", "i64"):
        idx = nc.op("cast", idx, dtype="i64")
    dt = idx.value.dtype
    idx = nc.op(
        "where", nc.op("lt", idx, nc.ctx.const(0, dt)), nc.op("add", idx, nc.ctx.const(depth, dt)), idx
    )
    shape = list(idx.shape)
    shape.insert(axis, 1)
    idx = nc.op("reshape", idx, shape=tuple(shape))
    pos = np.arange(depth, dtype=np.int64 if dt == "i64" else np.int32).reshape(
        [depth if a == axis else 1 for a in range(rank)]
    )
    hit = nc.op("eq", idx, nc.tensor(pos, "one_hot_positions"))
    off = nc.op("reshape", nc.op("slice", values, starts=(0,), stops=(1,), steps=(1,)), shape=())
    on = nc.op("reshape", nc.op("slice", values, starts=(1,), stops=(2,), steps=(1,)), shape=())
    return [nc.op("where", hit, on, off)]


@converter("EyeLike", since=9)
def eye_like(nc: NodeContext) -> list:
    """An identity-like 2-D constant with ones on diagonal k."""
    dims = shape_of(nc.inputs[0])
    if len(dims) != 2:
        raise nc.fail("needs a 2-D input")
    k = nc.attrs.int("k", 0, -(2**31), 2**31)
    dtype_code = nc.attrs.int("dtype", 0, 0, 64)
    from ..proto import graphc_dtype

    if dtype_code:
        name = graphc_dtype(dtype_code, nc.where)
    elif isinstance(nc.inputs[0], Tensor):
        name = nc.inputs[0].value.dtype
    else:
        name = {"f": "f32", "i": "i64", "b": "bool"}[np.asarray(nc.static(0)).dtype.kind]
        name = {np.dtype(np.float64): "f64", np.dtype(np.float16): "f16", np.dtype(np.int32): "i32"}.get(
            np.asarray(nc.static(0)).dtype, name
        )
    np_dtype = to_numpy_dtype(name)
    check_static_size(nc, dims)
    return [np.eye(dims[0], dims[1], k=k, dtype=np_dtype)]


@converter("CumSum", since=11)
def cumsum(nc: NodeContext) -> list:
    """Running sums along a constant axis (exclusive, reverse), as a sum of shifted copies."""
    x = nc.t(0)
    arr = nc.static(1, "axis")
    if arr.size != 1 or arr.dtype.kind not in "iu":
        raise nc.fail("axis must be one integer")
    axis = nc.axis(int(arr.reshape(-1)[0]), x.ndim)
    exclusive = nc.attrs.int("exclusive", 0, 0, 1)
    reverse = nc.attrs.int("reverse", 0, 0, 1)
    n = x.shape[axis]
    if n > 4096:
        raise nc.fail(f"CumSum over {n} elements is not supported (at most 4096)")
    if x.value.dtype == "bool":
        raise nc.fail("needs a numeric input")
    # [n, n] 0/1 matrix M with out[i] = sum_j M[i, j] x[j], applied as a broadcast product + sum
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    if reverse:
        m = (j > i) if exclusive else (j >= i)
    else:
        m = (j < i) if exclusive else (j <= i)
    check_static_size(nc, (*x.shape, n))
    xs = nc.op("reshape", x, shape=(*x.shape[: axis + 1], 1, *x.shape[axis + 1 :]))  # [.., n_j, 1, ..]
    mask_shape = [1] * (x.ndim + 1)
    mask_shape[axis], mask_shape[axis + 1] = n, n
    mask = nc.tensor(
        m.T.astype(to_numpy_dtype(x.value.dtype)).reshape(mask_shape),
        "cumsum_mask",
    )
    return [nc.op("sum", nc.op("mul", xs, mask), axes=(axis,))]


@converter("CumProd", since=26)
def cumprod(nc: NodeContext) -> list:
    """Running products along a constant axis (exclusive, reverse): log2(n) products of shifted copies."""
    x = nc.t(0)
    arr = nc.static(1, "axis")
    if arr.size != 1 or arr.dtype.kind not in "iu":
        raise nc.fail("axis must be one integer")
    axis = nc.axis(int(arr.reshape(-1)[0]), x.ndim)
    exclusive = bool(nc.attrs.int("exclusive", 0, 0, 1))
    reverse = bool(nc.attrs.int("reverse", 0, 0, 1))
    if x.value.dtype == "bool":
        raise nc.fail("needs a numeric input")
    return [running_product(x, axis, exclusive, reverse)]
