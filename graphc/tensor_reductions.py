"""Tensor's reductions: sum, mean, var/std, max/min (with PyTorch's values-and-indices result for
an int ``dim``), amax/amin, argmax/argmin. A mixin of graphc.tensor.Tensor, kept apart so each file
reads in one sitting."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from graphc.tensor import Tensor


class ReductionOps:
    """Reduction methods of Tensor (see graphc.tensor for the class itself)."""

    __slots__ = ()

    # ------------------------------------------------------------ reductions
    def _reduce(self, op: str, dim: object, keepdim: bool, axis: object, keepdims: object) -> Tensor:
        axes = _t._axes(axis if dim is None else dim, self.ndim)
        keep = bool(keepdims) if keepdims is not None else bool(keepdim)
        if not axes:
            return self
        x = self.to("i64") if op == "sum" and self.value.dtype == "bool" else self
        if x.ctx.eager:  # eager mode's fast path (graphc/eager_fast.py); None: the general path
            out = x.ctx.fast_op(op, (x,), {"axes": axes, "keepdims": keep}, (axes, keep))
            if out is not None:
                return out
        return self.ctx.op(op, x, axes=axes, keepdims=keep)

    def sum(
        self,
        dim: object = None,
        keepdim: bool = False,
        *,
        axis: object = None,
        keepdims: object = None,
        dtype: object = None,
    ) -> Tensor:
        """Sum over ``dim`` (all axes when None), first cast to ``dtype`` if given."""
        x = self if dtype is None else self.to(dtype)
        return x._reduce("sum", dim, keepdim, axis, keepdims)

    def mean(
        self,
        dim: object = None,
        keepdim: bool = False,
        *,
        axis: object = None,
        keepdims: object = None,
        dtype: object = None,
    ) -> Tensor:
        """Mean over ``dim`` (all axes when None), first cast to ``dtype`` if given."""
        axes = _t._axes(axis if dim is None else dim, self.ndim)
        x = self if dtype is None else self.to(dtype)
        x = x if x.value.dtype in ("f32", "f64") else x.to("f32")
        count = math.prod(self.shape[a] for a in axes)
        return x._reduce("sum", axes, keepdim, None, keepdims) * (1.0 / count if count else math.nan)

    def var(
        self,
        dim: object = None,
        unbiased: bool | None = None,
        keepdim: bool = False,
        *,
        correction: int | None = None,
        axis: object = None,
        keepdims: object = None,
        ddof: int | None = None,
    ) -> Tensor:
        """Variance over ``dim``; PyTorch's default correction 1 (NumPy's ``ddof=`` accepted)."""
        axes = _t._axes(axis if dim is None else dim, self.ndim)
        if ddof is not None:
            corr = ddof
        elif correction is not None:
            corr = correction
        else:
            corr = 0 if unbiased is False else 1
        keep = bool(keepdims) if keepdims is not None else bool(keepdim)
        x = self if self.value.dtype in ("f32", "f64") else self.to("f32")
        centered = x - x.mean(axes, keepdim=True)
        count = math.prod(self.shape[a] for a in axes)
        return (centered * centered).sum(axes, keep) * (
            1.0 / max(count - corr, 0) if count > corr else math.nan
        )

    def std(self, *args: object, **kwargs: object) -> Tensor:
        """Standard deviation (same arguments as ``var``)."""
        return self.var(*args, **kwargs).sqrt()

    def _max_min(self, op: str, dim: object, keepdim: bool, axis: object, keepdims: object) -> Tensor:
        if axis is None and isinstance(dim, int) and not isinstance(dim, bool):
            keep = bool(keepdims) if keepdims is not None else bool(keepdim)
            return _t._MaxMinResult(self, op, dim, keep)
        return self._reduce(op, dim, keepdim, axis, keepdims)

    def max(
        self, dim: object = None, keepdim: bool = False, *, axis: object = None, keepdims: object = None
    ) -> Tensor:
        """Maximum over ``dim`` (all axes when None); with an int ``dim`` also ``.indices``."""
        return self._max_min("max", dim, keepdim, axis, keepdims)

    def min(
        self, dim: object = None, keepdim: bool = False, *, axis: object = None, keepdims: object = None
    ) -> Tensor:
        """Minimum over ``dim`` (all axes when None); with an int ``dim`` also ``.indices``."""
        return self._max_min("min", dim, keepdim, axis, keepdims)

    def amax(self, dim: object = None, keepdim: bool = False) -> Tensor:
        """Maximum over ``dim`` (values only)."""
        return self._reduce("max", dim, keepdim, None, None)

    def amin(self, dim: object = None, keepdim: bool = False) -> Tensor:
        """Minimum over ``dim`` (values only)."""
        return self._reduce("min", dim, keepdim, None, None)

    def argmax(
        self,
        dim: int | None = None,
        keepdim: bool = False,
        *,
        axis: int | None = None,
        keepdims: object = None,
    ) -> Tensor:
        """Index of the maximum along ``dim`` (of the flattened tensor when None)."""
        d = axis if dim is None else dim
        keep = bool(keepdims) if keepdims is not None else bool(keepdim)
        if d is None:
            out = self.ctx.op("argmax", self.reshape(-1), axis=0, keepdims=False)
            return out.reshape([1] * self.ndim) if keep else out
        return self.ctx.op("argmax", self, axis=_t._axis(d, self.ndim), keepdims=keep)

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        """Index of the minimum along ``dim``."""
        return (-self).argmax(dim, keepdim)


from graphc import tensor as _t  # noqa: E402  (graphc.tensor imports this module first)
