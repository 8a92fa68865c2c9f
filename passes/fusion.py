"""Fusion: groups of elementwise ops, row reductions and matmul epilogues become ``fused`` nodes.

The decisions follow TVM's op-pattern kinds and Inductor's scheduler, kept small:

Roles (from the op registry's fusion class)
  elementwise  pointwise and broadcast ops (``broadcast_to`` included)
  reduction    sum/max/min over *trailing* axes; reductions over other axes stay alone
  matmul       may head a "matmul" group (its epilogue); never fused into another group
  prologue     a transpose swapping the last two axes whose only reader is a matmul: it joins
               that matmul's group, where a backend passes BLAS a transposed view instead of
               copying (weight transposes of Linear, and the transposes autodiff makes); so do
               longer chains of transposes, slices and reshapes into a matmul operand that NumPy
               can express as one strided view (attention's q, k, v out of the QKV projection)
  slice        a static slice (any starts and steps; no graph output) whose readers all sit in one
               pointwise group joins it as its prologue: the body reads the slice's input, which
               the generators index at the slice's offset and strides (no copy; several slices
               of one value, an LSTM's four gates, are one body input). Not in reduction or
               matmul groups.
  concat       a concat of values one pointwise group computes (read by nothing outside it, no
               graph output) joins it as its epilogue: the kernel writes each part at its offset
               (an LSTM's gate gradients). Not where the group slices a value of the concat's
               type at other places than the parts' blocks: the memory planner may write a
               pointwise output over a dying operand of its type, and such a read would see
               elements already written (``_in_place_safe``).
  source       ``const`` nodes: never a group of their own, copied into every body that reads them
  (none)       other injective ops (reshape, transpose, pad, slices and concats that do not join
               a group), opaque ops (gather, im2col, argmax, rng_uniform, ...) and existing fused
               nodes stay as they are

Legal groups (``docs/CONTRACTS.md``'s first three kinds; every body value has one of a few shapes,
which is what lets a backend emit one loop nest per group)
  pointwise  elementwise ops whose outputs all have one shape (the domain); operands from
             outside may broadcast to it, slices of outside values too; concats join values of
             the domain's shape (``ir.fused.PointwiseParts``)
  reduction  elementwise ops and reductions where every reduction reads an operand of the same
             shape (the domain) over the same trailing axes; every value is domain-shaped or
             row-shaped (the domain with those axes set to 1, or dropped). A domain-shaped op may
             read row values kept as 1s (broadcast back over the row), so softmax
             (max, sub, exp, sum, div) and layer_norm (sum, div, sub, mul, sum, div, add, rsqrt,
             mul) are one kernel each
  matmul     prologue transposes of its operands, one matmul, then domain-shaped elementwise
             ops (no reduction), each on its result or computing an operand of one that is
             (Adam's ``beta2 * v`` beside ``(1 - beta2) * g * g``; never an operand of the
             matmul itself); the body lists prologue, matmul, then the rest

Algorithm
  1. Every node with a role other than source starts in its own group. Nodes are visited in
     topological order; a node's group tries to absorb each producer group of its operands,
     reductions first, then matmuls, then pointwise groups (so ``sub(y, mean)`` joins the
     layer-norm group rather than the epilogue of the matmul that made ``y``). A merge must give
     a legal group and must not create a cycle: no path may leave the producer group and come
     back into the consumer group through another node (checked on the contracted DAG, by a
     forward and a backward search bounded by a topological order of its units that each merge
     keeps valid: the cost is the smaller side between the two groups, not the graph).
     Then slices join the pointwise group of their readers, and concats the pointwise group
     computing their operands (``absorb_slices``, ``absorb_concats``: neither can make a cycle,
     as every reader of a slice, or every operand of a concat, is in that group).
  2. A value read both inside its group and outside becomes an extra output of the group (a
     multi-output fused node), unless it is cheap to recompute: a chain of at most
     ``MAX_RECOMPUTE_OPS`` elementwise ops inside its group reading at most
     ``MAX_RECOMPUTE_LEAVES`` values from outside that group, plus its matmul's result (stored
     anyway: attention's scale moves from the score matmul's epilogue, one more pass over the
     scores, into the softmax that reads them; a residual's bias and skip adds into the layer
     norm after them), and every outside reader is a
     pointwise or reduction group that stays legal with the chain copied in. Then each reader
     computes the value itself, and the original is dropped when nothing else needs it.
  3. Groups with two or more ops become ``fused`` nodes (``attrs["kind"]``, ``node.subgraph``),
     keeping the original output Values (and names); single-node groups stay plain nodes.
  4. The node list is re-sorted topologically, earliest original position first. (Attention
     chains are stitched afterwards by their own pass, ``passes.attention``.)

``kernel_count(graph)`` counts what a backend launches: every node except free reshapes.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from graphc.ir import Graph, Node, Value
from graphc.ir.ops import REDUCTION_OPS, is_last_axes_swap, normalize_attrs
from graphc.ir.views import chain_view

from .control_flow import in_bodies
from .util import fusion_class, graph_pass, toposort_by_position

MAX_RECOMPUTE_OPS = 3
MAX_RECOMPUTE_LEAVES = 2
_PREFERENCE = {"reduction": 0, "matmul": 1, "pointwise": 2, "prologue": 3}
VIEW_CHAIN_OPS = ("transpose", "slice", "reshape")


def _is_view_chain(chain: list[Node]) -> bool:
    """Whether ``chain`` (matmul side first) is one strided view of its first input (``ir.views``)."""
    return chain_view(chain[-1].inputs[0].shape, chain[::-1]) is not None


def _permutes(node: Node) -> bool:
    return node.op == "transpose" and not is_last_axes_swap(node)


def is_trailing_reduction(node: Node) -> bool:
    """sum/max/min/prod over a non-empty run of trailing axes."""
    if node.op not in REDUCTION_OPS:
        return False
    rank = len(node.inputs[0].shape)
    axes = sorted(node.attrs["axes"])
    return bool(axes) and axes == list(range(rank - len(axes), rank))


def role(node: Node) -> str | None:
    """The node's fusion role: elementwise, reduction, matmul, prologue, slice, concat, source, or
    None (stays alone)."""
    if node.op == "const":
        return "source"
    if node.op == "matmul":
        return "matmul"
    if is_last_axes_swap(node):
        return "prologue"
    if node.op in ("slice", "concat"):
        return node.op
    if is_trailing_reduction(node):
        return "reduction"
    if node.op != "fused" and fusion_class(node) in ("pointwise", "broadcast"):
        return "elementwise"
    return None


def classify(
    nodes: list[Node], views: frozenset[Node] = frozenset(), roles: dict[Node, str | None] | None = None
) -> str | None:
    """The kind of a candidate group (nodes in topological order), or None when it is not legal.

    ``views``: movement nodes (see ``_Fuser._operand_views``) that may sit in a matmul's prologue;
    ``roles``: each node's ``role`` ("prologue" for the views) when the caller has them already.
    """
    if roles is None:
        roles = {n: "prologue" if n in views else role(n) for n in nodes}
    members = {v for n in nodes for v in n.outputs}
    mms = [n for n in nodes if n.op == "matmul"]
    reds = [n for n in nodes if roles[n] == "reduction"]
    prologue = [n for n in nodes if roles[n] == "prologue"]
    if len(mms) > 1 or (mms and reds) or (prologue and not mms):
        return None
    if (mms or reds) and any(roles[n] in ("slice", "concat") for n in nodes):
        return None
    if mms:
        (mm,) = mms
        made = {p.output: p for p in prologue}
        for p in prologue:
            # a chain of views from one outside value to one matmul operand
            readers = [n for n in nodes if p.output in n.inputs]
            if len(readers) != 1 or not (readers[0] is mm or readers[0] in prologue):
                return None
            if any(v in members and v not in made for v in p.inputs):
                return None
        domain = mm.output.shape
        reached = {mm.output}
        side: set[Value] = set()  # values of the epilogue's operands computed in the group
        for n in nodes:
            if n is mm or n in prologue:
                continue
            if n.output.shape != domain:
                return None
            (reached if any(v in reached for v in n.inputs) else side).add(n.output)
        feeds_matmul = {v for n in (mm, *prologue) for v in n.inputs}
        read = {v for n in nodes for v in n.inputs}
        if side & feeds_matmul or side - read:
            return None
        return "matmul"
    if reds:
        domain = reds[0].inputs[0].shape
        axes = sorted(reds[0].attrs["axes"])
        if any(r.inputs[0].shape != domain or sorted(r.attrs["axes"]) != axes for r in reds):
            return None
        keep = tuple(1 if i in axes else d for i, d in enumerate(domain))
        drop = tuple(d for i, d in enumerate(domain) if i not in axes)
        allowed = {domain: (domain, keep), keep: (keep,), drop: (drop,)}
        for n in nodes:
            if roles[n] == "reduction":
                continue
            shape = n.output.shape
            if shape not in allowed:
                return None
            if any(v in members and v.shape not in allowed[shape] for v in n.inputs):
                return None
        return "reduction"
    return _classify_pointwise(nodes, roles, members)


def _classify_pointwise(nodes: list[Node], roles: dict[Node, str | None], members: set[Value]) -> str | None:
    """The pointwise kind when the elementwise ops share one output shape (the domain), each slice
    reads a value from outside and each concat joins values those ops compute, all of the domain's
    shape; else None."""
    ops = [n for n in nodes if roles[n] == "elementwise"]
    if not ops:
        return None
    domain = ops[0].output.shape
    made = {n.output: n for n in ops}
    for n in nodes:
        r = roles[n]
        if r == "elementwise":
            if n.output.shape != domain:
                return None
        elif r == "slice":
            if n.inputs[0] in members or len(n.output.shape) > len(domain):
                return None
        elif r == "concat":
            if any(v not in made for v in n.inputs) or n.inputs[0].shape != domain:
                return None
        else:
            return None
    return "pointwise"


@dataclass
class _Group:
    uid: int
    nodes: list[Node]
    kind: str
    recompute: set[Node] = field(default_factory=set)


class _Fuser:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.index = {n: i for i, n in enumerate(graph.nodes)}
        self.prod = graph.producers()
        self.users = graph.users()
        self.outputs = set(graph.outputs)
        self.views = frozenset(self._operand_views())
        self.roles = {n: "prologue" if n in self.views else role(n) for n in graph.nodes}
        self.uid: dict[Node, int] = {}
        self.groups: dict[int, _Group] = {}
        for i, n in enumerate(graph.nodes):
            if self.roles[n] == "source":
                continue
            self.uid[n] = i
            r = self.roles[n]
            if r is not None and r not in ("slice", "concat"):  # these join a group afterwards
                self.groups[i] = _Group(i, [n], "pointwise" if r == "elementwise" else r)
        # The contracted DAG over units (groups and lone nodes); const nodes are left out since
        # nothing feeds them, so no cycle can pass through one.
        self.succ: dict[int, set[int]] = {u: set() for u in self.uid.values()}
        self.pred: dict[int, set[int]] = {u: set() for u in self.uid.values()}
        for n in graph.nodes:
            if n not in self.uid:
                continue
            for v in n.inputs:
                p = self.prod.get(v)
                if p is not None and p in self.uid and self.uid[p] != self.uid[n]:
                    self.succ[self.uid[p]].add(self.uid[n])
                    self.pred[self.uid[n]].add(self.uid[p])
        # A topological order of the units (``pos[u] < pos[s]`` for every edge u -> s), kept valid
        # across merges: a reachability search towards a unit never leaves the units before it.
        # Each unit as early as its operands allow (by longest path from a source), so a backward
        # op that reads only forward values sits next to them, not after the whole forward pass.
        depth: dict[int, int] = {}
        for u in sorted(self.succ):  # unit ids are node indices: a topological order
            depth[u] = max((depth[p] + 1 for p in self.pred[u]), default=0)
        self.pos: dict[int, float] = {
            u: float(k) for k, u in enumerate(sorted(depth, key=lambda u: (depth[u], u)))
        }

    def _operand_views(self) -> set[Node]:
        """Movement chains (transpose, slice, reshape) into a matmul operand that a backend can
        pass as one strided view: each link read only by the next, and at least one link a
        transpose or slice (which would otherwise copy). Attention's q, k and v out of the
        QKV projection are such chains."""
        found: set[Node] = set()
        for mm in self.graph.nodes:
            if mm.op != "matmul":
                continue
            for v in mm.inputs:
                chain, reader = [], mm
                p = self.prod.get(v)
                while (
                    p is not None
                    and p.op in VIEW_CHAIN_OPS
                    and p.output not in self.outputs
                    and all(u is reader for u in self.users.get(p.output, ()))
                ):
                    chain.append(p)
                    reader, p = p, self.prod.get(p.inputs[0])
                copying = [k for k, n in enumerate(chain) if n.op == "slice" or _permutes(n)]
                if copying and _is_view_chain(chain[: copying[-1] + 1]):
                    found.update(chain[: copying[-1] + 1])
        return found

    # ------------------------------------------------------------ step 1: grouping
    def _can_merge(self, a: int, b: int) -> bool:
        """Whether producer group ``a`` may merge into ``b``: no other path leads from ``a`` to ``b``
        (the merged unit would lie on a cycle). When it may, the topological positions are made
        ready for the merged unit.

        Two searches run in turn, bounded by the positions (no path from ``a`` to ``b`` leaves
        the units between them): forward from ``a``'s other successors and backward from ``b``'s
        other predecessors. A path makes them meet; else the first to run out of units has found
        the smaller set that must change places: ``a``'s descendants before ``b`` move after it,
        or ``b``'s ancestors after ``a`` move before it (Pearce and Kelly's dynamic topological
        order). Either costs about the smaller side, not the distance from ``a`` to ``b``.
        """
        pos, succ, pred = self.pos, self.succ, self.pred
        low, high = pos[a], pos[b]
        # Windows include their ends: an unrelated unit may share a position with ``a`` or ``b``.
        ahead = [(-pos[u], u) for u in succ[a] if u != b and pos[u] <= high]  # latest first
        behind = [(pos[u], u) for u in pred[b] if u != a and pos[u] >= low]  # earliest first
        heapq.heapify(ahead)
        heapq.heapify(behind)
        reached, reaching = {u for _, u in ahead}, {u for _, u in behind}
        while True:
            if not ahead:
                self._spread(sorted(reached, key=pos.__getitem__), b, self._first_successor(reached))
                return True
            if not behind:
                self._spread(sorted(reaching, key=pos.__getitem__), self._last_predecessor(reaching), a)
                pos[b] = pos[a]  # the merged unit takes ``a``'s place, after ``b``'s ancestors
                return True
            _, u = heapq.heappop(ahead)
            for s in succ[u]:
                if s == b or s in reaching:
                    return False
                if s not in reached and pos[s] <= high:
                    reached.add(s)
                    heapq.heappush(ahead, (-pos[s], s))
            _, u = heapq.heappop(behind)
            for p in pred[u]:
                if p == a or p in reached:
                    return False
                if p not in reaching and pos[p] >= low:
                    reaching.add(p)
                    heapq.heappush(behind, (pos[p], p))

    def _first_successor(self, units: set[int]) -> int | None:
        """The earliest unit outside ``units`` that one of them feeds."""
        return min((s for u in units for s in self.succ[u] if s not in units), key=self.pos.get, default=None)

    def _last_predecessor(self, units: set[int]) -> int | None:
        """The latest unit outside ``units`` that feeds one of them."""
        return max((p for u in units for p in self.pred[u] if p not in units), key=self.pos.get, default=None)

    def _spread(self, units: list[int], after: int | None, before: int | None) -> None:
        """Give ``units`` (in this order) positions between those of units ``after`` and ``before``."""
        if not units:
            return
        pos, count = self.pos, len(units) + 1
        low = pos[after] if after is not None else pos[before] - count
        high = pos[before] if before is not None else low + count
        step = (high - low) / count
        spread = [low + step * k for k in range(count + 1)]
        spread[-1] = high
        if any(x >= y for x, y in zip(spread, spread[1:])):  # the fractions ran too fine
            self._renumber()
            return self._spread(units, after, before)
        pos.update(zip(units, spread[1:-1]))

    def _renumber(self) -> None:
        """Spread the positions out again (same order, unit gaps)."""
        for k, u in enumerate(sorted(self.pos, key=self.pos.__getitem__)):
            self.pos[u] = float(k)

    def _sole_reader(self, producer: Node, reader: Node) -> bool:
        """Whether ``reader`` is the only use of ``producer``'s output (so it need not be stored)."""
        v = producer.output
        return v not in self.outputs and all(u is reader for u in self.users.get(v, ()))

    def _merge(self, a: int, b: int, kind: str, nodes: list[Node]) -> None:
        """Fold group ``a`` (a producer of ``b``) into ``b``."""
        for n in self.groups[a].nodes:
            self.uid[n] = b
        self.groups[b].nodes = nodes
        self.groups[b].kind = kind
        del self.groups[a]
        del self.pos[a]
        for p in self.pred.pop(a):
            self.succ[p].discard(a)
            if p != b:
                self.succ[p].add(b)
                self.pred[b].add(p)
        for s in self.succ.pop(a):
            self.pred[s].discard(a)
            if s != b:
                self.pred[s].add(b)
                self.succ[b].add(s)

    def group(self) -> None:
        for n in self.graph.nodes:
            if self.roles[n] not in ("elementwise", "reduction", "matmul"):
                continue
            candidates = []
            for v in n.inputs:
                p = self.prod.get(v)
                if p is None or p not in self.uid:
                    continue
                u = self.uid[p]
                if self.roles[p] == "prologue" and not self._sole_reader(p, n):
                    continue
                if u in self.groups and u != self.uid[n] and u not in candidates:
                    candidates.append(u)
            candidates.sort(key=lambda u: _PREFERENCE[self.groups[u].kind])
            for a in candidates:
                b = self.uid[n]
                if a not in self.groups or a == b:
                    continue
                nodes = sorted(self.groups[a].nodes + self.groups[b].nodes, key=self.index.__getitem__)
                kind = classify(nodes, self.views, self.roles)
                if kind is None or not self._can_merge(a, b):
                    continue
                self._merge(a, b, kind, nodes)
            if self.roles[n] == "matmul":
                self._absorb_chains(self.uid[n])

    def _absorb_chains(self, b: int) -> None:
        """Merge the farther links of the view chains whose last link joined matmul group ``b``."""
        grew = True
        while grew:
            grew = False
            for node in list(self.groups[b].nodes):
                if node not in self.views:
                    continue
                p = self.prod.get(node.inputs[0])
                if p is None or p not in self.views or self.uid.get(p) == b or self.uid[p] not in self.groups:
                    continue
                a = self.uid[p]
                nodes = sorted(self.groups[a].nodes + self.groups[b].nodes, key=self.index.__getitem__)
                kind = classify(nodes, self.views, self.roles)
                if kind is None or not self._can_merge(a, b):
                    continue
                self._merge(a, b, kind, nodes)
                grew = True

    def absorb_slices(self) -> None:
        """Static slices whose readers all sit in one pointwise group join it (its prologue)."""
        for n in self.graph.nodes:
            if self.roles[n] != "slice" or n.output in self.outputs:
                continue
            targets = {self.uid.get(u) for u in self.users.get(n.output, ())}
            if len(targets) != 1:
                continue
            (b,) = targets
            if b not in self.groups or self.groups[b].kind != "pointwise":
                continue
            self._join(self.uid[n], n, b, into_producer=False)

    def absorb_concats(self) -> None:
        """A concat of values that one pointwise group computes, read only by the concat and that
        group, joins the group (its epilogue), unless the group also slices a value the concat
        could be written over (an in-place output) at other places than it writes there
        (``_in_place_safe``)."""
        for n in self.graph.nodes:
            if self.roles[n] != "concat":
                continue
            sources = {self.uid.get(self.prod[v]) if v in self.prod else None for v in n.inputs}
            if len(sources) != 1:
                continue
            (a,) = sources
            if a not in self.groups or self.groups[a].kind != "pointwise":
                continue
            members = set(self.groups[a].nodes) | {n}
            if any(v in self.outputs or not set(self.users.get(v, ())) <= members for v in n.inputs):
                continue  # a part read outside would need storing too
            if not _in_place_safe(n, self.groups[a].nodes):
                continue
            self._join(self.uid[n], n, a, into_producer=True)

    def _join(self, u: int, node: Node, gid: int, into_producer: bool) -> None:
        """Merge lone node ``node`` (unit ``u``) with pointwise group ``gid`` if legal; ``into_producer``:
        the group feeds the node (else the node feeds the group)."""
        nodes = sorted([*self.groups[gid].nodes, node], key=self.index.__getitem__)
        if classify(nodes, self.views, self.roles) != "pointwise":
            return
        self.groups[u] = _Group(u, [node], "pointwise")
        a, b = (gid, u) if into_producer else (u, gid)
        if not self._can_merge(a, b):
            del self.groups[u]
            return
        self._merge(a, b, "pointwise", nodes)

    # ------------------------------------------------------------ step 2: recomputation
    def _cone(self, node: Node, group: _Group) -> tuple[set[Node], set[Value]] | None:
        """The elementwise ops of ``group`` that ``node`` needs, and the values they read from outside."""
        members = set(group.nodes)
        cone: set[Node] = set()
        leaves: set[Value] = set()
        stack = [node]
        while stack:
            n = stack.pop()
            if n in cone:
                continue
            if self.roles[n] != "elementwise":
                return None
            cone.add(n)
            if len(cone) > MAX_RECOMPUTE_OPS:
                return None
            for v in n.inputs:
                p = self.prod.get(v)
                if p is not None and self.roles[p] == "source":
                    continue
                if p is not None and p in members and self.roles[p] != "matmul":
                    stack.append(p)
                else:  # a matmul's result is stored anyway: its epilogue can be recomputed
                    leaves.add(v)
        products = {v for v in leaves if v in self.prod and self.roles[self.prod[v]] == "matmul"}
        if len(leaves - products) > MAX_RECOMPUTE_LEAVES:
            return None
        return cone, leaves

    def recompute(self) -> None:
        outputs = set(self.graph.outputs)
        for gid in sorted(self.groups):
            group = self.groups[gid]
            for node in list(group.nodes):
                if self.roles[node] != "elementwise" or node.output in outputs:
                    continue
                readers = [u for u in self.users.get(node.output, ()) if self.uid.get(u) != gid]
                if not readers or not all(self.uid.get(u) in self.groups for u in readers):
                    continue
                targets = {self.uid[u] for u in readers}
                if any(self.groups[t].kind == "matmul" for t in targets):
                    continue
                found = self._cone(node, group)
                if found is None:
                    continue
                cone, _ = found
                if all(self._legal_with(t, cone) for t in targets):
                    for t in targets:
                        self.groups[t].recompute |= cone

    def _legal_with(self, gid: int, extra: set[Node]) -> bool:
        group = self.groups[gid]
        nodes = sorted(set(group.nodes) | group.recompute | extra, key=self.index.__getitem__)
        return classify(nodes, self.views, self.roles) == group.kind

    # ------------------------------------------------------------ step 3: building
    def _body(self, group: _Group, needed: list[Value] | None) -> tuple[list[Node], list[Value]]:
        """Body nodes (the ones ``needed`` depends on, all when None) and the values read from outside."""
        nodes = sorted(set(group.nodes) | group.recompute, key=self.index.__getitem__)
        if needed is not None:
            live = set(needed)
            kept = []
            for n in reversed(nodes):
                if any(v in live for v in n.outputs):
                    kept.append(n)
                    live.update(n.inputs)
            nodes = kept[::-1]
        defined = {v for n in nodes for v in n.outputs}
        ins: list[Value] = []
        for n in nodes:
            for v in n.inputs:
                p = self.prod.get(v)
                if v in defined or (p is not None and self.roles[p] == "source") or v in ins:
                    continue
                ins.append(v)
        return nodes, ins

    def build(self) -> None:
        graph = self.graph
        ext = {gid: self._body(group, None)[1] for gid, group in self.groups.items()}
        # Who reads a value from outside its group: plain nodes their inputs, groups their body inputs.
        readers: dict[Value, set[int]] = {}
        for n in graph.nodes:
            if self.uid.get(n) not in self.groups:
                for v in n.inputs:
                    readers.setdefault(v, set()).add(-1)
        for gid, ins in ext.items():
            for v in ins:
                readers.setdefault(v, set()).add(gid)
        outputs = set(graph.outputs)
        units: list[tuple[int, Node]] = []
        for gid, group in self.groups.items():
            outs = [
                v for n in group.nodes for v in n.outputs if v in outputs or readers.get(v, set()) - {gid}
            ]
            if not outs:
                continue  # every reader recomputes it
            nodes, ins = self._body(group, outs)
            first = min(self.index[n] for n in nodes)
            if len(nodes) == 1 and nodes[0] in group.nodes:
                units.append((first, nodes[0]))
            else:
                kind = classify(nodes, self.views, self.roles)
                if kind is None:  # pruning broke the group's shape rules: keep the whole body
                    nodes, ins = self._body(group, None)
                    kind = group.kind
                units.append((first, self._make_fused(gid, kind, nodes, ins, outs)))
        sources = []
        for i, n in enumerate(graph.nodes):
            if self.uid.get(n) in self.groups:
                continue
            (sources if self.roles[n] == "source" else units).append((i, n))
        read = {v for _, n in units for v in n.inputs} | outputs
        # A const node stays where a plain node reads it; fused bodies hold their own copies.
        units.extend((i, n) for i, n in sources if n.output in read)
        graph.set_nodes(toposort_by_position(units))

    def _make_fused(
        self, gid: int, kind: str, nodes: list[Node], ins: list[Value], outs: list[Value]
    ) -> Node:
        if kind == "matmul":  # prologue, matmul, epilogue: its side operands may come earlier
            mm = next(n for n in nodes if n.op == "matmul")
            head = [n for n in nodes if n in self.views or role(n) == "prologue"]
            nodes = head + [mm] + [n for n in nodes if n is not mm and n not in head]
        body = Graph(f"fused_{gid}")
        env: dict[Value, Value] = {v: body.add_input(v.name, v.type) for v in ins}
        for n in nodes:
            args = []
            for v in n.inputs:
                if v not in env:  # a const node, copied in where first read
                    c = self.prod[v]
                    env[v] = body.add_node("const", [], dict(c.attrs), c.source, names=[v.name]).output
                args.append(env[v])
            # The node's types are known: a copy, not a new type inference (add_node).
            outs_copy = [Value(v.name, v.type) for v in n.outputs]
            body.adopt(Node(n.op, args, normalize_attrs(n.op, dict(n.attrs)), outs_copy, n.source))
            env.update(zip(n.outputs, outs_copy))
        for v in outs:
            body.add_output(env[v])
        return Node("fused", list(ins), {"kind": kind}, list(outs), nodes[0].source, body)


