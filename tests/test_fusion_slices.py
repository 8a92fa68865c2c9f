"""Slices as the prologue and concats as the epilogue of fused pointwise groups (passes.fusion),
the fused-node contract for them (ir.fused), and the CPU kernels that read a sliced input in place
and write each concat part at its offset (kernels/cpu/pointwise.py, loops.py), against the
reference backend (which runs the body node by node) and NumPy in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from graph_testing import assert_same_outputs, make_feeds, parse

import graphc.compiler
from graphc.ir import Graph, GraphcError, TensorType, parse_graph, print_graph, verify
from graphc.ir.fused import check_fused, pointwise_parts
from graphc.kernels import cpu
from graphc.kernels.cpu import loops
from graphc.kernels.reference import execute, run_node
from graphc.passes import fusion, kernel_count
from graphc.runtime import Plan, load_plan

GATES = """
graph g(%x: f32[5,12], %h: f32[5,4]) {
  %s0 = slice(%x) {starts=(0, 0), stops=(5, 4), steps=(1, 1)} : f32[5,4]
  %s1 = slice(%x) {starts=(0, 4), stops=(5, 8), steps=(1, 1)} : f32[5,4]
  %s2 = slice(%x) {starts=(0, 8), stops=(5, 12), steps=(1, 1)} : f32[5,4]
  %a = exp(%s0) : f32[5,4]
  %b = mul(%a, %s1) : f32[5,4]
  %c = tanh(%s2) : f32[5,4]
  %d = add(%c, %h) : f32[5,4]
  %e = mul(%b, %d) : f32[5,4]
  return %e
}
"""

CONCAT = """
graph g(%p: f32[3,7], %q: f32[3,7]) {
  %a = mul(%p, %q) : f32[3,7]
  %b = neg(%a) : f32[3,7]
  %c = exp(%b) : f32[3,7]
  %d = add(%c, %p) : f32[3,7]
  %k = concat(%b, %d, %c) {axis=1} : f32[3,21]
  %m = mul(%d, %d) : f32[3,7]
  return %k, %m
}
"""


def fuse(g: Graph) -> Graph:
    """Fusion on a copy, verified (the verifier runs ir.fused.check_fused) and unchanged in meaning."""
    out = fusion(g.copy())
    verify(out)
    assert_same_outputs(g, out, make_feeds(g))
    return out


def fused_nodes(g: Graph) -> list:
    return [n for n in g.nodes if n.op == "fused"]


def run_cpu(node, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The CPU kernel's outputs (outputs start as garbage, so every element must be written)."""
    outs = [np.full(v.shape, 7, v.type.np_dtype) for v in node.outputs]
    cpu.compile_node(node)(*arrays, *outs)
    return outs


def check_cpu(node, arrays: list[np.ndarray], want: list[np.ndarray] | None = None) -> None:
    """CPU kernel == reference backend (and == ``want``, NumPy in float64, when given)."""
    got = run_cpu(node, arrays)
    ref = run_node(node, arrays)
    tol = {"rtol": 2e-6, "atol": 1e-6} if node.outputs[0].dtype == "f32" else {"rtol": 1e-12, "atol": 1e-12}
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, **tol)
    for g, w in zip(got, want or []):
        np.testing.assert_allclose(g, w, rtol=1e-5 if g.dtype == np.float32 else 1e-12, atol=1e-6)


# ---------------------------------------------------------------- fusion decisions
def test_gate_slices_join_their_pointwise_group_as_one_body_input():
    out = fuse(parse(GATES))
    assert [n.op for n in out.nodes] == ["fused"]
    (node,) = out.nodes
    assert [v.name for v in node.inputs] == ["x", "h"]  # three slices of %x: one body input
    parts = pointwise_parts(node)
    assert len(parts.slices) == 3 and not parts.concats
    x = np.random.default_rng(0).standard_normal((5, 12))
    h = np.random.default_rng(1).standard_normal((5, 4))
    want = np.exp(x[:, :4]) * x[:, 4:8] * (np.tanh(x[:, 8:]) + h)
    check_cpu(node, [x.astype(np.float32), h.astype(np.float32)], [want])


