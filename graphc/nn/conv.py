"""Convolution layers beyond Conv2d: Conv1d, ConvTranspose1d, ConvTranspose2d (PyTorch's names and init)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphc import functional as F
from graphc.convolution_transpose import conv_transpose1d, conv_transpose3d, output_padding
from graphc.ir import GraphcError
from graphc.padding import apply_padding_mode, check_padding_mode

from . import init
from .layers import _check_dtype, _pair
from .module import Module, Parameter


def _single(v: Any) -> int:
    return int(v if isinstance(v, int) else v[0])


def _triple(v: Any) -> tuple[int, ...]:
    """An int or 3 ints as 3 ints (as PyTorch's _triple)."""
    return (int(v),) * 3 if isinstance(v, int) else tuple(int(e) for e in v)


def _reset(module: Module) -> None:
    """PyTorch's default: kaiming_uniform(a=sqrt(5)) weight, U(+-1/sqrt(fan_in)) bias."""
    init.kaiming_uniform_(module.weight, a=math.sqrt(5))
    if module.bias is not None:
        fan_in, _ = init.calculate_fan_in_and_fan_out(module.weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        init.uniform_(module.bias, -bound, bound)


def _check_groups(name: str, cin: int, cout: int, groups: int, padding_mode: str) -> None:
    if groups < 1 or cin % groups or cout % groups:
        raise GraphcError(
            f"{name}: in_channels {cin} and out_channels {cout} must be divisible by groups={groups}"
        )
    if name.startswith("ConvTranspose") and padding_mode != "zeros":  # as PyTorch
        raise GraphcError(f'{name}: only "zeros" padding mode is supported, got {padding_mode!r}')
    check_padding_mode(name, padding_mode)


class Conv1d(Module):
    """1-D convolution over [N, C, L]; weight [out_channels, in_channels / groups, kernel_size]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        _check_groups("Conv1d", in_channels, out_channels, groups, padding_mode)
        dt = _check_dtype(dtype)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = (_single(kernel_size),), (_single(stride),)
        self.padding = padding if isinstance(padding, str) else (_single(padding),)
        self.dilation, self.padding_mode = (_single(dilation),), padding_mode
        self.weight = Parameter(
            np.empty((out_channels, in_channels // groups, self.kernel_size[0]), dtype=dt), dtype=dt
        )
        if bias:
            self.bias = Parameter(np.empty(out_channels, dtype=dt), dtype=dt)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default initialization."""
        _reset(self)

    def forward(self, input: Any) -> Any:
        """Convolve."""
        x, pad = apply_padding_mode(
            input, self.padding_mode, self.padding, self.kernel_size, self.dilation, "Conv1d"
        )
        pad = pad if isinstance(pad, (str, int)) else pad[0]
        return F.conv1d(x, self.weight, self.bias, self.stride[0], pad, self.dilation[0], self.groups)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        )


class _ConvTranspose(Module):
    """Transposed convolution over ``_dims`` spatial dims; weight [in_channels, out_channels /
    groups, *kernel_size]. ConvTranspose1d, 2d and 3d differ only in those dims."""

    _dims = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        output_padding: Any = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Any = 1,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        _check_groups(name, in_channels, out_channels, groups, padding_mode)
        dt = _check_dtype(dtype)

        def dims(v: Any) -> tuple[int, ...]:
            if self._dims == 1:
                return (_single(v),)
            return _pair(v) if self._dims == 2 else _triple(v)

        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding = dims(kernel_size), dims(stride), dims(padding)
        self.output_padding, self.dilation = dims(output_padding), dims(dilation)
        self.padding_mode = padding_mode
        self.weight = Parameter(
            np.empty((in_channels, out_channels // groups, *self.kernel_size), dtype=dt), dtype=dt
        )
        if bias:
            self.bias = Parameter(np.empty(out_channels, dtype=dt), dtype=dt)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default initialization."""
        _reset(self)

    def forward(self, input: Any, output_size: Any = None) -> Any:
        """Transposed convolution; ``output_size`` (spatial sizes or the full shape) picks the
        output_padding as PyTorch does."""
        extra = self.output_padding
        if output_size is not None:
            extra = output_padding(
                type(self).__name__,
                input.shape,
                output_size,
                self.stride,
                self.padding,
                self.kernel_size,
                self.dilation,
            )
        convolve = {1: conv_transpose1d, 2: F.conv_transpose2d, 3: conv_transpose3d}[self._dims]
        return convolve(
            input, self.weight, self.bias, self.stride, self.padding, extra, self.groups, self.dilation
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        )


class ConvTranspose2d(_ConvTranspose):
    """Transposed 2-D convolution; weight [in_channels, out_channels / groups, kh, kw]."""

    _dims = 2


class ConvTranspose1d(_ConvTranspose):
    """Transposed 1-D convolution; weight [in_channels, out_channels / groups, kernel_size]."""

    _dims = 1


class ConvTranspose3d(_ConvTranspose):
    """Transposed 3-D convolution of [N, C, D, H, W] (or [C, D, H, W]); weight [in_channels,
    out_channels / groups, kd, kh, kw]."""

    _dims = 3
