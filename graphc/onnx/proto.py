"""Reading ONNX protobuf data as checked Python values: attributes, tensors, dtypes, names.

Everything read from a model file is data: each attribute is checked for its type and range
here before a converter uses it, and names are sanitized before they become graphc value names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from graphc.ir import DTYPES, GraphcError

# ONNX TensorProto element types graphc computes in (others are converted where lossless).
ONNX_TO_GRAPHC = {
    1: "f32",
    2: "u8",
    3: "i8",
    4: "u16",
    5: "i16",
    6: "i32",
    7: "i64",
    9: "bool",
    10: "f16",
    11: "f64",
    12: "u32",
    13: "u64",
}
# ml_dtypes' types (installed with onnx): bfloat16 and the low-bit storage types. TensorProto packs
# the 4-bit and 2-bit ones two and four to a byte; onnx.numpy_helper unpacks them (one per byte).
_ML_TYPES = {
    16: "bf16",
    17: "f8e4m3fn",
    18: "f8e4m3fnuz",
    19: "f8e5m2",
    20: "f8e5m2fnuz",
    21: "u4",
    22: "i4",
    23: "f4e2m1",
    24: "f8e8m0",
    25: "u2",
    26: "i2",
}
ONNX_TO_GRAPHC.update({code: name for code, name in _ML_TYPES.items() if name in DTYPES})
GRAPHC_TO_ONNX = {v: k for k, v in ONNX_TO_GRAPHC.items()}
# Element types whose values graphc reads by widening to one of its own (none at present).
_WIDEN: dict[int, type] = {}
ONNX_TYPE_NAMES = {
    1: "float",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "double",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
    17: "float8e4m3fn",
    18: "float8e4m3fnuz",
    19: "float8e5m2",
    20: "float8e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4e2m1",
    24: "float8e8m0",
    25: "uint2",
    26: "int2",
}
MAX_ELEMENTS = 2**34  # the largest tensor graphc reads from a file
MAX_RANK = 32


def sanitize(name: str, fallback: str = "v") -> str:
    """A graphc value name made from an ONNX name: letters, digits, '_' and '.', at most 64 chars."""
    text = re.sub(r"[^A-Za-z0-9_.]", "_", str(name))[:64].strip("._") or fallback
    return text if not text[0].isdigit() else f"{fallback}_{text}"


def identifier(name: str, fallback: str = "input") -> str:
    """A Python identifier made from an ONNX name (for parameter and argument names)."""
    text = re.sub(r"[^A-Za-z0-9_]", "_", str(name))[:64].strip("_") or fallback
    return text if not text[0].isdigit() else f"{fallback}_{text}"


def graphc_dtype(elem_type: int, where: str) -> str:
    """The graphc dtype of an ONNX element type, or a GraphcError naming it."""
    if elem_type in ONNX_TO_GRAPHC:
        return ONNX_TO_GRAPHC[elem_type]
    name = ONNX_TYPE_NAMES.get(elem_type, f"type {elem_type}")
    raise GraphcError(
        f"{where}: element type {name} is not supported "
        "(graphc has float16/32/64, bfloat16, float8e4m3fn/e4m3fnuz/e5m2/e5m2fnuz/e8m0, float4e2m1, "
        "int2/4/8/16/32/64, uint2/4/8/16/32/64, bool)"
    )


def to_array(tensor, where: str) -> np.ndarray:
    """A TensorProto as a NumPy array of a graphc dtype (its own element type)."""
    from onnx import numpy_helper

    if tensor.data_location == 1 or len(tensor.external_data):
        raise GraphcError(
            f"{where}: tensor {tensor.name!r} keeps its data in an external file; not supported"
        )
    dims = list(tensor.dims)
    if len(dims) > MAX_RANK or any(d < 0 for d in dims) or math.prod(dims) > MAX_ELEMENTS:
        raise GraphcError(f"{where}: tensor {tensor.name!r} has a bad shape {dims[:8]}")
    etype = tensor.data_type
    if etype not in ONNX_TO_GRAPHC and etype not in _WIDEN:
        graphc_dtype(etype, where)
    try:
        arr = numpy_helper.to_array(tensor)
    except Exception as err:  # malformed raw_data: wrong length, ...
        raise GraphcError(f"{where}: tensor {tensor.name!r} is malformed: {err}") from None
    if tuple(arr.shape) != tuple(dims):
        raise GraphcError(f"{where}: tensor {tensor.name!r} holds {arr.shape} values for dims {dims}")
    # a fresh, writable array (numpy_helper may return a read-only view of the protobuf bytes)
    return np.array(arr, dtype=_WIDEN.get(etype, arr.dtype), order="C", copy=True)


class Attrs:
    """The checked attributes of one node: each getter validates type and range, or raises."""

    def __init__(self, node, where: str) -> None:
        self.where = where
        self._by_name = {}
        for a in node.attribute:
            if a.name in self._by_name:
                raise GraphcError(f"{where}: attribute {a.name!r} is given twice")
            self._by_name[a.name] = a

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def _get(self, name: str, kind: int, kind_name: str):
        a = self._by_name.get(name)
        if a is None:
            return None
        if a.type != kind:
            raise GraphcError(f"{self.where}: attribute {name!r} must be {kind_name}")
        return a

    def _fail(self, name: str, what: str, value: object) -> GraphcError:
        text = repr(value)
        return GraphcError(f"{self.where}: attribute {name!r} must be {what}, got {text[:60]}")

    def int(self, name: str, default: int | None = None, lo: int = -(2**62), hi: int = 2**62) -> int:
        """An INT attribute in [lo, hi] (``default`` when absent; required when default is None)."""
        a = self._get(name, 2, "an int")
        if a is None:
            if default is None:
                raise GraphcError(f"{self.where}: missing required attribute {name!r}")
            return default
        if not lo <= a.i <= hi:
            raise self._fail(name, f"in [{lo}, {hi}]", a.i)
        return int(a.i)

    def float(self, name: str, default: float | None = None, finite: bool = True) -> float:
        """A FLOAT attribute (finite unless ``finite=False``)."""
        a = self._get(name, 1, "a float")
        if a is None:
            if default is None:
                raise GraphcError(f"{self.where}: missing required attribute {name!r}")
            return default
        if finite and not math.isfinite(a.f):
            raise self._fail(name, "finite", a.f)
        return float(a.f)

    def ints(
        self,
        name: str,
        default: Sequence[int] | None = None,
        length: int | None = None,
        lo: int = -(2**62),
        hi: int = 2**62,
    ) -> list[int] | None:
        """An INTS attribute, each in [lo, hi], ``length`` entries if given (None when absent)."""
        a = self._get(name, 7, "a list of ints")
        if a is None:
            return None if default is None else list(default)
        values = [int(v) for v in a.ints]
        if len(values) > 4 * MAX_RANK:
            raise self._fail(name, f"at most {4 * MAX_RANK} entries", len(values))
        if length is not None and len(values) != length:
            raise self._fail(name, f"{length} entries", values)
        if any(not lo <= v <= hi for v in values):
            raise self._fail(name, f"ints in [{lo}, {hi}]", values)
        return values

    def floats(self, name: str) -> list[float] | None:
        """A FLOATS attribute (None when absent)."""
        a = self._get(name, 6, "a list of floats")
        return None if a is None else [float(v) for v in a.floats]

    def string(self, name: str, default: str, choices: Sequence[str]) -> str:
        """A STRING attribute that is one of ``choices``."""
        a = self._get(name, 3, "a string")
        if a is None:
            return default
        try:
            value = a.s.decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail(name, "UTF-8 text", a.s[:20]) from None
        if value not in choices:
            raise self._fail(name, f"one of {list(choices)}", value)
        return value

    def raw_string(self, name: str, max_len: int = 256) -> str | None:
        """A STRING attribute as text, checked later by the caller (None when absent)."""
        a = self._get(name, 3, "a string")
        if a is None:
            return None
        if len(a.s) > max_len:
            raise self._fail(name, f"at most {max_len} bytes", a.s[:20])
        try:
            return a.s.decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail(name, "UTF-8 text", a.s[:20]) from None

    def tensor(self, name: str) -> np.ndarray | None:
        """A TENSOR attribute as an array (None when absent)."""
        a = self._get(name, 4, "a tensor")
        return None if a is None else to_array(a.t, f"{self.where}: attribute {name!r}")

    def graph(self, name: str):
        """A GRAPH attribute (an If/Loop/Scan body): the GraphProto; a GraphcError when absent."""
        a = self._get(name, 5, "a graph")
        if a is None:
            raise GraphcError(f"{self.where}: missing required attribute {name!r}")
        return a.g

    def names(self) -> list[str]:
        """The names of the attributes given."""
        return list(self._by_name)