def test_a_slice_read_outside_the_group_stays_a_node():
    g = parse(
        """
        graph g(%x: f32[4,6]) {
          %s = slice(%x) {starts=(0, 1), stops=(4, 4), steps=(1, 1)} : f32[4,3]
          %a = exp(%s) : f32[4,3]
          %b = neg(%a) : f32[4,3]
          %t = transpose(%s) {perm=(1, 0)} : f32[3,4]
          return %b, %t
        }
        """
    )
    out = fuse(g)
    assert [n.op for n in out.nodes] == ["slice", "fused", "transpose"]
    assert "slice" not in fused_nodes(out)[0].subgraph.op_counts()


def test_a_slice_read_by_two_groups_or_returned_stays_a_node():
    g = parse(
        """
        graph g(%x: f32[4,6], %y: f32[4,3]) {
          %s = slice(%x) {starts=(0, 3), stops=(4, 6), steps=(1, 1)} : f32[4,3]
          %a = exp(%s) : f32[4,3]
          %b = neg(%a) : f32[4,3]
          %m = sum(%b) {axes=(1,), keepdims=True} : f32[4,1]
          %c = tanh(%s) : f32[4,3]
          %d = mul(%c, %y) : f32[4,3]
          return %m, %d, %s
        }
        """
    )
    out = fuse(g)
    assert out.op_counts()["slice"] == 1
    assert all("slice" not in n.subgraph.op_counts() for n in fused_nodes(out))


def test_concat_of_one_groups_values_becomes_its_epilogue():
    g = parse(CONCAT)
    out = fuse(g)
    assert kernel_count(out) == 1 and [n.op for n in out.nodes] == ["fused"]
    (node,) = out.nodes
    assert len(pointwise_parts(node).concats) == 1
    rng = np.random.default_rng(2)
    p, q = rng.standard_normal((3, 7)), rng.standard_normal((3, 7))
    b = -(p * q)
    d = np.exp(b) + p
    want = [np.concatenate([b, d, np.exp(b)], 1), d * d]
    check_cpu(node, [p.astype(np.float32), q.astype(np.float32)], want)


def test_concat_stays_when_a_part_is_read_elsewhere_or_parts_come_from_two_groups():
    g = parse(
        """
        graph g(%p: f32[3,4], %q: f32[3,4]) {
          %a = exp(%p) : f32[3,4]
          %b = neg(%a) : f32[3,4]
          %k = concat(%a, %b) {axis=0} : f32[6,4]
          %c = tanh(%q) : f32[3,4]
          %d = neg(%c) : f32[3,4]
          %j = concat(%d, %a) {axis=1} : f32[3,8]
          return %k, %j
        }
        """
    )
    out = fuse(g)
    assert out.op_counts()["concat"] == 2  # %a is read by both concats; %j's parts span two groups


def test_concat_is_not_fused_where_writing_it_over_a_sliced_input_would_be_unsafe():
    # The concat's output has the sliced input's type, so the planner may write it over %x. Blocks
    # at the parts' places are safe (each loop point reads what it then writes), an offset is not.
    def graph(start: int) -> Graph:
        return parse(
            f"""
            graph g(%x: f32[4,8]) {{
              %s = slice(%x) {{starts=(0, {start}), stops=(4, {start + 4}), steps=(1, 1)}} : f32[4,4]
              %a = exp(%s) : f32[4,4]
              %b = neg(%a) : f32[4,4]
              %k = concat(%b, %a) {{axis=1}} : f32[4,8]
              return %k
            }}
            """
        )

    assert fuse(graph(4)).op_counts() == {"fused": 1}
    assert fuse(graph(2)).op_counts()["concat"] == 1
    for start in (4, 2):  # both compiled with in-place memory plans equal the reference
        g = graph(start)
        x = np.random.default_rng(3).standard_normal((4, 8)).astype(np.float32)
        got = graphc.compiler.compile_graph(g)(x)
        np.testing.assert_allclose(got, execute(g, {"x": x})[0], rtol=1e-6, atol=1e-6)


