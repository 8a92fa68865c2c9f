"""Dead code elimination and common subexpression elimination (both rewrite the graph in place)."""

from __future__ import annotations

import hashlib

import numpy as np

from graphc.ir import Graph, Node, Value, print_graph

from .control_flow import in_bodies
from .util import graph_pass

# Exactly commutative in IEEE arithmetic (NaN payloads aside), so operand order is irrelevant.
COMMUTATIVE = frozenset({"add", "mul", "maximum", "minimum", "eq", "ne"})


def remove_dead_nodes(graph: Graph) -> set[Value]:
    """Drop nodes no graph output depends on; returns the set of values still read or returned."""
    live: set[Value] = set(graph.outputs)
    keep: list[Node] = []
    for node in reversed(graph.nodes):
        if any(v in live for v in node.outputs):
            keep.append(node)
            live.update(node.inputs)
    keep.reverse()
    graph.set_nodes(keep)
    return live


@graph_pass("dce")
def dce(graph: Graph) -> Graph:
    """Drop nodes no output depends on, and unused param/const/state inputs (update targets stay).

    Every primitive is pure (rng_uniform is a function of its seed and offset input), so a node
    whose outputs nobody reads can go. Data inputs stay: they are the calling convention.
    """
    in_bodies(graph, dce)
    live = remove_dead_nodes(graph)
    for v in list(graph.inputs):
        if graph.kinds[v.name] != "data" and v not in live and v.name not in graph.updates:
            graph.remove_input(v)
    return graph


def attr_key(attrs: dict) -> str:
    """A key that tells attribute values apart exactly (``repr`` separates -0.0 from 0.0, 1 from 1.0)."""
    return repr(sorted(attrs.items()))


def _array_key(arr: np.ndarray) -> tuple:
    arr = np.ascontiguousarray(arr)
    return (str(arr.dtype), arr.shape, hashlib.sha1(arr.tobytes()).hexdigest())


@graph_pass("cse")
def cse(graph: Graph) -> Graph:
    """Merge nodes with the same op, the same operands and equal attributes; merge equal const inputs.

    Commutative ops compare their operands as a set. Fused nodes also compare their bodies' text.
    Two rng_uniform nodes merge only when seed, shape and offset all agree, and then they do draw
    the same numbers.
    """
    in_bodies(graph, cse)
    subst: dict[Value, Value] = {}
    seen_arrays: dict[tuple, Value] = {}
    for v in graph.inputs:
        if graph.kinds[v.name] != "const" or v.name not in graph.initializers:
            continue
        key = _array_key(graph.initializers[v.name])
        if key in seen_arrays:
            subst[v] = seen_arrays[key]
        else:
            seen_arrays[key] = v
    seen: dict[tuple, Node] = {}
    keep: list[Node] = []
    for node in graph.nodes:
        node.inputs = [subst.get(v, v) for v in node.inputs]
        operands = tuple(node.inputs)
        if node.op in COMMUTATIVE:
            operands = tuple(sorted(operands, key=lambda v: v.name))
        body = tuple(print_graph(b, with_source=False) for b in node.bodies) or None  # fused/control
        key = (node.op, operands, attr_key(node.attrs), body)
        first = seen.get(key)
        if first is not None and [v.type for v in first.outputs] == [v.type for v in node.outputs]:
            for old, new in zip(node.outputs, first.outputs):
                subst[old] = new
            continue
        seen[key] = node
        keep.append(node)
    graph.outputs = [subst.get(v, v) for v in graph.outputs]
    graph.set_nodes(keep)
    for v in list(graph.inputs):
        if v in subst and v.name not in graph.updates:
            graph.remove_input(v)
    return graph
