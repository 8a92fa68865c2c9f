"""Eager mode's fast path for relu (a part of graphc/eager_fast.py, kept apart to read in one sitting).

relu is the traced relu's two ops, ``where(x <= 0, 0, x)``, run at once: NaN stays NaN, -0.0
becomes 0.0. It is computed as ``maximum(x, 0) + 0``, or as ``maximum(x, 0)`` alone where a
probe per dtype shows NumPy's maximum already gives those bits (:func:`_max_is_relu`). With a
gradient to record, the tape gets the ``le`` mask and the ``where`` exactly as the general path
records them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from graphc.eager import EagerContext, EagerValue
from graphc.eager_fast import (
    _ENTRIES,
    _IGNORE,
    _NUMERIC,
    _cv_reset,
    _cv_set,
    _entry,
    _fix,
    _new,
    _none,
    _record,
    _remember,
    _scalar,
)
from graphc.ir import TensorType
from graphc.tensor import Tensor

__all__ = ["relu", "relu_method"]


def relu_method(fallback: Callable) -> Callable:
    """``method(x)``: ``where(x <= 0, 0, x)`` on the fast path (the traced relu's two ops: NaN stays
    NaN, -0.0 becomes 0.0), else ``fallback(x)``. Installed as ``Tensor.relu``, behind :func:`relu`.

    It is computed as ``maximum(x, 0) + 0`` (the same values: NaN propagates through maximum, and
    adding +0 turns a -0.0 into 0.0), faster than NumPy's ``where`` with a 0-d operand. With a
    gradient to record, the tape gets the ``le`` mask and the ``where`` exactly as the general
    path records them, so backward() differentiates the same ops.
    """

    def method(self: Tensor) -> Any:
        ctx = self.ctx
        if ctx.eager:
            xv = self.value
            key = ("relu()", id(xv.type))
            entry = _ENTRIES.get(key)
            if entry is None:
                entry = _relu_entry(key, ctx, xv.type)
            where = entry[1]
            if where is not None and type(xv) is EagerValue:
                data, z = xv.data, entry[5]  # z: zeros of x's shape (small x), else its 0-d const 0
                record = where[4] and xv.requires_grad and ctx.grad_enabled
                token = _cv_set(_IGNORE)
                try:
                    arr = _maximum(data, z)
                    if not entry[4]:  # maximum gives -0.0 for -0.0 here: + 0 makes it 0.0
                        _add(arr, z, out=arr)
                finally:
                    _cv_reset(token)
                # (maximum of two arrays of x's dtype has that dtype: only the layout may differ)
                if not arr.flags.c_contiguous:
                    arr = _fix(arr, where[2], where[5])
                if record:
                    return _relu_record(entry, xv, arr, ctx, sys._getframe(1))
                v = _new(EagerValue)  # _plain(), inline
                v.type = where[1]
                v.data = arr
                v.requires_grad = False
                v.op = None
                v.attrs = None
                v.inputs = None
                v._source = None
                v.seq = 0
                v.kind = None
                v.owner = None
                v.param = None
                r = _new(Tensor)
                r.value = v
                r.ctx = ctx
                r._base = None
                r._views = None
                r._index = None
                return r
        return fallback(self)

    return method


_maximum, _add, _less_equal = np.maximum, np.add, np.less_equal


# Up to this many elements relu's zero operand is an array of x's shape (cached with the entry):
# NumPy's maximum of two arrays of one shape skips the broadcast set-up a 0-d operand costs
# (16 x 16 float32: 0.33 against 0.41 us a call here).
ZEROS_UP_TO = 4096


def _relu_entry(key: tuple, ctx: EagerContext, t: TensorType) -> tuple:
    """(le's entry, where's entry, the const 0's array, its value, whether ``maximum(x, 0)`` alone is
    relu, the zero operand of maximum, keep), or (None, None, ...) where the general path must run.
    The zero operand is zeros of x's shape up to ``ZEROS_UP_TO`` elements, else the const's 0-d
    array (read-only either way: nothing writes it)."""
    le = _entry("le", [t, TensorType((), t.dtype)]) if t.dtype in _NUMERIC else None
    where = _entry("where", [le[1], TensorType((), t.dtype), t]) if le is not None else None
    if where is not None and where[1] == t and le[1].shape == t.shape and t.shape != ():
        zero = _scalar(ctx, 0, t.dtype)
        single = _max_is_relu(zero.data)
        operand = zero.data
        if t.numel <= ZEROS_UP_TO:
            operand = np.zeros(t.shape, zero.data.dtype)
            operand.flags.writeable = False
        return _remember(key, (le, where, zero.data, zero, single, operand), (t,))
    return _remember(key, (None, None, None, None, False, None), (t,))


_MAX_IS_RELU: dict[np.dtype, bool] = {}


def _max_is_relu(zero: np.ndarray) -> bool:
    """Whether ``np.maximum(x, zero)`` alone gives ``maximum(x, 0) + 0`` (relu's values, bit for
    bit) for x of zero's dtype, with ``zero`` 0-d or zeros of x's shape (the two forms relu uses).
    Always for integers; for floats it hinges on which operand NumPy's maximum returns for -0.0
    against 0.0 (the second, in its SIMD loops and their scalar tails alike: x86's maxps picks it;
    ARM's fmax gives +0.0 either way), so it is tried once per dtype on -0.0, NaN of either sign,
    the infinities and signed values at every length up to a few vector widths, each contiguous,
    reversed, strided and misaligned, against both forms of zero; any difference: the add stays."""
    dtype = zero.dtype
    hit = _MAX_IS_RELU.get(dtype)
    if hit is not None:
        return hit
    ok = dtype.kind in "iub"
    if dtype.kind == "f":
        special = np.array([-0.0, np.nan, 0.0, -np.nan, np.inf, -1.5, -np.inf, 2.0, -0.0, 1e-30], dtype)
        token = _cv_set(_IGNORE)
        try:
            ok = True
            for n in range(1, 80):
                x = np.resize(np.roll(special, n), n)
                buf = np.zeros(n * dtype.itemsize + 1, np.uint8)[1:].view(dtype)  # misaligned
                buf[...] = x
                for arr in (x, x[::-1], np.repeat(x, 2)[::2], buf):
                    want = np.maximum(arr, zero)
                    np.add(want, zero, out=want)
                    zeros = np.zeros(arr.shape, dtype)
                    if np.maximum(arr, zero).tobytes() != want.tobytes() or (
                        np.maximum(arr, zeros).tobytes() != want.tobytes()
                    ):
                        ok = False
                        break
                if not ok:
                    break
        finally:
            _cv_reset(token)
    _MAX_IS_RELU[dtype] = ok
    return ok


class _LazyMask(EagerValue):
    """The ``le`` mask ``x <= 0`` of a recorded relu, computed when first read (by ``backward()``)
    from relu's output y as ``y <= 0``: the same bits (y is 0.0 exactly where x <= 0, -0.0
    included, and x itself elsewhere: a positive number, or a NaN, for which both are False).
    Most recorded relus' masks are read once, at backward time, or never (no_grad evaluation
    aside, a forward whose loss is not differentiated)."""

    __slots__ = ("_of", "_zero")

    @property  # type: ignore[override]
    def data(self) -> np.ndarray:  # type: ignore[override]
        """The mask's array (computed on the first read)."""
        try:
            return _DATA.__get__(self, EagerValue)
        except AttributeError:
            mask = _less_equal(self._of, self._zero)
            le = self.type
            if mask.dtype != le.np_dtype or mask.shape != le.shape or not mask.flags.c_contiguous:
                mask = np.ascontiguousarray(mask, dtype=le.np_dtype).reshape(le.shape)
            _DATA.__set__(self, mask)
            self._of = None
            return mask

    @data.setter
    def data(self, arr: np.ndarray) -> None:
        _DATA.__set__(self, arr)


_DATA = EagerValue.__dict__["data"]  # EagerValue's slot for its array


def _relu_record(entry: tuple, xv: EagerValue, arr: np.ndarray, ctx: EagerContext, frame: Any) -> Tensor:
    """relu's result recorded as the general path records it: the ``le`` mask (a bool value, so a
    leaf of the tape; computed when backward() reads it, :class:`_LazyMask`) and the ``where``
    over it."""
    le = entry[0]
    m = _new(_LazyMask)  # a value that needs no gradient: a leaf of the tape
    m.type = le[1]
    m._of = arr
    m._zero = entry[2]
    m.requires_grad = False
    m.op = None
    m.attrs = None
    m.inputs = None
    m._source = None
    m.seq = 0
    m.kind = None
    m.owner = None
    m.param = None
    return _record(entry[1], "where", arr, (m, entry[3], xv), ctx, frame)


_RELU_FN = relu_method(_none)


def relu(ctx: EagerContext, x: Tensor) -> Tensor | None:
    """``x.relu()`` now (:func:`relu_method`'s fast path), or None where the general path must run."""
    return _RELU_FN(x)
