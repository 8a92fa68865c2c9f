"""ONNX's quantized-operator (QOperator) ops: MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv and
DynamicQuantizeLinear, with onnx's reference semantics (onnx/reference/ops/op_qlinear_*.py).

Integer products are exact: the i32 accumulator is ``sum (a - a_zero) * (b - b_zero)`` (+ the i32 bias),
never a float32 sum of products. Two ways to get it:

- graphc's int8 GEMMs (``qmatmul``, ``qlinear``, ``qconv2d``: ir/ops/quantized.py) on the raw i8/u8
  operands where the zero points fold in exactly: ``a_zero * colsum(b)`` and the bias are a
  per-column i32 ``shift``, and
  ``b_zero * rowsum(a)`` (MatMul only) an i32 correction; used for a 2-D ``b`` (any batch of ``a``) and
  for an ungrouped 2-D convolution whose weight zero point is a constant 0 (the usual symmetric i8 weight);
- otherwise i32 ops: ``cast(x, i32) - zero``, then an i32 ``matmul`` (or im2col + i32 matmul for a
  convolution), which sums exactly in 32 bits (wrapping, as the spec allows).

The requantization follows the reference: the multiplier ``a_scale * b_scale / y_scale`` in the scales'
dtype, then in float64 ``acc * multiplier + y_zero``, rounded half to even and saturated to the output
type (graphc's ``quantize`` with scale 1 and zero point 0). The fused int8 kernels do the same in their
float64 epilogue (bias = y_zero, out_scale = 1, out_zero = 0), so both ways give identical results.
ONNX Runtime multiplies in float32 (``float(acc) * multiplier``, rounded, + y_zero), so it can differ
by one unit where ``acc * multiplier`` lies within a float32 rounding of a half.
"""

from __future__ import annotations

import numpy as np

from graphc.ir.types import INT8_DTYPES
from graphc.tensor import Tensor

from ..context import Initializer, NodeContext
from ..registry import converter
from .image import as_2d, conv2d, window_attrs

_FLOAT8 = ("f8e4m3fn", "f8e4m3fnuz", "f8e5m2", "f8e5m2fnuz")
_BIG = 2**20


# ---------------------------------------------------------------- operands
def _known(nc: NodeContext, i: int) -> np.ndarray | None:
    """Input ``i``'s value when it is known while converting (a constant or initializer), else None."""
    if not nc.has(i):
        return None
    v = nc.inputs[i]
    if isinstance(v, Initializer):
        return v.array
    return v if isinstance(v, np.ndarray) else None


def _int8(nc: NodeContext, i: int, what: str) -> Tensor:
    """Input ``i`` as an i8/u8 Tensor (float8 refused by name), or a GraphcError."""
    t = nc.t(i)
    dtype = t.value.dtype
    if dtype in _FLOAT8:
        raise nc.fail(f"{what} is {dtype}: float8 quantized operands are not supported (int8, uint8 only)")
    if dtype not in INT8_DTYPES:
        raise nc.fail(f"{what} must be int8 or uint8, got {dtype}")
    return t


def _zero(nc: NodeContext, i: int, dtype: str, what: str) -> Tensor | None:
    """Optional zero point ``i`` as an i32 Tensor, checked to have the operand's ``dtype``; None when
    absent or a constant 0 (nothing to subtract)."""
    if not nc.has(i):
        return None
    z = nc.t(i)
    if z.value.dtype in _FLOAT8:
        raise nc.fail(f"{what} is {z.value.dtype}: float8 quantized operands are not supported")
    if z.value.dtype != dtype:
        raise nc.fail(f"{what} must have its operand's dtype {dtype}, got {z.value.dtype}")
    known = _known(nc, i)
    if known is not None and not np.any(known):
        return None
    return nc.op("cast", z, dtype="i32")


