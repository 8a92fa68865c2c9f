"""Activation layers beyond ReLU/GELU/SiLU/...: ReLU6, Hardswish, Hardsigmoid, Mish, ELU, ..."""

from __future__ import annotations

from typing import Any

from graphc import functional as F

from .module import Module


class _Activation(Module):
    """A module applying ``_fn`` with its settings as keyword arguments."""

    _fn: str = ""
    _settings: tuple[str, ...] = ()

    def forward(self, input: Any) -> Any:
        """Apply."""
        return getattr(F, self._fn)(input, **{k: getattr(self, k) for k in self._settings})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={getattr(self, k)}" for k in self._settings)


class ReLU6(_Activation):
    """min(max(x, 0), 6)."""

    _fn, _settings = "relu6", ("inplace",)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace


class Hardtanh(_Activation):
    """x clamped to [min_val, max_val]."""

    _fn, _settings = "hardtanh", ("min_val", "max_val", "inplace")

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.min_val, self.max_val, self.inplace = min_val, max_val, inplace


class Hardswish(_Activation):
    """x * relu6(x + 3) / 6."""

    _fn, _settings = "hardswish", ("inplace",)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace


class Hardsigmoid(_Activation):
    """relu6(x + 3) / 6."""

    _fn, _settings = "hardsigmoid", ("inplace",)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace


class Mish(_Activation):
    """x * tanh(softplus(x))."""

    _fn, _settings = "mish", ("inplace",)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace


class ELU(_Activation):
    """x, or alpha * (exp(x) - 1) below zero."""

    _fn, _settings = "elu", ("alpha", "inplace")

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha, self.inplace = alpha, inplace


class CELU(_Activation):
    """x, or alpha * (exp(x / alpha) - 1) below zero."""

    _fn, _settings = "celu", ("alpha", "inplace")

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha, self.inplace = alpha, inplace


class SELU(_Activation):
    """Scaled ELU."""

    _fn, _settings = "selu", ("inplace",)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace


class Softplus(_Activation):
    """log(1 + exp(beta x)) / beta (linear above threshold)."""

    _fn, _settings = "softplus", ("beta", "threshold")

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta, self.threshold = beta, threshold


class LogSigmoid(_Activation):
    """log(sigmoid(x))."""

    _fn = "logsigmoid"


class Softsign(_Activation):
    """x / (1 + |x|)."""

    _fn = "softsign"
