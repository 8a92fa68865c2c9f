"""The memory-plan checker: is a MemoryPlan (planned here, or read from a file) safe to run?

It states its own rules and never calls the planner. Step k is ``graph.nodes[k]``; a value is
live from the step that writes it (-1 for a data input) to its last reader (``len(nodes)`` for a
graph output). A plan is accepted when

1. the updates it writes over their param/state arrays are ones ``written_over`` allows;
2. it has one buffer per arena value (data inputs and node outputs not written over), no other;
3. every buffer is aligned, holds its value's bytes inside the arena, covers its live range,
   and the arena is no larger than all those buffers side by side (each rounded up to the
   alignment), which bounds what a file can make the runtime allocate;
4. an alias (``Buffer.alias_of``) names a root buffer (one that aliases nothing) and lies
   inside its bytes; a data input is never an alias;
   - a reshape or slice output that is an alias is skipped by the runtime (``MemoryPlan.is_view``),
     so it must be a true view: its operand is an arena value on the same root, and it sits at
     the operand's offset (reshape) or at the operand's offset plus the start of the one
     contiguous block the slice takes (a slice that is not one block cannot be a view);
   - a gradient of a packed gradient bucket may be an alias of the bucket's buffer (concat in
     place): it is an operand of the ``allreduce_start`` (``packed``) whose output is that
     root, made by a node that is not a view op, and sits exactly at its place in the buffer
     (the root's offset plus the bytes of the operands before it);
   - an average of such a bucket (an ``allreduce_wait`` output) may be an alias of the bucket
     buffer the wait reads, at its place in it (as above: the bytes of the results before it);
   - an operand of a concat the runtime skips (``MemoryPlan.concat_in_place``: each operand one
     contiguous run of the result, every non-empty one an alias of the result's root at its
     place) may be an alias of that root (concat in place): it, or the bytes it views from
     their start, sits exactly at its place in the result (the result's offset plus the bytes
     of the operands before it), made by a node that is neither a view op nor a collective;
   - any other alias is an in-place output: an elementwise op or a pointwise fused node whose
     output sits exactly on an operand of the same type on the same root (rule 5 then checks
     that operand dies there);
5. two values live at the same step share bytes only if one is a view of the other (through
   checked views), or the later one is written in place over the other at the step where the
   other (and every view of those bytes read there) is last read, or one is a bucket buffer
   and the other a gradient placed in it (or a view of one) that nothing reads after the
   bucket's ``allreduce_start`` (MPI writes those bytes from then until the wait), or one is a
   bucket buffer and the other an average placed in it (or a view of one) by the wait that
   reads that buffer last, or one is (a view of) the result of a concat in place and the other
   (a view of) an operand placed in it, or in an inner concat in place placed in it.
"""

from __future__ import annotations

import numpy as np

from graphc.ir import Graph, GraphcError, MemoryPlan, Node, Value
from graphc.ir.memory import VIEW_OPS, concat_places
from graphc.ir.views import block_offset

from .memory_plan import written_over
from .util import is_elementwise

# The largest itemsize of graphc's dtypes: every buffer must be aligned at least this much.
MIN_ALIGNMENT = 8


def _intervals(graph: Graph, over: dict[str, str]) -> dict[Value, tuple[int, int]]:
    """Live [first, last] step of each arena value (data inputs, node outputs not written over)."""
    nodes = graph.nodes
    span: dict[Value, list[int]] = {v: [-1, -1] for v in graph.data_inputs}
    for k, n in enumerate(nodes):
        for v in n.outputs:
            span[v] = [k, k]
    for k, n in enumerate(nodes):
        for v in n.inputs:
            if v in span:
                span[v][1] = max(span[v][1], k)
    for v in graph.outputs:
        if v in span:
            span[v][1] = len(nodes)
    return {v: (a, b) for v, (a, b) in span.items() if v.name not in over}


