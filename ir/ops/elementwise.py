"""Elementwise ops: unary pointwise ops, casts, binary ops with NumPy broadcasting, ``where``,
``broadcast_to``, ``stop_gradient``."""

from __future__ import annotations

from ..errors import GraphcError
from ..types import FLOAT_DTYPES, INT_DTYPES, TensorType
from .registry import DTYPE, SHAPE, Attr, _bcast, _check, _register, _RuleError, _same_dtype, broadcast_shapes


# ---------------------------------------------------------------- pointwise
def _unary_float(inputs, attrs):
    (x,) = inputs
    _check(x.dtype in FLOAT_DTYPES, f"needs a float operand, got {x.dtype}")
    return [x]


def _unary_numeric(inputs, attrs):
    (x,) = inputs
    _check(x.dtype != "bool", "needs a numeric operand, got bool")
    return [x]


def _cast(inputs, attrs):
    return [TensorType(inputs[0].shape, attrs["dtype"])]


def _unary_bitwise(inputs, attrs):
    (x,) = inputs
    _check(x.dtype in INT_DTYPES or x.dtype == "bool", f"needs an integer or bool operand, got {x.dtype}")
    return [x]


# acos/asin/atanh: NaN outside [-1, 1] (atanh: +-inf at +-1); acosh: NaN below 1.
UNARY_FLOAT = (
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "tanh",
    "erf",
    "sin",
    "cos",
    "reciprocal",
    "acos",
    "asin",
    "atan",
    "acosh",
    "asinh",
    "atanh",
)
UNARY_NUMERIC = ("neg", "abs", "sign")
# floor/ceil/round (half to even)/trunc: integral floats; on integers they return the operand.
ROUNDING = ("floor", "ceil", "round", "trunc")
for _name in UNARY_FLOAT:
    _register(_name, 1, "pointwise", _unary_float)
for _name in UNARY_NUMERIC + ROUNDING:
    _register(_name, 1, "pointwise", _unary_numeric)
_register("cast", 1, "pointwise", _cast, {"dtype": Attr(DTYPE)})
# bitwise_not: ~x on integers (two's complement), logical not on bool.
_register("bitwise_not", 1, "pointwise", _unary_bitwise)


# ---------------------------------------------------------------- broadcast
def _arith(inputs, attrs):
    dtype = _same_dtype(inputs)
    _check(dtype != "bool", "arithmetic on bool; cast first")
    return [TensorType(_bcast(inputs), dtype)]


def _float_binary(inputs, attrs):
    dtype = _same_dtype(inputs)
    _check(dtype in FLOAT_DTYPES, f"needs float operands, got {dtype}")
    return [TensorType(_bcast(inputs), dtype)]


def _bitwise(inputs, attrs):
    dtype = _same_dtype(inputs)
    _check(dtype in INT_DTYPES or dtype == "bool", f"needs integer or bool operands, got {dtype}")
    return [TensorType(_bcast(inputs), dtype)]


def _shift(inputs, attrs):
    dtype = _same_dtype(inputs)
    _check(dtype in INT_DTYPES, f"needs integer operands, got {dtype}")
    return [TensorType(_bcast(inputs), dtype)]


def _compare(inputs, attrs):
    _same_dtype(inputs)
    return [TensorType(_bcast(inputs), "bool")]


def _where(inputs, attrs):
    cond, a, b = inputs
    _check(cond.dtype == "bool", f"condition must be bool, got {cond.dtype}")
    dtype = _same_dtype([a, b])
    return [TensorType(_bcast(inputs), dtype)]


def _broadcast_to(inputs, attrs):
    (x,) = inputs
    shape = tuple(attrs["shape"])
    try:
        out = broadcast_shapes(x.shape, shape)
    except GraphcError as err:
        raise _RuleError(str(err)) from None
    _check(out == shape, f"cannot broadcast {x.shape} to {shape}")
    return [TensorType(shape, x.dtype)]


# fmod: C's remainder (the dividend's sign); remainder and floordiv: Python's and NumPy's (the
# divisor's sign, floor(a / b)); an integer divisor of 0 gives 0, as NumPy does.
ARITH_BINARY = ("add", "sub", "mul", "maximum", "minimum", "fmod", "remainder", "floordiv")
FLOAT_BINARY = ("div", "pow")
COMPARE_BINARY = ("lt", "le", "eq", "ne", "gt", "ge")
# Bitwise and/or/xor on integers and bool (where they are logical and/or/xor).
BITWISE_BINARY = ("bitwise_and", "bitwise_or", "bitwise_xor")
# Shifts of integers by a shift count of the same dtype (NumPy's and PyTorch's rule): a count
# outside [0, bits) shifts everything out (0; -1 for a negative operand shifted right);
# right shifts of signed integers are arithmetic.
SHIFT_BINARY = ("left_shift", "right_shift")
for _name in ARITH_BINARY:
    _register(_name, 2, "broadcast", _arith)
for _name in FLOAT_BINARY:
    _register(_name, 2, "broadcast", _float_binary)
for _name in COMPARE_BINARY:
    _register(_name, 2, "broadcast", _compare)
for _name in BITWISE_BINARY:
    _register(_name, 2, "broadcast", _bitwise)
for _name in SHIFT_BINARY:
    _register(_name, 2, "broadcast", _shift)
_register("where", 3, "broadcast", _where)
_register("broadcast_to", 1, "broadcast", _broadcast_to, {"shape": Attr(SHAPE)})


# --- pytorch surface
# stop_gradient(x) is x, with no gradient flowing back through it (``Tensor.detach()`` /
# ``.data``): autodiff lists it in NON_DIFFERENTIABLE; every backend runs it as a copy.
def _stop_gradient(inputs, attrs):
    return [inputs[0]]


_register("stop_gradient", 1, "pointwise", _stop_gradient)