def test_slices_of_a_middle_axis_with_steps_and_odd_sizes():
    rng = np.random.default_rng(4)
    g = parse(
        """
        graph g(%x: f64[3,11,5], %y: f64[3,4,5], %z: f64[5]) {
          %s = slice(%x) {starts=(0, 1, 0), stops=(3, 9, 5), steps=(1, 2, 1)} : f64[3,4,5]
          %t = slice(%x) {starts=(1, 2, 1), stops=(2, 10, 4), steps=(1, 2, 3)} : f64[1,4,1]
          %a = mul(%s, %y) : f64[3,4,5]
          %b = add(%a, %t) : f64[3,4,5]
          %c = mul(%b, %z) : f64[3,4,5]
          %e = exp(%c) : f64[3,4,5]
          %k = concat(%c, %e) {axis=1} : f64[3,8,5]
          return %k
        }
        """
    )
    out = fuse(g)
    assert [n.op for n in out.nodes] == ["fused"]
    x, y, z = rng.standard_normal((3, 11, 5)), rng.standard_normal((3, 4, 5)), rng.standard_normal(5)
    c = (x[:, 1:9:2, :] * y + x[1:2, 2:10:2, 1:4:3]) * z
    check_cpu(out.nodes[0], [x, y, z], [np.concatenate([c, np.exp(c)], axis=1)])


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_concat_along_the_first_axis_and_slices_with_steps_on_the_last(dtype):
    g = parse(
        f"""
        graph g(%x: {dtype}[7,13], %w: {dtype}[7,1]) {{
          %s = slice(%x) {{starts=(0, 0), stops=(7, 13), steps=(1, 3)}} : {dtype}[7,5]
          %r = slice(%x) {{starts=(0, 3), stops=(7, 8), steps=(1, 1)}} : {dtype}[7,5]
          %a = sub(%s, %r) : {dtype}[7,5]
          %b = mul(%a, %w) : {dtype}[7,5]
          %c = tanh(%b) : {dtype}[7,5]
          %k = concat(%c, %b, %a) {{axis=0}} : {dtype}[21,5]
          return %k
        }}
        """
    )
    out = fuse(g)
    assert [n.op for n in out.nodes] == ["fused"]
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((7, 13)), rng.standard_normal((7, 1))
    a = x[:, ::3] - x[:, 3:8]
    b = a * w
    np_dtype = np.float32 if dtype == "f32" else np.float64
    check_cpu(out.nodes[0], [x.astype(np_dtype), w.astype(np_dtype)], [np.concatenate([np.tanh(b), b, a], 0)])


# ---------------------------------------------------------------- the generated loops
def test_a_step_one_slice_keeps_the_inner_loop_unit_stride():
    (node,) = fuse(parse(GATES)).nodes
    source = cpu.kernel_source(node)
    # rows of 12 are not coalesced with the 4 columns: two loops, the inner one at stride 1
    assert "np.uint64(4 + i0 * 12 + i1)" in source and "np.uint64(8 + i0 * 12 + i1)" in source


def test_heavy_loops_go_parallel_below_the_element_threshold(monkeypatch):
    import numba

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    assert not loops.use_parallel(8192)  # a cheap loop of 32x256 stays on one thread
    assert loops.use_parallel(8192, cost=loops.PARALLEL_WORK // 8192)
    assert loops.use_parallel(32 * 256, cost=102)  # an LSTM's gate loop (3 exp, 2 tanh, 3 divisions)
    assert not loops.use_parallel(32 * 256, cost=44)  # its gradient (3 divisions, ~30 products)
    assert not loops.use_parallel(loops.MIN_PARALLEL_ELEMENTS - 1, cost=1 << 20)
    assert not loops.use_parallel(1 << 20, outer=2)
    assert (
        loops.op_cost(_node_of("exp"))
        > loops.op_cost(_node_of("reciprocal"))
        > loops.op_cost(_node_of("neg"))
    )
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 1)
    assert not loops.use_parallel(1 << 20, cost=100)


def _node_of(op: str):
    g = Graph("g")
    return g.add_node(op, [g.add_input("a", TensorType((2,), "f32"))])


