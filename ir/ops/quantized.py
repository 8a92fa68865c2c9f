"""Quantization ops: quantize, dequantize, fake_quantize and the int8 GEMMs (qmatmul, qlinear, qconv2d)."""

from __future__ import annotations

from ..errors import GraphcError
from ..types import FLOAT_DTYPES, INT8_DTYPES, QUANT_DTYPES, TensorType
from .image import _WINDOW, _window
from .registry import Attr, BoolSpec, _check, _register, _RuleError, broadcast_shapes

# --- quantization
# ONNX's QuantizeLinear/DequantizeLinear as broadcast ops: ``scale`` and ``zero_point`` broadcast
# to x's shape (per tensor: shape (); per channel along axis a: the channel count at a and 1 on
# every later axis; the front end reshapes ONNX's 1-D per-axis vectors). Elementwise:
#   quantize(x, s, z)   = saturate(round_half_even(x / s) + z)  in z's dtype (i8, u8, i16 or u16);
#                         x / s is computed in x's dtype, NaN saturates to the lowest value
#   dequantize(q, s, z) = (q - z) * s                           in s's dtype (q - z exact)
#   fake_quantize(x, s, z) = dequantize(quantize(x, s, z), s, z) in x's dtype; its VJP is the
#                         straight-through estimator (the gradient passes where x / s + z lies
#                         in the dtype's range, PyTorch's fake_quantize rule).
# qmatmul(a, b): the integer GEMM a @ b.T of 2-D i8/u8 operands a [m, k] and b [n, k] (b in the
# layout of a Linear weight, [out, in]), exact, with an i32 [m, n] result.
_QUANT_NAMES = ", ".join(QUANT_DTYPES)


def _quant_operands(inputs, kind: str) -> None:
    x, scale, zero = inputs
    _check(scale.dtype in FLOAT_DTYPES, f"scale must be a float tensor, got {scale.dtype}")
    _check(
        zero.dtype in QUANT_DTYPES or zero.dtype == "i32",
        f"zero point must be one of {_QUANT_NAMES}, got {zero.dtype}",
    )
    for what, t in (("scale", scale), ("zero point", zero)):
        try:
            out = broadcast_shapes(x.shape, t.shape)
        except GraphcError as err:
            raise _RuleError(f"{what}: {err}") from None
        _check(out == x.shape, f"{what} shape {t.shape} does not broadcast to the operand's {x.shape}")


def _quantize(inputs, attrs):
    x, scale, zero = inputs
    _quant_operands(inputs, "quantize")
    _check(zero.dtype in QUANT_DTYPES, f"zero point must be one of {_QUANT_NAMES}, got {zero.dtype}")
    _check(x.dtype == scale.dtype, f"x ({x.dtype}) and scale ({scale.dtype}) dtypes differ")
    return [TensorType(x.shape, zero.dtype)]


def _dequantize(inputs, attrs):
    q, scale, zero = inputs
    _quant_operands(inputs, "dequantize")
    _check(q.dtype in (*QUANT_DTYPES, "i32"), f"operand must be one of {_QUANT_NAMES}, i32, got {q.dtype}")
    _check(q.dtype == zero.dtype, f"operand ({q.dtype}) and zero point ({zero.dtype}) dtypes differ")
    return [TensorType(q.shape, scale.dtype)]


def _fake_quantize(inputs, attrs):
    (out,) = _quantize(inputs, attrs)
    return [TensorType(out.shape, inputs[0].dtype)]


def _qmatmul(inputs, attrs):
    a, b = inputs
    _check(
        a.dtype in INT8_DTYPES and b.dtype in INT8_DTYPES,
        f"qmatmul needs i8/u8 operands, got {a.dtype}, {b.dtype}",
    )
    _check(a.rank == 2 and b.rank == 2, f"qmatmul operands must be 2-D, got ranks {a.rank} and {b.rank}")
    _check(
        a.shape[1] == b.shape[1],
        f"inner dimensions differ: {a.shape[1]} (left) vs {b.shape[1]} (right, [n, k])",
    )
    return [TensorType((a.shape[0], b.shape[0]), "i32")]


_register("quantize", 3, "broadcast", _quantize)
_register("dequantize", 3, "broadcast", _dequantize)
_register("fake_quantize", 3, "broadcast", _fake_quantize)
_register("qmatmul", 2, "opaque", _qmatmul)


