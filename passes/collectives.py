"""Placing collectives in a schedule: each sum starts as early, and is waited for as late, as it can.

``place_collectives(graph)`` takes a scheduled graph and moves every ``allreduce_start`` to just
after the last node it reads from (the moment its bucket's last gradient is computed) and every
``allreduce_wait`` to just before the first node that reads one of its results (the updates of
that bucket's parameters), keeping every other node in its scheduled order. The rest of the
backward pass then runs while MPI sums the bucket. Memory: a bucket's buffer is the start's
output and the wait's operand, so the memory planner keeps its bytes live from start to wait;
the gradients die at the start (packed) or, for an unpacked bucket, at the wait that holds them.
"""

from __future__ import annotations

from graphc.ir import Graph, Node

from .util import graph_pass

START, WAIT = "allreduce_start", "allreduce_wait"


@graph_pass("place_collectives")
def place_collectives(graph: Graph) -> Graph:
    """Reorder ``graph.nodes`` (in place): starts as early, waits as late as dependencies allow."""
    nodes = graph.nodes
    if not any(n.op in (START, WAIT) for n in nodes):
        return graph
    prod = graph.producers()
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
    graph.set_nodes(order)
    return graph