def test_a_heavy_cell_kernel_uses_prange_where_it_pays(monkeypatch):
    import numba

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)

    def gates(rows: int, text: str = GATES) -> str:
        text = text.replace("[5,12]", f"[{rows},1024]").replace("[5,4]", f"[{rows},256]")
        pairs = (("0, 4", "0, 256"), ("0, 8", "0, 512"), ("5, 4", f"{rows}, 256"), ("5, 8", f"{rows}, 512"))
        for a, b in pairs:
            text = text.replace(f"({a})", f"({b})")
        return text.replace("(5, 12)", f"({rows}, 768)")

    def kernel(text: str) -> str:
        (node,) = fuse(parse(text)).nodes
        return cpu.kernel_source(node).split("def kernel")[1]

    assert "for i0 in prange(" in kernel(gates(128))  # 32768 elements, an exp and a tanh each
    assert "prange" not in kernel(gates(128).replace("exp(", "neg(").replace("tanh(", "neg("))
    assert "prange" not in kernel(gates(16))  # the hand-off would cost more than it saves


# ---------------------------------------------------------------- the contract and plan files
def test_contract_names_slices_and_concats_it_cannot_take():
    g = parse(CONCAT)
    (node,) = fuse(g).nodes
    check_fused(node)
    body = node.subgraph
    bad = Graph("b")
    p = bad.add_input("p", TensorType((3, 7), "f32"))
    e = bad.add_node("exp", [p]).outputs[0]
    s = bad.add_node("slice", [e], {"starts": (0, 0), "stops": (3, 3), "steps": (1, 1)}).outputs[0]
    bad.add_output(bad.add_node("neg", [s]).outputs[0])
    outer = Graph("o")
    node = outer.add_fused([outer.add_input("p", TensorType((3, 7), "f32"))], bad, {"kind": "pointwise"})
    with pytest.raises(GraphcError, match="does not read a body input"):
        check_fused(node)
    bad = Graph("b")
    p = bad.add_input("p", TensorType((3, 7), "f32"))
    k = bad.add_node("concat", [p, bad.add_node("exp", [p]).outputs[0]], {"axis": 0}).outputs[0]
    bad.add_output(k)
    node = outer.add_fused([outer.inputs[0]], bad, {"kind": "pointwise"})
    with pytest.raises(GraphcError, match="joins values no elementwise op"):
        check_fused(node)
    assert body.op_counts()["concat"] == 1


def test_fused_slices_and_concats_print_parse_and_save_back(tmp_path):
    g = parse(GATES.replace("return %e", "%k = concat(%e, %b) {axis=0} : f32[10,4]\n  return %k"))
    out = fuse(g)
    assert out.op_counts() == {"fused": 1}
    again = parse_graph(print_graph(out))
    verify(again)
    feeds = make_feeds(g)
    assert_same_outputs(g, again, feeds)
    plan = graphc.compiler.compile_graph(g)
    plan.save(tmp_path / "plan")
    loaded = load_plan(tmp_path / "plan")
    assert isinstance(loaded, Plan)
    kinds = [n.attrs.get("kind") for n in loaded.graph.nodes if n.op == "fused"]
    assert kinds == ["pointwise"]
    want = execute(g, feeds)[0]
    np.testing.assert_allclose(loaded(feeds["x"], feeds["h"]), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plan(feeds["x"], feeds["h"]), want, rtol=1e-5, atol=1e-6)


def test_an_output_written_over_an_input_beside_slices():
    from graphc.kernels.cpu.cache import load_kernel
    from graphc.kernels.cpu.loops import Body
    from graphc.kernels.cpu.pointwise import pointwise_source

    (node,) = fuse(parse(GATES)).nodes
    body = node.subgraph
    source = pointwise_source(Body(body.data_inputs, list(body.nodes), list(body.outputs)), "t", {0: 1})
    rng = np.random.default_rng(6)
    x, h = rng.standard_normal((5, 12)).astype(np.float32), rng.standard_normal((5, 4)).astype(np.float32)
    (want,) = run_node(node, [x, h])
    load_kernel(source)(x, h, h)  # the output over %h, which the body reads at the same points
    np.testing.assert_allclose(h, want, rtol=2e-6, atol=1e-6)
