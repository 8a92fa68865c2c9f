"""Neural-network ONNX ops: Gemm, MatMul, softmax, normalizations, LRN, reductions, arg-max."""

from __future__ import annotations

import math

import numpy as np

from graphc import functional as F
from graphc.ir.types import FLOAT_DTYPES
from graphc.tensor import Tensor

from ..context import NodeContext
from ..registry import converter
from .elementwise import const_like
from .empty_reduce import empty_reduction
from .shape import shape_of

_FLOATS = FLOAT_DTYPES  # float_t: the float dtypes a converter takes


def float_t(nc: NodeContext, i: int) -> Tensor:
    """Input ``i`` as a float Tensor, or a GraphcError."""
    x = nc.t(i)
    if x.value.dtype not in _FLOATS:
        raise nc.fail(f"input {i} must be float, got {x.value.dtype}")
    return x


def like(nc: NodeContext, i: int, x: Tensor) -> Tensor:
    """Input ``i`` as a Tensor of ``x``'s dtype."""
    t = nc.t(i)
    return t if t.value.dtype == x.value.dtype else nc.op("cast", t, dtype=x.value.dtype)


@converter("MatMul")
def matmul(nc: NodeContext) -> list:
    """NumPy matmul (1-D operands included)."""
    a = nc.t(0)
    return [F.matmul(a, like(nc, 1, a))]


def _transpose2(nc: NodeContext, t: Tensor) -> Tensor:
    return nc.op("transpose", t, perm=(1, 0))


@converter("Gemm")
def gemm(nc: NodeContext) -> list:
    """alpha * A' B' + beta * C."""
    a = float_t(nc, 0)
    b = like(nc, 1, a)
    if a.ndim != 2 or b.ndim != 2:
        raise nc.fail(f"needs 2-D A and B, got {list(a.shape)} and {list(b.shape)}")
    alpha, beta = nc.attrs.float("alpha", 1.0), nc.attrs.float("beta", 1.0)
    if nc.attrs.int("transA", 0, 0, 1):
        a = _transpose2(nc, a)
    if nc.attrs.int("transB", 0, 0, 1):
        b = _transpose2(nc, b)
    if a.shape[1] != b.shape[0]:
        raise nc.fail(f"inner dimensions differ: {list(a.shape)} @ {list(b.shape)}")
    y = nc.op("matmul", a, b)
    if alpha != 1.0:
        y = nc.op("mul", y, const_like(nc, alpha, y))
    if nc.has(2) and beta != 0.0:
        c = like(nc, 2, y)
        if beta != 1.0:
            c = nc.op("mul", c, const_like(nc, beta, c))
        y = nc.op("add", y, c)
    return [y]


def _softmax(nc: NodeContext, log: bool) -> list:
    x = float_t(nc, 0)
    rank = x.ndim
    default = -1 if nc.opset >= 13 else 1
    axis = nc.axis(nc.attrs.int("axis", default), rank)
    fn = F.log_softmax if log else F.softmax
    if nc.opset >= 13:
        return [fn(x, axis)]
    shape = tuple(x.shape)
    flat = nc.op("reshape", x, shape=(math.prod(shape[:axis]), math.prod(shape[axis:])))
    return [nc.op("reshape", fn(flat, 1), shape=shape)]


@converter("Softmax")
def softmax(nc: NodeContext) -> list:
    """Softmax over ``axis`` (opset < 13: over all axes from ``axis`` on)."""
    return _softmax(nc, False)


@converter("LogSoftmax")
def log_softmax(nc: NodeContext) -> list:
    """Log-softmax, the same axis rules as Softmax."""
    return _softmax(nc, True)


def _channel(nc: NodeContext, i: int, x: Tensor) -> Tensor:
    t = like(nc, i, x)
    if t.shape != (x.shape[1],):
        raise nc.fail(f"input {i} must have shape [{x.shape[1]}], got {list(t.shape)}")
    return nc.op("reshape", t, shape=(1, x.shape[1]) + (1,) * (x.ndim - 2))


@converter("BatchNormalization")
def batch_norm(nc: NodeContext) -> list:
    """Batch norm with the given mean and variance, or (training_mode=1) with the batch's own.

    In training mode Y is normalized with the batch's mean and biased variance over every axis
    but 1, and the running_mean / running_var outputs are ``input * momentum + batch * (1 -
    momentum)``, as onnx's reference (opset 14+).
    """
    training = nc.attrs.int("training_mode", 0, 0, 1)
    x = float_t(nc, 0)
    if x.ndim < 2:
        raise nc.fail(f"needs input [N, C, ...], got {list(x.shape)}")
    eps = nc.attrs.float("epsilon", 1e-5)
    scale, bias, mean, var = (_channel(nc, i, x) for i in (1, 2, 3, 4))
    if not training:
        inv = nc.op("rsqrt", nc.op("add", var, const_like(nc, eps, x)))
        y = nc.op("mul", nc.op("sub", x, mean), nc.op("mul", inv, scale))
        return [nc.op("add", y, bias)]
    momentum = nc.attrs.float("momentum", 0.9)
    axes = (0, *range(2, x.ndim))
    count = const_like(nc, 1.0 / max(1, math.prod(x.shape[a] for a in axes)), x)
    batch_mean = nc.op("mul", nc.op("sum", x, axes=axes, keepdims=True), count)
    centered = nc.op("sub", x, batch_mean)
    batch_var = nc.op("mul", nc.op("sum", nc.op("mul", centered, centered), axes=axes, keepdims=True), count)
    inv = nc.op("rsqrt", nc.op("add", batch_var, const_like(nc, eps, x)))
    y = nc.op("add", nc.op("mul", centered, nc.op("mul", inv, scale)), bias)

    def running(old: Tensor, batch: Tensor) -> Tensor:
        mixed = nc.op(
            "add",
            nc.op("mul", old, const_like(nc, momentum, x)),
            nc.op("mul", batch, const_like(nc, 1.0 - momentum, x)),
        )
        return nc.op("reshape", mixed, shape=(x.shape[1],))

    return [y, running(mean, batch_mean), running(var, batch_var)]


