"""Pass helpers for control-flow nodes: running a pass inside their bodies and inlining a body
(``constant_fold`` inlines the taken branch of a ``cond`` whose predicate is known)."""

from __future__ import annotations

from collections.abc import Callable

from graphc.ir import Graph, Node, Value
from graphc.ir.control import CONTROL_OPS


def in_bodies(graph: Graph, run: Callable[[Graph], Graph]) -> None:
    """Apply ``run`` to every body of every control-flow node of ``graph`` (bodies' bodies too,
    since ``run`` recurses again). A body keeps its data inputs, so its signature is unchanged."""
    for node in graph.nodes:
        if node.op in CONTROL_OPS:
            node.bodies = [run(body) for body in node.bodies]


def inline_body(
    graph: Graph, body: Graph, operands: list[Value], source: str | None
) -> tuple[list[Node], list[Value]]:
    """Copies of ``body``'s nodes reading ``operands`` (fresh names in ``graph``), not yet placed
    in ``graph.nodes``, and the values standing for the body's outputs."""
    body = body.copy()
    env: dict[Value, Value] = dict(zip(body.data_inputs, operands))
    for v in body.inputs:
        if body.kinds[v.name] != "data":  # a folded constant of the body: a const input outside
            env[v] = graph.add_input(graph.fresh_name(v.name), v.type, "const", body.initializers[v.name])
    nodes = []
    for n in body.nodes:
        n.inputs = [env[v] for v in n.inputs]
        for v in n.outputs:
            env[v] = Value(graph._claim(graph.fresh_name(v.name)), v.type)
        n.outputs = [env[v] for v in n.outputs]
        n.source = n.source or source
        nodes.append(n)
    return nodes, [env[v] for v in body.outputs]
