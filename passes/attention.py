"""Attention stitching: score matmul, row softmax and value matmul become one ``attention`` node.

After fusion, ``softmax(q @ k^T * scale) @ v`` is three nodes (a matmul, fused with the
prologue that reads q and k as views, a fused row reduction, a matmul), often followed by the
transpose that puts the heads back next to each other. Run apart, the scores go to memory and
come back twice. A backend that runs the chain per (batch, head) matrix, and per block of
query rows, keeps the scores in cache between the three steps (FlashAttention's idea without
its online softmax: every row here is whole, so the reduction body runs unchanged).

The stitched node's body holds the stage nodes themselves (matmul, fused reduction, matmul,
optional transpose; a matmul stage is a fused matmul node when its operands are views), so a
backend with no attention kernel runs them one after the other exactly as before stitching.

A chain is stitched when
  - the first stage is a matmul, plain or fused with no epilogue (its only output the product,
    every other body op a view link), of rank >= 2 operands;
  - its product's only reader is a fused reduction with one output of the product's shape,
    reducing over the last axis only, with no random op (a per-matrix kernel would renumber
    dropout's stream), every value of rank <= 2 or with the scores' batch dims, and its other
    operands broadcast over the batch dims (leading dims of 1: a mask shared by all matrices);
  - the row result's only reader is such a matmul whose left operand is that result itself;
  - optionally the value product's only reader is a transpose keeping the last axis last (the
    heads put back: ``[b, h, s, d] -> [b, s, h, d]``), which the backend writes through.
No intermediate may be a graph output. Training graphs keep the softmax for the backward pass,
so only inference graphs stitch.
"""

from __future__ import annotations

from graphc.ir import Graph, Node, Value
from graphc.ir.fused import is_fused, product_only, row_body_fits

from .util import graph_pass, toposort_by_position


def _sole_reader(value: Value, users: dict[Value, list[Node]], outputs: set[Value]) -> Node | None:
    readers = users.get(value, [])
    if value in outputs or len(readers) != 1 or readers[0].inputs.count(value) != 1:
        return None
    return readers[0]


def _chain(first: Node, users: dict[Value, list[Node]], outputs: set[Value]) -> list[Node] | None:
    """The stages of an attention chain starting at ``first`` (a fused matmul), or None."""
    if product_only(first) is None:
        return None
    scores = first.output
    if len(scores.shape) < 2:
        return None
    rows = _sole_reader(scores, users, outputs)
    if not is_fused(rows, "reduction") or len(rows.outputs) != 1 or rows.inputs[0] is not scores:
        return None
    if rows.output.shape != scores.shape or not row_body_fits(rows, scores.shape[:-2]):
        return None
    second = _sole_reader(rows.output, users, outputs)
    if (mm := product_only(second)) is None:
        return None
    probs = rows.output if mm is second else second.subgraph.data_inputs[second.inputs.index(rows.output)]
    if mm.inputs[0] is not probs or mm.inputs[1] is probs:
        return None
    chain = [first, rows, second]
    after = _sole_reader(second.output, users, set())
    rank = len(second.output.shape)
    if (
        second.output not in outputs
        and after is not None
        and after.op == "transpose"
        and tuple(after.attrs["perm"])[-1] == rank - 1
    ):
        chain.append(after)
    return chain


def _stitched(chain: list[Node], uid: int) -> Node:
    """One ``fused`` node of kind attention whose body is the chain's nodes."""
    body = Graph(f"attention_{uid}")
    env: dict[Value, Value] = {}
    inside = {v for n in chain for v in n.outputs}
    ins: list[Value] = []
    for n in chain:
        for v in n.inputs:
            if v not in inside and v not in env:
                env[v] = body.add_input(v.name, v.type)
                ins.append(v)
        outs = [Value(v.name, v.type) for v in n.outputs]
        body.adopt(Node(n.op, [env[v] for v in n.inputs], dict(n.attrs), outs, n.source, n.subgraph))
        env.update(zip(n.outputs, outs))
    last = chain[-1].output
    body.add_output(env[last])
    return Node("fused", ins, {"kind": "attention"}, [last], chain[0].source, body)


def stitch_attention(units: list[tuple[int, Node]], outputs: set[Value]) -> list[tuple[int, Node]]:
    """Fusion's units (original position, node) with every attention chain (see the module
    docstring) replaced by one node at its first stage's position; the caller sorts them."""
    users: dict[Value, list[Node]] = {}
    for _, n in units:
        for v in n.inputs:
            users.setdefault(v, []).append(n)
    replaced: dict[Node, Node | None] = {}
    for _, node in sorted(units, key=lambda u: u[0]):
        if node in replaced:
            continue
        chain = _chain(node, users, outputs)
        if chain is None:
            continue
        replaced[chain[0]] = _stitched(chain, len(replaced))
        replaced.update((n, None) for n in chain[1:])
    stitched = [(i, replaced.get(n, n)) for i, n in units]
    return [(i, n) for i, n in stitched if n is not None]


@graph_pass("attention")
def attention(graph: Graph) -> Graph:
    """Stitch every attention chain of a fused graph into one node (rewrites ``graph`` in place).

    Runs after ``fusion`` in the default pipeline (``disable=("attention",)`` keeps the stages apart).
    """
    units = list(enumerate(graph.nodes))
    stitched = stitch_attention(units, set(graph.outputs))
    if len(stitched) != len(units):
        graph.set_nodes(toposort_by_position(stitched))
    return graph
