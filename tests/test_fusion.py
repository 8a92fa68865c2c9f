"""Fusion: which groups form, the fused-node contract, kernel counts, and unchanged meaning."""

import numpy as np
from graph_testing import (
    assert_same_outputs,
    const,
    fusion_chain_graph,
    layer_norm,
    make_feeds,
    mlp_graph,
    parse,
    softmax,
    transformer_layer_graph,
)

import graphc.compiler
from graphc import passes
from graphc.ir import Graph, TensorType, get_op, parse_graph, print_graph, verify
from graphc.kernels.reference import execute
from graphc.passes import fusion, kernel_count
from graphc.passes.fusion import is_trailing_reduction


def check_contract(graph: Graph) -> None:
    """docs/CONTRACTS.md's rules for fused nodes, checked independently of passes.fusion."""
    for node in graph.nodes:
        if node.op != "fused":
            continue
        body, kind = node.subgraph, node.attrs["kind"]
        assert [v.type for v in body.data_inputs] == [v.type for v in node.inputs]
        assert [v.type for v in body.outputs] == [v.type for v in node.outputs]
        assert len([n for n in body.nodes if n.op != "const"]) >= 2, "single-op groups stay plain"
        classes = [get_op(n.op).fusion for n in body.nodes]
        if kind == "pointwise":
            assert set(classes) <= {"pointwise", "broadcast", "source"}
        elif kind == "reduction":
            reductions = [n for n in body.nodes if get_op(n.op).fusion == "reduction"]
            assert reductions and all(is_trailing_reduction(r) for r in reductions)
            assert len({(r.inputs[0].shape, tuple(sorted(r.attrs["axes"]))) for r in reductions}) == 1
            assert set(classes) <= {"pointwise", "broadcast", "source", "reduction"}
        elif kind == "attention":
            check_attention(node)
        else:
            assert kind == "matmul"
            at = [n.op for n in body.nodes].index("matmul")
            mm, prologue, epilogue = body.nodes[at], body.nodes[:at], body.nodes[at + 1 :]
            made = {t.output for t in prologue}
            for t in prologue:  # view chains from body inputs to the matmul's operands
                assert t.op in ("transpose", "slice", "reshape")
                assert t.inputs[0] in body.data_inputs or t.inputs[0] in made
                readers = [n for n in body.nodes if t.output in n.inputs]
                assert len(readers) == 1 and (readers[0] is mm or readers[0] in prologue)
                assert t.output not in body.outputs
            assert {get_op(n.op).fusion for n in epilogue} <= {"pointwise", "broadcast", "source"}
            assert all(n.output.shape == mm.output.shape for n in epilogue if n.op != "const")


def check_attention(node) -> None:
    """An attention body: matmul, fused reduction, matmul (each by its own contract), optionally
    a transpose keeping the last axis; each stage reads the one before as it is."""
    body = node.subgraph
    check_contract(body)
    stages = [n.attrs.get("kind", n.op) for n in body.nodes]
    assert stages[:3] == ["matmul", "reduction", "matmul"] and len(stages) <= 4, stages
    scores, rows, values = body.nodes[:3]
    for stage in (scores, values):
        if stage.op == "fused":
            assert [v for v in stage.subgraph.outputs] == [
                n.output for n in stage.subgraph.nodes if n.op == "matmul"
            ]
    assert rows.inputs[0] is scores.output and rows.output.shape == scores.output.shape
    products = values.subgraph.nodes if values.op == "fused" else [values]
    mm = next(n for n in products if n.op == "matmul")
    left = (
        mm.inputs[0] if values.op == "matmul" else values.inputs[values.subgraph.inputs.index(mm.inputs[0])]
    )
    assert left is rows.output
    if len(stages) == 4:
        assert stages[3] == "transpose" and body.nodes[3].attrs["perm"][-1] == len(values.output.shape) - 1
    assert body.outputs == [body.nodes[-1].output]


def names(values) -> list[str]:
    return [v.name for v in values]


