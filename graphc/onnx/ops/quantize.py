"""ONNX QuantizeLinear / DequantizeLinear as graphc's quantize / dequantize (the same semantics:
round half to even, saturation to int8/uint8/int16/uint16, per-tensor or per-axis scale and zero
point, or blocked: one per ``block_size`` values along ``axis``).

The low-bit types are storage types (ir/types.py), built from other ops as onnx's reference
computes them: int4/uint4/int2/uint2 quantize through int16 (graphc's quantize saturates to int16,
then the value is clamped to the narrow range and cast, exact) and dequantize through int16; float8
quantizes as ``cast(x / scale)`` with ONNX's saturation (``saturate``; the zero point must be 0),
float4e2m1 as ``cast(x / scale + zero)`` (ml_dtypes saturates); both dequantize as
``cast(x) * scale`` (the float8 zero point must be 0, float4e2m1's is ignored, as in onnx's reference).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from graphc.ir import to_numpy_dtype
from graphc.ir.types import FLOAT_DTYPES, LOWBIT_FLOAT_DTYPES, LOWBIT_INT_DTYPES, QUANT_DTYPES
from graphc.tensor import Tensor

from ..context import NodeContext
from ..lowbit_ops import FLOAT8_DTYPES, QUANTIZED_LOWBIT_DTYPES, dequantize_scale, onnx_cast
from ..proto import ONNX_TO_GRAPHC, ONNX_TYPE_NAMES
from ..registry import converter

# The element types a quantized tensor may have (uint8, int8, uint16, int16 and the low-bit types
# float8, float4e2m1, int4, uint4, int2, uint2), by ONNX code.
_QUANT_CODES = {
    code: name
    for code, name in ONNX_TO_GRAPHC.items()
    if name in QUANT_DTYPES or name in QUANTIZED_LOWBIT_DTYPES
}
_QUANT_NAMES = ", ".join(ONNX_TYPE_NAMES[code] for code in _QUANT_CODES)
_WIDE_INT = "i16"  # what int4/uint4/int2/uint2 are quantized and dequantized through (exact)


def _along(nc: NodeContext, t: Tensor, shape: tuple[int, ...], what: str) -> Tensor:
    """A scale or zero point for an input of ``shape``: a scalar, 1-D along the node's ``axis``
    (reshaped to broadcast), or with ``block_size`` one value per block along ``axis`` (repeated)."""
    rank = len(shape)
    block = nc.attrs.int("block_size", 0, lo=0)
    if block:
        return _blocked(nc, t, shape, block, what)
    if t.ndim == 0 or (t.ndim == 1 and t.shape[0] == 1):  # one value: per tensor, as onnx's reference
        return t.reshape(()) if t.ndim else t
    if t.ndim != 1:
        raise nc.fail(f"{what} must be a scalar or 1-D (or blocked, with block_size)")
    axis = nc.axis(nc.attrs.int("axis", 1), rank)
    view = [1] * rank
    view[axis] = t.shape[0]
    return t.reshape(tuple(view))


def _blocked(nc: NodeContext, t: Tensor, shape: tuple[int, ...], block: int, what: str) -> Tensor:
    """Blocked quantization's scale or zero point: ``shape`` but ceil(n / block) along ``axis``,
    each value repeated ``block`` times along it (the last block cut to what is left)."""
    rank = len(shape)
    axis = nc.axis(nc.attrs.int("axis", 1), rank)
    count = -(-shape[axis] // block)
    want = tuple(count if d == axis else n for d, n in enumerate(shape))
    if tuple(t.shape) != want:
        raise nc.fail(
            f"{what} must have shape {list(want)} (block_size {block} on axis {axis}), got {list(t.shape)}"
        )
    t = t.reshape(want[: axis + 1] + (1,) + want[axis + 1 :])
    t = nc.op("broadcast_to", t, shape=want[: axis + 1] + (block,) + want[axis + 1 :])
    t = t.reshape(want[:axis] + (count * block,) + want[axis + 1 :])
    if count * block != shape[axis]:
        t = nc.op("slice", t, starts=(0,) * rank, stops=tuple(shape), steps=(1,) * rank)
    return t


@converter("QuantizeLinear", since=10)
def quantize_linear(nc: NodeContext) -> list:
    """round_half_even(x / scale) + zero point, saturated to the zero point's integer range."""
    saturate = nc.attrs.int("saturate", 1, lo=0, hi=1) == 1
    x = nc.t(0)
    if x.value.dtype not in FLOAT_DTYPES:
        raise nc.fail(f"x must be float16, float32 or float64, got {x.value.dtype}")
    scale = _along(nc, nc.t(1), x.shape, "y_scale")
    if scale.value.dtype != x.value.dtype:
        scale = nc.op("cast", scale, dtype=x.value.dtype)
    if nc.has(2):
        zero = _along(nc, nc.t(2), x.shape, "y_zero_point")
    else:
        want = nc.attrs.int("output_dtype", 2)
        if want not in _QUANT_CODES:
            name = ONNX_TYPE_NAMES.get(want, f"type {want}")
            raise nc.fail(f"output_dtype {name} is not supported ({_QUANT_NAMES})")
        zero = nc.tensor(np.zeros((), to_numpy_dtype(_QUANT_CODES[want])), "zero")
    dtype = zero.value.dtype
    if dtype not in QUANT_DTYPES and dtype not in QUANTIZED_LOWBIT_DTYPES:
        raise nc.fail(f"the zero point must be one of {_QUANT_NAMES}, got {dtype}")
    if not saturate and dtype not in FLOAT8_DTYPES:
        raise nc.fail(f"saturate=0 applies to float8 outputs only, not to {dtype}")
    if dtype in LOWBIT_INT_DTYPES:  # through int16, then clamped to the narrow range (exact)
        q = nc.op("quantize", x, scale, nc.op("cast", zero, dtype=_WIDE_INT))
        info = ml_dtypes.iinfo(to_numpy_dtype(dtype))
        q = nc.op("maximum", q, nc.ctx.const(int(info.min), _WIDE_INT))
        q = nc.op("minimum", q, nc.ctx.const(int(info.max), _WIDE_INT))
        return [nc.op("cast", q, dtype=dtype)]
    if dtype == "f4e2m1":  # ml_dtypes' conversion saturates: no inf or NaN in float4e2m1
        y = nc.op("add", nc.op("div", x, scale), nc.op("cast", zero, dtype=x.value.dtype))
        return [nc.op("cast", y, dtype=dtype)]
    if dtype in LOWBIT_FLOAT_DTYPES:
        _check_zero(nc, 2, dtype)
        return [onnx_cast(nc, nc.op("div", x, scale), dtype, saturate)]
    return [nc.op("quantize", x, scale, zero)]


