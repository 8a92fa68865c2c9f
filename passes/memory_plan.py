"""Memory planning: live ranges over the scheduled node order, offsets in one arena, and a checker.

Step k is ``graph.nodes[k]``. A value is live from the step that writes it (-1 for a data input,
copied in before step 0) to the last step that reads it (``len(nodes)`` for a graph output).
Buffers cover data inputs and every node output; param/const/state inputs live outside the arena,
and so do the update results written straight over them (``written_over``).

Sharing bytes, two ways (``Buffer.alias_of`` names the root buffer that owns them):
- a reshape of an arena value is a view of its input, and so is a slice that takes one
  contiguous, aligned block of it (a split of the leading axis: attention's q, k, v out of one
  projection); the runtime skips those nodes;
- a pointwise op (or pointwise fused node) writes its output over an operand of the same shape
  and dtype whose bytes (with all their views) die at that op; the kernel still runs.
The root's live range is extended to cover every alias, so the placement only sees roots.

Placement: roots are placed one by one at the lowest-waste 64-byte-aligned gap among the roots
already placed that are live at the same time (best fit), in a few orders (largest first,
largest size x lifetime first, latest end first, longest first, earliest first); the smallest
arena wins, and a short seeded local search over the order (move one buffer earlier, keep the
order when the arena does not grow) closes the gap that fragmentation leaves. Sizes are rounded
up to the alignment everywhere: the naive figure is the sum of all buffers (nothing shared), the
lower bound the most bytes live at one step, which no placement of these roots can beat.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphc.ir import Buffer, Graph, GraphcError, MemoryPlan, Node, Value

from .util import is_elementwise

ALIGNMENT = 64
# Above this many root buffers only three placement orders are tried (each costs O(n^2)).
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
RAISING_OPS = ("gather", "scatter_add")


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
    producer = next(n for n in body.nodes if made[new] in n.outputs)
    if not is_elementwise(producer):  # the product itself: BLAS writes it before the epilogue reads
        return False
    inside = [body.data_inputs[k] for k, v in enumerate(node.inputs) if v is old]
    return all(is_elementwise(n) for n in body.nodes if any(v in inside for v in n.inputs))


def written_over(graph: Graph, nodes: list[Node] | None = None) -> dict[str, str]:
    """Update results (value name -> param/state input name) that their node can compute straight
    over the input's array when ``nodes`` (default: the graph's) run in order.

    Copying new values into the parameters after every step moves all of them twice (Adam's
    moments too), and their buffers held most of a training step's arena. A node may write over
    the old value where no later node reads it, it reads the old value only element by element
    at the index it writes, if at all, and no later node can raise; the new value must not
    also be a result. (Its readers, reshapes included, read it from the input's array.)
    """
    nodes = graph.nodes if nodes is None else nodes
    at = {v: k for k, n in enumerate(nodes) for v in n.outputs}
    last_raise = max((k for k, n in enumerate(nodes) if n.op in RAISING_OPS), default=-1)
    inputs = {v.name: v for v in graph.inputs}
    update_indices = set(graph.updates.values())
    results = {v for i, v in enumerate(graph.outputs) if i not in update_indices}
    last_read = {v: k for k, n in enumerate(nodes) for v in n.inputs}  # later steps win
    over = {}
    for name, index in graph.updates.items():
        new, old = graph.outputs[index], inputs.get(name)
        k = at.get(new)
        if k is None or old is None or new in results or graph.outputs.count(new) != 1 or k < last_raise:
            continue
        if last_read.get(old, -1) > k:
            continue
        if last_read.get(old) == k and not _overwrites_in_step(nodes[k], old, new):
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
    contiguous block of it, else None: leading axes pick one index, one axis a step-1 range,
    and the trailing axes stay whole."""
    if node.op != "slice":
        return None
    x, out = node.inputs[0], node.output
    if out.type.nbytes == 0:
        return None
    starts, steps = node.attrs["starts"], node.attrs["steps"]
    rank = len(x.shape)
    lead = 0
    while lead < rank - 1 and out.shape[lead] == 1:
        lead += 1
    if out.shape[lead] > 1 and steps[lead] != 1:
        return None
    if any(out.shape[d] != x.shape[d] or (x.shape[d] > 1 and starts[d] != 0) for d in range(lead + 1, rank)):
        return None
    stride, offset = x.type.itemsize, 0
    for d in range(rank - 1, -1, -1):
        offset += starts[d] * stride
        stride *= x.shape[d]
    return offset


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


def _alias_classes(graph: Graph, nodes: list[Node], intervals, in_place: bool) -> _Classes:
    classes = _Classes({v: v for v in intervals}, {v: e for v, (_, e) in intervals.items()})
    for n in nodes:
        in_arena = n.inputs and n.inputs[0] in intervals and n.outputs[0] in intervals
        offset = view_offset(n) if in_arena else None
        if offset is not None:
            x = n.inputs[0]
            classes.union_into(n.output, classes.find(x), classes.offset(x) + offset)
    if not in_place:
        return classes
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


def _lower_bound(roots: list[Value], start: dict, end: dict, size: dict, steps: int) -> int:
    delta = np.zeros(steps + 3, dtype=np.int64)
    for r in roots:
        delta[start[r] + 1] += size[r]
        delta[end[r] + 2] -= size[r]
    return int(np.cumsum(delta).max()) if roots else 0


def _place(order: list[Value], start: dict, end: dict, size: dict) -> tuple[dict[Value, int], int]:
    placed: list[tuple[int, int, int, int]] = []  # (start, end, offset, size)
    offsets: dict[Value, int] = {}
    top = 0
    for r in order:
        need = size[r]
        busy = sorted((o, o + s) for a, b, o, s in placed if a <= end[r] and start[r] <= b and s > 0)
        best, best_waste, cursor = None, None, 0
        for lo, hi in busy:
            gap = lo - cursor
            if gap >= need and (best_waste is None or gap - need < best_waste):
                best, best_waste = cursor, gap - need
            cursor = max(cursor, hi)
        offset = best if best is not None else cursor
        offsets[r] = offset
        placed.append((start[r], end[r], offset, need))
        top = max(top, offset + need)
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
    nodes = graph.nodes
    over = written_over(graph)
    intervals = _in_arena(live_intervals(graph), over)
    classes = _alias_classes(graph, nodes, intervals, in_place)
    roots = [v for v in intervals if classes.find(v) is v]
    start = {r: intervals[r][0] for r in roots}
    end = {r: classes.end[r] for r in roots}
    size = {r: align(r.type.nbytes) for r in roots}
    orders = [
        sorted(roots, key=lambda r: (-size[r], start[r])),
        sorted(roots, key=lambda r: (-size[r] * (end[r] - start[r] + 1), start[r])),
        sorted(roots, key=lambda r: (-end[r], -size[r])),
    ]
    if len(roots) <= MANY_BUFFERS:
        orders += [
            sorted(roots, key=lambda r: (-size[r], start[r] - end[r])),
            sorted(roots, key=lambda r: (start[r] - end[r], -size[r])),
            sorted(roots, key=lambda r: (start[r], -size[r])),
        ]
    best_order, (offsets, arena) = min(
        ((o, _place(o, start, end, size)) for o in orders), key=lambda item: item[1][1]
    )
    lower_bound = _lower_bound(roots, start, end, size, len(nodes))
    if arena > lower_bound:
        offsets, arena = _improve(best_order, (offsets, arena), lower_bound, start, end, size)
    buffers: dict[str, Buffer] = {}
    for v, (a, b) in intervals.items():
        r = classes.find(v)
        if r is v:
            buffers[v.name] = Buffer(v.name, offsets[v], v.type.nbytes, a, end[v])
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


def peak_bytes(graph: Graph, nodes: list[Node] | None = None, in_place: bool = True) -> int:
    """The most aligned bytes live at one step when ``nodes`` (default: the graph's) run in order."""
    nodes = graph.nodes if nodes is None else nodes
    intervals = _in_arena(live_intervals(graph, nodes), written_over(graph, nodes))
    classes = _alias_classes(graph, nodes, intervals, in_place)
    roots = [v for v in intervals if classes.find(v) is v]
    start = {r: intervals[r][0] for r in roots}
    size = {r: align(r.type.nbytes) for r in roots}
    return _lower_bound(roots, start, classes.end, size, len(nodes))


# ---------------------------------------------------------------------------- checker
def check_memory_plan(graph: Graph, plan: MemoryPlan) -> None:
    """Raise GraphcError if two buffers live at the same step share bytes without a legal alias.

    Independent of the planner: live ranges come from the graph, and sharing is allowed only
    between a value and its views (reshapes, contiguous slices), or at the one step where a
    pointwise op writes its output over an operand (of the same shape and dtype) that dies there.
    """
    allowed = written_over(graph)
    wrong = {v: p for v, p in plan.written_over.items() if allowed.get(v) != p}
    if wrong:
        raise GraphcError(f"memory plan: updates {sorted(wrong)[:5]} cannot be written over their inputs")
    intervals = _in_arena(live_intervals(graph), plan.written_over)
    names = {v.name: v for v in intervals}
    missing = set(names) - set(plan.buffers)
    extra = set(plan.buffers) - set(names)
    if missing or extra:
        raise GraphcError(
            f"memory plan: buffers missing for {sorted(missing)[:5]}, unexpected for {sorted(extra)[:5]}"
        )
    nodes = graph.nodes
    step_of = {v: k for k, n in enumerate(nodes) for v in n.outputs}
    for v, (a, b) in intervals.items():
        buf = plan.buffers[v.name]
        if buf.offset % plan.alignment:
            raise GraphcError(
                f"memory plan: %{v.name} at offset {buf.offset} is not {plan.alignment}-aligned"
            )
        if buf.size < v.type.nbytes or buf.offset + v.type.nbytes > plan.arena_bytes:
            raise GraphcError(f"memory plan: %{v.name} ({v.type.nbytes} bytes) does not fit its buffer/arena")
        if buf.start > a or buf.end < b:
            raise GraphcError(
                f"memory plan: %{v.name} is live over [{a}, {b}] but planned for [{buf.start}, {buf.end}]"
            )
    # Views of an operand's bytes: a reshape at its offset, a contiguous slice inside it.
    view: dict[Value, Value] = {}

    def root(v: Value) -> Value:
        while v in view:
            v = view[v]
        return v

    for n in nodes:
        in_arena = n.inputs and n.inputs[0] in intervals and n.outputs[0] in intervals
        offset = view_offset(n) if in_arena else None
        if offset is not None:
            if plan.buffers[n.output.name].offset == plan.buffers[n.inputs[0].name].offset + offset:
                view[n.output] = n.inputs[0]
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
        if root(a) is root(b):
            continue
        if _handoff(a, b, intervals, step_of, nodes, plan, root) or _handoff(
            b, a, intervals, step_of, nodes, plan, root
        ):
            continue
        raise GraphcError(
            f"memory plan: %{a.name} (live {list(intervals[a])}, bytes [{off[i]}, {hi[i]})) and "
            f"%{b.name} (live {list(intervals[b])}, bytes [{off[j]}, {hi[j]})) overlap"
        )


def _handoff(old: Value, new: Value, intervals, step_of, nodes, plan: MemoryPlan, root) -> bool:
    """``new`` is written in place at the step where ``old`` (or a view of the same bytes) dies."""
    k = step_of.get(new)
    if k is None or intervals[new][0] != k or intervals[old][1] != k:
        return False
    node = nodes[k]
    if not in_place_capable(node):
        return False
    for c in node.inputs:
        if c in intervals and root(c) is root(old) and c.type == new.type:
            if plan.buffers[c.name].offset == plan.buffers[new.name].offset:
                return True
    return False