def fuse(g: Graph) -> Graph:
    out = fusion(g.copy())
    verify(out)
    check_contract(out)
    assert_same_outputs(g, out, make_feeds(g))
    return out


def test_fusion_chain_is_at_most_two_kernels_at_benchmark_size():
    g = fusion_chain_graph(8192, 1024)
    before = kernel_count(g)
    out = passes.optimize(g, check=True)
    check_contract(out)
    after = kernel_count(out)
    print(f"\nfusion chain [8192,1024]: {before} kernels before, {after} after: {out.op_counts()}")
    assert after <= 2
    assert after == 1 and out.nodes[0].attrs["kind"] == "reduction"
    assert names(out.nodes[0].inputs) == ["x", "b", "s", "r"]  # reads each input once, writes one result


def test_fusion_chain_keeps_its_meaning():
    g = fusion_chain_graph(16, 32)
    out = passes.optimize(g, check=True)
    check_contract(out)
    assert_same_outputs(g, out, make_feeds(g, low=-2.0, high=2.0), rtol=1e-5, atol=1e-5)


def test_softmax_and_layer_norm_are_one_kernel_each():
    g = Graph("g")
    x = g.add_input("x", TensorType((6, 10)))
    g.add_output(softmax(g, x))
    out = fuse(g)
    assert [n.op for n in out.nodes] == ["fused"] and out.nodes[0].attrs["kind"] == "reduction"
    g = Graph("g")
    x = g.add_input("x", TensorType((2, 3, 8)))
    w = g.add_input("w", TensorType((8,)))
    g.add_output(layer_norm(g, x, weight=w, bias=w))
    out = fuse(g)
    assert [n.op for n in out.nodes] == ["fused"] and out.nodes[0].attrs["kind"] == "reduction"


def test_matmul_epilogue():
    g = mlp_graph(batch=4, sizes=(6, 8, 3))
    out = fuse(g)
    fused = [n for n in out.nodes if n.op == "fused"]
    assert len(fused) == 2 and all(n.attrs["kind"] == "matmul" for n in fused)
    ops = [n.op for n in fused[0].subgraph.nodes if n.op != "const"]
    assert ops == ["transpose", "matmul", "add", "maximum"]  # the weight transpose is a BLAS view


def test_epilogue_operands_computed_beside_the_matmul_join_it():
    # Adam's second moment: beta2 * v does not read the gradient product, but only the epilogue
    # reads it, so it is computed there (one pass over v instead of two); the body still lists
    # prologue, matmul, epilogue
    out = fuse(
        parse(
            """
            graph g(%dy: f32[4,3], %x: f32[4,5], %v: f32[3,5]) {
              %dyt = transpose(%dy) {perm=(1, 0)} : f32[3,4]
              %gw = matmul(%dyt, %x) : f32[3,5]
              %b2 = const() {value=0.999, dtype='f32'} : f32[]
              %old = mul(%v, %b2) : f32[3,5]
              %sq = mul(%gw, %gw) : f32[3,5]
              %new = add(%old, %sq) : f32[3,5]
              return %new
            }
            """
        )
    )
    (node,) = out.nodes
    assert node.attrs["kind"] == "matmul"
    ops = [n.op for n in node.subgraph.nodes if n.op != "const"]
    assert ops == ["transpose", "matmul", "mul", "mul", "add"]


def test_an_operand_of_the_matmul_never_joins_its_epilogue():
    out = fuse(
        parse(
            """
            graph g(%x: f32[4,4], %w: f32[4,4]) {
              %r = exp(%x) : f32[4,4]
              %m = matmul(%r, %w) : f32[4,4]
              %y = add(%m, %r) : f32[4,4]
              return %y
            }
            """
        )
    )
    assert [n.op for n in out.nodes] == ["exp", "fused"]