def _scale(nc: NodeContext, i: int, what: str, dtypes: tuple[str, ...]) -> Tensor:
    """Scale ``i`` as a Tensor of one of the float ``dtypes``."""
    s = nc.t(i)
    if s.value.dtype not in dtypes:
        raise nc.fail(f"{what} must be one of {', '.join(dtypes)}, got {s.value.dtype}")
    return s


def _is_one(shape: tuple[int, ...]) -> bool:
    """Whether a parameter of ``shape`` holds one value (per tensor)."""
    return all(d == 1 for d in shape)


def _per_row(nc: NodeContext, t: Tensor, a_shape: tuple[int, ...], what: str) -> Tensor:
    """A per-tensor or per-row parameter of ``a`` [..., M, K], shaped to broadcast over [..., M, 1]."""
    if _is_one(t.shape):
        return nc.op("reshape", t, shape=())
    want = (*a_shape[:-1], 1)
    if len(a_shape) >= 2 and t.ndim == 1 and t.shape[0] == a_shape[-2]:
        return nc.op("reshape", t, shape=(t.shape[0], 1))
    if t.ndim == len(want) and all(d in (1, w) for d, w in zip(t.shape, want)):
        return t
    raise nc.fail(
        f"{what} must be a scalar, [{a_shape[-2] if len(a_shape) >= 2 else 1}] or {list(want)}, "
        f"got {list(t.shape)}"
    )


def _per_column(nc: NodeContext, t: Tensor, b_shape: tuple[int, ...], what: str) -> Tensor:
    """A per-tensor or per-column parameter of ``b`` [..., K, N], shaped to broadcast over [..., 1, N]."""
    if _is_one(t.shape):
        return nc.op("reshape", t, shape=())
    want = (*b_shape[:-2], 1, b_shape[-1])
    if t.ndim == 1 and t.shape[0] == b_shape[-1]:
        return t
    if t.ndim == len(want) and all(d in (1, w) for d, w in zip(t.shape, want)):
        return t
    raise nc.fail(f"{what} must be a scalar, [{b_shape[-1]}] or {list(want)}, got {list(t.shape)}")


def _per_channel(nc: NodeContext, t: Tensor, channels: int, what: str) -> Tensor:
    """A per-tensor () or per-output-channel [O] parameter."""
    if _is_one(t.shape):
        return nc.op("reshape", t, shape=())
    if t.ndim == 1 and t.shape[0] == channels:
        return t
    raise nc.fail(
        f"{what} must be a scalar or have shape [{channels}] (one per output channel), got {list(t.shape)}"
    )


def _per_tensor(nc: NodeContext, t: Tensor, what: str) -> Tensor:
    if not _is_one(t.shape):
        raise nc.fail(f"{what} must be a scalar (per tensor), got shape {list(t.shape)}")
    return nc.op("reshape", t, shape=())


def _sub(nc: NodeContext, x: Tensor, zero: Tensor | None) -> Tensor:
    """cast(x, i32) - zero (exact)."""
    x = nc.op("cast", x, dtype="i32")
    return x if zero is None else nc.op("sub", x, zero)


# ---------------------------------------------------------------- requantization
def _multiplier(nc: NodeContext, s1: Tensor, s2: Tensor, sy: Tensor) -> Tensor:
    """(s1 * s2) / sy in the scales' dtype (as the reference), then as float64."""
    dtype = s1.value.dtype
    if s2.value.dtype != dtype or sy.value.dtype != dtype:
        raise nc.fail(
            f"the scales must share one dtype, got {s1.value.dtype}, {s2.value.dtype}, {sy.value.dtype}"
        )
    m = nc.op("div", nc.op("mul", s1, s2), sy)
    return nc.op("cast", m, dtype="f64")


def _requantize(nc: NodeContext, acc: Tensor, mult: Tensor, y_zero: Tensor, out: str) -> Tensor:
    """saturate(round_half_even(f64(acc) * mult + y_zero)) in ``out`` (i8/u8), as onnx's reference."""
    v = nc.op("mul", nc.op("cast", acc, dtype="f64"), mult)
    v = nc.op("add", v, nc.op("cast", y_zero, dtype="f64"))
    return nc.op("quantize", v, nc.ctx.const(1.0, "f64"), nc.ctx.const(0, out))


