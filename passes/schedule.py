"""Scheduling: a topological order of the nodes that keeps peak live memory low.

A greedy list scheduler: among the nodes whose operands are ready, run the one that frees the
most bytes net of what it allocates (bytes of operands it is the last reader of, minus its new
outputs; reshapes of arena values allocate nothing, they are views), ties going to the earlier
node in the current order. Ready nodes wait in a priority queue: a node's score only changes
when one of its operands gets down to its last reader, so a step costs a heap operation, not a
rescoring of every ready node. A second greedy order makes each update's node (the one computing a
param/state input's new value) also wait for every other reader of the old value that does not
depend on it, so the new value can be written over the old one instead of copied after the
step (``memory_plan.written_over``), which also takes it out of the arena. Greedy choices can
lose to the order the graph already has, so the result is whichever order has the lowest
simulated peak (``memory_plan.peak_bytes``, the same liveness rules as the memory planner); on
a tie, the one with more updates written over their inputs.

Collectives: in every candidate order, each ``allreduce_start`` is moved to just after its
bucket's last gradient and each ``allreduce_wait`` to just before the first node that reads its
results (``collectives.collective_order``), before the peaks are compared, so the sum overlaps
the rest of the backward pass in whatever order wins; the memory planner then keeps the bucket's
buffer (the start's output, the wait's operand) live from start to wait.
"""

from __future__ import annotations

import heapq

import networkx as nx

from graphc.ir import Graph, GraphcError, Node, Value

from .collectives import collective_order
from .manager import gc_paused
from .memory_plan import align, peak_bytes, written_over
from .util import graph_pass


def _greedy(graph: Graph, updates_last: bool, users: dict[Value, list[Node]]) -> list[Node]:
    nodes = graph.nodes
    index = {n: i for i, n in enumerate(nodes)}
    prod = graph.producers()
    arena = set(graph.data_inputs) | set(prod)
    # Bytes are owned by classes of values joined by reshape views.
    owner: dict[Value, Value] = {v: v for v in arena}
    for n in nodes:
        if n.op == "reshape" and n.inputs[0] in arena:
            owner[n.output] = owner[n.inputs[0]]
    pinned = {owner[v] for v in graph.outputs if v in arena}
    # The byte owners each node reads (each once), and each owner's counted readers.
    reads: dict[Node, list[Value]] = {}
    readers: dict[Value, set[Node]] = {}
    for n in nodes:
        owned = list(dict.fromkeys(owner[v] for v in n.inputs if v in arena))
        reads[n] = owned
        for v in n.inputs:
            if v in arena and not (n.op == "reshape" and owner[n.output] is owner[v]):
                readers.setdefault(owner[v], set()).add(n)
    remaining = {r: len(s) for r, s in readers.items()}
    pending = {r: set(s) for r, s in readers.items()}  # readers not yet scheduled
    alloc = {n: sum(align(v.type.nbytes) for v in n.outputs if owner[v] is v) for n in nodes}
    waiting = {n: len({prod[v] for v in n.inputs if v in prod}) for n in nodes}
    dependents: dict[Node, set[Node]] = {n: set() for n in nodes}
    for n in nodes:
        for v in n.inputs:
            if v in prod:
                dependents[prod[v]].add(n)
    after = _update_orderings(graph, prod, dependents, users) if updates_last else {}
    for n, readers_first in after.items():
        waiting[n] += len(readers_first)
    released: dict[Node, list[Node]] = {}
    for n, readers_first in after.items():
        for r in readers_first:
            released.setdefault(r, []).append(n)

    def score(n: Node) -> int:
        freed = 0
        for r in reads[n]:
            if r not in pinned and remaining.get(r) == 1 and n in readers.get(r, ()):
                freed += align(r.type.nbytes)
        return freed - alloc[n]

    # A max-heap on (score, -index): a ready node's score only grows, when one of its operands
    # gets down to its last reader, so it is pushed again then and stale entries are skipped.
    current: dict[Node, int] = {}
    heap: list[tuple[int, int, Node]] = []

    def push(n: Node) -> None:
        current[n] = score(n)
        heapq.heappush(heap, (-current[n], index[n], n))

    for n in nodes:
        if waiting[n] == 0:
            push(n)
    order: list[Node] = []
    while heap:
        neg, _, best = heapq.heappop(heap)
        if current.get(best) != -neg:
            continue  # stale: scheduled already, or pushed again with a higher score
        del current[best]
        order.append(best)
        for r in reads[best]:
            if best in pending.get(r, ()):
                pending[r].discard(best)
                remaining[r] -= 1
                if remaining[r] == 1:
                    (last,) = pending[r]
                    if last in current and score(last) != current[last]:
                        push(last)
        for d in [*dependents[best], *released.get(best, ())]:
            waiting[d] -= 1
            if waiting[d] == 0:
                push(d)
    if len(order) != len(nodes):
        raise GraphcError(f"graph {graph.name} has a cycle; cannot schedule it")
    return order


def _update_orderings(
    graph: Graph,
    prod: dict[Value, Node],
    dependents: dict[Node, set[Node]],
    users: dict[Value, list[Node]],
) -> dict[Node, set[Node]]:
    """For each update's node, the other readers of the old value it should run after (those
    that do not depend on it)."""
    old_values = {v.name: v for v in graph.inputs}
    after: dict[Node, set[Node]] = {}
    for name, index in graph.updates.items():
        node = prod.get(graph.outputs[index])
        old = old_values.get(name)
        if node is None or old is None:
            continue
        downstream, stack = set(), [node]
        while stack:
            for d in dependents[stack.pop()]:
                if d not in downstream:
                    downstream.add(d)
                    stack.append(d)
        first = {n for n in users.get(old, ()) if n is not node and n not in downstream}
        if first:
            after.setdefault(node, set()).update(first)
    return after


def is_topological(graph: Graph, nodes: list[Node]) -> bool:
    """Whether ``nodes`` (the graph's nodes, reordered) respects every data dependency."""
    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(nodes)))
    made = {v: i for i, n in enumerate(nodes) for v in n.outputs}
    for i, n in enumerate(nodes):
        for v in n.inputs:
            if v in made:
                dag.add_edge(made[v], i)
    return nx.is_directed_acyclic_graph(dag) and all(a < b for a, b in dag.edges)


@graph_pass("schedule")
def schedule(graph: Graph) -> Graph:
    """Reorder ``graph.nodes`` (in place) into a low-peak-memory topological order."""
    with gc_paused():
        return _schedule(graph)


def _schedule(graph: Graph) -> Graph:
    memo: dict[tuple, bool] = {}

    def cost(order: list[Node]) -> tuple[int, int]:
        over = written_over(graph, order, memo)
        return peak_bytes(graph, order, over=over), -len(over)

    users = graph.users()
    orders = [graph.nodes, _greedy(graph, False, users)]
    if graph.updates:
        orders.append(_greedy(graph, True, users))
    placed = [collective_order(graph, order) for order in orders]
    best = min(placed, key=cost)  # the first of equals: the graph's own order wins ties
    if best is not graph.nodes:
        graph.set_nodes(best)
    return graph
