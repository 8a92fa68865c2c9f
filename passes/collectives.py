"""Placing collectives in a schedule: each sum starts as early, and is waited for as late, as it can.

``collective_order(graph, nodes)`` takes a scheduled order, moves every node that depends on a
wait (the optimizer's updates) after every node that does not (the rest of the backward pass),
then every ``allreduce_start`` to just after the last node it reads from (the moment its
bucket's last gradient is computed) and every ``allreduce_wait`` to just before the first node
that reads one of its results (the updates of that bucket's parameters), keeping the nodes'
scheduled order otherwise. The rest of the backward pass, and the updates of the buckets
summed before, then run while MPI sums a bucket. The scheduling pass (``passes.schedule``)
applies it to every order it considers, so any graph with collectives gets it; the
``place_collectives`` pass applies it to a graph's current order. Memory: a bucket's buffer is
the start's output and the wait's operand, so the memory planner keeps its bytes live from start
to wait; the gradients die at the start (packed) or, for an unpacked bucket, at the wait that
holds them (MPI reads them in place meanwhile).
"""

from __future__ import annotations

from graphc.ir import Graph, Node

from .util import graph_pass

START, WAIT = "allreduce_start", "allreduce_wait"


def has_collectives(nodes: list[Node]) -> bool:
    """Whether any of ``nodes`` is an allreduce start or wait."""
    return any(n.op in (START, WAIT) for n in nodes)


def collective_order(graph: Graph, nodes: list[Node]) -> list[Node]:
    """``nodes`` (a topological order of ``graph``) with starts as early, waits as late as allowed."""
    if not has_collectives(nodes):
        return nodes
    prod = graph.producers()
    # What reads a sum (the updates) runs after everything that does not: the backward pass
    # left after a start then runs before its wait, and so do the updates of earlier buckets.
    # Both parts keep their scheduled order, so the whole stays topological.
    after_waits: set[Node] = set()
    for n in nodes:
        if n.op == WAIT or any(prod.get(v) in after_waits for v in n.inputs):
            after_waits.add(n)
    nodes = [n for n in nodes if n not in after_waits] + [n for n in nodes if n in after_waits]
    emitted: set[Node] = set()
    order: list[Node] = []
    starts = [n for n in nodes if n.op == START]

    def emit(node: Node) -> None:
        # Movable producers (waits, not-yet-ready starts) come first; other producers already ran.
        for v in node.inputs:
            p = prod.get(v)
            if p is not None and p not in emitted:
                emit(p)
        order.append(node)
        emitted.add(node)

    def flush_starts() -> None:
        for s in starts:
            if s not in emitted and all(prod.get(v) is None or prod[v] in emitted for v in s.inputs):
                emit(s)

    flush_starts()
    for node in nodes:
        if node.op in (START, WAIT) or node in emitted:
            continue
        emit(node)
        flush_starts()
    for node in nodes:  # waits whose results only leave the graph, and anything left
        if node not in emitted:
            emit(node)
    return order


@graph_pass("place_collectives")
def place_collectives(graph: Graph) -> Graph:
    """Reorder ``graph.nodes`` (in place): starts as early, waits as late as dependencies allow."""
    order = collective_order(graph, graph.nodes)
    if order is not graph.nodes:
        graph.set_nodes(order)
    return graph