# qlinear(a, b, shift, scale, bias[, out_scale, out_zero]) {relu}: qmatmul with its epilogue, per
# output element (i, j), in scale's float dtype F (what graphc.passes.quantize fuses into it):
#   y = F(qmatmul(a, b)[i, j] - shift[j]) * scale[j] + bias[j]    (i32 subtract, then F ops)
#   y = where(y <= 0, 0, y)                                         when relu (NaN stays NaN)
#   out = quantize(y, out_scale, out_zero)                          when out_scale/out_zero given
# shift (i32), scale and bias (F) are per column [n] or per tensor (); out_scale (F) and
# out_zero (i8/u8) per tensor. The result is [m, n], of F, or of out_zero's dtype.
def _qlinear(inputs, attrs):
    _check(len(inputs) in (5, 7), f"takes 5 or 7 operands after the GEMM's, got {len(inputs)}")
    a, b, shift, scale, bias = inputs[:5]
    (acc,) = _qmatmul([a, b], {})
    n = acc.shape[1]
    _check(shift.dtype == "i32", f"shift must be i32, got {shift.dtype}")
    _check(scale.dtype in FLOAT_DTYPES, f"scale must be a float tensor, got {scale.dtype}")
    _check(bias.dtype == scale.dtype, f"bias ({bias.dtype}) and scale ({scale.dtype}) dtypes differ")
    for what, t in (("shift", shift), ("scale", scale), ("bias", bias)):
        _check(t.shape in ((), (n,)), f"{what} must have shape () or ({n},), got {t.shape}")
    if len(inputs) == 5:
        return [TensorType(acc.shape, scale.dtype)]
    out_scale, out_zero = inputs[5:]
    _check(out_scale.dtype == scale.dtype, f"out_scale must be {scale.dtype}, got {out_scale.dtype}")
    _check(out_zero.dtype in INT8_DTYPES, f"out_zero must be i8 or u8, got {out_zero.dtype}")
    _check(out_scale.shape == () and out_zero.shape == (), "out_scale and out_zero must be scalars")
    return [TensorType(acc.shape, out_zero.dtype)]


_register("qlinear", None, "opaque", _qlinear, {"relu": Attr(BoolSpec(), False)})


# qconv2d(x, w, x_zero, shift, scale, bias[, out_scale, out_zero]) {stride, padding, dilation,
# relu}: the int8 convolution as the GEMM of w ([O, kh, kw, C], i8/u8) with x's windows (x NCHW
# i8/u8, padded with x_zero), with qlinear's epilogue per output channel o:
#   acc[n, o, l] = sum_(i, j, c) w[o, i, j, c] * x_padded[n, c, oy*sh + i*dh, ox*sw + j*dw]  (exact)
# (l = oy * OW + ox), then y = F(acc - shift[o]) * scale[o] + bias[o], relu, requantize as in
# qlinear. The result is [N, O, OH * OW] (the layout of the matmul of a weight by im2col columns).
def _qconv2d(inputs, attrs):
    _check(len(inputs) in (6, 8), f"qconv2d takes 6 or 8 operands, got {len(inputs)}")
    x, w, x_zero = inputs[:3]
    _check(
        x.dtype in INT8_DTYPES and w.dtype in INT8_DTYPES,
        f"qconv2d needs i8/u8 operands, got {x.dtype}, {w.dtype}",
    )
    _check(
        x.rank == 4 and w.rank == 4,
        f"qconv2d needs x [N, C, H, W] and w [O, kh, kw, C], got {x.shape}, {w.shape}",
    )
    n, c, h, wd = x.shape
    o, kh, kw, wc = w.shape
    _check(wc == c, f"weight [O, kh, kw, C] has {wc} channels, the input {c}")
    _check(x_zero.shape == () and x_zero.dtype == x.dtype, f"x_zero must be a {x.dtype} scalar, got {x_zero}")
    _, _, oh, ow = _window({**attrs, "kernel": (kh, kw)}, h, wd)
    m = TensorType((n * oh * ow, kh * kw * c), x.dtype)  # the windows as rows: qlinear's checks
    (y,) = _qlinear([m, TensorType((o, kh * kw * c), w.dtype), *inputs[3:]], {})
    return [TensorType((n, o, oh * ow), y.dtype)]


_register(
    "qconv2d",
    None,
    "opaque",
    _qconv2d,
    {**{k: v for k, v in _WINDOW.items() if k != "kernel"}, "relu": Attr(BoolSpec(), False)},
)
