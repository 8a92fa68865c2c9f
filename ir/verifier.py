"""Checks a graph's invariants: SSA, topological order, types that agree with the op rules."""

from __future__ import annotations

from .control import CONTROL_OPS, control_types
from .errors import GraphcError
from .fused import check_fused
from .graph import INPUT_KINDS, Graph, Node, Value
from .ops import REGISTRY, infer_types, normalize_attrs


def _where(node: Node) -> str:
    outs = ", ".join(f"%{v.name}" for v in node.outputs)
    src = f" ({node.source})" if node.source else ""
    return f"node {outs} = {node.op}{src}"


def verify(g: Graph) -> None:
    """Raise GraphcError describing the first broken invariant of ``g``, if any."""
    defined: dict[str, Value] = {}
    for v in g.inputs:
        if v.name in defined:
            raise GraphcError(f"graph {g.name}: input %{v.name} is defined twice")
        kind = g.kinds.get(v.name)
        if kind not in INPUT_KINDS:
            raise GraphcError(f"graph {g.name}: input %{v.name} has no valid kind ({kind!r})")
        defined[v.name] = v
    for name, arr in g.initializers.items():
        if name not in defined:
            raise GraphcError(f"graph {g.name}: initializer for unknown input %{name}")
        if tuple(arr.shape) != defined[name].shape:
            raise GraphcError(
                f"graph {g.name}: initializer of %{name} has shape {tuple(arr.shape)}, "
                f"input is {defined[name].type}"
            )
    for node in g.nodes:
        _verify_node(g, node, defined)
    for v in g.outputs:
        if defined.get(v.name) is not v:
            raise GraphcError(f"graph {g.name}: output %{v.name} is not defined in the graph")
    for name, index in g.updates.items():
        if g.kinds.get(name) not in ("param", "state"):
            raise GraphcError(f"graph {g.name}: update target %{name} is not a param/state input")
        if not 0 <= index < len(g.outputs):
            raise GraphcError(f"graph {g.name}: update of %{name} names missing output {index}")
        if g.outputs[index].type != defined[name].type:
            raise GraphcError(
                f"graph {g.name}: update of %{name} is {g.outputs[index].type}, input is {defined[name].type}"
            )


def _verify_node(g: Graph, node: Node, defined: dict[str, Value]) -> None:
    if node.op not in REGISTRY:
        raise GraphcError(f"graph {g.name}: {_where(node)}: unknown op {node.op!r}")
    for v in node.inputs:
        if defined.get(v.name) is not v:
            problem = "is used before it is defined" if v.name not in defined else "is a stale copy"
            raise GraphcError(f"graph {g.name}: {_where(node)}: operand %{v.name} {problem}")
    if node.op == "fused":
        if node.subgraph is None:
            raise GraphcError(f"graph {g.name}: {_where(node)}: fused node without a body")
        try:
            normalize_attrs("fused", node.attrs)
        except GraphcError as err:
            raise GraphcError(f"graph {g.name}: {_where(node)}: {err}") from None
        verify(node.subgraph)
        try:
            check_fused(node)  # the body keeps its kind's contract (ir/fused.py)
        except GraphcError as err:
            raise GraphcError(f"graph {g.name}: {_where(node)}: {err}") from None
        body_in = [v.type for v in node.subgraph.data_inputs]
        expected = [v.type for v in node.subgraph.outputs]
        if body_in != [v.type for v in node.inputs]:
            raise GraphcError(f"graph {g.name}: {_where(node)}: operands differ from body inputs")
    elif node.op in CONTROL_OPS:
        try:
            attrs = normalize_attrs(node.op, node.attrs)
            expected = control_types(node.op, [v.type for v in node.inputs], list(node.bodies), attrs)
        except GraphcError as err:
            raise GraphcError(f"graph {g.name}: {_where(node)}: {err}") from None
        for body in node.bodies:
            verify(body)
    else:
        if node.bodies:
            raise GraphcError(
                f"graph {g.name}: {_where(node)}: only fused and control-flow nodes hold bodies"
            )
        try:
            attrs = normalize_attrs(node.op, node.attrs)
            expected = infer_types(node.op, [v.type for v in node.inputs], attrs)
        except GraphcError as err:
            raise GraphcError(f"graph {g.name}: {_where(node)}: {err}") from None
    got = [v.type for v in node.outputs]
    if got != expected:
        raise GraphcError(
            f"graph {g.name}: {_where(node)}: outputs typed {', '.join(map(str, got))} "
            f"but the op gives {', '.join(map(str, expected))}"
        )
    for v in node.outputs:
        if v.name in defined:
            raise GraphcError(f"graph {g.name}: {_where(node)}: %{v.name} is defined twice")
        defined[v.name] = v