def _output_zero(nc: NodeContext, i: int) -> tuple[Tensor, str]:
    """y_zero_point ``i`` as a scalar Tensor and the output dtype it sets."""
    z = _per_tensor(nc, nc.t(i), "y_zero_point")
    dtype = z.value.dtype
    if dtype in _FLOAT8:
        raise nc.fail(f"y_zero_point is {dtype}: float8 quantized outputs are not supported")
    if dtype not in INT8_DTYPES:
        raise nc.fail(f"y_zero_point must be int8 or uint8, got {dtype}")
    return z, dtype


# ---------------------------------------------------------------- matmul
class _MatMul:
    """The operands of an integer matmul: a [..., M, K] and b [..., K, N] (1-D ones promoted)."""

    def __init__(self, nc: NodeContext, a: Tensor, b: Tensor) -> None:
        if a.ndim == 0 or b.ndim == 0:
            raise nc.fail("matmul operands must have rank >= 1")
        self.a_vec, self.b_vec = a.ndim == 1, b.ndim == 1
        self.a = nc.op("reshape", a, shape=(1, a.shape[0])) if self.a_vec else a
        self.b = nc.op("reshape", b, shape=(b.shape[0], 1)) if self.b_vec else b
        if self.a.shape[-1] != self.b.shape[-2]:
            raise nc.fail(f"inner dimensions differ: {list(a.shape)} @ {list(b.shape)}")
        try:
            self.batch = tuple(np.broadcast_shapes(self.a.shape[:-2], self.b.shape[:-2]))
        except ValueError:
            raise nc.fail(f"batch dimensions do not broadcast: {list(a.shape)} @ {list(b.shape)}") from None

    def fast(self) -> bool:
        """Whether the product is a 2-D GEMM of a's rows (b 2-D): graphc's int8 GEMM computes it."""
        return self.b.ndim == 2

    def rows(self, nc: NodeContext, b_index: int) -> tuple[Tensor, Tensor]:
        """a as [rows, K] and b as [N, K] (the layout of ``qmatmul``; a constant b transposed now)."""
        k, n = self.b.shape
        a2 = nc.op("reshape", self.a, shape=(int(np.prod(self.a.shape[:-1])), k))
        known = _known(nc, b_index)
        if known is not None:
            return a2, nc.tensor(np.ascontiguousarray(known.reshape(k, n).T), "b_t")
        return a2, nc.op("transpose", self.b, perm=(1, 0))

    def unflatten(self, nc: NodeContext, y2: Tensor) -> Tensor:
        """The [rows, N] product of ``rows`` as [..., M, N]."""
        return nc.op("reshape", y2, shape=(*self.a.shape[:-1], self.b.shape[-1]))

    def finish(self, nc: NodeContext, y: Tensor) -> Tensor:
        """A [..., M, N] product in numpy.matmul's output shape (a 1-D operand's axis dropped)."""
        shape = tuple(y.shape)
        if self.a_vec:
            shape = shape[:-2] + shape[-1:]
        if self.b_vec:
            shape = shape[:-1]
        return nc.op("reshape", y, shape=shape) if shape != tuple(y.shape) else y

    def rows_of(self, nc: NodeContext, t: Tensor | None) -> Tensor | None:
        """A per-row [..., M, 1] (or scalar) parameter as [rows, 1] (or scalar)."""
        if t is None or t.ndim == 0:
            return t
        t = nc.op("broadcast_to", t, shape=(*self.a.shape[:-1], 1))
        return nc.op("reshape", t, shape=(int(np.prod(self.a.shape[:-1])), 1))

    def columns_of(self, nc: NodeContext, t: Tensor | None) -> Tensor | None:
        """A per-column [N] / [1, N] (or scalar) parameter as [N] (or scalar), for a 2-D b."""
        if t is None or t.ndim <= 1:
            return t
        return nc.op("reshape", t, shape=(self.b.shape[-1],))


