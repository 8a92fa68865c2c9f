"""Normalization layers beyond BatchNorm/LayerNorm: GroupNorm, InstanceNorm1d/2d, RMSNorm."""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc import functional as F
from graphc.ir import GraphcError

from .layers import _check_dtype
from .module import Module, Parameter


class GroupNorm(Module):
    """Normalize groups of channels; weight ones, bias zeros (per channel)."""

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if num_channels % num_groups:
            raise GraphcError(
                f"GroupNorm: num_channels {num_channels} is not divisible by num_groups {num_groups}"
            )
        dt = _check_dtype(dtype)
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        if affine:
            self.weight = Parameter(np.ones(num_channels), dtype=dt)
            self.bias = Parameter(np.zeros(num_channels), dtype=dt)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, input: Any) -> Any:
        """Normalize."""
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class _InstanceNorm(Module):
    """Per-sample, per-channel normalization (affine=False, no running stats by default, as PyTorch)."""

    _rank = 0

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if track_running_stats:
            raise GraphcError(f"{type(self).__name__}: track_running_stats=True is not supported")
        dt = _check_dtype(dtype)
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features), dtype=dt)
            self.bias = Parameter(np.zeros(num_features), dtype=dt)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, input: Any) -> Any:
        """Normalize."""
        if input.ndim == self._rank - 1:  # unbatched
            return F.instance_norm(
                input.unsqueeze(0), None, None, self.weight, self.bias, eps=self.eps
            ).squeeze(0)
        return F.instance_norm(input, None, None, self.weight, self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class InstanceNorm1d(_InstanceNorm):
    """Instance norm of [N, C, L]."""

    _rank = 3


class InstanceNorm2d(_InstanceNorm):
    """Instance norm of [N, C, H, W]."""

    _rank = 4


class RMSNorm(Module):
    """x / sqrt(mean(x^2) + eps) over the trailing dims, times weight (ones)."""

    def __init__(
        self,
        normalized_shape: Any,
        eps: float | None = None,
        elementwise_affine: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        dt = _check_dtype(dtype)
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(np.ones(shape), dtype=dt)
        else:
            self.register_parameter("weight", None)

    def forward(self, input: Any) -> Any:
        """Normalize."""
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
