"""Tensor types: a shape and one of graphc's dtypes."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import GraphcError

# graphc dtype name -> NumPy dtype. The names are what the text form prints.
DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "i32": np.dtype(np.int32),
    "i64": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
    # 8-bit integers: quantized tensors (quantize/dequantize, the int8 matmul).
    "i8": np.dtype(np.int8),
    "u8": np.dtype(np.uint8),
    # The other widths of ONNX's integer types: NumPy's wrap-around arithmetic of that width.
    "i16": np.dtype(np.int16),
    "u16": np.dtype(np.uint16),
    "u32": np.dtype(np.uint32),
    "u64": np.dtype(np.uint64),
    # IEEE half precision: stored as float16, computed in float32 by every backend but the NumPy
    # reference (passes.legalize_half rewrites each op on it to cast -> the op in f32 -> cast).
    "f16": np.dtype(np.float16),
}
_FROM_NUMPY = {v: k for k, v in DTYPES.items()}
# bfloat16 (8 exponent bits, 7 fraction bits; stored only, computed in float32 like f16) is
# ml_dtypes' NumPy extension type, installed with onnx. Importing ml_dtypes takes about as long as
# importing graphc, so DTYPES gains "bf16" on first use (enable_bf16): naming the dtype, meeting a
# bfloat16 array, or importing graphc.onnx. The name is known to the type tables from the start.
# The low-bit types (ONNX's float8/float4/int4/int2) are ml_dtypes types loaded with it: storage
# only, one byte per element in memory (ONNX packs the 4-bit and 2-bit ones in files); casts and
# movement keep them, every other op computes on their f32 (floats) or i32 (ints) widening
# (passes.legalize_half), and promote_dtypes refuses to mix them with another dtype.
# f8e8m0 (ONNX's float8e8m0, ml_dtypes' float8_e8m0fnu) is a scale type: an exponent only, the
# values 2**-127 .. 2**127 and NaN (no sign, no zero; ml_dtypes' conversion makes 0 and negatives NaN).
LOWBIT_FLOAT_DTYPES = ("f8e4m3fn", "f8e4m3fnuz", "f8e5m2", "f8e5m2fnuz", "f8e8m0", "f4e2m1")
LOWBIT_INT_DTYPES = ("i4", "u4", "i2", "u2")
LOWBIT_DTYPES = (*LOWBIT_FLOAT_DTYPES, *LOWBIT_INT_DTYPES)
# graphc name -> ml_dtypes attribute name
_ML_DTYPES = {
    "bf16": "bfloat16",
    "f8e4m3fn": "float8_e4m3fn",
    "f8e4m3fnuz": "float8_e4m3fnuz",
    "f8e5m2": "float8_e5m2",
    "f8e5m2fnuz": "float8_e5m2fnuz",
    "f8e8m0": "float8_e8m0fnu",
    "f4e2m1": "float4_e2m1fn",
    "i4": "int4",
    "u4": "uint4",
    "i2": "int2",
    "u2": "uint2",
}
LAZY_DTYPES = tuple(_ML_DTYPES)
FLOAT_DTYPES = ("f16", "bf16", "f32", "f64")
HALF_DTYPES = ("f16", "bf16")  # 16-bit floats: storage types numba cannot compute in (passes.legalize_half)
# Every dtype numba cannot compute in: the backends only cast and move them (passes.legalize_half).
STORAGE_DTYPES = (*HALF_DTYPES, *LOWBIT_DTYPES)
INT_DTYPES = ("i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64")
UNSIGNED_DTYPES = ("u8", "u16", "u32", "u64")
QUANT_DTYPES = ("i8", "u8", "i16", "u16")  # the dtypes a quantized tensor (and its zero point) may have
INT8_DTYPES = ("i8", "u8")  # the operand dtypes of the int8 GEMMs (qmatmul, qlinear, qconv2d)


def enable_ml_dtypes() -> bool:
    """Add ml_dtypes' types (``bf16`` and ``LOWBIT_DTYPES``) to ``DTYPES``; False where ml_dtypes
    is not installed (or lacks one of them)."""
    if all(name in DTYPES for name in _ML_DTYPES):
        return True
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - onnx brings ml_dtypes
        return False
    for name, attr in _ML_DTYPES.items():
        if name not in DTYPES and hasattr(ml_dtypes, attr):
            DTYPES[name] = np.dtype(getattr(ml_dtypes, attr))
            _FROM_NUMPY[DTYPES[name]] = name
    return all(name in DTYPES for name in _ML_DTYPES)


def enable_bf16() -> bool:
    """Add ``bf16`` (ml_dtypes' bfloat16) and the low-bit types to ``DTYPES`` (enable_ml_dtypes);
    False where ml_dtypes is not installed."""
    enable_ml_dtypes()
    return "bf16" in DTYPES


def dtype_names() -> tuple[str, ...]:
    """Every dtype name graphc knows, the ml_dtypes ones (bf16, ...) included before they are loaded."""
    return (*DTYPES, *(n for n in LAZY_DTYPES if n not in DTYPES))


def to_numpy_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype of a graphc dtype name."""
    try:
        return DTYPES[dtype]
    except KeyError:
        if dtype in _ML_DTYPES and enable_ml_dtypes() and dtype in DTYPES:
            return DTYPES[dtype]
        extra = f" ({dtype} needs the ml_dtypes package)" if dtype in _ML_DTYPES else ""
        raise GraphcError(f"unknown dtype {dtype!r}{extra}; graphc knows {sorted(DTYPES)}") from None


def from_numpy_dtype(dtype: np.dtype | type) -> str:
    """The graphc dtype name of a NumPy dtype."""
    key = np.dtype(dtype)
    try:
        return _FROM_NUMPY[key]
    except KeyError:
        if key.type.__module__.startswith("ml_dtypes") and enable_ml_dtypes() and key in _FROM_NUMPY:
            return _FROM_NUMPY[key]
        raise GraphcError(
            f"NumPy dtype {key} is not supported; use one of {', '.join(str(d) for d in DTYPES.values())}"
        ) from None


def promote_dtypes(a: str, b: str) -> str:
    """The dtype two operands of dtypes ``a`` and ``b`` are computed in (PyTorch's categories).

    bool < integers < floats; the wider float wins (f16, bf16 < f32 < f64, so f16 with f32 is f32
    as in NumPy and PyTorch; f16 with bf16 is f32, as in PyTorch; a float with an integer keeps the
    float's dtype, so f16 with i32 is f16 as in PyTorch, where NumPy would widen); two integers take
    NumPy's result type. NumPy computes u64
    mixed with a signed integer in float64 (losing integers above 2**53), so graphc refuses that
    pair: the caller casts one operand explicitly. A low-bit storage type (``LOWBIT_DTYPES``: f8*
    (f8e8m0 included), f4e2m1, i4, u4, i2, u2) pairs only with itself: mixed with another dtype it
    is refused too.
    """
    for name in (a, b):
        to_numpy_dtype(name)  # an unknown name is an error naming it
    if a != b and (a in LOWBIT_DTYPES or b in LOWBIT_DTYPES):
        low = a if a in LOWBIT_DTYPES else b
        raise GraphcError(
            f"dtypes {a} and {b}: {low} is a storage type that is never promoted implicitly; "
            "cast one operand explicitly"
        )
    if a == b or b == "bool":
        return a
    if a == "bool":
        return b
    if a in FLOAT_DTYPES or b in FLOAT_DTYPES:
        floats = {d for d in (a, b) if d in FLOAT_DTYPES}
        if floats == {"f16", "bf16"}:  # neither holds the other's values
            return "f32"
        return max(floats, key=FLOAT_DTYPES.index)
    result = np.result_type(DTYPES[a], DTYPES[b])
    if result.kind != "i" and result.kind != "u":
        raise GraphcError(
            f"dtypes {a} and {b} have no common integer dtype (NumPy would compute in {result}); "
            "cast one operand explicitly"
        )
    return _FROM_NUMPY[result]


if "ml_dtypes" in sys.modules:  # already paid for (onnx, safetensors' bfloat16 support)
    enable_ml_dtypes()


@dataclass(frozen=True)
class TensorType:
    """The static type of a value: a shape of non-negative ints and a dtype name."""

    shape: tuple[int, ...]
    dtype: str = "f32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d < 0 for d in self.shape):
            raise GraphcError(f"negative dimension in shape {self.shape}")
        to_numpy_dtype(self.dtype)

    @property
    def rank(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    # Sizes are read in the inner loops of the scheduler and the memory planner: computed once
    # per type (the cache sits in the instance __dict__, outside the dataclass fields).
    @cached_property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @cached_property
    def itemsize(self) -> int:
        """Bytes per element."""
        return to_numpy_dtype(self.dtype).itemsize

    @cached_property
    def nbytes(self) -> int:
        """Bytes of a dense buffer holding this type."""
        return self.numel * self.itemsize

    @property
    def np_dtype(self) -> np.dtype:
        """The NumPy dtype."""
        return to_numpy_dtype(self.dtype)

    @cached_property
    def _text(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"

    def __str__(self) -> str:
        return self._text

    @staticmethod
    def of(array: np.ndarray) -> TensorType:
        """The type of a NumPy array."""
        array = np.asarray(array)
        return TensorType(array.shape, from_numpy_dtype(array.dtype))