def _colsum(nc: NodeContext, mm: _MatMul, b_index: int) -> Tensor:
    """sum over k of b [K, N] as i32 [N] (folded when b is a constant)."""
    known = _known(nc, b_index)
    if known is not None and known.ndim == 2:
        return nc.tensor(known.astype(np.int64).sum(axis=0).astype(np.int32), "colsum")
    return nc.op("sum", nc.op("cast", mm.b, dtype="i32"), axes=(0,), keepdims=False)


def _gemm_acc(nc: NodeContext, mm: _MatMul, b_index: int, za: Tensor | None, zb: Tensor | None) -> Tensor:
    """sum_k (a - za)(b - zb) as i32 [rows, N] through ``qmatmul`` of the raw operands:
    a.b - zb * rowsum(a) - za * colsum(b) + K * za * zb (exact modulo 2**32)."""
    a2, bt = mm.rows(nc, b_index)
    k = mm.b.shape[0]
    acc = nc.op("qmatmul", a2, bt)
    za, zb = mm.rows_of(nc, za), mm.columns_of(nc, zb)
    if zb is not None:
        rowsum = nc.op("sum", nc.op("cast", a2, dtype="i32"), axes=(1,), keepdims=True)
        acc = nc.op("sub", acc, nc.op("mul", rowsum, zb))
    if za is not None:
        acc = nc.op("sub", acc, nc.op("mul", za, _colsum(nc, mm, b_index)))
        if zb is not None:
            acc = nc.op("add", acc, nc.op("mul", nc.op("mul", za, zb), nc.ctx.const(k, "i32")))
    return acc


def _matmul_acc(nc: NodeContext, mm: _MatMul, b_index: int, za: Tensor | None, zb: Tensor | None) -> Tensor:
    """The exact i32 product as [..., M, N] (1-D operands promoted)."""
    if mm.fast():
        return mm.unflatten(nc, _gemm_acc(nc, mm, b_index, za, zb))
    return nc.op("matmul", _sub(nc, mm.a, za), _sub(nc, mm.b, zb))


@converter("MatMulInteger", since=10)
def matmul_integer(nc: NodeContext) -> list:
    """numpy.matmul of (a - a_zero_point) and (b - b_zero_point), exact in int32."""
    a, b = _int8(nc, 0, "A"), _int8(nc, 1, "B")
    mm = _MatMul(nc, a, b)
    za = _zero(nc, 2, a.value.dtype, "a_zero_point")
    zb = _zero(nc, 3, b.value.dtype, "b_zero_point")
    za = None if za is None else _per_row(nc, za, mm.a.shape, "a_zero_point")
    zb = None if zb is None else _per_column(nc, zb, mm.b.shape, "b_zero_point")
    return [mm.finish(nc, _matmul_acc(nc, mm, 1, za, zb))]


