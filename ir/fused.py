"""The fused-node contract as code: what each kind of ``fused`` node holds, read from its body.

Fusion builds bodies to this contract; the verifier checks it (``check_fused``); the memory planner
and every backend read the parts from here instead of re-parsing the body each its own way.

- ``pointwise``: pointwise, broadcast and source ops, plus a prologue of static ``slice`` nodes
  of body inputs (read only by those ops: a backend indexes the input at the slice's offset and
  steps, no copy) and an epilogue of ``concat`` nodes of computed values into body outputs (a
  backend writes each part at its offset of the output) (``PointwiseParts``).
- ``reduction``: those and reductions that all reduce the same trailing axes of one domain.
- ``matmul``: a prologue (chains of transpose/slice/reshape from a body input to a matmul operand,
  each one strided view of that input: ``ir.views``), one matmul, then an epilogue of elementwise
  ops; the body lists them in that order (``MatmulParts``).
- ``attention``: its body's nodes are the stages themselves: a matmul stage giving the scores, a
  fused reduction over their last axis, a matmul stage of the probabilities, and optionally a
  transpose keeping the last axis last (``AttentionParts``). A matmul stage is a plain matmul or
  a fused matmul whose only output is the product (no epilogue).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import GraphcError
from .graph import Graph, Node, Value
from .ops import REDUCTION_OPS, REGISTRY
from .views import VIEW_OPS, View, chain_view

FUSED_KINDS = ("pointwise", "reduction", "matmul", "attention")
ELEMENTWISE_CLASSES = ("pointwise", "broadcast", "source")
FLOAT = ("f32", "f64")


def is_elementwise(node: Node) -> bool:
    """An op a fused loop evaluates per element: pointwise, broadcast or source (``rng_uniform``
    too, computed from the element's index)."""
    if node.op == "rng_uniform":
        return True
    opdef = REGISTRY.get(node.op)
    return opdef is not None and node.op != "fused" and opdef.fusion in ELEMENTWISE_CLASSES


def _fail(node: Node, why: str) -> GraphcError:
    where = f" ({node.source})" if node.source else ""
    return GraphcError(f"fused {node.attrs.get('kind')!s} node %{node.outputs[0].name}: {why}{where}")


@dataclass(frozen=True)
class OperandView:
    """A matmul operand as a view of a body input: the input, the chain from it, the view made."""

    input: Value
    chain: tuple[Node, ...]
    view: View


@dataclass(frozen=True)
class MatmulParts:
    """A ``matmul`` body taken apart."""

    prologue: tuple[Node, ...]
    matmul: Node
    epilogue: tuple[Node, ...]
    operands: tuple[OperandView, OperandView]


def _operand_view(v: Value, inputs: list[Value], made_by: dict[Value, Node]) -> OperandView | None:
    chain: list[Node] = []
    while v not in inputs:
        node = made_by.get(v)
        if node is None or node.op not in VIEW_OPS:
            return None
        chain.append(node)
        v = node.inputs[0]
    chain.reverse()
    view = chain_view(v.shape, chain)
    return None if view is None else OperandView(v, tuple(chain), view)


def matmul_parts(node: Node) -> MatmulParts:
    """The prologue, matmul, epilogue and operand views of a ``matmul`` fused node (or GraphcError)."""
    body = _body(node)
    at = [i for i, n in enumerate(body.nodes) if n.op == "matmul"]
    if len(at) != 1:
        raise _fail(node, f"needs exactly one matmul, has {len(at)}")
    mm = body.nodes[at[0]]
    prologue, epilogue = tuple(body.nodes[: at[0]]), tuple(body.nodes[at[0] + 1 :])
    if any(n.op not in VIEW_OPS for n in prologue):
        raise _fail(node, "its prologue holds an op other than transpose, slice and reshape")
    bad = [n.op for n in epilogue if not is_elementwise(n)]
    if bad:
        raise _fail(node, f"its epilogue holds non-elementwise ops {bad}")
    made_by = {v: n for n in prologue for v in n.outputs}
    operands = tuple(_operand_view(v, list(body.inputs), made_by) for v in mm.inputs)
    if any(o is None for o in operands):
        raise _fail(node, "a matmul operand is not one strided view of a body input")
    return MatmulParts(prologue, mm, epilogue, operands)  # type: ignore[arg-type]


def product_only(node: Node | None) -> Node | None:
    """The matmul of a matmul stage: a plain matmul, or a fused matmul whose one output is the
    product (no epilogue) with float operands of rank >= 2; None for anything else."""
    if node is None:
        return None
    if node.op == "matmul":
        mm = node
    elif is_fused(node, "matmul") and len(node.outputs) == 1:
        try:
            parts = matmul_parts(node)
        except GraphcError:
            return None
        if parts.epilogue or list(node.subgraph.outputs) != [parts.matmul.output]:
            return None
        mm = parts.matmul
    else:
        return None
    if any(len(v.shape) < 2 for v in mm.inputs) or mm.output.dtype not in FLOAT:
        return None
    return mm


def row_body_fits(node: Node, batch: tuple[int, ...]) -> bool:
    """Whether a fused reduction can run per matrix of a batch of score matrices: it reads the
    scores as its first operand with their shape, reduces over the last axis only, draws no random
    numbers, and every other value has rank <= 2, leading dims of 1, or (if computed) the batch dims."""
    body = node.subgraph
    if body is None or len(node.outputs) != 1:
        return False
    domain = node.outputs[0].shape
    if node.inputs[0].shape != domain or any(body.kinds[v.name] != "data" for v in body.inputs):
        return False
    for n in body.nodes:
        if n.op == "rng_uniform":
            return False
        if n.op in REDUCTION_OPS and tuple(n.attrs["axes"]) != (len(domain) - 1,):
            return False
    values = [*body.inputs[1:], *(v for n in body.nodes for v in n.outputs)]
    for v in values:
        lead = v.shape[: max(0, len(v.shape) - 2)]
        computed = v not in body.inputs
        if lead and any(d != 1 for d in lead) and not (computed and lead == batch):
            return False
    return body.inputs[0].shape == domain


@dataclass(frozen=True)
class AttentionParts:
    """An ``attention`` body taken apart: its stage nodes and the head permutation, if any."""

    scores: Node
    rows: Node
    values: Node
    head_perm: tuple[int, ...] | None


def attention_parts(node: Node) -> AttentionParts:
    """The stages of an ``attention`` fused node (or GraphcError naming the broken rule)."""
    body = _body(node)
    nodes = body.nodes
    if len(nodes) not in (3, 4):
        raise _fail(node, f"needs 3 or 4 stages, has {len(nodes)}")
    scores, rows, values = nodes[:3]
    if product_only(scores) is None or product_only(values) is None:
        raise _fail(node, "its first and third stages must be matmuls with no epilogue")
    if not is_fused(rows, "reduction") or len(rows.outputs) != 1 or rows.inputs[0] is not scores.output:
        raise _fail(node, "its second stage must be a fused reduction of the scores")
    if rows.output.shape != scores.output.shape or not row_body_fits(rows, scores.output.shape[:-2]):
        raise _fail(node, "its row stage cannot run one matrix at a time")
    probs = values.inputs[0] if values.op == "matmul" else None
    if values.op != "matmul":
        mm = product_only(values)
        k = values.inputs.index(rows.output) if rows.output in values.inputs else -1
        probs = values.subgraph.data_inputs[k] if k >= 0 else None
        if mm is None or mm.inputs[0] is not probs:
            raise _fail(node, "its value matmul must read the probabilities as its left operand")
    elif probs is not rows.output or values.inputs[1] is rows.output:
        raise _fail(node, "its value matmul must read the probabilities as its left operand")
    perm = None
    if len(nodes) == 4:
        last = nodes[3]
        rank = len(values.output.shape)
        if (
            last.op != "transpose"
            or last.inputs[0] is not values.output
            or last.attrs["perm"][-1] != rank - 1
        ):
            raise _fail(node, "its last stage must be a transpose of the values keeping the last axis")
        perm = tuple(last.attrs["perm"])
    return AttentionParts(scores, rows, values, perm)


@dataclass(frozen=True)
class PointwiseParts:
    """A ``pointwise`` body taken apart: its slice prologue, elementwise ops and concat epilogue."""

    slices: tuple[Node, ...]
    ops: tuple[Node, ...]
    concats: tuple[Node, ...]


def split_pointwise(inputs: list[Value], nodes: list[Node], outputs: list[Value]) -> PointwiseParts | str:
    """The parts of a pointwise body given as its inputs, nodes and outputs, or why it breaks the
    contract: each slice reads a body input and only elementwise ops read it; each concat joins
    values elementwise ops computed, of one shape, into a body output no node reads."""
    slices, ops, concats = [], [], []
    made_by = {v: n for n in nodes for v in n.outputs}
    readers: dict[Value, list[Node]] = {}
    for n in nodes:
        for v in n.inputs:
            readers.setdefault(v, []).append(n)
    ins, outs = set(inputs), set(outputs)
    for n in nodes:
        if n.op == "slice":
            if n.inputs[0] not in ins:
                return f"slice %{n.outputs[0].name} does not read a body input"
            if n.outputs[0] in outs or any(not is_elementwise(r) for r in readers.get(n.outputs[0], ())):
                return f"slice %{n.outputs[0].name} is read by other than elementwise ops"
            slices.append(n)
        elif n.op == "concat":
            parts = n.inputs
            if any(v not in made_by or not is_elementwise(made_by[v]) for v in parts):
                return f"concat %{n.outputs[0].name} joins values no elementwise op of the body computed"
            if len({v.shape for v in parts}) != 1:
                return f"concat %{n.outputs[0].name} joins values of different shapes"
            if n.outputs[0] not in outs or readers.get(n.outputs[0]):
                return f"concat %{n.outputs[0].name} is not a body output read by no body node"
            concats.append(n)
        elif is_elementwise(n):
            ops.append(n)
        else:
            return f"holds an op a pointwise kernel cannot loop over: {n.op}"
    return PointwiseParts(tuple(slices), tuple(ops), tuple(concats))


def pointwise_parts(node: Node) -> PointwiseParts:
    """The slice prologue, elementwise ops and concat epilogue of a ``pointwise`` fused node (or
    GraphcError naming the broken rule)."""
    body = _body(node)
    parts = split_pointwise(list(body.inputs), list(body.nodes), list(body.outputs))
    if isinstance(parts, str):
        raise _fail(node, parts)
    return parts


def _body(node: Node) -> Graph:
    if node.op != "fused" or node.subgraph is None:
        raise GraphcError(f"%{node.outputs[0].name} is not a fused node with a body")
    return node.subgraph


def is_fused(node: Node | None, kind: str) -> bool:
    """Whether ``node`` is a fused node of ``kind`` with a body."""
    return (
        node is not None
        and node.op == "fused"
        and node.subgraph is not None
        and node.attrs.get("kind") == kind
    )


def check_fused(node: Node) -> None:
    """Raise GraphcError unless ``node``'s body keeps the contract of its kind (this module's docstring)."""
    kind = node.attrs.get("kind")
    body = _body(node)
    if kind not in FUSED_KINDS:
        raise _fail(node, f"unknown kind {kind!r}; known: {', '.join(FUSED_KINDS)}")
    if kind == "matmul":
        matmul_parts(node)
    elif kind == "attention":
        attention_parts(node)
    elif kind == "pointwise" and not any(n.op in REDUCTION_OPS for n in body.nodes):
        pointwise_parts(node)
    else:
        others = [n.op for n in body.nodes if not is_elementwise(n) and n.op not in REDUCTION_OPS]
        if others:
            raise _fail(node, f"holds ops a {kind} kernel cannot loop over: {sorted(set(others))}")
        reductions = [n for n in body.nodes if n.op in REDUCTION_OPS]
        if kind == "pointwise" and reductions:
            raise _fail(node, "a pointwise body holds a reduction")
        if kind == "reduction" and not reductions:
            raise _fail(node, "a reduction body holds no reduction")