def test_transpose_joins_a_matmul_only_as_its_sole_reader():
    out = fuse(
        parse(
            """
            graph g(%x: f32[4,5], %w: f32[3,5], %v: f32[3,5]) {
              %wt = transpose(%w) {perm=(1, 0)} : f32[5,3]
              %m = matmul(%x, %wt) : f32[4,3]
              %vt = transpose(%v) {perm=(1, 0)} : f32[5,3]
              %n = matmul(%x, %vt) : f32[4,3]
              %e = exp(%vt) : f32[5,3]
              return %m, %n, %e
            }
            """
        )
    )
    ops = [n.attrs.get("kind", n.op) for n in out.nodes]
    assert ops.count("matmul") == 2 and ops.count("transpose") == 1  # %vt has two readers
    first = next(n for n in out.nodes if n.op == "fused")
    assert [n.op for n in first.subgraph.nodes] == ["transpose", "matmul"]


def test_no_prologue_into_matmul_and_no_reduction_after_it():
    out = fuse(
        parse(
            """
            graph g(%x: f32[4,5], %w: f32[5,3]) {
              %a = exp(%x) : f32[4,5]
              %b = neg(%a) : f32[4,5]
              %m = matmul(%b, %w) : f32[4,3]
              %t = tanh(%m) : f32[4,3]
              %s = sum(%t) {axes=(1,), keepdims=False} : f32[4]
              %u = exp(%s) : f32[4]
              return %u
            }
            """
        )
    )
    kinds = [n.attrs.get("kind", n.op) for n in out.nodes]
    assert kinds == ["pointwise", "matmul", "reduction"]


def test_injective_and_opaque_ops_stay_separate():
    out = fuse(
        parse(
            """
            graph g(%x: f32[4,6], %i: i64[3]) {
              %a = exp(%x) : f32[4,6]
              %t = transpose(%a) {perm=(1, 0)} : f32[6,4]
              %b = neg(%t) : f32[6,4]
              %g = gather(%b, %i) {axis=0} : f32[3,4]
              %c = tanh(%g) : f32[3,4]
              return %c
            }
            """
        )
    )
    assert [n.op for n in out.nodes] == ["exp", "transpose", "neg", "gather", "tanh"]


def test_no_cycle_through_an_outside_node():
    out = fuse(
        parse(
            """
            graph g(%x: f32[4,4]) {
              %n = neg(%x) : f32[4,4]
              %e = exp(%n) : f32[4,4]
              %t = transpose(%e) {perm=(1, 0)} : f32[4,4]
              %a = add(%e, %t) : f32[4,4]
              %y = tanh(%a) : f32[4,4]
              return %y
            }
            """
        )
    )
    # {neg, exp} feeds the transpose, which feeds {add, tanh}: one group would be a cycle.
    assert [n.op for n in out.nodes] == ["fused", "transpose", "fused"]


def test_value_read_outside_becomes_a_group_output():
    out = fuse(
        parse(
            """
            graph g(%x: f32[4,5], %w: f32[5,3]) {
              %a = exp(%x) : f32[4,5]
              %b = tanh(%a) : f32[4,5]
              %c = neg(%b) : f32[4,5]
              %m = matmul(%b, %w) : f32[4,3]
              return %c, %m
            }
            """
        )
    )
    first = out.nodes[0]
    assert first.op == "fused" and [v.name for v in first.outputs] == ["b", "c"]


def test_cheap_shared_value_is_recomputed_by_its_readers():
    g = parse(
        """
        graph g(%x: f32[4,8], %y: f32[8]) {
          %p = add(%x, %y) : f32[4,8]
          %rows = sum(%p) {axes=(1,), keepdims=False} : f32[4]
          %all = max(%p) {axes=(0, 1), keepdims=False} : f32[]
          return %rows, %all
        }
        """
    )
    out = fuse(g)
    assert [n.op for n in out.nodes] == ["fused", "fused"]
    for n in out.nodes:
        assert [m.op for m in n.subgraph.nodes][0] == "add"
        assert names(n.inputs) == ["x", "y"]  # p is never written to memory