@converter("QLinearMatMul", since=10)
def qlinear_matmul(nc: NodeContext) -> list:
    """Quantized numpy.matmul: requantize(sum (a - za)(b - zb), a_scale * b_scale / y_scale, y_zero)."""
    scales = ("f32",) if nc.opset < 21 else ("f32", "f16", "bf16")
    a, b = _int8(nc, 0, "a"), _int8(nc, 3, "b")
    mm = _MatMul(nc, a, b)
    sa = _per_row(nc, _scale(nc, 1, "a_scale", scales), mm.a.shape, "a_scale")
    sb = _per_column(nc, _scale(nc, 4, "b_scale", scales), mm.b.shape, "b_scale")
    sy = _per_tensor(nc, _scale(nc, 6, "y_scale", scales), "y_scale")
    za = _zero(nc, 2, a.value.dtype, "a_zero_point")
    zb = _zero(nc, 5, b.value.dtype, "b_zero_point")
    za = None if za is None else _per_row(nc, za, mm.a.shape, "a_zero_point")
    zb = None if zb is None else _per_column(nc, zb, mm.b.shape, "b_zero_point")
    yz, out = _output_zero(nc, 7)
    if mm.fast() and zb is None and sa.ndim == 0 and (za is None or za.ndim == 0):
        # one qlinear: shift = za * colsum(b) per column, float64 epilogue * mult + y_zero
        mult = mm.columns_of(nc, _multiplier(nc, sa, sb, sy))
        shift = nc.ctx.const(0, "i32") if za is None else nc.op("mul", za, _colsum(nc, mm, 3))
        a2, bt = mm.rows(nc, 3)
        y = nc.op(
            "qlinear",
            a2,
            bt,
            shift,
            mult,
            nc.op("cast", yz, dtype="f64"),
            nc.ctx.const(1.0, "f64"),
            nc.ctx.const(0, out),
        )
        return [mm.finish(nc, mm.unflatten(nc, y))]
    acc = _matmul_acc(nc, mm, 3, za, zb)
    return [mm.finish(nc, _requantize(nc, acc, _multiplier(nc, sa, sb, sy), yz, out))]


# ---------------------------------------------------------------- convolution
class _Conv:
    """A 1-D or 2-D integer convolution's operands and window attributes."""

    def __init__(self, nc: NodeContext, x: Tensor, w: Tensor) -> None:
        if x.ndim not in (3, 4):
            raise nc.fail(
                f"x must be [N, C, L] or [N, C, H, W] (1-D or 2-D convolution), got {list(x.shape)}"
            )
        self.x, self.was_1d = as_2d(nc, x, "x")
        if w.ndim != x.ndim:
            raise nc.fail(f"w {list(w.shape)} does not match x's rank {x.ndim}")
        self.w = nc.op("reshape", w, shape=(w.shape[0], w.shape[1], 1, w.shape[2])) if self.was_1d else w
        self.group = nc.attrs.int("group", 1, 1, _BIG)
        o, cg = self.w.shape[:2]
        if self.x.shape[1] != cg * self.group or o % self.group:
            raise nc.fail(
                f"x has {self.x.shape[1]} channels; w {list(w.shape)} with group={self.group} does not fit"
            )
        n = 1 if self.was_1d else 2
        kernel = nc.attrs.ints("kernel_shape", list(w.shape[2:]), n, 1, _BIG)
        if kernel != list(w.shape[2:]):
            raise nc.fail(f"kernel_shape {kernel} does not match w {list(w.shape)}")
        self.strides, self.dilations, self.pads = window_attrs(nc, self.x.shape[2:], kernel, self.was_1d)
        self.channels = o

    def finish(self, nc: NodeContext, y: Tensor) -> Tensor:
        """[N, O, OH, OW] (or [N, O, OH * OW]) back to the input's rank."""
        n, o = y.shape[:2]
        if self.was_1d:
            return nc.op("reshape", y, shape=(n, o, int(np.prod(y.shape[2:]))))
        return y

    def generic(self, nc: NodeContext, xz: Tensor | None, wz: Tensor | None, bias: Tensor | None) -> Tensor:
        """The exact i32 convolution of (x - xz) and (w - wz) (+ bias) as im2col + i32 matmul."""
        if wz is not None and wz.ndim == 1:
            wz = nc.op("reshape", wz, shape=(self.channels, 1, 1, 1))
        xi, wi = _sub(nc, self.x, xz), _sub(nc, self.w, wz)
        y = conv2d(nc, xi, wi, self.strides, self.dilations, self.pads, self.group)
        if bias is not None:
            y = nc.op("add", y, nc.op("reshape", bias, shape=(1, self.channels, 1, 1)))
        return y

    def fast(self, nc: NodeContext, wz: Tensor | None, x_zero_known: bool) -> bool:
        """Whether ``qconv2d`` computes it: no groups, weight zero point a constant 0, and a symmetric
        padding (or the x zero point known, to pad with)."""
        symmetric = all(lo == hi for lo, hi in self.pads)
        return self.group == 1 and wz is None and (symmetric or x_zero_known)

    def qconv(
        self,
        nc: NodeContext,
        w_index: int,
        xz: Tensor,
        xz_known: np.ndarray | None,
        epilogue: list[Tensor],
        bias: Tensor | None,
    ) -> Tensor:
        """qconv2d of the raw operands, ``shift = xz * sum(w[o]) - bias[o]`` folding the zero point and the
        i32 bias in, ``epilogue`` = [scale, bias(, out_scale, out_zero)]; the result [N, O, OH, OW]."""
        x = self.x
        padding = tuple(lo for lo, _ in self.pads)
        if any(lo != hi for lo, hi in self.pads):  # pad with the zero point (x - xz pads with 0)
            value = int(np.asarray(xz_known).reshape(-1)[0]) if xz_known is not None else 0
            x = nc.op("pad", x, pads=((0, 0), (0, 0), *self.pads), value=value)
            padding = (0, 0)
        (h, w), (kh, kw) = x.shape[2:], self.w.shape[2:]
        oh = (h + 2 * padding[0] - self.dilations[0] * (kh - 1) - 1) // self.strides[0] + 1
        ow = (w + 2 * padding[1] - self.dilations[1] * (kw - 1) - 1) // self.strides[1] + 1
        if oh <= 0 or ow <= 0:
            raise nc.fail(f"kernel {kh}x{kw} does not fit x {list(self.x.shape)} (padded)")
        known = _known(nc, w_index)
        if known is not None:
            if self.was_1d:
                known = known.reshape(known.shape[0], known.shape[1], 1, known.shape[2])
            wt = nc.tensor(np.ascontiguousarray(known.transpose(0, 2, 3, 1)), "w_ohwc")
            wsum = nc.tensor(known.astype(np.int64).sum(axis=(1, 2, 3)).astype(np.int32), "w_sum")
        else:
            wt = nc.op("transpose", self.w, perm=(0, 2, 3, 1))
            wsum = nc.op("sum", nc.op("cast", self.w, dtype="i32"), axes=(1, 2, 3), keepdims=False)
        shift = nc.op("mul", nc.op("cast", xz, dtype="i32"), wsum)
        if bias is not None:
            shift = nc.op("sub", shift, bias)
        y = nc.op(
            "qconv2d",
            x,
            wt,
            xz,
            shift,
            *epilogue,
            stride=tuple(self.strides),
            padding=padding,
            dilation=tuple(self.dilations),
        )
        return nc.op("reshape", y, shape=(*y.shape[:2], oh, ow))


