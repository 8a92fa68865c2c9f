"""Tensor's pointwise methods: the unary math functions, activations, clamp, maximum/minimum,
masked_fill, softmax, and the bitwise ops with their operators (``& | ^ ~ << >>``). A mixin of
graphc.tensor.Tensor, kept apart so each file reads in one sitting (the arithmetic operators stay
with the class)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from graphc import ir
from graphc.ir import GraphcError
from graphc.ir.types import FLOAT_DTYPES
from graphc.tracing import _at, user_source

if TYPE_CHECKING:
    from graphc.tensor import Tensor


class PointwiseOps:
    """Elementwise methods of Tensor (see graphc.tensor for the class itself)."""

    __slots__ = ()

    # ------------------------------------------------------------ pointwise
    def _unary(self, op: str) -> Tensor:
        x = self
        if self.ctx.eager:
            out = self.ctx.unary(op, x)
            if out is not None:
                return out
        if op in ir.ops.UNARY_FLOAT and x.value.dtype not in FLOAT_DTYPES:
            x = x.to("f32")
        return self.ctx.op(op, x)

    def exp(self) -> Tensor:
        """e ** x."""
        return self._unary("exp")

    def log(self) -> Tensor:
        """Natural logarithm."""
        return self._unary("log")

    def sqrt(self) -> Tensor:
        """Square root."""
        return self._unary("sqrt")

    def rsqrt(self) -> Tensor:
        """1 / sqrt(x)."""
        return self._unary("rsqrt")

    def abs(self) -> Tensor:
        """Absolute value."""
        return self._unary("abs")

    def sign(self) -> Tensor:
        """Sign (-1, 0, 1)."""
        return self._unary("sign")

    def tanh(self) -> Tensor:
        """Hyperbolic tangent."""
        return self._unary("tanh")

    def erf(self) -> Tensor:
        """The error function."""
        return self._unary("erf")

    def sin(self) -> Tensor:
        """Sine."""
        return self._unary("sin")

    def cos(self) -> Tensor:
        """Cosine."""
        return self._unary("cos")

    def reciprocal(self) -> Tensor:
        """1 / x."""
        return self._unary("reciprocal")

    def acos(self) -> Tensor:
        """Inverse cosine (NaN outside [-1, 1])."""
        return self._unary("acos")

    def asin(self) -> Tensor:
        """Inverse sine (NaN outside [-1, 1])."""
        return self._unary("asin")

    def atan(self) -> Tensor:
        """Inverse tangent."""
        return self._unary("atan")

    def acosh(self) -> Tensor:
        """Inverse hyperbolic cosine (NaN below 1)."""
        return self._unary("acosh")

    def asinh(self) -> Tensor:
        """Inverse hyperbolic sine."""
        return self._unary("asinh")

    def atanh(self) -> Tensor:
        """Inverse hyperbolic tangent (NaN outside [-1, 1], +-inf at +-1)."""
        return self._unary("atanh")

    arccos, arcsin, arctan = acos, asin, atan
    arccosh, arcsinh, arctanh = acosh, asinh, atanh

    def neg(self) -> Tensor:
        """-x."""
        return -self

    def square(self) -> Tensor:
        """x * x."""
        return self * self

    def sigmoid(self) -> Tensor:
        """1 / (1 + exp(-x))."""
        x = self if self.value.dtype in FLOAT_DTYPES else self.to("f32")
        return (1.0 + (-x).exp()).reciprocal()

    def relu(self) -> Tensor:
        """0 where x <= 0, else x: NaN stays NaN, and the gradient is 0 at 0 and passes at NaN (torch)."""
        if self.ctx.eager:
            out = self.ctx.relu(self)
            if out is not None:
                return out
        zero = _t.as_tensor(0, like=self)
        return self.ctx.op("where", self.ctx.op("le", self, zero), zero, self)

    def maximum(self, other: object) -> Tensor:
        """Elementwise maximum."""
        return self._binary("maximum", other)

    def minimum(self, other: object) -> Tensor:
        """Elementwise minimum."""
        return self._binary("minimum", other)

    def clamp(self, min: object = None, max: object = None) -> Tensor:
        """Limit values to [min, max] (either may be None), with PyTorch's NaN and gradient rules.

        ``min(max(x, min), max)`` where a NaN anywhere gives NaN; the gradient reaches x where
        ``min <= x <= max`` (so at the bounds too) and not at NaN, and a tensor bound where it is
        the result.
        """
        if min is None and max is None:
            raise GraphcError(f"{_at(user_source())}clamp: at least one of min and max must be given")
        out, guarded = self, False
        for bound, cmp in ((min, "lt"), (max, "gt")):
            if bound is None:
                continue
            b = _t.as_tensor(bound, like=out)
            out, b = _t._promote(out, b)
            if not guarded and out.value.dtype in ("f32", "f64"):
                guarded = True
                # x itself where it is a number, a NaN constant (no gradient) where it is NaN
                nan = self.ctx.const(math.nan, out.value.dtype)
                out = self.ctx.op("where", self.ctx.op("ne", out, out), nan, out)
            take = self.ctx.op(cmp, out, b)
            number = isinstance(bound, (int, float)) and not math.isnan(bound)
            if not number and b.value.dtype in ("f32", "f64"):  # a NaN bound gives NaN
                take = self.ctx.op("where", self.ctx.op("ne", b, b), b.ctx.const(True, "bool"), take)
            out = self.ctx.op("where", take, b, out)
        return out

    clip = clamp

    def masked_fill(self, mask: Tensor, value: object) -> Tensor:
        """``value`` where ``mask`` is true, else ``self`` (the result keeps self's dtype)."""
        v = _t.as_tensor(value, like=self)
        if v.value.dtype != self.value.dtype and not (isinstance(value, Tensor) and v.ndim):
            v = v.to(self.value.dtype)
        return _t.where(mask, v, self)

    # ------------------------------------------------------------ bitwise
    def _bitwise(self, op: str, other: object, reflected: bool = False) -> Tensor:
        """``self op other`` on integer or bool tensors (promoted to one dtype as PyTorch does)."""
        b = _t.as_tensor(other, like=self)
        a, b = (b, self) if reflected else (self, b)
        a, b = _t._promote(a, b)
        dtype = a.value.dtype
        if dtype in FLOAT_DTYPES or (dtype == "bool" and op in ir.ops.SHIFT_BINARY):
            kinds = "integer" if op in ir.ops.SHIFT_BINARY else "integer or bool"
            raise GraphcError(f"{_at(user_source())}{_BITWISE_NAMES[op]} needs {kinds} tensors, got {dtype}")
        return a._binary(op, b)

    def bitwise_and(self, other: object) -> Tensor:
        """Bitwise and (logical and on bool)."""
        return self._bitwise("bitwise_and", other)

    def bitwise_or(self, other: object) -> Tensor:
        """Bitwise or (logical or on bool)."""
        return self._bitwise("bitwise_or", other)

    def bitwise_xor(self, other: object) -> Tensor:
        """Bitwise exclusive or (logical xor on bool)."""
        return self._bitwise("bitwise_xor", other)

    def bitwise_not(self) -> Tensor:
        """Bitwise not, ``~x`` (logical not on bool)."""
        dtype = self.value.dtype
        if dtype in FLOAT_DTYPES:
            raise GraphcError(
                f"{_at(user_source())}~ (bitwise_not) needs an integer or bool tensor, got {dtype}"
            )
        return self.ctx.op("bitwise_not", self)

    def bitwise_left_shift(self, other: object) -> Tensor:
        """``x << other``: a shift count outside [0, bits) gives 0."""
        return self._bitwise("left_shift", other)

    def bitwise_right_shift(self, other: object) -> Tensor:
        """``x >> other`` (arithmetic on signed integers): a count outside [0, bits) gives 0, or -1
        for a negative x."""
        return self._bitwise("right_shift", other)

    def __and__(self, other: object) -> Tensor:
        return self._bitwise("bitwise_and", other)

    def __rand__(self, other: object) -> Tensor:
        return self._bitwise("bitwise_and", other, reflected=True)

    def __or__(self, other: object) -> Tensor:
        return self._bitwise("bitwise_or", other)

    def __ror__(self, other: object) -> Tensor:
        return self._bitwise("bitwise_or", other, reflected=True)

    def __xor__(self, other: object) -> Tensor:
        return self._bitwise("bitwise_xor", other)

    def __rxor__(self, other: object) -> Tensor:
        return self._bitwise("bitwise_xor", other, reflected=True)

    def __invert__(self) -> Tensor:
        return self.bitwise_not()

    def __lshift__(self, other: object) -> Tensor:
        return self._bitwise("left_shift", other)

    def __rlshift__(self, other: object) -> Tensor:
        return self._bitwise("left_shift", other, reflected=True)

    def __rshift__(self, other: object) -> Tensor:
        return self._bitwise("right_shift", other)

    def __rrshift__(self, other: object) -> Tensor:
        return self._bitwise("right_shift", other, reflected=True)

    def softmax(self, dim: int = -1) -> Tensor:
        """Softmax over ``dim``."""
        from graphc import functional

        return functional.softmax(self, dim)

    def log_softmax(self, dim: int = -1) -> Tensor:
        """Log-softmax over ``dim``."""
        from graphc import functional

        return functional.log_softmax(self, dim)


_BITWISE_NAMES = {
    "bitwise_and": "& (bitwise_and)",
    "bitwise_or": "| (bitwise_or)",
    "bitwise_xor": "^ (bitwise_xor)",
    "left_shift": "<< (bitwise_left_shift)",
    "right_shift": ">> (bitwise_right_shift)",
}

from graphc import tensor as _t  # noqa: E402  (graphc.tensor imports this module first)
