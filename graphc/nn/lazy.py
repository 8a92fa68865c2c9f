"""Lazy modules: LazyLinear and LazyConv2d take their input size from the first trace.

Their weights start as ``UninitializedParameter``; ``graphc.trace`` runs the model once on the
example shapes before making graph inputs when any is uninitialized, so the parameters exist (and
get ``named_parameters()`` names) by the real trace. Then the module becomes a Linear / Conv2d,
as in PyTorch. ``load_state_dict`` also gives them the loaded shapes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from graphc.tensor import _STACK

from .layers import Conv2d, Linear, _check_dtype, _pair
from .module import Module, UninitializedParameter


@contextlib.contextmanager
def _outside_trace() -> Iterator[None]:
    """Build the real layer with no trace active (its init writes into NumPy arrays)."""
    saved = _STACK[:]
    _STACK.clear()
    try:
        yield
    finally:
        _STACK[:] = saved


class LazyModuleMixin:
    """Marks a module whose parameters are made at its first call."""

    def has_uninitialized_params(self) -> bool:
        """Whether some parameter still waits for its shape."""
        return any(isinstance(p, UninitializedParameter) for p in self._parameters.values())


def _uninitialized(module: Module, bias: bool, dtype: Any) -> None:
    dt = _check_dtype(dtype)
    module.register_parameter("weight", UninitializedParameter(dtype=dt))
    if bias:
        module.register_parameter("bias", UninitializedParameter(dtype=dt))
    else:
        module.register_parameter("bias", None)
    module.__dict__["_lazy_dtype"] = dt


class LazyLinear(LazyModuleMixin, Linear):
    """A Linear whose in_features is the last dim of its first input."""

    def __init__(self, out_features: int, bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        Module.__init__(self)
        self.in_features, self.out_features = 0, out_features
        _uninitialized(self, bias, dtype)

    def forward(self, input: Any) -> Any:
        """Make the parameters on the first call, then apply the affine map."""
        if self.has_uninitialized_params():
            self.in_features = int(input.shape[-1])
            dt = self.__dict__["_lazy_dtype"]
            with _outside_trace():
                fresh = Linear(
                    self.in_features, self.out_features, self._parameters["bias"] is not None, dtype=dt
                )
            self._parameters.update(fresh._parameters)
            self.__class__ = Linear
        return Linear.forward(self, input)


class LazyConv2d(LazyModuleMixin, Conv2d):
    """A Conv2d whose in_channels is dim 1 of its first input."""

    def __init__(
        self,
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
        Module.__init__(self)
        self.in_channels = 0
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.dilation, self.padding_mode = _pair(dilation), padding_mode
        self._settings = dict(
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
        )
        self.out_channels, self.groups = out_channels, groups
        _uninitialized(self, bias, dtype)

    def forward(self, input: Any) -> Any:
        """Make the parameters on the first call, then convolve."""
        if self.has_uninitialized_params():
            channels = int(input.shape[-3])
            with _outside_trace():
                fresh = Conv2d(
                    channels, self.out_channels, dtype=self.__dict__["_lazy_dtype"], **self._settings
                )
            self.in_channels = channels
            self._parameters.update(fresh._parameters)
            self.__class__ = Conv2d
        return Conv2d.forward(self, input)