def _in_place_capable(node: Node) -> bool:
    """May ``node`` write an output over an operand (docs/CONTRACTS.md, Kernels)?"""
    if node.op == "fused":
        return node.attrs.get("kind") == "pointwise"
    return is_elementwise(node)


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def check_memory_plan(graph: Graph, plan: MemoryPlan) -> None:
    """Raise GraphcError naming the first rule (see the module docstring) ``plan`` breaks for the
    scheduled ``graph``: a wrong written-over update, a missing or unknown buffer, a misaligned
    or out-of-arena buffer, an oversized arena, an alias that is not a view or in-place output,
    or two live buffers sharing bytes without a legal alias."""
    allowed = written_over(graph)
    wrong = {v: p for v, p in plan.written_over.items() if allowed.get(v) != p}
    if wrong:
        raise GraphcError(f"memory plan: updates {sorted(wrong)[:5]} cannot be written over their inputs")
    intervals = _intervals(graph, plan.written_over)
    names = {v.name: v for v in intervals}
    missing = set(names) - set(plan.buffers)
    extra = set(plan.buffers) - set(names)
    if missing or extra:
        raise GraphcError(
            f"memory plan: buffers missing for {sorted(missing)[:5]}, unexpected for {sorted(extra)[:5]}"
        )
    _check_buffers(plan, intervals)
    step_of = {v: k for k, n in enumerate(graph.nodes) for v in n.outputs}
    view, in_bucket, in_concat = _check_aliases(graph, plan, intervals, names, step_of)
    _check_overlaps(graph, plan, intervals, view, in_bucket, in_concat, step_of)


def _check_buffers(plan: MemoryPlan, intervals: dict[Value, tuple[int, int]]) -> None:
    alignment = plan.alignment
    if not isinstance(alignment, int) or alignment < MIN_ALIGNMENT or alignment & (alignment - 1):
        raise GraphcError(f"memory plan: alignment {alignment!r} is not a power of two >= {MIN_ALIGNMENT}")
    naive = sum(_align(v.type.nbytes, alignment) for v in intervals)
    if not 0 <= plan.arena_bytes <= naive:
        raise GraphcError(
            f"memory plan: arena of {plan.arena_bytes} bytes; its buffers need at most {naive} side by side"
        )
    for v, (a, b) in intervals.items():
        buf = plan.buffers[v.name]
        if buf.offset < 0 or buf.offset % alignment:
            raise GraphcError(f"memory plan: %{v.name} at offset {buf.offset} is not {alignment}-aligned")
        if buf.size < v.type.nbytes or buf.offset + v.type.nbytes > plan.arena_bytes:
            raise GraphcError(f"memory plan: %{v.name} ({v.type.nbytes} bytes) does not fit its buffer/arena")
        if buf.start > a or buf.end < b:
            raise GraphcError(
                f"memory plan: %{v.name} is live over [{a}, {b}] but planned for [{buf.start}, {buf.end}]"
            )


