"""Data movement and indexing: reshape, transpose, slice, pad, concat, gather, scatter_add."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..types import INT_DTYPES, TensorType

if TYPE_CHECKING:
    from ..graph import Node
from .registry import (
    AXES,
    AXIS,
    NONNEGATIVE_PAIR,
    POSITIVE,
    SHAPE,
    SIZE,
    Attr,
    ChoiceSpec,
    RealSpec,
    TupleSpec,
    _check,
    _register,
    _same_dtype,
)
from .sources import _check_fits


# ---------------------------------------------------------------- movement
def _reshape(inputs, attrs):
    (x,) = inputs
    out = TensorType(tuple(attrs["shape"]), x.dtype)
    _check(out.numel == x.numel, f"cannot reshape {x.shape} ({x.numel} elements) to {out.shape}")
    return [out]


def _transpose(inputs, attrs):
    (x,) = inputs
    perm = tuple(attrs["perm"])
    _check(sorted(perm) == list(range(x.rank)), f"perm {perm} is not a permutation of rank {x.rank}")
    return [TensorType(tuple(x.shape[p] for p in perm), x.dtype)]


def is_last_axes_swap(node: Node) -> bool:
    """A transpose that swaps the last two axes and keeps the leading ones in place."""
    if node.op != "transpose":
        return False
    perm = tuple(node.attrs["perm"])
    rank = len(perm)
    return rank >= 2 and perm == (*range(rank - 2), rank - 1, rank - 2)


def _slice(inputs, attrs):
    (x,) = inputs
    starts, stops, steps = attrs["starts"], attrs["stops"], attrs["steps"]
    _check(
        len(starts) == len(stops) == len(steps) == x.rank,
        f"starts/stops/steps need one entry per axis ({x.rank})",
    )
    shape = []
    for d, (start, stop, step) in enumerate(zip(starts, stops, steps)):
        _check(step > 0, f"step must be positive on axis {d}, got {step}")
        _check(0 <= start <= stop <= x.shape[d], f"bad range {start}:{stop} on axis {d}")
        shape.append(len(range(start, stop, step)))
    return [TensorType(tuple(shape), x.dtype)]


def _pad(inputs, attrs):
    (x,) = inputs
    pads = attrs["pads"]
    _check(len(pads) == x.rank, f"pads need one (low, high) pair per axis ({x.rank})")
    _check(all(lo >= 0 and hi >= 0 for lo, hi in pads), "pads must be non-negative")
    _check_fits(attrs["value"], x.dtype, "pad value")
    return [TensorType(tuple(d + lo + hi for d, (lo, hi) in zip(x.shape, pads)), x.dtype)]


def _concat(inputs, attrs):
    _check(len(inputs) >= 1, "concat needs at least one operand")
    dtype = _same_dtype(inputs)
    axis = attrs["axis"]
    first = inputs[0]
    _check(0 <= axis < first.rank, f"axis {axis} out of range for rank {first.rank}")
    for t in inputs:
        _check(t.rank == first.rank, "operands differ in rank")
        same = all(t.shape[i] == first.shape[i] for i in range(t.rank) if i != axis)
        _check(same, f"shapes differ off the concat axis {axis}")
    shape = list(first.shape)
    shape[axis] = sum(t.shape[axis] for t in inputs)
    return [TensorType(tuple(shape), dtype)]


_register("reshape", 1, "injective", _reshape, {"shape": Attr(SHAPE)})
_register("transpose", 1, "injective", _transpose, {"perm": Attr(AXES)})
_SLICE = {"starts": Attr(TupleSpec(SIZE)), "stops": Attr(TupleSpec(SIZE)), "steps": Attr(TupleSpec(POSITIVE))}
_register("slice", 1, "injective", _slice, _SLICE)
_PAD = {"pads": Attr(TupleSpec(NONNEGATIVE_PAIR)), "value": Attr(RealSpec(), 0.0)}
_register("pad", 1, "injective", _pad, _PAD)
_register("concat", None, "injective", _concat, {"axis": Attr(AXIS)})


# ---------------------------------------------------------------- indexing
def _gather(inputs, attrs):
    x, idx = inputs
    axis = attrs["axis"]
    _check(0 <= axis < x.rank, f"axis {axis} out of range for rank {x.rank}")
    _check(idx.dtype in INT_DTYPES, f"indices must be integers, got {idx.dtype}")
    return [TensorType((*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]), x.dtype)]


def _scatter_add(inputs, attrs):
    idx, updates = inputs
    axis, shape = attrs["axis"], tuple(attrs["shape"])
    _check(idx.dtype in INT_DTYPES, f"indices must be integers, got {idx.dtype}")
    _check(0 <= axis < len(shape), f"axis {axis} out of range for shape {shape}")
    expect = (*shape[:axis], *idx.shape, *shape[axis + 1 :])
    _check(updates.shape == expect, f"updates must have shape {expect}, got {updates.shape}")
    return [TensorType(shape, updates.dtype)]


_register("gather", 2, "opaque", _gather, {"axis": Attr(AXIS)})
_register("scatter_add", 2, "opaque", _scatter_add, {"axis": Attr(AXIS), "shape": Attr(SHAPE)})
# scatter_add with another combine: the output starts at the reduction's identity (mul 1, max the
# lowest value, min the highest) and each update is multiplied / max-ed / min-ed in.
SCATTER_REDUCTIONS = ("mul", "max", "min")


def scatter_identity(reduction: str, dtype: np.dtype) -> object:
    """scatter_reduce's starting value: 1 (mul), the lowest (max) or highest (min) value of ``dtype``."""
    dtype = np.dtype(dtype)
    if reduction == "mul":
        return dtype.type(1)
    high = reduction == "min"
    if dtype == np.bool_:
        return np.bool_(high)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return dtype.type(info.max if high else info.min)
    return dtype.type(np.inf if high else -np.inf)


_register(
    "scatter_reduce",
    2,
    "opaque",
    _scatter_add,
    {"axis": Attr(AXIS), "shape": Attr(SHAPE), "reduction": Attr(ChoiceSpec(SCATTER_REDUCTIONS))},
)
