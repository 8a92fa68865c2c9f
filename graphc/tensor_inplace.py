"""Tensor's in-place operations (``y += 1``, ``add_``, ``relu_``, item assignment's write-back),
with PyTorch's aliasing rules: the Tensor object is rebound to its new value. A mixin of
graphc.tensor.Tensor, kept apart so each file reads in one sitting."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import numpy as np

from graphc import ir
from graphc.ir import GraphcError
from graphc.tracing import _at, user_source

if TYPE_CHECKING:
    from graphc.tensor import Tensor


class InPlaceOps:
    """In-place methods of Tensor (see graphc.tensor for the class itself)."""

    __slots__ = ()

    # ------------------------------------------------------------ in-place ops (PyTorch aliasing)
    def _live_base(self) -> Tensor | None:
        """The tensor this one is a view of, if that tensor is still alive."""
        return self._base() if self._base is not None else None

    def _view_of(self, source: Tensor) -> Tensor:
        """Record ``self`` (just made from ``source`` by a view op) as a view of source's base."""
        if self is source:
            return self
        root = source._live_base()
        if root is None:
            root = source
        self._base = weakref.ref(root)
        views = root._views
        if views is None:
            views = root._views = []
        elif len(views) > 32:
            views[:] = [r for r in views if r() is not None]
        views.append(weakref.ref(self))
        return self

    def _assign_inplace(self, new: object, what: str, allow_view: Tensor | None = None) -> Tensor:
        """PyTorch's in-place semantics: rebind this Tensor object to ``new`` and return it.

        Every Python name bound to this object then sees the new value. A view of a live tensor,
        a tensor with live views, a parameter and a graph input cannot be written (GraphcError at
        the user's line); a buffer (const/state input) gets ``new`` as its next value.
        """
        source = user_source()
        ctx = self.ctx
        base = self._live_base()
        if base is not None and self._index is not None and self._index[0]() is base:
            # A view made by _t.indexing its root: write the new values through into the root.
            t = _t.as_tensor(new, like=self)
            if t.shape != self.shape:
                t = t.broadcast_to(self.shape)
            t = t.to(self.value.dtype)
            key = self._index[1]
            base._assign_inplace(_t.indexing.index_update(base, key, t), what, allow_view=self)
            self.value = t.value
            self._index = (weakref.ref(base), key, base.value)
            return self
        if base is not None:
            raise GraphcError(
                f"{_at(source)}{what}: in-place operation on a view (made by _t.indexing, reshape/view, "
                f"transpose or expand) of %{base.value.name} is not supported while tracing; use the "
                "out-of-place form (y = x.add(1)) and build the new tensor from it"
            )
        if self._views and any(r() is not None and r() is not allow_view for r in self._views):
            raise GraphcError(
                f"{_at(source)}{what}: in-place operation on %{self.value.name}, which has live views "
                "(made by _t.indexing, reshape/view, transpose or expand) that would see the change; this "
                "is not supported while tracing: use the out-of-place form (y = x.add(1))"
            )
        name = self.value.name
        kind = ctx.graph.kinds.get(name)
        if kind == "param":
            raise GraphcError(
                f"{_at(source)}{what}: in-place operation on parameter %{name} while tracing; parameters "
                "change only through the optimizer (use an out-of-place op on a copy)"
            )
        if kind == "data" or name in ctx.readonly or (kind is not None and name not in ctx._owner):
            raise GraphcError(
                f"{_at(source)}{what}: in-place operation on graph input %{name}; graphc does not write "
                "into its inputs: use the out-of-place form (y = x.add(1), F.relu(x))"
            )
        t = _t.as_tensor(new, like=self)
        if t.ctx is not ctx:
            raise GraphcError(f"{_at(source)}{what}: operand comes from a different trace")
        if t.shape != self.shape:
            try:
                same = ir.ops.broadcast_shapes(t.shape, self.shape) == self.shape
            except GraphcError:
                same = False
            if not same:
                raise GraphcError(
                    f"{_at(source)}{what}: the result has shape {t.shape}, which does not fit in place "
                    f"into %{name} of shape {self.shape}"
                )
            t = t.broadcast_to(self.shape)
        if t.value.dtype != self.value.dtype:
            if _t._DTYPE_ORDER[t.value.dtype] > _t._DTYPE_ORDER[self.value.dtype] and not (
                t.value.dtype in ("f32", "f64") and self.value.dtype in ("f32", "f64")
            ):
                raise GraphcError(
                    f"{_at(source)}{what}: the result's dtype {t.value.dtype} cannot be cast to "
                    f"%{name}'s dtype {self.value.dtype} in place"
                )
            t = t.to(self.value.dtype)
        if name in ctx._owner:  # a buffer: its next value, written back when the plan runs
            ctx.assign(self, t)
        self.value = t.value
        return self

    def __iadd__(self, other: object) -> Tensor:
        return self._assign_inplace(self + other, "+=")

    def __isub__(self, other: object) -> Tensor:
        return self._assign_inplace(self - other, "-=")

    def __imul__(self, other: object) -> Tensor:
        return self._assign_inplace(self * other, "*=")

    def __itruediv__(self, other: object) -> Tensor:
        return self._assign_inplace(self / other, "/=")

    def __ipow__(self, other: object) -> Tensor:
        return self._assign_inplace(self**other, "**=")

    def add_(self, other: object, *, alpha: object = 1) -> Tensor:
        """In place: self + alpha * other."""
        return self._assign_inplace(self + (other if alpha == 1 else other * alpha), "add_")

    def sub_(self, other: object, *, alpha: object = 1) -> Tensor:
        """In place: self - alpha * other."""
        return self._assign_inplace(self - (other if alpha == 1 else other * alpha), "sub_")

    def mul_(self, other: object) -> Tensor:
        """In place: self * other."""
        return self._assign_inplace(self * other, "mul_")

    def div_(self, other: object) -> Tensor:
        """In place: self / other."""
        return self._assign_inplace(self / other, "div_")

    def pow_(self, other: object) -> Tensor:
        """In place: self ** other."""
        return self._assign_inplace(self**other, "pow_")

    def neg_(self) -> Tensor:
        """In place: -self."""
        return self._assign_inplace(-self, "neg_")

    def abs_(self) -> Tensor:
        """In place: |self|."""
        return self._assign_inplace(self.abs(), "abs_")

    def exp_(self) -> Tensor:
        """In place: exp(self)."""
        return self._assign_inplace(self.exp(), "exp_")

    def log_(self) -> Tensor:
        """In place: log(self)."""
        return self._assign_inplace(self.log(), "log_")

    def sqrt_(self) -> Tensor:
        """In place: sqrt(self)."""
        return self._assign_inplace(self.sqrt(), "sqrt_")

    def tanh_(self) -> Tensor:
        """In place: tanh(self)."""
        return self._assign_inplace(self.tanh(), "tanh_")

    def sigmoid_(self) -> Tensor:
        """In place: sigmoid(self)."""
        return self._assign_inplace(self.sigmoid(), "sigmoid_")

    def relu_(self) -> Tensor:
        """In place: relu(self)."""
        return self._assign_inplace(self.relu(), "relu_")

    def clamp_(self, min: object = None, max: object = None) -> Tensor:
        """In place: clamp(self, min, max)."""
        return self._assign_inplace(self.clamp(min, max), "clamp_")

    clip_ = clamp_

    def masked_fill_(self, mask: Tensor, value: object) -> Tensor:
        """In place: value _t.where mask, else self."""
        return self._assign_inplace(self.masked_fill(mask, value), "masked_fill_")

    def zero_(self) -> Tensor:
        """In place: all zeros."""
        return self._assign_inplace(self.ctx.const(0, self.value.dtype), "zero_")

    def fill_(self, value: object) -> Tensor:
        """In place: every element ``value``."""
        return self._assign_inplace(_t.as_tensor(value, like=self).to(self.value.dtype), "fill_")

    def copy_(self, src: object) -> Tensor:
        """In place: the values of ``src`` (broadcast, cast to this tensor's dtype)."""
        t = _t.as_tensor(src, like=self)
        return self._assign_inplace(t.to(self.value.dtype), "copy_")

    # NumPy functions (np.mean(t), np.concatenate): on eager values NumPy computes them (no
    # gradient); while tracing, NumPy's own implementation runs as without this hook.
    def __array_function__(self, func: object, types: object, args: tuple, kwargs: dict) -> object:
        if self.ctx.eager:
            from graphc.eager import to_numpy

            return func(*to_numpy(args), **to_numpy(kwargs))  # type: ignore[operator]
        return func._implementation(*args, **kwargs)  # type: ignore[attr-defined]

    # NumPy calls this for ``array + tensor`` and ``np.exp(tensor)``: record the op instead.
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: object, **kwargs: object) -> object:
        fn = _t._UFUNCS.get(ufunc.__name__) if method == "__call__" and not kwargs else None
        if fn is None:
            if self.ctx.eager:  # eager values exist: NumPy computes other ufuncs (no gradient)
                return getattr(ufunc, method)(*(np.asarray(i) for i in inputs), **kwargs)
            return NotImplemented
        return fn(*inputs)


from graphc import tensor as _t  # noqa: E402  (graphc.tensor imports this module first)