def _check_aliases(
    graph: Graph, plan: MemoryPlan, intervals, names: dict[str, Value], step_of: dict[Value, int]
) -> tuple[dict[Value, Value], dict[Value, Value], dict[Value, Value]]:
    """Check rule 4; return the checked views (result -> operand), the gradients placed in
    their bucket buffers (gradient -> the buffer's value) and the operands placed in the result
    of a concat in place (operand bytes -> the concat's result)."""
    buffers = plan.buffers
    view: dict[Value, Value] = {}
    in_bucket: dict[Value, Value] = {}
    in_concat: dict[Value, Value] = {}
    places = _bucket_places(graph)
    bucket_roots = {b.name for spots in places.values() for b, _ in spots}
    parts = _concat_parts(graph, plan)
    bucket_roots |= {buffers[y.name].alias_of or y.name for spots in parts.values() for y, _ in spots}
    averages = _average_places(graph)
    deferred: list[Value] = []
    for v in intervals:
        buf = buffers[v.name]
        if buf.alias_of is None:
            continue
        root = buffers.get(buf.alias_of)
        bad = f"memory plan: %{v.name} is planned as an alias of %{buf.alias_of}"
        if v not in step_of:
            raise GraphcError(f"{bad}, but a data input is never an alias")
        if root is None or root.alias_of is not None or root.value == v.name:
            raise GraphcError(f"{bad}, which is not a root buffer of the plan")
        root_bytes = names[root.value].type.nbytes
        if not (root.offset <= buf.offset and buf.offset + v.type.nbytes <= root.offset + root_bytes):
            raise GraphcError(f"{bad} but lies outside its bytes")
        node = graph.nodes[step_of[v]]
        if node.op in VIEW_OPS:
            x = node.inputs[0]
            at = block_offset(node)
            xbuf = buffers.get(x.name) if x in intervals else None
            if xbuf is None or at is None:
                raise GraphcError(f"{bad}, but its {node.op} is not a view of an arena value's bytes")
            if (xbuf.alias_of or x.name) != root.value or buf.offset != xbuf.offset + at:
                raise GraphcError(
                    f"{bad} at offset {buf.offset}; as a {node.op} of %{x.name} it must sit at "
                    f"offset {xbuf.offset + at} of the same root"
                )
            view[v] = x
            continue
        ok = _in_place_capable(node) and any(
            c in intervals
            and c.type == v.type
            and (buffers[c.name].alias_of or c.name) == root.value
            and buffers[c.name].offset == buf.offset
            for c in node.inputs
        )
        if not ok and root.value in bucket_roots:  # checked below, once every view is known
            deferred.append(v)
        elif not ok:
            raise GraphcError(
                f"{bad}, but {node.op} neither views nor writes in place over those bytes, nor is it "
                "a gradient at its place in that bucket buffer"
            )
    under = _under(places, view, intervals, buffers)  # bytes a gradient views -> its places
    in_concat_at = _under(parts, view, intervals, buffers)  # bytes a concat operand views -> its places
    for v in deferred:  # a gradient, or the bytes a gradient views, at the gradient's place
        buf = buffers[v.name]
        root = buffers[buf.alias_of]
        spot = averages.get(v)
        if spot is not None and spot[0].name == root.value and buf.offset == root.offset + spot[1]:
            in_bucket[v] = spot[0]
            continue
        node = graph.nodes[step_of[v]]
        holder = next(
            (
                y
                for y, at in in_concat_at.get(v, ())
                if (buffers[y.name].alias_of or y.name) == root.value
                and buf.offset == buffers[y.name].offset + at
            ),
            None,
        )
        if holder is not None and node.op not in _NOT_PLACED:
            in_concat[v] = holder  # an operand of a concat in place, written at its place in the result
            continue
        bucket = next(
            (b for b, at in under.get(v, ()) if b.name == root.value and buf.offset == root.offset + at), None
        )
        if bucket is None:
            raise GraphcError(
                f"memory plan: %{v.name} is planned as an alias of %{buf.alias_of}, but {node.op} neither "
                "views nor writes in place over those bytes, nor is it a gradient at its place in that "
                "bucket buffer"
            )
        in_bucket[v] = bucket
    return view, in_bucket, in_concat


def _under(
    places: dict[Value, list[tuple[Value, int]]], view: dict[Value, Value], intervals, buffers
) -> dict[Value, list[tuple[Value, int]]]:
    """The places of ``places``'s values, keyed by the bytes each one views (following checked
    views), where it starts where those bytes do."""
    under: dict[Value, list[tuple[Value, int]]] = {}
    for g, spots in places.items():
        if g not in intervals:
            continue
        w = g
        while w in view:
            w = view[w]
        if g is w or buffers[g.name].offset == buffers[w.name].offset:  # it starts where they do
            under.setdefault(w, []).extend(spots)
    return under


# Producers whose output bytes are not theirs alone to write (MPI's bucket buffers).
_NOT_PLACED = ("allreduce_start", "allreduce_wait")


def _concat_parts(graph: Graph, plan: MemoryPlan) -> dict[Value, list[tuple[Value, int]]]:
    """Each non-empty operand of a concat the runtime skips (``MemoryPlan.concat_in_place``)
    -> (the concat's result, the operand's byte place in it: ``ir.memory.concat_places``)."""
    parts: dict[Value, list[tuple[Value, int]]] = {}
    for node in graph.nodes:
        if node.op == "concat" and plan.concat_in_place(node):
            for v, at in zip(node.inputs, concat_places(node)):
                if v.type.nbytes:
                    parts.setdefault(v, []).append((node.outputs[0], at))
    return parts


def _bucket_places(graph: Graph) -> dict[Value, list[tuple[Value, int]]]:
    """Each operand of a packed ``allreduce_start`` -> (the bucket buffer, its byte place in it)."""
    places: dict[Value, list[tuple[Value, int]]] = {}
    for node in graph.nodes:
        if node.op == "allreduce_start" and node.attrs.get("packed"):
            at = 0
            for v in node.inputs:
                places.setdefault(v, []).append((node.outputs[0], at))
                at += v.type.nbytes
    return places


