"""ONNX QuantizeLinear / DequantizeLinear as graphc's quantize / dequantize (the same semantics:
round half to even, saturation to int8/uint8/int16/uint16, per-tensor or per-axis scale and zero
point)."""

from __future__ import annotations

import numpy as np

from graphc.ir import to_numpy_dtype
from graphc.ir.types import FLOAT_DTYPES, QUANT_DTYPES
from graphc.tensor import Tensor

from ..context import NodeContext
from ..proto import ONNX_TO_GRAPHC, ONNX_TYPE_NAMES
from ..registry import converter

# The element types a quantized tensor may have (uint8, int8, uint16, int16), by ONNX code.
_QUANT_CODES = {code: name for code, name in ONNX_TO_GRAPHC.items() if name in QUANT_DTYPES}
_QUANT_NAMES = ", ".join(ONNX_TYPE_NAMES[code] for code in _QUANT_CODES)


def _along(nc: NodeContext, t: Tensor, rank: int, what: str) -> Tensor:
    """A scale or zero point: a scalar, or 1-D along the node's ``axis`` (reshaped to broadcast)."""
    if t.ndim == 0 or (t.ndim == 1 and t.shape[0] == 1 and rank == 0):
        return t.reshape(()) if t.ndim else t
    if t.ndim != 1:
        raise nc.fail(f"{what} must be a scalar or 1-D (blocked quantization is not supported)")
    axis = nc.axis(nc.attrs.int("axis", 1), rank)
    shape = [1] * rank
    shape[axis] = t.shape[0]
    return t.reshape(tuple(shape))


def _check_block(nc: NodeContext) -> None:
    if nc.attrs.int("block_size", 0, lo=0) != 0:
        raise nc.fail("blocked quantization (block_size) is not supported")


@converter("QuantizeLinear", since=10)
def quantize_linear(nc: NodeContext) -> list:
    """round_half_even(x / scale) + zero point, saturated to the zero point's integer range."""
    _check_block(nc)
    if nc.attrs.int("saturate", 1, lo=0, hi=1) != 1:
        raise nc.fail("saturate=0 is not supported (it applies to float8 outputs)")
    x = nc.t(0)
    if x.value.dtype not in FLOAT_DTYPES:
        raise nc.fail(f"x must be float16, float32 or float64, got {x.value.dtype}")
    scale = _along(nc, nc.t(1), x.ndim, "y_scale")
    if scale.value.dtype != x.value.dtype:
        scale = nc.op("cast", scale, dtype=x.value.dtype)
    if nc.has(2):
        zero = _along(nc, nc.t(2), x.ndim, "y_zero_point")
    else:
        want = nc.attrs.int("output_dtype", 2)
        if want not in _QUANT_CODES:
            name = ONNX_TYPE_NAMES.get(want, f"type {want}")
            raise nc.fail(f"output_dtype {name} is not supported ({_QUANT_NAMES})")
        zero = nc.tensor(np.zeros((), to_numpy_dtype(_QUANT_CODES[want])), "zero")
    if zero.value.dtype not in QUANT_DTYPES:
        raise nc.fail(f"the zero point must be one of {_QUANT_NAMES}, got {zero.value.dtype}")
    return [nc.op("quantize", x, scale, zero)]


@converter("DequantizeLinear", since=10)
def dequantize_linear(nc: NodeContext) -> list:
    """(x - zero point) * scale, in the scale's float dtype."""
    _check_block(nc)
    q = nc.t(0)
    if q.value.dtype not in (*QUANT_DTYPES, "i32"):
        raise nc.fail(f"x must be one of {_QUANT_NAMES}, int32, got {q.value.dtype}")
    scale = _along(nc, nc.t(1), q.ndim, "x_scale")
    if nc.has(2):
        zero = _along(nc, nc.t(2), q.ndim, "x_zero_point")
    else:
        zero = nc.tensor(np.zeros((), q.value.type.np_dtype), "zero")
    return [nc.op("dequantize", q, scale, zero)]
