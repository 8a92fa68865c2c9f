"""Memory planning: live ranges over the scheduled node order, offsets in one arena, and a checker.

Step k is ``graph.nodes[k]``. A value is live from the step that writes it (-1 for a data input,
copied in before step 0) to the last step that reads it (``len(nodes)`` for a graph output).
Buffers cover data inputs and every node output; param/const/state inputs live outside the arena,
and so do the update results written straight over them (``written_over``).

Sharing bytes, three ways (``Buffer.alias_of`` names the root buffer that owns them):
- a reshape of an arena value is a view of its input, and so is a slice that takes one
  contiguous, aligned block of it (a split of the leading axis: attention's q, k, v out of one
  projection); the runtime skips those nodes;
- a pointwise op (or pointwise fused node) writes its output over an operand of the same shape
  and dtype whose bytes (with all their views) die at that op; the kernel still runs;
- a packed gradient bucket's gradients sit back to back in its buffer (the ``allreduce_start``
  output), each at its place in the bucket, when ``bucket_layout.bucket_places`` allows: their
  producers write the buffer itself, so the start kernel copies nothing (concat in place); and
  the wait's averages over their own parts of it (``bucket_layout.average_places``);
- a concat whose operands are each one contiguous run of its result (a channel concat at batch
  1): each operand sits at its place in the result's bytes, written there by its producer, and
  the runtime skips the concat (``_concat_in_place``).
The root's live range is extended to cover every alias (for a bucket buffer, from the first
gradient's producer to the last reader of an average), so the placement only sees roots.

Placement: roots are placed one by one at the lowest-waste 64-byte-aligned gap among the roots
already placed that are live at the same time (best fit), in a few orders (largest first,
largest size x lifetime first, latest end first, longest first, earliest first); the smallest
arena wins (the first order to meet the lower bound ends the search: none can beat it), and a
short seeded local search over the order (move one buffer earlier, keep the order when the arena
does not grow) closes the gap that fragmentation leaves. Sizes are rounded up to the alignment
everywhere: the naive figure is the sum of all buffers (nothing shared), the lower bound the
most bytes live at one step, which no placement of these roots can beat.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from graphc.ir import Buffer, Graph, MemoryPlan, Node, Value
from graphc.ir.fused import matmul_parts
from graphc.ir.memory import VIEW_OPS, concat_places
from graphc.ir.views import block_offset

from .bucket_layout import average_places, bucket_places
from .manager import gc_paused
from .util import is_elementwise

ALIGNMENT = 64
# Above this many root buffers only three placement orders are tried (each compares every root
# with the roots placed before it: O(n^2), in NumPy).
MANY_BUFFERS = 2000


def align(n: int, alignment: int = ALIGNMENT) -> int:
    """``n`` rounded up to a multiple of ``alignment``."""
    return (n + alignment - 1) // alignment * alignment


def in_place_capable(node: Node) -> bool:
    """May this node write an output over an operand of the same shape and dtype (docs/CONTRACTS.md)?"""
    if node.op == "fused":
        return node.attrs.get("kind") == "pointwise"
    return is_elementwise(node)


# Kernels that can raise on bad data (an index out of range): no update is written over its
# parameter before one of them has run, so a step that fails changes no parameter.
RAISING_OPS = ("gather", "scatter_add", "scatter_reduce")


def _overwrites_in_step(node: Node, old: Value, new: Value) -> bool:
    """Whether ``node`` may write ``new`` over ``old``'s array: it reads ``old`` only element by
    element at the index where it writes (an elementwise op, a fused pointwise body, or a fused
    matmul whose epilogue alone reads ``old`` and computes ``new``)."""
    if node.op != "fused":
        return is_elementwise(node)
    body = node.subgraph
    kind = node.attrs.get("kind")
    if body is None or kind not in ("pointwise", "matmul"):
        return False
    if any(v.shape != old.shape for v in body.outputs):
        return False
    made = dict(zip(node.outputs, body.outputs))
    inside = [body.data_inputs[k] for k, v in enumerate(node.inputs) if v is old]
    if kind == "matmul":  # the epilogue computes new and alone reads old (ir.fused's parts)
        parts = matmul_parts(node)
        if not any(made[new] in n.outputs for n in parts.epilogue):
            return False  # the product itself: BLAS writes it before the epilogue reads
        return not any(v in inside for n in (*parts.prologue, parts.matmul) for v in n.inputs)
    return all(is_elementwise(n) for n in body.nodes if any(v in inside for v in n.inputs))


def written_over(
    graph: Graph, nodes: list[Node] | None = None, memo: dict[tuple, bool] | None = None
) -> dict[str, str]:
    """Update results (value name -> param/state input name) that their node can compute straight
    over the input's array when ``nodes`` (default: the graph's) run in order.

    Copying new values into the parameters after every step moves all of them twice (Adam's
    moments too), and their buffers held most of a training step's arena. A node may write over
    the old value where no later node reads it, it reads the old value only element by element
    at the index it writes, if at all, and no later node can raise; the new value must not
    also be a result. (Its readers, reshapes included, read it from the input's array.)
    ``memo`` keeps the per-node answers for calls over other orders of the same graph.
    """
    memo = {} if memo is None else memo
    nodes = graph.nodes if nodes is None else nodes
    at = {v: k for k, n in enumerate(nodes) for v in n.outputs}
    last_raise = max((k for k, n in enumerate(nodes) if n.op in RAISING_OPS), default=-1)
    inputs = {v.name: v for v in graph.inputs}
    update_indices = set(graph.updates.values())
    results = {v for i, v in enumerate(graph.outputs) if i not in update_indices}
    last_read = {v: k for k, n in enumerate(nodes) for v in n.inputs}  # later steps win
    returned = Counter(graph.outputs)
    over = {}
    for name, index in graph.updates.items():
        new, old = graph.outputs[index], inputs.get(name)
        k = at.get(new)
        if k is None or old is None or new in results or returned[new] != 1 or k < last_raise:
            continue
        if last_read.get(old, -1) > k:
            continue
        if last_read.get(old) == k:
            key = (nodes[k], old, new)
            if key not in memo:
                memo[key] = _overwrites_in_step(nodes[k], old, new)
            if not memo[key]:
                continue
        over[new.name] = name
    return over


def arena_values(graph: Graph) -> list[Value]:
    """The values that live in the arena: data inputs, then every node output in order."""
    return graph.data_inputs + [v for n in graph.nodes for v in n.outputs]


def live_intervals(graph: Graph, nodes: list[Node] | None = None) -> dict[Value, tuple[int, int]]:
    """[first, last] step of each arena value over ``nodes`` (default: ``graph.nodes``)."""
    nodes = graph.nodes if nodes is None else nodes
    steps = len(nodes)
    interval: dict[Value, list[int]] = {v: [-1, -1] for v in graph.data_inputs}
    for k, n in enumerate(nodes):
        for v in n.outputs:
            interval[v] = [k, k]
    for k, n in enumerate(nodes):
        for v in n.inputs:
            if v in interval:
                interval[v][1] = max(interval[v][1], k)
    for v in graph.outputs:
        if v in interval:
            interval[v][1] = steps
    return {v: (a, b) for v, (a, b) in interval.items()}


def slice_view_offset(node: Node) -> int | None:
    """Byte offset of a slice's result in its (C-contiguous) operand when the result is one
    non-empty contiguous block of it (``ir.views.block_offset``), else None."""
    if node.op != "slice" or node.output.type.nbytes == 0:
        return None
    return block_offset(node)


def view_offset(node: Node) -> int | None:
    """Byte offset of ``node``'s result in its operand's bytes if the result can be a view of
    them (a reshape, or a contiguous slice starting on an aligned byte), else None."""
    if node.op == "reshape":
        return 0
    offset = slice_view_offset(node)
    return offset if offset is not None and offset % ALIGNMENT == 0 else None


@dataclass
class _Classes:
    """Union-find of values sharing bytes, with each root's extended end and each value's offset."""

    parent: dict[Value, Value]
    end: dict[Value, int]
    begin: dict[Value, int]
    delta: dict[Value, int] = field(default_factory=dict)  # bytes past its parent's start

    def find(self, v: Value) -> Value:
        while self.parent[v] is not v:
            v = self.parent[v]
        return v

    def offset(self, v: Value) -> int:
        """Where ``v``'s bytes start within its root's."""
        total = 0
        while self.parent[v] is not v:
            total += self.delta.get(v, 0)
            v = self.parent[v]
        return total

    def union_into(self, child_root: Value, root: Value, offset: int = 0) -> None:
        self.parent[child_root] = root
        self.delta[child_root] = offset
        self.end[root] = max(self.end[root], self.end[child_root])
        self.begin[root] = min(self.begin[root], self.begin[child_root])


def _alias_classes(graph: Graph, nodes: list[Node], intervals, in_place: bool) -> _Classes:
    classes = _Classes(
        {v: v for v in intervals},
        {v: e for v, (_, e) in intervals.items()},
        {v: a for v, (a, _) in intervals.items()},
    )
    for n in nodes:
        in_arena = n.inputs and n.inputs[0] in intervals and n.outputs[0] in intervals
        offset = view_offset(n) if in_arena else None
        if offset is not None:
            x = n.inputs[0]
            classes.union_into(n.output, classes.find(x), classes.offset(x) + offset)
    if not in_place:
        return classes
    # Concat in place (passes.bucket_layout): a packed bucket's gradients are written straight
    # into its buffer, whose bytes are then held from the first gradient's producer to the wait.
    members: dict[Value, list[Value]] = {}
    for v in intervals:
        members.setdefault(classes.find(v), []).append(v)
    places = bucket_places(
        nodes, intervals, lambda v: (classes.find(v), classes.offset(v)), members, ALIGNMENT
    )
    for root, (buf, at) in places.items():
        classes.union_into(root, buf, at)
    for average, (buf, at) in average_places(
        nodes, intervals, lambda v: (classes.find(v), classes.offset(v)), ALIGNMENT
    ).items():
        classes.union_into(average, buf, at)  # with its views: the updates read it there
    _concat_in_place(nodes, intervals, classes)
    for k, n in enumerate(nodes):
        if not in_place_capable(n):
            continue
        taken: set[Value] = set()
        for o in n.outputs:
            if o not in intervals or classes.find(o) is not o:
                continue
            for v in n.inputs:
                if v not in intervals or v.type != o.type:
                    continue
                r = classes.find(v)
                if r in taken or classes.end[r] != k:
                    continue
                # Another operand on these bytes with another shape or start would be read at
                # other positions than the ones being overwritten.
                at, size = classes.offset(v), v.type.nbytes
                if any(
                    w in intervals
                    and classes.find(w) is r
                    and (w.shape != o.shape or classes.offset(w) != at)
                    and classes.offset(w) < at + size
                    and at < classes.offset(w) + w.type.nbytes
                    for w in n.inputs
                ):
                    continue
                taken.add(r)
                classes.union_into(o, r, at)
                break
    return classes


# Producers whose output bytes are not theirs alone to write (MPI's bucket buffers).
_NOT_PLACED = ("allreduce_start", "allreduce_wait")


def _concat_in_place(nodes: list[Node], intervals, classes: _Classes) -> None:
    """Concat in place: where each operand of a concat is one contiguous run of its result
    (``ir.memory.concat_places``: every axis before the concat axis of size 1), put each
    operand's bytes at their place in the result's, so their producers write them there and the
    runtime skips the concat (``MemoryPlan.concat_in_place``). All operands or none: each
    (but empty ones) must be made by a node of the plan that is not a view op or a collective
    (never a data input), own its bytes or be a reshape of the whole of them, appear once, and
    start on an aligned byte. A placed value's class moves with it (its views, the operands of
    an inner concat placed before), and the result's live range then covers their producers.
    Concats fused into other kernels are no longer nodes and are not seen here."""
    made_by = {v: n for n in nodes for v in n.outputs}
    for node in nodes:
        places = concat_places(node)
        y = node.outputs[0] if places is not None else None
        if y is None or y not in intervals or classes.find(y) is not y or y.type.nbytes == 0:
            continue
        moves: dict[Value, int] = {}
        for v, at in zip(node.inputs, places):
            if v.type.nbytes == 0:
                continue
            r = classes.find(v) if v in intervals else None
            producer = made_by.get(r)
            if (
                producer is None
                or producer.op in VIEW_OPS
                or producer.op in _NOT_PLACED
                or r is y
                or r in moves
                or at % ALIGNMENT
                or classes.offset(v)
                or r.type.nbytes != v.type.nbytes
            ):
                break
            moves[r] = at
        else:
            for r, at in moves.items():
                classes.union_into(r, y, at)


def _lower_bound(roots: list[Value], start: dict, end: dict, size: dict, steps: int) -> int:
    delta = np.zeros(steps + 3, dtype=np.int64)
    for r in roots:
        delta[start[r] + 1] += size[r]
        delta[end[r] + 2] -= size[r]
    return int(np.cumsum(delta).max()) if roots else 0


def _place(order: list[Value], start: dict, end: dict, size: dict) -> tuple[dict[Value, int], int]:
    """Place the roots one by one in ``order``, each in the lowest-waste gap among the roots
    already placed that are live at some same step (best fit, the lowest of equals), else above
    them all. The placed roots sit in arrays, so finding the ones that overlap is one vector test."""
    n = len(order)
    starts = np.fromiter((start[r] for r in order), np.int64, n)
    ends = np.fromiter((end[r] for r in order), np.int64, n)
    sizes = np.fromiter((size[r] for r in order), np.int64, n)
    at = np.zeros(n, np.int64)
    offsets: dict[Value, int] = {}
    for i, r in enumerate(order):
        need = int(sizes[i])
        busy = (starts[:i] <= ends[i]) & (ends[:i] >= starts[i]) & (sizes[:i] > 0)
        lo = at[:i][busy]
        offset = 0
        if lo.size:
            hi = lo + sizes[:i][busy]
            by_offset = np.lexsort((hi, lo))
            lo, hi = lo[by_offset], hi[by_offset]
            reach = np.maximum.accumulate(hi)  # the cursor after each busy block
            cursor = np.concatenate(([0], reach[:-1]))
            waste = lo - cursor - need
            fits = np.flatnonzero(waste >= 0)
            if fits.size:
                offset = int(cursor[fits[np.argmin(waste[fits])]])
            else:
                offset = max(int(reach[-1]), 0)
        at[i] = offset
        offsets[r] = offset
    top = int((at + sizes).max()) if n else 0
    return offsets, top


def _improve(order, placed, lower_bound: int, start, end, size, tries: int | None = None):
    """Local search over placement orders: move one buffer earlier, keep the order if no worse.

    The greedy orders above leave fragmentation on graphs with long-lived residual values; a
    few hundred seeded moves (deterministic) usually close most of the gap to the lower bound.
    """
    n = len(order)
    if n < 3:
        return placed
    tries = tries if tries is not None else max(50, min(400, 40000 // n))
    rng = np.random.default_rng(0)
    best_order, best = list(order), placed
    for _ in range(tries):
        i, j = sorted(rng.choice(n, size=2, replace=False))
        candidate = best_order[:i] + [best_order[j]] + best_order[i:j] + best_order[j + 1 :]
        result = _place(candidate, start, end, size)
        if result[1] <= best[1]:
            best_order, best = candidate, result
            if best[1] <= lower_bound:
                break
    return best


def plan_memory(graph: Graph, in_place: bool = True) -> MemoryPlan:
    """Lay out every data input and node output of the scheduled ``graph`` in one arena."""
    with gc_paused():
        return _plan_memory(graph, in_place)


def _plan_memory(graph: Graph, in_place: bool) -> MemoryPlan:
    nodes = graph.nodes
    over = written_over(graph)
    intervals = _in_arena(live_intervals(graph), over)
    classes = _alias_classes(graph, nodes, intervals, in_place)
    roots = [v for v in intervals if classes.find(v) is v]
    start = {r: classes.begin[r] for r in roots}
    end = {r: classes.end[r] for r in roots}
    size = {r: align(r.type.nbytes) for r in roots}
    keys = [
        lambda r: (-size[r], start[r]),
        lambda r: (-size[r] * (end[r] - start[r] + 1), start[r]),
        lambda r: (-end[r], -size[r]),
    ]
    if len(roots) <= MANY_BUFFERS:
        keys += [
            lambda r: (-size[r], start[r] - end[r]),
            lambda r: (start[r] - end[r], -size[r]),
            lambda r: (start[r], -size[r]),
        ]
    lower_bound = _lower_bound(roots, start, end, size, len(nodes))
    best_order, offsets, arena = [], {}, None
    for key in keys:  # the first order with the smallest arena; none can beat the lower bound
        order = sorted(roots, key=key)
        placed, top = _place(order, start, end, size)
        if arena is None or top < arena:
            best_order, offsets, arena = order, placed, top
        if arena <= lower_bound:
            break
    if arena > lower_bound:
        offsets, arena = _improve(best_order, (offsets, arena), lower_bound, start, end, size)
    buffers: dict[str, Buffer] = {}
    for v, (a, b) in intervals.items():
        r = classes.find(v)
        if r is v:
            buffers[v.name] = Buffer(v.name, offsets[v], v.type.nbytes, start[v], end[v])
        else:
            at = offsets[r] + classes.offset(v)
            buffers[v.name] = Buffer(v.name, at, v.type.nbytes, a, b, alias_of=r.name)
    return MemoryPlan(
        arena_bytes=align(arena),
        buffers=buffers,
        naive_bytes=sum(align(v.type.nbytes) for v in intervals),
        lower_bound=lower_bound,
        alignment=ALIGNMENT,
        written_over=over,
    )


def _in_arena(intervals: dict[Value, tuple[int, int]], over: dict[str, str]) -> dict[Value, tuple[int, int]]:
    """The live intervals of the values that get arena bytes (not those written over inputs)."""
    return {v: span for v, span in intervals.items() if v.name not in over}


def peak_bytes(
    graph: Graph, nodes: list[Node] | None = None, in_place: bool = True, over: dict[str, str] | None = None
) -> int:
    """The most aligned bytes live at one step when ``nodes`` (default: the graph's) run in order;
    ``over``: ``written_over(graph, nodes)`` when the caller has it already."""
    nodes = graph.nodes if nodes is None else nodes
    over = written_over(graph, nodes) if over is None else over
    intervals = _in_arena(live_intervals(graph, nodes), over)
    classes = _alias_classes(graph, nodes, intervals, in_place)
    roots = [v for v in intervals if classes.find(v) is v]
    start = {r: classes.begin[r] for r in roots}
    size = {r: align(r.type.nbytes) for r in roots}
    return _lower_bound(roots, start, classes.end, size, len(nodes))
