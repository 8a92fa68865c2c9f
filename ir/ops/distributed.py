"""Collectives: the bucketed allreduce start/wait pair."""

from __future__ import annotations

import math

from ..types import TensorType
from .registry import MAX_NUMEL, Attr, BoolSpec, IntSpec, ShapeSpec, TupleSpec, _check, _register, _same_dtype

# --- distributed
# Data-parallel gradient averaging over MPI (graphc.distributed; docs/CONTRACTS.md, "Collectives").
# ``allreduce_start(g1, ..., gk)`` packs a bucket of gradients (one float dtype) into one flat
# buffer ``[sum of numels]`` and starts a nonblocking sum of it across ranks (MPI Iallreduce); the
# buffer is the token of the pending sum, written by MPI until its wait, so it stays live until
# then. ``allreduce_wait(buffer)`` waits for the sum (with a deadline) and returns each gradient's
# average over the ranks, in the start's operand order and with the shapes of ``shapes``.
# ``bucket`` numbers the bucket (messages name it; distinct buckets never merge in CSE).
# ``packed=False`` (a bucket of one gradient): MPI reads the gradient itself, no packing copy;
# that wait then takes the gradient as a second operand, which keeps its bytes live until the sum
# is done (any operand after the buffer is only held, never read).
MAX_BUCKET_VALUES = 1 << 16
_BUCKET = Attr(IntSpec(0, MAX_NUMEL), 0)


def _allreduce_start(inputs, attrs):
    _check(len(inputs) >= 1, "needs at least one operand")
    dtype = _same_dtype(inputs)
    _check(dtype in ("f32", "f64"), f"sums f32 or f64 gradients, got {dtype}")
    _check(len(inputs) <= MAX_BUCKET_VALUES, f"at most {MAX_BUCKET_VALUES} operands, got {len(inputs)}")
    return [TensorType((sum(t.numel for t in inputs),), dtype)]


def _allreduce_wait(inputs, attrs):
    _check(len(inputs) >= 1, "needs the bucket buffer as its first operand")
    buf = inputs[0]
    _check(buf.rank == 1 and buf.dtype in ("f32", "f64"), f"needs a flat f32/f64 buffer, got {buf}")
    shapes = attrs["shapes"]
    _check(len(shapes) >= 1, "shapes must name at least one result")
    total = sum(math.prod(s) for s in shapes)
    _check(total == buf.numel, f"shapes hold {total} elements, the buffer {buf.numel}")
    return [TensorType(tuple(s), buf.dtype) for s in shapes]


_register(
    "allreduce_start", None, "opaque", _allreduce_start, {"bucket": _BUCKET, "packed": Attr(BoolSpec(), True)}
)
_WAIT_SHAPES = TupleSpec(ShapeSpec(), max_length=MAX_BUCKET_VALUES)
_register(
    "allreduce_wait", None, "opaque", _allreduce_wait, {"shapes": Attr(_WAIT_SHAPES), "bucket": _BUCKET}
)
COLLECTIVE_OPS = ("allreduce_start", "allreduce_wait")