def _average_places(graph: Graph) -> dict[Value, tuple[Value, int]]:
    """Each result of an ``allreduce_wait`` on a packed bucket -> (its buffer, its byte place in it)."""
    made_by = {v: n for n in graph.nodes for v in n.outputs}
    places: dict[Value, tuple[Value, int]] = {}
    for node in graph.nodes:
        start = made_by.get(node.inputs[0]) if node.op == "allreduce_wait" and node.inputs else None
        if start is not None and start.op == "allreduce_start" and start.attrs.get("packed"):
            at = 0
            for v in node.outputs:
                places[v] = (node.inputs[0], at)
                at += v.type.nbytes
    return places


def _check_overlaps(
    graph: Graph,
    plan: MemoryPlan,
    intervals,
    view: dict[Value, Value],
    in_bucket: dict[Value, Value],
    in_concat: dict[Value, Value],
    step_of,
) -> None:
    """Check rule 5 over every pair of values live at one step whose bytes meet."""

    def root(v: Value) -> Value:
        while v in view:
            v = view[v]
        return v

    def holders(v: Value) -> list[Value]:
        """The bytes of the concats in place that hold ``v``'s, innermost first."""
        out, v = [], root(v)
        while v in in_concat and len(out) <= len(in_concat):
            v = root(in_concat[v])
            out.append(v)
        return out

    def same_bytes(a: Value, b: Value) -> bool:
        """One is a view of the other, or holds the other's bytes (concats in place)."""
        return root(a) is root(b) or root(b) in holders(a) or root(a) in holders(b)

    values = [v for v in intervals if v.type.nbytes > 0]
    if len(values) < 2:
        return
    off = np.array([plan.buffers[v.name].offset for v in values], dtype=np.int64)
    hi = off + np.array([v.type.nbytes for v in values], dtype=np.int64)
    lo_t = np.array([intervals[v][0] for v in values], dtype=np.int64)
    hi_t = np.array([intervals[v][1] for v in values], dtype=np.int64)
    clash = (off[:, None] < hi[None, :]) & (off[None, :] < hi[:, None])
    clash &= (lo_t[:, None] <= hi_t[None, :]) & (lo_t[None, :] <= hi_t[:, None])
    for i, j in zip(*np.nonzero(np.triu(clash, k=1))):
        a, b = values[i], values[j]
        if same_bytes(a, b):
            continue
        if _in_its_bucket(a, b, intervals, step_of, in_bucket, root) or _in_its_bucket(
            b, a, intervals, step_of, in_bucket, root
        ):
            continue
        if _handoff(a, b, intervals, step_of, graph.nodes, plan, same_bytes) or _handoff(
            b, a, intervals, step_of, graph.nodes, plan, same_bytes
        ):
            continue
        raise GraphcError(
            f"memory plan: %{a.name} (live {list(intervals[a])}, bytes [{off[i]}, {hi[i]})) and "
            f"%{b.name} (live {list(intervals[b])}, bytes [{off[j]}, {hi[j]})) overlap"
        )


def _handoff(old: Value, new: Value, intervals, step_of, nodes, plan: MemoryPlan, same_bytes) -> bool:
    """``new`` is written in place at the step where ``old`` (or a view of the same bytes, or
    bytes holding them or held by them: ``same_bytes``) dies."""
    k = step_of.get(new)
    if k is None or intervals[new][0] != k or intervals[old][1] != k:
        return False
    node = nodes[k]
    if not _in_place_capable(node):
        return False
    for c in node.inputs:
        if c in intervals and same_bytes(c, old) and c.type == new.type:
            if plan.buffers[c.name].offset == plan.buffers[new.name].offset:
                return True
    return False


def _in_its_bucket(grad: Value, buf: Value, intervals, step_of, in_bucket: dict[Value, Value], root) -> bool:
    """``grad`` (or a view of it) is placed in the bucket buffer ``buf`` and is either a gradient not
    read after the ``allreduce_start`` that makes ``buf`` (MPI owns those bytes from then on) or an
    average the wait writes there, at the buffer's last read."""
    placed = root(grad)
    if in_bucket.get(placed) is not buf:
        return False
    if step_of[placed] < step_of[buf]:  # a gradient: the start is its last reader
        return intervals[grad][1] <= step_of[buf]
    return intervals[buf][1] == step_of[placed]  # an average: written by the wait, the buffer's last reader
