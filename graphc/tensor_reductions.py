"""Tensor's reductions: sum, prod, mean, var/std, max/min (with PyTorch's values-and-indices result
for an int ``dim``), amax/amin, argmax/argmin, and the running product ``cumprod``. A mixin of
graphc.tensor.Tensor, kept apart so each file reads in one sitting."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from graphc.ir import GraphcError
from graphc.ir.types import FLOAT_DTYPES, INT_DTYPES
from graphc.tracing import _at, user_source

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

    def prod(
        self,
        dim: object = None,
        keepdim: bool = False,
        *,
        axis: object = None,
        keepdims: object = None,
        dtype: object = None,
    ) -> Tensor:
        """Product over ``dim`` (all axes when None); integers and bool multiply in int64 as in
        PyTorch, unless ``dtype`` is given (the tensor is first cast to it)."""
        return _integers_to_i64(self, dtype)._reduce("prod", dim, keepdim, axis, keepdims)

    def cumprod(self, dim: int, *, dtype: object = None) -> Tensor:
        """Running product along ``dim`` (integers and bool in int64, as ``prod``).

        Computed as a prefix scan of ``ceil(log2(n))`` steps, each a product with a shifted copy
        (Hillis-Steele), so it is plain slices, pads and products: their gradient is exact, zeros
        in the input included (no division by the input).
        """
        x = _integers_to_i64(self, dtype)
        return running_product(x, _t._axis(dim, x.ndim)) if x.ndim else x

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


def _integers_to_i64(x: Tensor, dtype: object) -> Tensor:
    if dtype is not None:
        return x.to(dtype)
    return x.to("i64") if x.value.dtype == "bool" or x.value.dtype in INT_DTYPES else x


def running_product(x: Tensor, axis: int, exclusive: bool = False, reverse: bool = False) -> Tensor:
    """The running product of ``x`` along ``axis`` (ONNX CumProd's ``exclusive``: each product leaves
    its own element out; ``reverse``: products run from the end), in ``x``'s dtype (integers wrap).

    ``y = x``, then for s = 1, 2, 4, ... < n: ``y = y * (y shifted s places along the axis, 1s
    shifted in)``; an exclusive product is the inclusive one shifted once more.
    """
    if x.value.dtype == "bool":
        raise GraphcError(f"{_at(user_source())}cumprod of a bool tensor: cast it first")
    n, rank = x.shape[axis], x.ndim
    one = 1.0 if x.value.dtype in FLOAT_DTYPES else 1

    def shifted(y: Tensor, s: int) -> Tensor:
        starts, stops, pads = [0] * rank, list(y.shape), [(0, 0)] * rank
        if reverse:
            starts[axis], pads[axis] = s, (0, s)
        else:
            stops[axis], pads[axis] = n - s, (s, 0)
        part = y.ctx.op("slice", y, starts=tuple(starts), stops=tuple(stops), steps=(1,) * rank)
        return y.ctx.op("pad", part, pads=tuple(pads), value=one)

    y, s = x, 1
    while s < n:
        y = y.ctx.op("mul", y, shifted(y, s))
        s *= 2
    return shifted(y, 1) if exclusive and n else y


from graphc import tensor as _t  # noqa: E402  (graphc.tensor imports this module first)
