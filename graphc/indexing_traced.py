"""Advanced indexing with traced index Tensors: ``y_hat[range(n), y]``, ``x[i, :, j]``, ``x[idx] = v``.

PyTorch's rules: an int selects its dim first; the broadcast index dims stand where the first
index array stands when the index arrays are adjacent, else first. The flat position of every
element of the result is a traced sum: the broadcast index arrays times their strides, plus a
constant for the ints and sliced dims. Reading is one ``gather`` of the flattened tensor; writing
scatters the values there (where a position is written more than once, PyTorch leaves the result
open: graphc writes the mean of the float values). Traced indices are not range-checked
(negative entries count from the end).
"""

from __future__ import annotations

import math

import numpy as np

from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, as_tensor, user_source, where

__all__ = ["traced_get", "traced_set"]


def _positions(x: Tensor, items: list) -> Tensor:
    """Flat positions in ``x`` of ``x[items]`` (items: one per dim; slices, ints and index arrays)."""
    where_ = f"{_at(user_source())}indexing with a traced index Tensor"
    if any(k is None or k is Ellipsis for k in items) or len(items) != x.ndim:
        raise GraphcError(f"{where_}: None and ... are not supported together with several index arrays")
    strides = [math.prod(x.shape[a + 1 :]) for a in range(x.ndim)]
    picked = {a: int(k) for a, k in enumerate(items) if isinstance(k, (int, np.integer))}
    for a, i in picked.items():  # an int selects first, as in PyTorch (no broadcast dim)
        if not -x.shape[a] <= i < x.shape[a]:
            raise GraphcError(
                f"{_at(user_source())}index {i} is out of range for dim {a} of size {x.shape[a]}"
            )
    adv = [a for a, k in enumerate(items) if not isinstance(k, slice) and a not in picked]
    indices = []
    for a in adv:
        k, size = items[a], x.shape[a]
        if isinstance(k, Tensor):
            if k.value.dtype not in ("i32", "i64"):
                raise GraphcError(f"{where_}: index Tensors must be integers, got {k.value.dtype}")
            idx = k.to("i64")
            idx = where(idx < 0, idx + size, idx)
        else:
            arr = np.asarray(k)
            if arr.dtype.kind not in "iu":
                raise GraphcError(f"{where_}: index arrays must be integers, got {arr.dtype}")
            if arr.size and (arr.min() < -size or arr.max() >= size):
                bad = int(arr[(arr < -size) | (arr >= size)].reshape(-1)[0])
                raise GraphcError(
                    f"{_at(user_source())}index {bad} is out of range for dim {a} of size {size}"
                )
            idx = x.ctx.array(np.where(arr < 0, arr + size, arr).astype(np.int64), name="index")
        indices.append(idx * strides[a])
    try:
        bshape = np.broadcast_shapes(*(i.shape for i in indices))
    except ValueError:
        raise GraphcError(
            f"{where_}: index shapes {[i.shape for i in indices]} do not broadcast together"
        ) from None
    adjacent = adv == list(range(adv[0], adv[-1] + 1))
    rest = [a for a in range(x.ndim) if a not in adv and a not in picked]
    # result dims: the sliced dims before the index arrays, the broadcast dims, the other sliced dims
    before = [a for a in rest if a < adv[0]] if adjacent else []
    after = [a for a in rest if a not in before]
    nb = len(bshape)
    rank = len(before) + nb + len(after)
    static = np.full([1] * rank, sum(i % x.shape[a] * strides[a] for a, i in picked.items()), dtype=np.int64)
    for slot, a in [*enumerate(before), *((len(before) + nb + j, a) for j, a in enumerate(after))]:
        start, stop, step = items[a].indices(x.shape[a])
        offsets = np.arange(start, stop, step, dtype=np.int64) * strides[a]
        view = [1] * rank
        view[slot] = len(offsets)
        static = static + offsets.reshape(view)
    lead = len(before)
    total = None
    for idx in indices:
        i = idx.reshape([1] * (nb - idx.ndim) + list(idx.shape))
        i = i.reshape([1] * lead + list(i.shape) + [1] * len(after))
        total = i if total is None else total + i
    return total + x.ctx.array(static, name="positions")


def traced_get(x: Tensor, items: list) -> Tensor:
    """``x[items]`` with index arrays at least one of which is a traced Tensor."""
    pos = _positions(x, items)
    return x.ctx.op("gather", x.reshape(-1), pos.reshape(-1), axis=0).reshape(pos.shape)


def traced_set(x: Tensor, items: list, value: object) -> Tensor:
    """``x`` with ``x[items]`` replaced by ``value`` (broadcast), for traced index arrays."""
    pos = _positions(x, items)
    v = as_tensor(value, like=x)
    try:
        v = v.broadcast_to(pos.shape) if v.shape != pos.shape else v
    except GraphcError:
        raise GraphcError(
            f"{_at(user_source())}item assignment: a value of shape {v.shape} does not fit t[...] of shape "
            f"{pos.shape}"
        ) from None
    flat, n = pos.reshape(-1), x.numel()
    placed = x.ctx.op("scatter_add", flat, v.to(x.value.dtype).reshape(-1), axis=0, shape=(n,))
    ones = x.ctx.const(1, "i32").broadcast_to(flat.shape)
    count = x.ctx.op("scatter_add", flat, ones, axis=0, shape=(n,))
    if x.value.dtype in ("f16", "bf16", "f32", "f64"):
        placed = placed / where(count > 1, count, 1).to(x.value.dtype)
    return where((count > 0).reshape(x.shape), placed.reshape(x.shape), x)