def _normalize(
    nc: NodeContext, x: Tensor, axes: tuple[int, ...], eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    n = math.prod(x.shape[a] for a in axes)
    mean = nc.op("mul", nc.op("sum", x, axes=axes, keepdims=True), const_like(nc, 1.0 / max(n, 1), x))
    centered = nc.op("sub", x, mean)
    sq = nc.op("mul", centered, centered)
    var = nc.op("mul", nc.op("sum", sq, axes=axes, keepdims=True), const_like(nc, 1.0 / max(n, 1), x))
    inv = nc.op("rsqrt", nc.op("add", var, const_like(nc, eps, x)))
    return nc.op("mul", centered, inv), mean, inv


@converter("InstanceNormalization")
def instance_norm(nc: NodeContext) -> list:
    """Normalize each (sample, channel) over the spatial axes, then scale and shift."""
    x = float_t(nc, 0)
    if x.ndim < 3:
        raise nc.fail(f"needs input [N, C, D...], got {list(x.shape)}")
    y, _, _ = _normalize(nc, x, tuple(range(2, x.ndim)), nc.attrs.float("epsilon", 1e-5))
    return [nc.op("add", nc.op("mul", y, _channel(nc, 1, x)), _channel(nc, 2, x))]


@converter("LayerNormalization", since=17)
def layer_norm(nc: NodeContext) -> list:
    """Normalize over the axes from ``axis`` on; optional Mean and InvStdDev outputs."""
    x = float_t(nc, 0)
    axis = nc.axis(nc.attrs.int("axis", -1), x.ndim)
    if nc.attrs.int("stash_type", 1, 1, 1) != 1:
        raise nc.fail("stash_type must be 1")
    y, mean, inv = _normalize(nc, x, tuple(range(axis, x.ndim)), nc.attrs.float("epsilon", 1e-5))
    y = nc.op("mul", y, like(nc, 1, x))
    if nc.has(2):
        y = nc.op("add", y, like(nc, 2, x))
    return [y, mean, inv]


def _lrn_window_sum(nc: NodeContext, sq: Tensor, size: int) -> Tensor:
    """Each element's sum of squares over its window along axis 1 of ``sq`` [N, C, ...].

    An odd window is centred: ``sq`` is then [N, 1, C, spatial] (``lrn`` views it so), summed
    along its rows by a ``depthwise_conv2d`` of a [size, 1] filter of ones (one pass, nothing
    materialized per offset). An even one (ONNX Runtime refuses those) adds ``size`` shifted
    slices of the padded squares.
    """
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    if lo == hi:
        ones = nc.tensor(np.ones((1, 1, size, 1), sq.value.type.np_dtype), "lrn_window")
        return nc.op("depthwise_conv2d", sq, ones, stride=(1, 1), padding=(lo, 0), dilation=(1, 1))
    c = sq.shape[1]
    pads = ((0, 0), (lo, hi)) + ((0, 0),) * (sq.ndim - 2)
    padded = nc.op("pad", sq, pads=pads, value=0.0)
    total = None
    for k in range(size):
        starts = (0, k) + (0,) * (sq.ndim - 2)
        stops = (sq.shape[0], k + c) + tuple(sq.shape[2:])
        part = nc.op("slice", padded, starts=starts, stops=stops, steps=(1,) * sq.ndim)
        total = part if total is None else nc.op("add", total, part)
    return total


@converter("LRN")
def lrn(nc: NodeContext) -> list:
    """Local response normalization across channels: x / (bias + alpha/size * window sum of x^2)^beta."""
    x = float_t(nc, 0)
    if x.ndim < 3:
        raise nc.fail(f"needs input [N, C, ...], got {list(x.shape)}")
    size = nc.attrs.int("size", None, 1, 1024)
    alpha, beta = nc.attrs.float("alpha", 1e-4), nc.attrs.float("beta", 0.75)
    bias = nc.attrs.float("bias", 1.0)
    shape, xs = x.shape, x
    if size % 2:  # the depthwise form: every op below in its [N, 1, C, spatial] layout, so they fuse
        xs = nc.op("reshape", x, shape=(shape[0], 1, shape[1], math.prod(shape[2:])))
    total = _lrn_window_sum(nc, nc.op("mul", xs, xs), size)
    base = nc.op("add", const_like(nc, bias, x), nc.op("mul", total, const_like(nc, alpha / size, x)))
    y = nc.op("div", xs, _power(nc, base, beta))
    return [y if xs is x else nc.op("reshape", y, shape=shape)]


def _power(nc: NodeContext, base: Tensor, beta: float) -> Tensor:
    """``base ** beta``; the usual LRN exponents by square roots (a few ulps, half pow's time)."""
    if beta == 1.0:
        return base
    if beta in (0.5, 0.25, 0.75):
        root = nc.op("sqrt", base)
        if beta == 0.5:
            return root
        fourth = nc.op("sqrt", root)
        return fourth if beta == 0.25 else nc.op("mul", root, fourth)
    return nc.op("pow", base, const_like(nc, beta, base))


_REDUCE_AXES_INPUT = {"ReduceSum": 13}  # the others take axes as an input from opset 18


def _reduce_axes(nc: NodeContext, rank: int) -> tuple[int, ...] | None:
    if nc.opset >= _REDUCE_AXES_INPUT.get(nc.op_type, 18):
        axes = nc.static_ints(1, "axes") if nc.has(1) else []
    else:
        axes = nc.attrs.ints("axes") or []
    if not axes:
        if nc.attrs.int("noop_with_empty_axes", 0, 0, 1):
            return None
        return tuple(range(rank))
    norm = tuple(sorted({nc.axis(a, rank) for a in axes}))
    if len(norm) != len(axes):
        raise nc.fail(f"repeated axis in {axes}")
    return norm


_REDUCE = (
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
    "ReduceL2",
    "ReduceL1",
)


@converter(*_REDUCE)
def reduce(nc: NodeContext) -> list:
    """Reductions over constant axes (keepdims, noop_with_empty_axes)."""
    keep = bool(nc.attrs.int("keepdims", 1, 0, 1))
    dims = shape_of(nc.inputs[0])
    axes = _reduce_axes(nc, len(dims))
    if axes is not None and nc.op_type in ("ReduceMax", "ReduceMin") and 0 in (dims[a] for a in axes):
        return [empty_reduction(nc, nc.t(0), axes, keep)]  # the identity: -inf / +inf (ints: the ends)
    if nc.is_static(0) and nc.op_type in ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd"):
        arr = nc.static(0)
        if axes is None:
            return [arr]
        fns = {"ReduceSum": np.sum, "ReduceMax": np.max, "ReduceMin": np.min, "ReduceProd": np.prod}
        fn = fns[nc.op_type]
        return [np.asarray(fn(arr, axis=axes, keepdims=keep)).astype(arr.dtype)]
    x = nc.t(0)
    if axes is None:
        return [x]
    if nc.op_type in ("ReduceMax", "ReduceMin"):
        return [nc.op("max" if nc.op_type == "ReduceMax" else "min", x, axes=axes, keepdims=keep)]
    if nc.op_type == "ReduceProd":  # over an empty axis: 1
        if x.value.dtype == "bool":
            raise nc.fail("needs a numeric input")
        return [nc.op("prod", x, axes=axes, keepdims=keep)]
    if nc.op_type == "ReduceSumSquare" or nc.op_type == "ReduceL2":
        x = nc.op("mul", x, x)
    elif nc.op_type == "ReduceL1":
        x = nc.op("abs", x)
    y = nc.op("sum", x, axes=axes, keepdims=keep)
    if nc.op_type == "ReduceMean":
        n = math.prod(dims[a] for a in axes)
        if x.value.dtype not in _FLOATS:
            raise nc.fail("ReduceMean needs a float input")
        y = nc.op("mul", y, const_like(nc, 1.0 / n if n else math.nan, y))
    elif nc.op_type == "ReduceL2":
        y = nc.op("sqrt", y)
    return [y]


@converter("ArgMax", "ArgMin")
def argmax(nc: NodeContext) -> list:
    """Index of the first (``select_last_index``: last) maximum (minimum) along ``axis``."""
    last = bool(nc.attrs.int("select_last_index", 0, 0, 1))
    x = nc.t(0)
    axis = nc.axis(nc.attrs.int("axis", 0), x.ndim)
    keep = bool(nc.attrs.int("keepdims", 1, 0, 1))
    if nc.op_type == "ArgMin":
        x = nc.op("neg", x) if x.value.dtype != "bool" else nc.op("eq", x, nc.ctx.const(False, "bool"))
    if x.value.dtype == "bool":
        x = nc.op("cast", x, dtype="i32")
    n = x.shape[axis]
    if last:  # the first maximum of the reversed axis
        x = nc.op(
            "gather", x, nc.tensor(np.arange(n - 1, -1, -1, dtype=np.int64), "reverse_index"), axis=axis
        )
    idx = nc.op("argmax", x, axis=axis, keepdims=keep)
    return [nc.op("sub", nc.ctx.const(n - 1, "i64"), idx) if last else idx]
