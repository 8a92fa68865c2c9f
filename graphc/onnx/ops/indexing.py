"""ONNX GatherElements/ScatterElements and GatherND/ScatterND, built on graphc's gather/scatter_add.

Every form addresses the flattened input: the index tensors (constants or computed at run time)
become flat positions with static strides, negative indices counting from the end. Scatters
write into a zero tensor with ``scatter_add`` and keep the input where nothing lands
(``reduction="none"``; ONNX leaves repeated indices undefined, graphc sums them) or add it
(``reduction="add"``); ``reduction="mul"/"max"/"min"`` fold the updates into a tensor of the
reduction's identity with ``scatter_reduce`` and combine that with the input (mul, maximum, minimum).
"""

from __future__ import annotations

import math

import numpy as np

from graphc.tensor import Tensor
from graphc.tensor_functions import _flat_positions, gather, scatter, scatter_add, where

from ..context import NodeContext
from ..registry import converter


def _index(nc: NodeContext, i: int) -> Tensor:
    t = nc.t(i)
    if t.value.dtype not in ("i32", "i64"):
        raise nc.fail(f"indices must be int32 or int64, got {t.value.dtype}")
    return t if t.value.dtype == "i64" else nc.op("cast", t, dtype="i64")


def _reduction(nc: NodeContext) -> str:
    return nc.attrs.string("reduction", "none", ("none", "add", "mul", "max", "min"))


_COMBINE = {"mul": "mul", "max": "maximum", "min": "minimum"}


def _fold_in(nc: NodeContext, x: Tensor, pos: Tensor, updates: Tensor, reduction: str) -> Tensor:
    """``x`` with each update multiplied / max-ed / min-ed in at its flat position in ``pos``."""
    if updates.value.dtype != x.value.dtype:
        raise nc.fail(f"updates must have the input's type {x.value.dtype}, got {updates.value.dtype}")
    shape = (x.numel(),)
    flat = nc.op(
        "scatter_reduce", pos.reshape(-1), updates.reshape(-1), axis=0, shape=shape, reduction=reduction
    )
    return nc.op(_COMBINE[reduction], x, flat.reshape(x.shape))


@converter("GatherElements", since=11)
def gather_elements(nc: NodeContext) -> list:
    """torch.gather's addressing: ``out[i][j] = x[index[i][j]][j]`` along ``axis``."""
    x, index = nc.t(0), _index(nc, 1)
    axis = nc.axis(nc.attrs.int("axis", 0), x.ndim)
    return [gather(x, axis, index)]


@converter("ScatterElements", "Scatter", since=9)
def scatter_elements(nc: NodeContext) -> list:
    """A copy of x with ``updates`` written (or added) at ``indices`` along ``axis``."""
    if nc.op_type == "Scatter" and nc.opset >= 11:
        raise nc.fail("Scatter was removed at opset 11 (use ScatterElements)")
    x, index, updates = nc.t(0), _index(nc, 1), nc.t(2)
    axis = nc.axis(nc.attrs.int("axis", 0), x.ndim)
    reduction = _reduction(nc) if nc.op_type == "ScatterElements" else "none"
    if reduction in _COMBINE:
        if tuple(updates.shape) != tuple(index.shape):
            raise nc.fail(f"updates {list(updates.shape)} must have the shape of indices {list(index.shape)}")
        if index.ndim != x.ndim or any(
            i > n for a, (i, n) in enumerate(zip(index.shape, x.shape)) if a != axis
        ):
            raise nc.fail(f"indices {list(index.shape)} do not fit input {list(x.shape)} along axis {axis}")
        return [_fold_in(nc, x, _flat_positions(x.shape, index, axis), updates, reduction)]
    if reduction == "add":
        return [scatter_add(x, axis, index, updates)]
    return [scatter(x, axis, index, updates)]


def _nd_positions(nc: NodeContext, x: Tensor, index: Tensor, b: int = 0) -> tuple[Tensor, tuple[int, ...]]:
    """Flat positions in x of every element GatherND/ScatterND addresses, and their shape.

    The first ``b`` dims of x and of the indices are batch dims, matched one to one.
    """
    k = index.shape[-1] if index.ndim else 0
    if index.ndim <= b or not 1 <= k <= x.ndim - b or tuple(index.shape[:b]) != tuple(x.shape[:b]):
        raise nc.fail(f"indices {list(index.shape)} do not address x {list(x.shape)} with batch_dims={b}")
    dims = x.shape[b : b + k]
    rest = math.prod(x.shape[b + k :])
    strides = np.array([math.prod(x.shape[b + j + 1 :]) for j in range(k)], np.int64)
    sizes = nc.tensor(np.array(dims, np.int64), "dims")
    index = where(index < 0, index + sizes, index)
    rows = (index * nc.tensor(strides, "strides")).sum(-1, keepdim=True)  # [..., 1]
    pos = rows + nc.tensor(np.arange(rest, dtype=np.int64), "offsets")  # [..., rest]
    if b:  # each batch entry's offset in x, broadcast over the index dims after the batch dims
        batch = np.zeros(index.shape[:b], np.int64)
        for a in range(b):
            view = [1] * b
            view[a] = index.shape[a]
            batch = batch + np.arange(index.shape[a], dtype=np.int64).reshape(view) * math.prod(
                x.shape[a + 1 :]
            )
        pos = pos + nc.tensor(batch.reshape(batch.shape + (1,) * (index.ndim - b)), "batch_offsets")
    return pos, (*index.shape[:-1], *x.shape[b + k :])


@converter("GatherND", since=11)
def gather_nd(nc: NodeContext) -> list:
    """x at each index tuple of ``indices`` (its last dim), the trailing dims kept."""
    x, index = nc.t(0), _index(nc, 1)
    b = nc.attrs.int("batch_dims", 0, lo=0, hi=max(0, x.ndim - 1)) if nc.opset >= 12 else 0
    pos, shape = _nd_positions(nc, x, index, b)
    return [nc.op("gather", x.reshape(-1), pos.reshape(-1), axis=0).reshape(shape)]


@converter("ScatterND", since=11)
def scatter_nd(nc: NodeContext) -> list:
    """A copy of x with ``updates`` written (or added) at each index tuple of ``indices``."""
    x, index, updates = nc.t(0), _index(nc, 1), nc.t(2)
    reduction = _reduction(nc) if nc.opset >= 16 else "none"
    pos, shape = _nd_positions(nc, x, index)
    if tuple(updates.shape) != shape:
        raise nc.fail(f"updates must have shape {list(shape)}, got {list(updates.shape)}")
    if reduction in _COMBINE:
        return [_fold_in(nc, x, pos, updates, reduction)]
    pos = pos.reshape(-1)
    n = x.numel()
    placed = nc.op("scatter_add", pos, updates.reshape(-1), axis=0, shape=(n,)).reshape(x.shape)
    if reduction == "add":
        return [nc.op("add", x, placed)]
    ones = nc.ctx.const(1, "i32").broadcast_to(pos.shape)
    hit = nc.op("scatter_add", pos, ones, axis=0, shape=(n,)).reshape(x.shape)
    return [where(hit > 0, placed, x)]
