"""graphc.functional's activations: relu, leaky_relu, gelu, sigmoid, silu, tanh, softmax, log_softmax."""

from __future__ import annotations

import math
from typing import Any

from graphc.functional_base import _composite, _eager, _float, _result, _t
from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, user_source
from graphc.tensor import where as _where

__all__ = ["relu", "leaky_relu", "gelu", "sigmoid", "silu", "tanh", "softmax", "log_softmax"]


@_eager
def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(x, 0), NaN propagating (``inplace`` rebinds ``input``, as PyTorch's does)."""
    x = _t(input)
    return _result(x, x.relu(), inplace, "relu(inplace=True)")


@_eager
def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x where x > 0, else negative_slope * x (so the gradient at 0 is negative_slope, as in torch)."""
    x = _t(input)
    return _result(x, _where(x > 0, x, x * negative_slope), inplace, "leaky_relu(inplace=True)")


@_eager
def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit: exact (erf) or ``approximate='tanh'``."""
    x = _float(_t(input))
    if x.ctx.eager and approximate in ("none", "tanh"):  # eager mode: one composite step
        out = _composite(_gelu, (x,), {"approximate": approximate})
        if out is not None:
            return out
    return _gelu(x, approximate)


def _gelu(x: Tensor, approximate: str) -> Tensor:
    """``gelu``'s definition on a float tensor (traced as is)."""
    if approximate == "none":
        return x * 0.5 * (1.0 + (x * (1.0 / math.sqrt(2.0))).erf())
    if approximate == "tanh":
        inner = (x + x * x * x * 0.044715) * math.sqrt(2.0 / math.pi)
        return x * 0.5 * (1.0 + inner.tanh())
    raise GraphcError(f"{_at(user_source())}gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


@_eager
def sigmoid(input: Tensor) -> Tensor:
    """1 / (1 + exp(-x))."""
    return _t(input).sigmoid()


@_eager
def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """x * sigmoid(x)."""
    x = _t(input)
    return _result(x, x * x.sigmoid(), inplace, "silu(inplace=True)")


@_eager
def tanh(input: Tensor) -> Tensor:
    """Hyperbolic tangent."""
    return _t(input).tanh()


def _softmax_dim(ndim: int, dim: int | None) -> int:
    if dim is not None:
        return dim
    # PyTorch's legacy choice when dim is left out.
    return 0 if ndim in (0, 1, 3) else 1


@_eager
def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """exp(x - max) / sum(exp(x - max)) along ``dim``."""
    x = _float(_t(input) if dtype is None else _t(input).to(dtype))
    if x.ctx.eager:  # eager mode: one composite step (graphc/eager_composite.py)
        out = _composite(_softmax, (x,), {"dim": dim})
        if out is not None:
            return out
    return _softmax(x, dim)


def _softmax(x: Tensor, dim: int | None) -> Tensor:
    """``softmax``'s definition on a float tensor (traced as is)."""
    d = _softmax_dim(x.ndim, dim)
    e = (x - x.amax(d, keepdim=True)).exp()
    return e / e.sum(d, keepdim=True)


@_eager
def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """x - max - log(sum(exp(x - max))) along ``dim`` (numerically stable)."""
    x = _float(_t(input) if dtype is None else _t(input).to(dtype))
    if x.ctx.eager:  # eager mode: one composite step (graphc/eager_composite.py)
        out = _composite(_log_softmax, (x,), {"dim": dim})
        if out is not None:
            return out
    return _log_softmax(x, dim)


def _log_softmax(x: Tensor, dim: int | None) -> Tensor:
    """``log_softmax``'s definition on a float tensor (traced as is)."""
    d = _softmax_dim(x.ndim, dim)
    shifted = x - x.amax(d, keepdim=True)
    return shifted - shifted.exp().sum(d, keepdim=True).log()
