"""Tensor types: a shape and one of graphc's dtypes."""

from __future__ import annotations

import math
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
}
_FROM_NUMPY = {v: k for k, v in DTYPES.items()}
FLOAT_DTYPES = ("f32", "f64")
INT_DTYPES = ("i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64")
UNSIGNED_DTYPES = ("u8", "u16", "u32", "u64")
QUANT_DTYPES = ("i8", "u8", "i16", "u16")  # the dtypes a quantized tensor (and its zero point) may have
INT8_DTYPES = ("i8", "u8")  # the operand dtypes of the int8 GEMMs (qmatmul, qlinear, qconv2d)


def to_numpy_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype of a graphc dtype name."""
    try:
        return DTYPES[dtype]
    except KeyError:
        raise GraphcError(f"unknown dtype {dtype!r}; graphc knows {sorted(DTYPES)}") from None


def from_numpy_dtype(dtype: np.dtype | type) -> str:
    """The graphc dtype name of a NumPy dtype."""
    key = np.dtype(dtype)
    try:
        return _FROM_NUMPY[key]
    except KeyError:
        raise GraphcError(
            f"NumPy dtype {key} is not supported; use one of {', '.join(str(d) for d in DTYPES.values())}"
        ) from None


def promote_dtypes(a: str, b: str) -> str:
    """The dtype two operands of dtypes ``a`` and ``b`` are computed in (PyTorch's categories).

    bool < integers < floats; the wider float wins; two integers take NumPy's result type. NumPy
    computes u64 mixed with a signed integer in float64 (losing integers above 2**53), so graphc
    refuses that pair: the caller casts one operand explicitly.
    """
    for name in (a, b):
        to_numpy_dtype(name)  # an unknown name is an error naming it
    if a == b or b == "bool":
        return a
    if a == "bool":
        return b
    if a in FLOAT_DTYPES or b in FLOAT_DTYPES:
        floats = [d for d in (a, b) if d in FLOAT_DTYPES]
        return "f64" if "f64" in floats else "f32"
    result = np.result_type(DTYPES[a], DTYPES[b])
    if result.kind != "i" and result.kind != "u":
        raise GraphcError(
            f"dtypes {a} and {b} have no common integer dtype (NumPy would compute in {result}); "
            "cast one operand explicitly"
        )
    return _FROM_NUMPY[result]


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