def _x_zero(nc: NodeContext, i: int, dtype: str, required: bool) -> tuple[Tensor, np.ndarray | None]:
    """The x zero point (a scalar of x's dtype; 0 when optional and absent) and its value when known."""
    if not nc.has(i):
        if required:
            raise nc.fail("x_zero_point is missing")
        return nc.ctx.const(0, dtype), np.zeros((), np.int64)
    z = _per_tensor(nc, nc.t(i), "x_zero_point")
    if z.value.dtype != dtype:
        raise nc.fail(f"x_zero_point must have x's dtype {dtype}, got {z.value.dtype}")
    return z, _known(nc, i)


@converter("ConvInteger", since=10)
def conv_integer(nc: NodeContext) -> list:
    """Convolution of (x - x_zero_point) by (w - w_zero_point), exact in int32 (1-D and 2-D)."""
    x, w = _int8(nc, 0, "x"), _int8(nc, 1, "w")
    cv = _Conv(nc, x, w)
    xz, xz_known = _x_zero(nc, 2, x.value.dtype, required=False)
    wz = _zero(nc, 3, w.value.dtype, "w_zero_point")
    wz = None if wz is None else _per_channel(nc, wz, cv.channels, "w_zero_point")
    if cv.fast(nc, wz, xz_known is not None):  # the f64 epilogue of (acc - shift) * 1 + 0 is exact
        one, zero = nc.ctx.const(1.0, "f64"), nc.ctx.const(0.0, "f64")
        y = cv.qconv(nc, 1, xz, xz_known, [one, zero], None)
        return [cv.finish(nc, nc.op("cast", y, dtype="i32"))]
    xzi = None if xz_known is not None and not np.any(xz_known) else nc.op("cast", xz, dtype="i32")
    return [cv.finish(nc, cv.generic(nc, xzi, wz, None))]


