"""Scheduling: a topological order of the nodes that keeps peak live memory low.

A greedy list scheduler: among the nodes whose operands are ready, run the one that frees the
most bytes net of what it allocates (bytes of operands it is the last reader of, minus its new
outputs; reshapes of arena values allocate nothing, they are views), ties going to the earlier
node in the current order. Greedy choices can lose to the order the graph already has, so the
result is whichever of the two has the lower simulated peak (``memory_plan.peak_bytes``, the
same liveness rules as the memory planner).
"""

from __future__ import annotations

import networkx as nx

from graphc.ir import Graph, GraphcError, Node, Value

from .memory_plan import align, peak_bytes
from .util import graph_pass


def _greedy(graph: Graph) -> list[Node]:
    nodes = graph.nodes
    index = {n: i for i, n in enumerate(nodes)}
    prod = {v: n for n in nodes for v in n.outputs}
    arena = set(graph.data_inputs) | set(prod)
    # Bytes are owned by classes of values joined by reshape views.
    owner: dict[Value, Value] = {v: v for v in arena}
    for n in nodes:
        if n.op == "reshape" and n.inputs[0] in arena:
            owner[n.output] = owner[n.inputs[0]]
    pinned = {owner[v] for v in graph.outputs if v in arena}
    readers: dict[Value, set[Node]] = {}
    for n in nodes:
        for v in n.inputs:
            if v in arena and not (n.op == "reshape" and owner[n.output] is owner[v]):
                readers.setdefault(owner[v], set()).add(n)
    remaining = {r: len(s) for r, s in readers.items()}
    waiting = {n: len({prod[v] for v in n.inputs if v in prod}) for n in nodes}
    dependents: dict[Node, set[Node]] = {n: set() for n in nodes}
    for n in nodes:
        for v in n.inputs:
            if v in prod:
                dependents[prod[v]].add(n)
    ready = [n for n in nodes if waiting[n] == 0]
    order: list[Node] = []

    def score(n: Node) -> int:
        alloc = sum(align(v.type.nbytes) for v in n.outputs if owner[v] is v)
        freed = 0
        for r in {owner[v] for v in n.inputs if v in arena}:
            if r not in pinned and remaining.get(r) == 1 and n in readers.get(r, ()):
                freed += align(r.type.nbytes)
        return freed - alloc

    while ready:
        best = max(ready, key=lambda n: (score(n), -index[n]))
        ready.remove(best)
        order.append(best)
        for r in {owner[v] for v in best.inputs if v in arena}:
            if best in readers.get(r, ()):
                remaining[r] -= 1
        for d in dependents[best]:
            waiting[d] -= 1
            if waiting[d] == 0:
                ready.append(d)
    if len(order) != len(nodes):
        raise GraphcError(f"graph {graph.name} has a cycle; cannot schedule it")
    return order


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
    candidate = _greedy(graph)
    if peak_bytes(graph, candidate) < peak_bytes(graph, graph.nodes):
        graph.set_nodes(candidate)
    return graph
