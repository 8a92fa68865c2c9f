"""Indexing as PyTorch does it, and item assignment as a functional update.

``getitem(x, key)``: ints, slices (step > 0), ``None``, ``...``, integer index lists/arrays (negative
entries count from the end; out-of-range entries are a GraphcError at the user's line, not a
kernel error later), NumPy bool masks (their static positions), several index arrays (NumPy's
rules give the flat positions, one gather reads them) and traced integer index Tensors
(graphc/indexing_traced.py; also in item assignment). A
view made by basic indexing of a root tensor remembers its key, so an in-place op on it writes
through into the root (``x[:, i] += t``).

``index_update(x, key, value)``: ``x`` with ``x[key]`` replaced by ``value`` as a new Tensor (a
scatter of the static positions and a where), or, for a traced bool mask, a where.
"""

from __future__ import annotations

import weakref

import numpy as np

from graphc.indexing_traced import traced_get, traced_set
from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, as_tensor, user_source, where

__all__ = ["Reshaped", "getitem", "index_update", "same_key", "static_positions"]


class Reshaped:
    """The key of a reshape/view of a root tensor: a write into the view goes back into the root
    through the inverse reshape (``X.reshape(-1, n)[mask] = v`` changes X, as in PyTorch)."""

    __slots__ = ("shape",)

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


def _key_items(key: object) -> list:
    items = list(key) if isinstance(key, tuple) else [key]
    # A NumPy bool mask stands for the integer positions of its True elements (a static shape).
    out: list = []
    for k in items:
        if isinstance(k, range):  # x[range(n), y] (d2l's cross-entropy)
            k = list(k)
        if isinstance(k, list) and k and all(isinstance(i, (bool, np.bool_)) for i in k):
            k = np.asarray(k, dtype=bool)
        if isinstance(k, np.ndarray) and k.dtype == np.bool_ and k.ndim:
            out.extend(k.nonzero())
        else:
            out.append(k)
    return out


def _is_array_index(k: object) -> bool:
    return isinstance(k, (list, np.ndarray, Tensor)) and not (isinstance(k, np.ndarray) and k.ndim == 0)


def static_positions(x: Tensor, key: object) -> np.ndarray | None:
    """The flat positions ``key`` picks out of ``x`` (NumPy indexing), or None for a traced key."""
    items = _key_items(key)
    if any(isinstance(k, Tensor) for k in items):
        return None
    fixed = []
    dims = [k for k in items if k is not None and k is not Ellipsis]
    if len(dims) > x.ndim:
        raise GraphcError(f"{_at(user_source())}too many indices ({len(dims)}) for a tensor of rank {x.ndim}")
    axis = 0
    for k in items:
        if k is None or isinstance(k, slice):
            fixed.append(k)
            axis += k is not None
            continue
        if k is Ellipsis:
            fixed.append(k)
            axis += x.ndim - len(dims)
            continue
        arr = np.asarray(k)
        if arr.dtype.kind not in "iu" and not (arr.ndim == 0 and isinstance(k, (int, np.integer))):
            raise GraphcError(
                f"{_at(user_source())}cannot index a Tensor with {type(k).__name__} {arr.dtype}"
            )
        size = x.shape[axis]
        if arr.size and (arr.min() < -size or arr.max() >= size):
            bad = int(arr[(arr < -size) | (arr >= size)].reshape(-1)[0])
            raise GraphcError(
                f"{_at(user_source())}index {bad} is out of range for dim {axis} of size {size}"
            )
        fixed.append(np.where(arr < 0, arr + size, arr).astype(np.int64) if arr.ndim else int(arr) % size)
        axis += 1
    return np.arange(max(x.numel(), 1), dtype=np.int64)[: x.numel()].reshape(x.shape)[tuple(fixed)]