@converter("QLinearConv", since=10)
def qlinear_conv(nc: NodeContext) -> list:
    """Quantized convolution: requantize(conv(x - xz, w - wz) + B, x_scale * w_scale / y_scale, y_zero)."""
    x, w = _int8(nc, 0, "x"), _int8(nc, 3, "w")
    cv = _Conv(nc, x, w)
    sx = _per_tensor(nc, _scale(nc, 1, "x_scale", ("f32",)), "x_scale")
    sw = _per_channel(nc, _scale(nc, 4, "w_scale", ("f32",)), cv.channels, "w_scale")
    sy = _per_tensor(nc, _scale(nc, 6, "y_scale", ("f32",)), "y_scale")
    xz, xz_known = _x_zero(nc, 2, x.value.dtype, required=True)
    wz = _zero(nc, 5, w.value.dtype, "w_zero_point")
    wz = None if wz is None else _per_channel(nc, wz, cv.channels, "w_zero_point")
    yz, out = _output_zero(nc, 7)
    bias = None
    if nc.has(8):
        bias = nc.t(8)
        if bias.value.dtype != "i32" or tuple(bias.shape) != (cv.channels,):
            raise nc.fail(f"B must be int32 [{cv.channels}], got {bias.value.dtype}{list(bias.shape)}")
    mult = _multiplier(nc, sx, sw, sy)
    if cv.fast(nc, wz, xz_known is not None):
        epilogue = [mult, nc.op("cast", yz, dtype="f64"), nc.ctx.const(1.0, "f64"), nc.ctx.const(0, out)]
        return [cv.finish(nc, cv.qconv(nc, 3, xz, xz_known, epilogue, bias))]
    xzi = None if xz_known is not None and not np.any(xz_known) else nc.op("cast", xz, dtype="i32")
    acc = cv.generic(nc, xzi, wz, bias)
    if mult.ndim == 1:
        mult = nc.op("reshape", mult, shape=(1, cv.channels, 1, 1))
    return [cv.finish(nc, _requantize(nc, acc, mult, yz, out))]


# ---------------------------------------------------------------- dynamic quantization
@converter("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(nc: NodeContext) -> list:
    """uint8 quantization with the scale and zero point of x's range widened to include 0:
    scale = (max(0, max x) - min(0, min x)) / 255 (1 / 255 when that range is empty),
    zero = saturate(round_half_even(-min / scale)), y = saturate(round_half_even(x / scale) + zero)."""
    x = nc.t(0)
    if x.value.dtype != "f32":
        raise nc.fail(f"x must be float32, got {x.value.dtype}")
    if int(np.prod(x.shape)) == 0:
        raise nc.fail("x is empty: its range (and so the scale) is undefined")
    axes = tuple(range(x.ndim))
    zero_f = nc.ctx.const(0.0, "f32")
    hi = nc.op("maximum", nc.op("max", x, axes=axes, keepdims=False), zero_f)
    lo = nc.op("minimum", nc.op("min", x, axes=axes, keepdims=False), zero_f)
    span = nc.op("sub", hi, lo)
    span = nc.op("where", nc.op("eq", hi, lo), nc.ctx.const(1.0, "f32"), span)
    scale = nc.op("div", span, nc.ctx.const(255.0, "f32"))
    u8_zero = nc.ctx.const(0, "u8")
    zero = nc.op("quantize", nc.op("neg", lo), scale, u8_zero)  # 0 - min / scale, rounded and saturated
    return [nc.op("quantize", x, scale, zero), scale, zero]
