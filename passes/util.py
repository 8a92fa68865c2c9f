"""Helpers the passes share: naming passes, reading constants, building nodes off-graph."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

import numpy as np

from graphc.ir import Graph, GraphcError, Node, Value, get_op, print_graph
from graphc.ir.types import STORAGE_DTYPES

GraphPass = Callable[[Graph], Graph]


def graph_pass(name: str) -> Callable[[GraphPass], GraphPass]:
    """Decorator giving a ``Graph -> Graph`` function the ``name`` the PassManager reports."""

    def wrap(fn: GraphPass) -> GraphPass:
        fn.name = name  # type: ignore[attr-defined]
        return fn

    return wrap


def configured(fn: Callable[..., Graph], name: str | None = None, **options: object) -> GraphPass:
    """A pass with keyword options bound, keeping (or overriding) its name."""

    def run(graph: Graph) -> Graph:
        return fn(graph, **options)

    run.name = name or fn.name  # type: ignore[attr-defined]
    run.__doc__ = fn.__doc__
    return run


def fusion_class(node: Node) -> str:
    """The registry fusion class of a node's op (``opaque`` for fused nodes, and for a cast from or
    to a 16-bit float or low-bit type: the backends run those in NumPy, never in a numba body;
    passes.legalize_half)."""
    if node.op == "cast" and (
        node.inputs[0].dtype in STORAGE_DTYPES or node.attrs["dtype"] in STORAGE_DTYPES
    ):
        return "opaque"
    return get_op(node.op).fusion


def is_elementwise(node: Node) -> bool:
    """Pointwise or broadcasting elementwise op (not ``broadcast_to``, whose output grows)."""
    return fusion_class(node) in ("pointwise", "broadcast") and node.op != "broadcast_to"


def producers(graph: Graph) -> dict[Value, Node]:
    """Map each node output to its node."""
    return {v: n for n in graph.nodes for v in n.outputs}


def const_array(graph: Graph, value: Value, prod: dict[Value, Node] | None = None) -> np.ndarray | None:
    """The array of a value known at compile time (a ``const`` input or a ``const`` node), else None."""
    if graph.kinds.get(value.name) == "const":  # names are unique: this is the input itself
        arr = graph.initializers.get(value.name)
        return None if arr is None else np.asarray(arr)
    prod = producers(graph) if prod is None else prod
    node = prod.get(value)
    if node is not None and node.op == "const":
        return np.array(node.attrs["value"], dtype=value.type.np_dtype)
    return None


def new_node(
    graph: Graph, op: str, inputs: Sequence[Value], attrs: dict | None = None, source: str | None = None
) -> Node:
    """A typed node with fresh output names in ``graph``, not yet placed in ``graph.nodes``."""
    node = graph.add_node(op, inputs, attrs, source)
    graph.nodes.pop()  # the caller places it; its names stay claimed
    return node


def canonical_text(graph: Graph) -> str:
    """The text form with node outputs renamed by position, so tests compare structure, not names."""
    g = graph.copy()
    for i, v in enumerate(v for n in g.nodes for v in n.outputs):
        v.name = f"_{i}"
    return print_graph(g, with_source=False)


def toposort_by_position(units: list[tuple[int, Node]]) -> list[Node]:
    """Kahn's algorithm over outer nodes, taking the earliest original position first."""
    made_by = {v: i for i, (_, n) in enumerate(units) for v in n.outputs}
    deps: list[set[int]] = [{made_by[v] for v in n.inputs if v in made_by} for _, n in units]
    waiting = [len(d) for d in deps]
    dependents: list[list[int]] = [[] for _ in units]
    for i, d in enumerate(deps):
        for j in d:
            dependents[j].append(i)
    heap = [(units[i][0], i) for i in range(len(units)) if waiting[i] == 0]
    heapq.heapify(heap)
    order: list[Node] = []
    while heap:
        _, i = heapq.heappop(heap)
        order.append(units[i][1])
        for j in dependents[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(heap, (units[j][0], j))
    if len(order) != len(units):
        raise GraphcError("a pass produced a cyclic graph (internal error)")
    return order