def getitem(x: Tensor, key: object) -> Tensor:
    """Indexing as PyTorch: ints, slices (step > 0), None, ``...``, integer index arrays (negative
    entries count from the end), NumPy bool masks, and one traced integer index Tensor."""
    items = _key_items(key)
    arrays = [k for k in items if _is_array_index(k)]
    if len(arrays) > 1:
        # Several index arrays: NumPy's rules give the flat positions, one gather reads them.
        pos = static_positions(x, key)
        if pos is None:  # a traced index among them (graphc/indexing_traced.py)
            return traced_get(x, _expanded(x, items))
        flat = x.reshape(-1)
        return x.ctx.op("gather", flat, x.ctx.array(pos, name="index"), axis=0)
    n_real = sum(1 for k in items if k is not None and k is not Ellipsis)
    if sum(1 for k in items if k is Ellipsis) > 1:
        raise GraphcError(f"{_at(user_source())}an index can hold only one ellipsis (...)")
    if n_real > x.ndim:
        raise GraphcError(f"{_at(user_source())}too many indices ({n_real}) for a tensor of rank {x.ndim}")
    if any(k is Ellipsis for k in items):
        i = next(j for j, k in enumerate(items) if k is Ellipsis)
        items[i : i + 1] = [slice(None)] * (x.ndim - n_real)
    else:
        items += [slice(None)] * (x.ndim - n_real)

    starts, stops, steps, final, gather = [], [], [], [], None
    axis = 0
    for k in items:
        if k is None:
            final.append(1)
            continue
        size = x.shape[axis]
        if _is_array_index(k):
            if isinstance(k, Tensor):
                if k.value.dtype == "bool":
                    raise GraphcError(
                        f"{_at(user_source())}indexing with a traced bool mask gives a data-dependent shape; "
                        "use where() or masked_fill (t[mask] = v works)"
                    )
                idx = k
                if idx.value.dtype in ("i32", "i64"):  # negative entries count from the end
                    idx = where(idx < 0, idx + size, idx)
            else:
                arr = np.asarray(k)
                if arr.dtype.kind not in "iu":
                    raise GraphcError(
                        f"{_at(user_source())}index arrays must be integers or bools, got {arr.dtype}"
                    )
                if arr.size and (arr.min() < -size or arr.max() >= size):
                    bad = int(arr[(arr < -size) | (arr >= size)].reshape(-1)[0])
                    raise GraphcError(
                        f"{_at(user_source())}index {bad} is out of range for dim {axis} of size {size}"
                    )
                idx = x.ctx.array(np.where(arr < 0, arr + size, arr).astype(np.int64), name="index")
            if idx.value.dtype not in ("i32", "i64"):
                raise GraphcError(f"{_at(user_source())}index arrays must be integers, got {idx.value.dtype}")
            gather = (axis, idx)
            starts.append(0), stops.append(size), steps.append(1)
            final.extend(idx.shape)
        elif isinstance(k, slice):
            start, stop, step = k.indices(size)
            if step <= 0:
                raise GraphcError(f"{_at(user_source())}slices need a positive step, got {step}")
            stop = max(start, stop)
            starts.append(start), stops.append(stop), steps.append(step)
            final.append(len(range(start, stop, step)))
        else:
            try:
                i = int(k)  # type: ignore[call-overload]
            except (TypeError, GraphcError):
                raise GraphcError(
                    f"{_at(user_source())}cannot index a Tensor with {type(k).__name__}"
                ) from None
            if not -size <= i < size:
                raise GraphcError(
                    f"{_at(user_source())}index {i} is out of range for dim {axis} of size {size}"
                )
            i %= size
            starts.append(i), stops.append(i + 1), steps.append(1)
        axis += 1

    out = x
    if any(s != 0 or e != n or st != 1 for s, e, st, n in zip(starts, stops, steps, x.shape)):
        out = x.ctx.op("slice", x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
    if gather is not None:  # an index array copies, as in PyTorch
        return x.ctx.op("gather", out, gather[1], axis=gather[0]).reshape(tuple(final))
    view = out.reshape(tuple(final))._view_of(x)
    if view is not x and x._live_base() is None:
        view._index = (weakref.ref(x), key, x.value)
    return view


def _expanded(x: Tensor, items: list) -> list:
    """``items`` with ``...`` and the missing trailing dims as full slices (one item per dim)."""
    n_real = sum(1 for k in items if k is not None and k is not Ellipsis)
    if n_real > x.ndim:
        raise GraphcError(f"{_at(user_source())}too many indices ({n_real}) for a tensor of rank {x.ndim}")
    items = list(items)
    if any(k is Ellipsis for k in items):
        i = next(j for j, k in enumerate(items) if k is Ellipsis)
        items[i : i + 1] = [slice(None)] * (x.ndim - n_real)
    return items + [slice(None)] * (x.ndim - len(items))


def same_key(a: object, b: object) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object)))
    except (ValueError, TypeError):
        return a is b


def index_update(x: Tensor, key: object, value: object) -> Tensor:
    """``x`` with ``x[key]`` replaced by ``value`` (broadcast), as a new Tensor (a functional update)."""
    if isinstance(key, Reshaped):  # the whole of a reshape view of x, written back
        return as_tensor(value, like=x).broadcast_to(key.shape).reshape(x.shape).to(x.value.dtype)
    items = _key_items(key)
    v = as_tensor(value, like=x)
    if v.ctx is not x.ctx:
        raise GraphcError(f"{_at(user_source())}item assignment: the value comes from a different trace")
    if len(items) == 1 and isinstance(items[0], Tensor) and items[0].value.dtype == "bool":
        mask = items[0]
        if mask.shape != x.shape[: mask.ndim] or v.numel() != 1 and v.shape != x.shape:
            raise GraphcError(
                f"{_at(user_source())}t[mask] = v with a traced mask {mask.shape} needs v to be a scalar "
                f"(or of t's shape {x.shape})"
            )
        m = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
        return where(m, v.reshape(()) if v.numel() == 1 and v.shape != x.shape else v, x).to(x.value.dtype)
    pos = static_positions(x, key)
    if pos is None:
        if any(isinstance(k, Tensor) and k.value.dtype == "bool" for k in items):
            raise GraphcError(
                f"{_at(user_source())}item assignment: a traced bool mask must be the whole index "
                "(t[mask] = v)"
            )
        return traced_set(x, _expanded(x, items), value)
    try:
        vb = v.broadcast_to(pos.shape) if v.shape != pos.shape else v
    except GraphcError:
        raise GraphcError(
            f"{_at(user_source())}item assignment: a value of shape {v.shape} does not fit t[...] of shape "
            f"{pos.shape}"
        ) from None
    vb = vb.to(x.value.dtype).reshape(-1)
    flat_pos = pos.reshape(-1)
    # For a position written twice the last write wins (a deterministic choice; PyTorch leaves it open).
    last = len(flat_pos) - 1 - np.unique(flat_pos[::-1], return_index=True)[1]
    if len(last) != len(flat_pos):
        vb = x.ctx.op("gather", vb, x.ctx.array(np.sort(last).astype(np.int64), name="index"), axis=0)
        flat_pos = flat_pos[np.sort(last)]
    n = x.numel()
    mask = np.zeros(n, dtype=bool)
    mask[flat_pos] = True
    placed = x.ctx.op(
        "scatter_add", x.ctx.array(flat_pos.astype(np.int64), name="index"), vb, axis=0, shape=(n,)
    )
    m = x.ctx.array(mask.reshape(x.shape), name="mask")
    return where(m, placed.reshape(x.shape), x)
