"""PassManager and optimize: records, dumps, disabling by name, verification after each pass."""

import pytest
from graph_testing import assert_same_outputs, fusion_chain_graph, make_feeds, mlp_graph

from graphc import passes
from graphc.ir import Graph, GraphcError, Node, parse_graph, print_graph

TEXT = """
graph g(%x: f32[2,3]) {
  %a = exp(%x) : f32[2,3]
  %b = exp(%x) : f32[2,3]
  %c = add(%a, %b) : f32[2,3]
  %dead = neg(%c) : f32[2,3]
  return %c
}
"""


def test_records_time_counts_and_changes():
    pm = passes.PassManager([passes.cse, passes.dce, passes.simplify], check=True)
    out = pm.run(parse_graph(TEXT))
    names = [r.name for r in pm.records]
    assert names == ["cse", "dce", "simplify"]
    cse, dce, simplify = pm.records
    assert cse.changed and cse.nodes_before == 4 and cse.nodes_after == 3
    assert dce.changed and dce.nodes_after == 2
    assert not simplify.changed
    assert all(r.seconds >= 0 for r in pm.records)
    assert [n.op for n in out.nodes] == ["exp", "add"]
    report = pm.report()
    assert "cse" in report and "4 -> 3" in report


def test_disable_by_name_skips_the_pass():
    pm = passes.PassManager([passes.cse, passes.dce], disable=["dce"])
    out = pm.run(parse_graph(TEXT))
    assert pm.records[1].skipped
    assert "neg" in out.op_counts()
    with pytest.raises(GraphcError, match="unknown pass"):
        passes.PassManager([passes.dce], disable=["nope"])


def test_dump_to_directory_and_callback(tmp_path):
    seen = []
    passes.optimize(parse_graph(TEXT), dump=lambda name, g: seen.append((name, len(g.nodes))))
    assert [name for name, _ in seen] == [passes.manager.pass_name(p) for p in passes.default_pipeline()]
    passes.optimize(parse_graph(TEXT), dump=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files[0] == "00_input.dot" and "01_constant_fold.txt" in files
    text = (tmp_path / "02_simplify.txt").read_text()
    parse_graph(text)  # the dump is the text form
    assert "digraph" in (tmp_path / "02_simplify.dot").read_text()


def test_check_mode_names_the_pass_that_broke_the_graph():
    def breaker(g: Graph) -> Graph:
        g.nodes.append(Node("exp", [g.inputs[0]], {}, [g.nodes[0].outputs[0]]))
        return g

    breaker.name = "breaker"
    with pytest.raises(GraphcError, match="after pass breaker"):
        passes.PassManager([breaker], check=True).run(parse_graph(TEXT))


def test_optimize_leaves_its_argument_alone_and_keeps_meaning():
    g = mlp_graph(batch=4, sizes=(5, 7, 3))
    before = print_graph(g)
    out = passes.optimize(g, check=True)
    assert print_graph(g) == before
    assert_same_outputs(g, out, make_feeds(g))


def test_optimize_accepts_pass_names_and_rejects_unknown():
    g = fusion_chain_graph(4, 8)
    out = passes.optimize(g, passes=["simplify", "dce", "fusion"], check=True)
    assert out.op_counts() == {"fused": 1}
    with pytest.raises(GraphcError, match="unknown pass"):
        passes.optimize(g, passes=["no_such_pass"])


def test_disabling_fusion_bisects_it_away():
    g = fusion_chain_graph(4, 8)
    out = passes.optimize(g, disable=["fusion"], check=True)
    assert "fused" not in out.op_counts()
    assert_same_outputs(g, out, make_feeds(g))
