"""The PassManager's compile-time switches: no change tracking on request, the collector held off."""

import gc

import pytest

from graphc import passes
from graphc.ir import GraphcError, parse_graph
from graphc.passes.manager import gc_paused

TEXT = """
graph g(%x: f32[2,3]) {
  %a = exp(%x) : f32[2,3]
  %b = exp(%x) : f32[2,3]
  %c = add(%a, %b) : f32[2,3]
  return %c
}
"""


def test_without_change_tracking_the_records_say_unchanged_and_the_result_is_the_same():
    tracked = passes.PassManager([passes.cse, passes.dce])
    untracked = passes.PassManager([passes.cse, passes.dce], track_changes=False)
    a, b = tracked.run(parse_graph(TEXT)), untracked.run(parse_graph(TEXT))
    assert str(a) == str(b)
    assert [r.changed for r in tracked.records] == [True, False]
    assert [r.changed for r in untracked.records] == [False, False]
    assert [r.nodes_after for r in untracked.records] == [2, 2]


def test_the_collector_is_off_inside_passes_and_restored_after_a_failing_one():
    seen = []

    def probe(graph):
        seen.append(gc.isenabled())
        return graph

    def broken(graph):
        return None

    probe.name, broken.name = "probe", "broken"
    assert gc.isenabled()
    passes.PassManager([probe]).run(parse_graph(TEXT))
    assert seen == [False] and gc.isenabled()
    with pytest.raises(GraphcError, match="broken"):
        passes.PassManager([probe, broken]).run(parse_graph(TEXT))
    assert gc.isenabled()


def test_gc_paused_nests_and_leaves_a_disabled_collector_disabled():
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
