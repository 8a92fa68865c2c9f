"""ONNX's conversions to the low-bit storage types (float8, float4, int4/uint4, int2/uint2).

graphc's ``cast`` to one of these types is ml_dtypes' conversion (round to nearest even; out of
range, a float8 type without infinities gives NaN, float8e5m2 gives inf, float4e2m1 saturates).
That is ONNX's Cast with ``saturate=0``. With ``saturate=1`` (the default, opset 19+), ONNX first
clamps a value beyond the float8 type's largest finite value to it, infinities included, and
keeps NaN (``onnx.numpy_helper.saturate_cast``): ``onnx_cast`` emits that clamp as ``where``
ops in the source dtype before the cast (exact: the bounds are representable in every float
source dtype, and an integer source is clamped only where its range exceeds the bounds).

float8e8m0 (a power of two 2**-127 .. 2**127, or NaN) has its own conversion
(``onnx.numpy_helper.to_float8e8m0``): the source is read as float32, its sign ignored, and its
exponent field kept (``round_mode="down"``), raised by one where the fraction is not 0 (``"up"``,
the default) or at least one half (``"nearest"``; below float32's normal range, where the value is
above 2**-127); ``saturate`` keeps 2**127 from rounding up to NaN; infinities and NaN give NaN.
``onnx_cast`` computes that power of two exactly in f64 (a binary search over the exponents, 8
compare-and-select steps) and casts it (exact: ml_dtypes' conversion of a power of two in range).

float8e8m0 is a scale type, never a quantized one: QuantizeLinear's y_scale and DequantizeLinear's
x_scale may be float8e8m0 (opset 24+; the scale is 2**(e - 127)), while the quantized tensor and its
zero point may have any other low-bit type (``QUANTIZED_LOWBIT_DTYPES``). ``dequantize_scale``
widens such a scale to float32 (exact) and gives DequantizeLinear's output dtype.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
from onnx import numpy_helper

from graphc.ir import GraphcError, to_numpy_dtype
from graphc.ir.types import FLOAT_DTYPES, INT_DTYPES, LOWBIT_DTYPES
from graphc.tensor import Tensor

from .context import NodeContext
from .proto import ONNX_TO_GRAPHC, ONNX_TYPE_NAMES

# The float8 types Cast's and QuantizeLinear's ``saturate`` applies to (ONNX opset 19+).
FLOAT8_DTYPES = ("f8e4m3fn", "f8e4m3fnuz", "f8e5m2", "f8e5m2fnuz")
E8M0 = "f8e8m0"
ROUND_MODES = ("up", "down", "nearest")  # Cast's round_mode (float8e8m0 only)
_E8M0_MIN_EXP, _E8M0_MAX_EXP = -127, 127  # its values: 2**-127 .. 2**127 (and NaN)
_F32_MAX = float(np.finfo(np.float32).max)
# The low-bit types a quantized tensor (and its zero point) may have: all but float8e8m0 (ONNX's
# QuantizeLinear/DequantizeLinear T1/T3), which is a scale type only.
QUANTIZED_LOWBIT_DTYPES = tuple(d for d in LOWBIT_DTYPES if d != E8M0)
_DEQUANTIZED_DTYPES = ("f32", "f16", "bf16")  # DequantizeLinear's output types (T3)


def float8_max(dtype: str) -> float:
    """The largest finite value of a float8 type."""
    return float(ml_dtypes.finfo(to_numpy_dtype(dtype)).max)


def cast_array(arr: np.ndarray, dtype: str, saturate: bool, round_mode: str = "up") -> np.ndarray:
    """A constant converted as ONNX's Cast does (onnx.numpy_helper.saturate_cast for float8 with
    ``saturate``, to_float8e8m0 for float8e8m0, else NumPy's/ml_dtypes' conversion)."""
    target = to_numpy_dtype(dtype)
    with np.errstate(all="ignore"):
        if dtype == E8M0 and arr.dtype != target:
            return np.asarray(numpy_helper.to_float8e8m0(arr, saturate, round_mode)).astype(target)
        if saturate and dtype in FLOAT8_DTYPES:
            return np.asarray(numpy_helper.saturate_cast(arr, target))
        return arr.astype(target)


def _clamped(nc: NodeContext, x: Tensor, bound: float) -> Tensor:
    """``x`` with values above ``bound`` replaced by it, below ``-bound`` by ``-bound`` (NaN kept)."""
    src = x.value.dtype
    if src in INT_DTYPES:
        info = np.iinfo(to_numpy_dtype(src))
        if info.max <= bound and info.min >= -bound:
            return x
    elif src not in FLOAT_DTYPES and src not in LOWBIT_DTYPES:  # bool
        return x
    hi = nc.ctx.const(bound, src)
    x = nc.op("where", nc.op("gt", x, hi), hi, x)
    if src in INT_DTYPES and np.iinfo(to_numpy_dtype(src)).min == 0:
        return x
    lo = nc.ctx.const(-bound, src)
    return nc.op("where", nc.op("lt", x, lo), lo, x)


def _to_e8m0(nc: NodeContext, x: Tensor, saturate: bool, round_mode: str) -> Tensor:
    """``x`` converted to float8e8m0 as onnx.numpy_helper.to_float8e8m0 does (module docstring)."""
    f64 = "f64"
    if x.value.dtype != "f32":  # read as float32 first (f64 rounds, beyond its range to inf)
        x = nc.op("cast", x, dtype="f32")
    a = nc.op("cast", nc.op("abs", x), dtype=f64)
    # power: the largest 2**k <= a, k >= -127 (2**-127 below that); exact steps in f64
    power = nc.ctx.const(2.0**_E8M0_MIN_EXP, f64)
    for step in (128, 64, 32, 16, 8, 4, 2, 1):
        bigger = nc.op("mul", power, nc.ctx.const(2.0**step, f64))
        power = nc.op("where", nc.op("ge", a, bigger), bigger, power)
    if round_mode != "down":
        normal = nc.op("ge", a, nc.ctx.const(2.0 ** (_E8M0_MIN_EXP + 1), f64))  # float32's normals
        if round_mode == "up":  # a fraction: above the power (below the normals: above 0)
            above = nc.op("where", normal, power, nc.ctx.const(0.0, f64))
            up = nc.op("gt", a, above)
        else:  # nearest: 1.5 * power or more (below the normals: above 2**-127)
            up = nc.op(
                "where",
                normal,
                nc.op("ge", a, nc.op("mul", power, nc.ctx.const(1.5, f64))),
                nc.op("gt", a, nc.ctx.const(2.0**_E8M0_MIN_EXP, f64)),
            )
        power = nc.op("where", up, nc.op("mul", power, nc.ctx.const(2.0, f64)), power)
    if saturate:  # 2**127 stays (else 2**128: inf in float32, NaN in float8e8m0)
        power = nc.op("minimum", power, nc.ctx.const(2.0**_E8M0_MAX_EXP, f64))
    finite = nc.op("le", a, nc.ctx.const(_F32_MAX, f64))  # false for inf and NaN: NaN
    power = nc.op("where", finite, power, nc.ctx.const(math.inf, f64))
    return nc.op("cast", nc.op("cast", power, dtype="f32"), dtype=E8M0)


def onnx_cast(nc: NodeContext, x: Tensor, dtype: str, saturate: bool, round_mode: str = "up") -> Tensor:
    """``x`` converted to ``dtype`` as ONNX's Cast does (see the module docstring); ``round_mode``
    applies to float8e8m0 only."""
    if x.value.dtype == dtype:
        return x
    if dtype == E8M0:
        return _to_e8m0(nc, x, saturate, round_mode)
    if saturate and dtype in FLOAT8_DTYPES:
        x = _clamped(nc, x, float8_max(dtype))
    return nc.op("cast", x, dtype=dtype)


# The first ONNX opset with each low-bit type (the exporter's opsets end at 21).
_EXPORT_OPSET = {"f8e4m3fn": 19, "f8e4m3fnuz": 19, "f8e5m2": 19, "f8e5m2fnuz": 19, "i4": 21, "u4": 21}
_EXPORT_OPSET.update({"f4e2m1": 23, "f8e8m0": 24, "i2": 25, "u2": 25})
# The graphc ops the exporter writes on low-bit values (ONNX has no arithmetic on them).
_EXPORT_OPS = frozenset({"cast", "reshape", "transpose", "slice", "concat", "gather"})


def check_export(dtypes: list[str], opset: int, op: str | None = None, where: str = "") -> None:
    """A GraphcError unless ONNX at ``opset`` has each low-bit dtype of ``dtypes`` (and, for a node
    ``op``, the op on them: casts and movement only)."""
    for dtype in dtypes:
        need = _EXPORT_OPSET.get(dtype)
        if need is None:
            continue
        if opset < need:
            raise GraphcError(f"ONNX export{where}: {dtype} values need opset {need} or newer, got {opset}")
        if op is not None and op not in _EXPORT_OPS:
            raise GraphcError(
                f"ONNX export{where}: ONNX has no {op} on {dtype} (a storage type): cast to a float first"
            )


def dequantize_scale(nc: NodeContext, scale: Tensor) -> tuple[Tensor, str]:
    """DequantizeLinear's ``x_scale`` in the float dtype it computes in, and its output dtype: the
    ``output_dtype`` attribute (opset 23+) where given, else the scale's dtype. A scale of another
    dtype than the output is widened to float32 (exact; onnx's reference multiplies in float32 and
    casts the product): a float8e8m0 scale (2**(e - 127), NaN for 0xFF) needs ``output_dtype``."""
    code = nc.attrs.int("output_dtype", 0) if "output_dtype" in nc.attrs else 0
    out = ONNX_TO_GRAPHC.get(code) if code else scale.value.dtype
    if code and out not in _DEQUANTIZED_DTYPES:
        name = ONNX_TYPE_NAMES.get(code, f"type {code}")
        raise nc.fail(f"output_dtype must be float, float16 or bfloat16, got {name}")
    if scale.value.dtype == E8M0 and not code:
        raise nc.fail("a float8e8m0 x_scale needs the output_dtype attribute (float, float16 or bfloat16)")
    if out != scale.value.dtype and scale.value.dtype != "f32":
        scale = nc.op("cast", scale, dtype="f32")
    return scale, out
