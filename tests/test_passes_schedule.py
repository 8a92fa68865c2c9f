"""schedule: a valid topological order that never raises the peak and lowers it where it can."""

from graph_testing import assert_same_outputs, cnn_graph, make_feeds, parse, transformer_layer_graph

from graphc import passes
from graphc.ir import verify
from graphc.passes import peak_bytes, schedule
from graphc.passes.schedule import is_topological

BRANCHES = """
graph g(%x: f32[4096]) {
  %e1 = exp(%x) : f32[4096]
  %e2 = sin(%x) : f32[4096]
  %e3 = cos(%x) : f32[4096]
  %s1 = sum(%e1) {axes=(0,), keepdims=False} : f32[]
  %s2 = sum(%e2) {axes=(0,), keepdims=False} : f32[]
  %s3 = sum(%e3) {axes=(0,), keepdims=False} : f32[]
  %a = add(%s1, %s2) : f32[]
  %b = add(%a, %s3) : f32[]
  return %b
}
"""


def test_greedy_interleaves_branches_to_lower_the_peak():
    g = parse(BRANCHES)
    before = peak_bytes(g)
    out = schedule(parse(BRANCHES))
    verify(out)
    assert is_topological(out, out.nodes)
    after = peak_bytes(out)
    assert after < before
    assert after <= 2 * 4096 * 4 + 3 * 64  # x plus one branch at a time
    assert [n.op for n in out.nodes[:2]] == ["exp", "sum"]
    assert_same_outputs(g, out, make_feeds(g))


def test_schedule_never_raises_the_peak_on_examples():
    for g in (transformer_layer_graph(), cnn_graph(), transformer_layer_graph(batch=1, seq=8, d=16)):
        opt = passes.optimize(g)
        before = peak_bytes(opt)
        out = schedule(opt.copy())
        verify(out)
        assert is_topological(out, out.nodes)
        assert sorted(id(n) for n in out.nodes) != [] and len(out.nodes) == len(opt.nodes)
        assert peak_bytes(out) <= before
        assert_same_outputs(g, out, make_feeds(g))


def test_is_topological_rejects_a_bad_order():
    g = parse(BRANCHES)
    assert is_topological(g, g.nodes)
    assert not is_topological(g, list(reversed(g.nodes)))
