"""ONNX's conversions to the low-bit storage types (float8, float4, int4/uint4, int2/uint2).

graphc's ``cast`` to one of these types is ml_dtypes' conversion (round to nearest even; out of
range, a float8 type without infinities gives NaN, float8e5m2 gives inf, float4e2m1 saturates).
That is ONNX's Cast with ``saturate=0``. With ``saturate=1`` (the default, opset 19+), ONNX first
clamps a value beyond the float8 type's largest finite value to it, infinities included, and
keeps NaN (``onnx.numpy_helper.saturate_cast``): ``onnx_cast`` emits that clamp as ``where``
ops in the source dtype before the cast (exact: the bounds are representable in every float
source dtype, and an integer source is clamped only where its range exceeds the bounds).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import numpy_helper

from graphc.ir import GraphcError, to_numpy_dtype
from graphc.ir.types import FLOAT_DTYPES, INT_DTYPES, LOWBIT_DTYPES
from graphc.tensor import Tensor

from .context import NodeContext

# The float8 types Cast's and QuantizeLinear's ``saturate`` applies to (ONNX opset 19+).
FLOAT8_DTYPES = ("f8e4m3fn", "f8e4m3fnuz", "f8e5m2", "f8e5m2fnuz")


def float8_max(dtype: str) -> float:
    """The largest finite value of a float8 type."""
    return float(ml_dtypes.finfo(to_numpy_dtype(dtype)).max)


def cast_array(arr: np.ndarray, dtype: str, saturate: bool) -> np.ndarray:
    """A constant converted as ONNX's Cast does (onnx.numpy_helper.saturate_cast for float8 with
    ``saturate``, else NumPy's/ml_dtypes' conversion)."""
    target = to_numpy_dtype(dtype)
    with np.errstate(all="ignore"):
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


def onnx_cast(nc: NodeContext, x: Tensor, dtype: str, saturate: bool) -> Tensor:
    """``x`` converted to ``dtype`` as ONNX's Cast does (see the module docstring)."""
    if x.value.dtype == dtype:
        return x
    if saturate and dtype in FLOAT8_DTYPES:
        x = _clamped(nc, x, float8_max(dtype))
    return nc.op("cast", x, dtype=dtype)


# The first ONNX opset with each low-bit type (the exporter's opsets end at 21).
_EXPORT_OPSET = {"f8e4m3fn": 19, "f8e4m3fnuz": 19, "f8e5m2": 19, "f8e5m2fnuz": 19, "i4": 21, "u4": 21}
_EXPORT_OPSET.update({"f4e2m1": 23, "i2": 25, "u2": 25})
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