def _in_place_safe(concat: Node, group: list[Node]) -> bool:
    """Whether ``concat``'s output may share memory with every value of its type that ``group``
    slices: each such slice reads exactly one part's block (steps 1, the part's extent), so an
    element is read only where the same loop point writes it. The memory planner lets a pointwise
    output overwrite a dying operand of its type; other reads could see elements already written."""
    out = concat.output
    axis = concat.attrs["axis"]
    part = concat.inputs[0].shape
    for n in group:
        if n.op != "slice" or n.inputs[0].type != out.type:
            continue
        starts, steps = n.attrs["starts"], n.attrs["steps"]
        if n.output.shape != part or any(s != 1 for s in steps):
            return False
        if any(starts[d] != 0 for d in range(len(part)) if d != axis) or starts[axis] % max(part[axis], 1):
            return False
    return True


def _unshare_transposes(graph: Graph) -> None:
    """Give each matmul its own copy of a last-axes transpose that only matmuls read (cse merges
    the ``dy^T`` of two weight gradients: an LSTM's dW_ih and dW_hh), so each copy joins its
    matmul's prologue as a strided view instead of one materialized transpose for all."""
    users = graph.users()
    order = list(graph.nodes)
    changed = False
    for n in list(graph.nodes):
        readers = list(dict.fromkeys(users.get(n.output, ()))) if is_last_axes_swap(n) else []
        if len(readers) < 2 or n.output in graph.outputs or any(r.op != "matmul" for r in readers):
            continue
        for r in readers[1:]:
            copy = graph.add_node("transpose", n.inputs, dict(n.attrs), n.source)
            r.inputs = [copy.output if v is n.output else v for v in r.inputs]
            order.insert(order.index(n) + 1, copy)
            changed = True
    if changed:
        graph.set_nodes(order)


@graph_pass("fusion")
def fusion(graph: Graph) -> Graph:
    """Replace fusible groups with ``fused`` nodes (see the module docstring); rewrites ``graph``."""
    in_bodies(graph, fusion)
    _unshare_transposes(graph)
    fuser = _Fuser(graph)
    fuser.group()
    fuser.absorb_slices()
    fuser.absorb_concats()
    fuser.recompute()
    fuser.build()
    return graph


def kernel_count(graph: Graph) -> int:
    """Kernels a backend launches for ``graph``: every node except reshapes (counted as free views)."""
    return sum(1 for n in graph.nodes if n.op != "reshape")
