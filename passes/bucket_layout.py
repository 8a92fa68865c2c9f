"""Concat in place: where the memory planner puts a packed gradient bucket's gradients.

``allreduce_start(g1, ..., gk) -> buf`` (``packed=True``) sums the flat bucket buffer ``buf``, the
gradients one after another, across ranks. When ``g_i``'s producer writes it straight into its
place in ``buf`` (byte ``nbytes(g_1) + ... + nbytes(g_{i-1})``), the start kernel copies nothing
for it and MPI reads the arena bytes the backward pass wrote. A gradient is placed there when

- its bytes are made by a node of this plan (not a graph input) that is not a view op: the
  gradient itself, or the value it is a reshape of (a bias gradient is the reshape of a sum),
  of exactly its size; nothing else shares those bytes but reshapes of them (nothing is written
  in place over them, they are no slice of a larger value);
- the start is the last reader of those bytes (MPI writes them until the wait: nothing may read
  them, or write over them, after the start), and they are no graph output;
- it appears once among the start's operands, and its place is aligned.

A gradient that is not placed is copied into ``buf`` by the start kernel, as before.

The averages go the same way: ``allreduce_wait(buf) -> g1', ..., gk'`` writes each average over
its own part of ``buf`` (``average_places``) when the wait is the buffer's last reader and the
place is aligned; the averaging pass then reads and writes the same bytes (as mpi4py's
``buf /= ranks`` does), and the updates read the averages in the bucket buffer, which stays live
until the last of them. The checker (``passes.memory_check``) states both rules on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from graphc.ir import Node, Value
from graphc.ir.memory import VIEW_OPS


def bucket_places(
    nodes: list[Node],
    intervals: Mapping[Value, tuple[int, int]],
    root_of: Callable[[Value], tuple[Value, int]],
    members: Mapping[Value, Sequence[Value]],
    alignment: int,
) -> dict[Value, tuple[Value, int]]:
    """Root value -> (its bucket buffer, byte offset inside it) for every gradient placed there.

    ``intervals``: each arena value's live [first, last] step over ``nodes``; ``root_of(v)``:
    the value whose bytes ``v`` views so far, and where in them (``(v, 0)`` when none);
    ``members[r]``: every value on root ``r``'s bytes (``r`` included).
    """
    made_by = {v: n for n in nodes for v in n.outputs}
    places: dict[Value, tuple[Value, int]] = {}
    for k, node in enumerate(nodes):
        if node.op != "allreduce_start" or not node.attrs.get("packed"):
            continue
        buf = node.outputs[0]
        if buf not in intervals or root_of(buf) != (buf, 0) or len(members[buf]) != 1:
            continue
        operands = set(node.inputs)
        offset = 0
        for v in node.inputs:
            here, offset = offset, offset + v.type.nbytes
            if v not in intervals or v.type.nbytes == 0 or here % alignment or node.inputs.count(v) != 1:
                continue
            root, at = root_of(v)
            producer = made_by.get(root)
            if producer is None or producer.op in VIEW_OPS or at or root.type.nbytes != v.type.nbytes:
                continue
            if root in places or intervals[v][1] != k:
                continue
            others = [m for m in members[root] if m is not v]
            if any(
                m in operands or intervals[m][1] >= k or (m is not root and made_by[m].op != "reshape")
                for m in others
            ):
                continue
            places[root] = (buf, here)
    return places


def average_places(
    nodes: list[Node],
    intervals: Mapping[Value, tuple[int, int]],
    root_of: Callable[[Value], tuple[Value, int]],
    alignment: int,
) -> dict[Value, tuple[Value, int]]:
    """Average -> (its bucket buffer, byte offset inside it) for the results of every
    ``allreduce_wait`` of a packed bucket that is its buffer's last reader, each at its aligned
    place in the buffer. ``root_of`` as in ``bucket_places`` (the buffer must own its bytes)."""
    made_by = {v: n for n in nodes for v in n.outputs}
    places: dict[Value, tuple[Value, int]] = {}
    for k, node in enumerate(nodes):
        if node.op != "allreduce_wait" or not node.inputs:
            continue
        buf = node.inputs[0]
        start = made_by.get(buf)
        if start is None or start.op != "allreduce_start" or not start.attrs.get("packed"):
            continue
        if buf not in intervals or intervals[buf][1] != k or root_of(buf) != (buf, 0):
            continue
        offset = 0
        for v in node.outputs:
            here, offset = offset, offset + v.type.nbytes
            if v in intervals and v.type.nbytes and not here % alignment and root_of(v) == (v, 0):
                places[v] = (buf, here)
    return places