def test_epilogue_read_only_by_a_reduction_moves_into_it():
    # Attention's scores: softmax(q @ k^T * scale). As a matmul epilogue the scale would be one
    # more pass over the scores; inside the softmax it is a multiply on a row already loaded.
    g = parse(
        """
        graph g(%q: f32[2,4,8], %k: f32[2,8,4]) {
          %m = matmul(%q, %k) : f32[2,4,4]
          %c = const() {value=0.125, dtype="f32"} : f32[]
          %s = mul(%m, %c) : f32[2,4,4]
          %top = max(%s) {axes=(2,), keepdims=True} : f32[2,4,1]
          %d = sub(%s, %top) : f32[2,4,4]
          %e = exp(%d) : f32[2,4,4]
          %z = sum(%e) {axes=(2,), keepdims=True} : f32[2,4,1]
          %p = div(%e, %z) : f32[2,4,4]
          return %p
        }
        """
    )
    out = fuse(g)
    assert [n.attrs.get("kind", n.op) for n in out.nodes] == ["matmul", "reduction"]
    mm, softmax = out.nodes
    assert mm.op == "matmul" and names(softmax.inputs) == ["m"]
    assert "mul" in [n.op for n in softmax.subgraph.nodes]


def test_residual_epilogue_moves_into_the_layer_norm():
    # Post-norm residual: norm(x + (h @ w + b)). The bias and residual adds read two values
    # besides the product; the product does not count against the recompute limit.
    g = Graph("residual")
    h = g.add_input("h", TensorType((6, 8)))
    w = g.add_input("w", TensorType((8, 8)))
    b = g.add_input("b", TensorType((8,)))
    x = g.add_input("x", TensorType((6, 8)))
    y = g.op("add", x, g.op("add", g.op("matmul", h, w), b))
    g.add_output(layer_norm(g, y))
    out = fuse(g)
    assert [n.attrs.get("kind", n.op) for n in out.nodes] == ["matmul", "reduction"]
    norm = out.nodes[1]
    assert sorted(names(norm.inputs)) == sorted([out.nodes[0].output.name, "b", "x"])


QKV_SPLIT = """graph g(%x: f32[2,4,8], %w: f32[24,8]) {
  %wt = transpose(%w) {perm=(1, 0)} : f32[8,24]
  %y = matmul(%x, %wt) : f32[2,4,24]
  %h = reshape(%y) {shape=(2, 4, 3, 2, 4)} : f32[2,4,3,2,4]
  %t = transpose(%h) {perm=(2, 0, 3, 1, 4)} : f32[3,2,2,4,4]
  %q5 = slice(%t) {starts=(0, 0, 0, 0, 0), stops=(1, 2, 2, 4, 4), steps=(1, 1, 1, 1, 1)} : f32[1,2,2,4,4]
  %k5 = slice(%t) {starts=(1, 0, 0, 0, 0), stops=(2, 2, 2, 4, 4), steps=(1, 1, 1, 1, 1)} : f32[1,2,2,4,4]
  %v5 = slice(%t) {starts=(2, 0, 0, 0, 0), stops=(3, 2, 2, 4, 4), steps=(1, 1, 1, 1, 1)} : f32[1,2,2,4,4]
  %q = reshape(%q5) {shape=(2, 2, 4, 4)} : f32[2,2,4,4]
  %k = reshape(%k5) {shape=(2, 2, 4, 4)} : f32[2,2,4,4]
  %v = reshape(%v5) {shape=(2, 2, 4, 4)} : f32[2,2,4,4]
  %kt = transpose(%k) {perm=(0, 1, 3, 2)} : f32[2,2,4,4]
  %s = matmul(%q, %kt) : f32[2,2,4,4]
  %o = matmul(%s, %v) : f32[2,2,4,4]
  return %o
}"""


def test_attention_reads_q_k_v_as_views_of_the_projection():
    # No transpose or slice kernel is left: each head-split chain is a matmul prologue, which
    # the CPU backend passes to BLAS as a strided view of the projection's output.
    g = parse(QKV_SPLIT)
    out = passes.optimize(g, check=True)
    check_contract(out)
    assert [n.op for n in out.nodes if n.op != "reshape"] == ["fused", "fused", "fused"]
    prologues = [[m.op for m in n.subgraph.nodes if m.op != "matmul"] for n in out.nodes if n.op == "fused"]
    # q @ k^T: two chains, slice -> transpose -> reshape (and k's last-axes swap)
    assert sorted(prologues[1]) == sorted(["slice", "transpose", "reshape"] * 2 + ["transpose"])
    assert sorted(prologues[2]) == sorted(["slice", "transpose", "reshape"])
    feeds = make_feeds(g)
    plan = graphc.compiler.compile_graph(g)
    np.testing.assert_allclose(plan(*feeds.values()), execute(g, feeds)[0], rtol=1e-5, atol=1e-6)