def _check_zero(nc: NodeContext, i: int, dtype: str) -> None:
    """A float8 zero point must be 0 (checked where it is a constant)."""
    if nc.has(i) and nc.is_static(i) and np.any(np.asarray(nc.inputs[i]).astype(np.float32) != 0):
        raise nc.fail(f"a {dtype} zero point must be 0")


@converter("DequantizeLinear", since=10)
def dequantize_linear(nc: NodeContext) -> list:
    """(x - zero point) * scale, in output_dtype where given, else the scale's float dtype."""
    q = nc.t(0)
    dtype = q.value.dtype
    if dtype not in (*QUANT_DTYPES, *QUANTIZED_LOWBIT_DTYPES, "i32"):
        raise nc.fail(f"x must be one of {_QUANT_NAMES}, int32, got {dtype}")
    x_scale, out = dequantize_scale(nc, nc.t(1))  # a float8e8m0 scale as float32
    scale = _along(nc, x_scale, q.shape, "x_scale")
    if dtype in LOWBIT_FLOAT_DTYPES:  # cast(x) * scale: the zero point is 0 (float8) or ignored (float4)
        if dtype != "f4e2m1":
            _check_zero(nc, 2, dtype)
        return [_cast(nc, nc.op("mul", nc.op("cast", q, dtype=scale.value.dtype), scale), out)]
    if dtype in LOWBIT_INT_DTYPES:
        q = nc.op("cast", q, dtype=_WIDE_INT)
    if nc.has(2):
        zero = _along(nc, nc.t(2), q.shape, "x_zero_point")
        if zero.value.dtype != dtype:
            raise nc.fail(f"x_zero_point must have x's dtype {dtype}, got {zero.value.dtype}")
        if dtype in LOWBIT_INT_DTYPES:
            zero = nc.op("cast", zero, dtype=_WIDE_INT)
    else:
        zero = nc.tensor(np.zeros((), q.value.type.np_dtype), "zero")
    return [_cast(nc, nc.op("dequantize", q, scale, zero), out)]


def _cast(nc: NodeContext, y: Tensor, dtype: str) -> Tensor:
    return y if y.value.dtype == dtype else nc.op("cast", y, dtype=dtype)