def test_operand_view_blas_cannot_take_is_copied_first():
    # every other column: a view NumPy's matmul would run through its slow non-BLAS loop
    g = parse(
        """graph g(%x: f32[5,12], %w: f32[6,3]) {
  %xs = slice(%x) {starts=(0, 0), stops=(5, 12), steps=(1, 2)} : f32[5,6]
  %m = matmul(%xs, %w) : f32[5,3]
  return %m
}"""
    )
    out = passes.optimize(g)
    assert [n.op for n in out.nodes] == ["fused"]
    feeds = make_feeds(g)
    plan = graphc.compiler.compile_graph(g)
    np.testing.assert_allclose(plan(*feeds.values()), execute(g, feeds)[0], rtol=1e-5, atol=1e-6)


def test_expensive_shared_value_is_not_recomputed():
    g = parse(
        """
        graph g(%x: f32[4,8], %y: f32[8]) {
          %p = add(%x, %y) : f32[4,8]
          %q = exp(%p) : f32[4,8]
          %r = tanh(%q) : f32[4,8]
          %s = sin(%r) : f32[4,8]
          %rows = sum(%s) {axes=(1,), keepdims=False} : f32[4]
          %all = max(%s) {axes=(0, 1), keepdims=False} : f32[]
          return %rows, %all
        }
        """
    )
    out = fuse(g)
    assert kernel_count(out) == 2
    bodies = [f.subgraph for f in out.nodes if f.op == "fused"]
    assert sum(n.op == "add" for b in bodies for n in b.nodes) == 1


def test_fused_graph_prints_and_parses_back():
    out = passes.optimize(transformer_layer_graph(batch=1, seq=4, d=8, heads=2, ff=16))
    text = print_graph(out)
    again = parse_graph(text)
    verify(again)
    assert print_graph(again) == text


def test_transformer_layer_kernel_count():
    g = transformer_layer_graph()
    before = kernel_count(g)
    out = passes.optimize(g, check=True)
    check_contract(out)
    after = kernel_count(out)
    kinds = sorted(n.attrs["kind"] for n in out.nodes if n.op == "fused")
    print(f"\ntransformer layer: {before} kernels before, {after} after; fused kinds {kinds}")
    assert kinds.count("reduction") == 2  # the two layer norms
    (attention,) = [n for n in out.nodes if n.op == "fused" and n.attrs["kind"] == "attention"]
    assert [n.attrs.get("kind") for n in attention.subgraph.nodes if n.op == "fused"][1] == "reduction"
    assert after <= 22
    assert_same_outputs(g, out, make_feeds(g, low=-1.0, high=1.0), rtol=1e-4, atol=1e-5)


def test_fusion_after_autodiff_keeps_gradients():
    from graphc.passes.autodiff import grad

    g = mlp_graph(batch=4, sizes=(5, 6, 3))
    loss = g.op("div", g.op("sum", g.op("mul", g.outputs[0], g.outputs[0]), axes=(0, 1)), const(g, 12.0))
    g.outputs = [loss]
    joint, _ = grad(g)
    out = passes.optimize(joint, check=True)
    check_contract(out)
    assert kernel_count(out) < kernel_count(joint)
    assert_same_outputs(joint, out, make_feeds(joint), rtol=1e-5, atol=1e-6)


def test_fusion_is_idempotent():
    once = passes.optimize(fusion_chain_graph(4, 8))
    twice = fusion(once.copy())
    assert print_graph(twice) == print_graph(once)
    assert np.all([n.op == "fused" for n in twice.nodes])
