"""Memory plans: liveness, aliases, in-place reuse, the independent checker, and arena figures.

Run with ``-s`` to see naive bytes / lower bound / planned arena for the example graphs.
"""

import dataclasses

import numpy as np
import pytest
from graph_testing import (
    cnn_graph,
    const,
    fusion_chain_graph,
    make_feeds,
    mlp_graph,
    parse,
    run_in_arena,
    transformer_layer_graph,
)

from graphc import passes
from graphc.ir import GraphcError, MemoryPlan
from graphc.kernels.reference import execute
from graphc.passes import check_memory_plan, plan_memory
from graphc.passes.autodiff import grad


def planned(g, optimize=True):
    if optimize:
        g = passes.optimize(g)
    g = passes.schedule(g)
    plan = plan_memory(g)
    check_memory_plan(g, plan)
    return g, plan


def assert_runs_in_arena(g, plan, seed=0):
    feeds = make_feeds(g, seed)
    want = execute(g, feeds)
    got = run_in_arena(g, plan, feeds)
    for w, r in zip(want, got):
        np.testing.assert_allclose(r, w, rtol=1e-6, atol=1e-6)


def with_backward(g):
    out = g.outputs[0]
    square = g.op("mul", out, out)
    loss = g.op(
        "div", g.op("sum", square, axes=tuple(range(len(out.shape)))), const(g, float(out.type.numel))
    )
    g.outputs = [loss]
    return grad(g)[0]


EXAMPLES = {
    "mlp forward 64x20-256-10": lambda: mlp_graph(),
    "mlp forward+backward": lambda: with_backward(mlp_graph(batch=32, sizes=(20, 64, 10))),
    "transformer layer 2x16x32": lambda: transformer_layer_graph(),
    "transformer layer 8x128x256": lambda: transformer_layer_graph(batch=8, seq=128, d=256, heads=4, ff=1024),
    "transformer forward+backward": lambda: with_backward(transformer_layer_graph()),
    "cnn forward 4x3x16x16": lambda: cnn_graph(),
    "cnn forward+backward": lambda: with_backward(cnn_graph()),
    "fusion chain 64x128 (unfused)": lambda: fusion_chain_graph(),
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_plans_are_tight_and_valid(name):
    for optimize in (True, False):
        g, plan = planned(EXAMPLES[name](), optimize=optimize)
        ratio = plan.arena_bytes / plan.lower_bound
        print(
            f"\n{name:32s} optimized={optimize!s:5s} nodes={len(g.nodes):4d} naive={plan.naive_bytes:>10,d} "
            f"lower_bound={plan.lower_bound:>10,d} arena={plan.arena_bytes:>10,d} "
            f"arena/lb={ratio:.3f} naive/arena={plan.naive_bytes / plan.arena_bytes:.2f}"
        )
        assert plan.lower_bound <= plan.arena_bytes <= 1.10 * plan.lower_bound
        assert plan.arena_bytes <= plan.naive_bytes
        if "8x128x256" not in name:
            assert_runs_in_arena(g, plan)


def test_big_graphs_plan_far_below_naive():
    _, plan = planned(transformer_layer_graph(batch=8, seq=128, d=256, heads=4, ff=1024), optimize=False)
    assert plan.arena_bytes * 3 < plan.naive_bytes


def test_live_ranges_inputs_outputs_and_reshape_alias():
    g = parse(
        """
        graph g(%x: f32[4,4], %w: f32[4,4] param = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]) {
          %a = matmul(%x, %w) : f32[4,4]
          %r = reshape(%a) {shape=(16,)} : f32[16]
          %b = sum(%r) {axes=(0,), keepdims=False} : f32[]
          %c = mul(%a, %b) : f32[4,4]
          return %c, %b
        }
        """
    )
    plan = plan_memory(g)
    check_memory_plan(g, plan)
    bufs = plan.buffers
    assert "w" not in bufs  # params live outside the arena
    assert (bufs["x"].start, bufs["x"].end) == (-1, 0)
    assert bufs["r"].alias_of == "a" and bufs["r"].offset == bufs["a"].offset
    # c is written over a (a dies at the mul), so a's bytes stay live to the end with c.
    assert bufs["c"].alias_of == "a" and (bufs["c"].start, bufs["c"].end) == (3, 4)
    assert (bufs["a"].start, bufs["a"].end) == (0, len(g.nodes))
    assert bufs["b"].end == len(g.nodes)
    assert plan.naive_bytes == 5 * 64  # x, a, r, b, c, each rounded up to the alignment
    assert_runs_in_arena(g, plan)


def test_in_place_reuse_of_a_dying_operand():
    g = parse(
        """
        graph g(%x: f32[8,8]) {
          %a = exp(%x) : f32[8,8]
          %b = neg(%a) : f32[8,8]
          %c = tanh(%b) : f32[8,8]
          %d = add(%c, %x) : f32[8,8]
          return %d
        }
        """
    )
    plan = plan_memory(g)
    check_memory_plan(g, plan)
    bufs = plan.buffers
    assert bufs["b"].alias_of == "a" and bufs["c"].alias_of == "a"
    assert bufs["d"].alias_of in ("a", "x")  # both operands die at the add
    assert plan.arena_bytes == 2 * 256
    assert_runs_in_arena(g, plan)
    no_reuse = plan_memory(g, in_place=False)
    check_memory_plan(g, no_reuse)
    assert no_reuse.arena_bytes > plan.arena_bytes


def test_no_in_place_over_a_graph_output_or_a_value_read_later():
    g = parse(
        """
        graph g(%x: f32[8,8]) {
          %a = exp(%x) : f32[8,8]
          %b = neg(%a) : f32[8,8]
          %c = tanh(%b) : f32[8,8]
          %d = add(%c, %b) : f32[8,8]
          return %d, %a
        }
        """
    )
    plan = plan_memory(g)
    check_memory_plan(g, plan)
    bufs = plan.buffers
    assert bufs["b"].alias_of is None  # a is an output
    assert bufs["c"].alias_of is None  # b is read again by the add
    assert_runs_in_arena(g, plan)


def test_contiguous_aligned_slices_are_views():
    # attention's q, k, v split out of one projection: blocks of the leading axis, no copies
    g = parse(
        """
        graph g(%x: f32[3,4,8], %y: f32[4,8]) {
          %p = exp(%x) : f32[3,4,8]
          %q = slice(%p) {starts=(0, 0, 0), stops=(1, 4, 8), steps=(1, 1, 1)} : f32[1,4,8]
          %k = slice(%p) {starts=(1, 0, 0), stops=(2, 4, 8), steps=(1, 1, 1)} : f32[1,4,8]
          %m = slice(%p) {starts=(0, 2, 0), stops=(1, 4, 8), steps=(1, 1, 1)} : f32[1,2,8]
          %odd = slice(%p) {starts=(2, 1, 0), stops=(3, 2, 8), steps=(1, 1, 1)} : f32[1,1,8]
          %mid = slice(%p) {starts=(0, 0, 2), stops=(3, 4, 6), steps=(1, 1, 1)} : f32[3,4,4]
          %a = add(%q, %k) : f32[1,4,8]
          %b = mul(%a, %y) : f32[1,4,8]
          return %b, %m, %odd, %mid
        }
        """
    )
    plan = plan_memory(g)
    check_memory_plan(g, plan)
    bufs = plan.buffers
    root, base = bufs["p"].alias_of or "p", bufs["p"].offset  # exp may run in place over x
    assert (bufs["q"].alias_of, bufs["q"].offset) == (root, base)
    assert (bufs["k"].alias_of, bufs["k"].offset) == (root, base + 128)
    assert (bufs["m"].alias_of, bufs["m"].offset) == (root, base + 64)  # rows 2-3 of block 0
    assert bufs["odd"].alias_of is None  # byte 288 is not 64-aligned: copied
    assert bufs["mid"].alias_of is None  # inner columns are not one block: copied
    assert [plan.is_view(n) for n in g.nodes if n.op == "slice"] == [True, True, True, False, False]
    assert_runs_in_arena(g, plan)


def test_no_in_place_over_a_slice_another_operand_overlaps():
    g = parse(
        """
        graph g(%x: f32[3,4,16]) {
          %p = exp(%x) : f32[3,4,16]
          %a = slice(%p) {starts=(0, 0, 0), stops=(2, 4, 16), steps=(1, 1, 1)} : f32[2,4,16]
          %b = slice(%p) {starts=(1, 0, 0), stops=(3, 4, 16), steps=(1, 1, 1)} : f32[2,4,16]
          %c = sub(%b, %a) : f32[2,4,16]
          return %c
        }
        """
    )
    plan = plan_memory(g)
    check_memory_plan(g, plan)
    root = plan.buffers["p"].alias_of or "p"
    assert plan.buffers["a"].alias_of == root and plan.buffers["b"].alias_of == root
    assert plan.buffers["c"].alias_of is None  # over a, it would clobber b's first row before use
    assert_runs_in_arena(g, plan)


def test_checker_rejects_a_slice_view_at_the_wrong_offset():
    g = parse(
        """
        graph g(%x: f32[2,16]) {
          %p = exp(%x) : f32[2,16]
          %s = slice(%p) {starts=(1, 0), stops=(2, 16), steps=(1, 1)} : f32[1,16]
          %t = neg(%s) : f32[1,16]
          %u = add(%t, %p) : f32[2,16]
          return %u
        }
        """
    )
    plan = plan_memory(g)
    check_memory_plan(g, plan)
    assert plan.buffers["s"].alias_of is not None
    moved = dataclasses.replace(plan.buffers["s"], offset=plan.buffers["p"].offset)
    bad = dataclasses.replace(plan, buffers={**plan.buffers, "s": moved})
    with pytest.raises(GraphcError, match="must sit at offset 64"):
        check_memory_plan(g, bad)
    # Not an alias any more (the runtime would run it): then its bytes clash with %p's.
    unaliased = dataclasses.replace(moved, alias_of=None)
    with pytest.raises(GraphcError, match="overlap"):
        check_memory_plan(g, dataclasses.replace(plan, buffers={**plan.buffers, "s": unaliased}))


def test_checker_rejects_an_alias_that_is_not_a_view():
    g = parse(
        """
        graph g(%x: f32[4,16]) {
          %p = exp(%x) : f32[4,16]
          %s = slice(%p) {starts=(0, 0), stops=(4, 16), steps=(2, 1)} : f32[2,16]
          %r = reshape(%s) {shape=(32,)} : f32[32]
          %t = neg(%r) : f32[32]
          return %t
        }
        """
    )
    plan = plan_memory(g)
    check_memory_plan(g, plan)
    assert plan.buffers["s"].alias_of is None  # every other row: not one block
    buffers = plan.buffers

    def edited(**changes):
        out = dict(buffers)
        for name, fields in changes.items():
            out[name] = dataclasses.replace(out[name], **fields)
        return dataclasses.replace(plan, buffers=out)

    # The strided slice marked as a view of %p's bytes: the runtime would skip it and read %p's rows.
    with pytest.raises(GraphcError, match="not a view"):
        check_memory_plan(g, edited(s={"alias_of": "x", "offset": buffers["p"].offset}))
    # An alias of a buffer that is itself an alias, or of an unknown value.
    with pytest.raises(GraphcError, match="not a root"):
        check_memory_plan(g, edited(t={"alias_of": "r"}))
    with pytest.raises(GraphcError, match="not a root"):
        check_memory_plan(g, edited(t={"alias_of": "nowhere"}))
    # A neg "in place" over bytes that are not its operand's.
    with pytest.raises(GraphcError, match="neither views nor writes in place"):
        check_memory_plan(g, edited(t={"alias_of": "x", "offset": buffers["x"].offset}))
    # A data input is never an alias.
    with pytest.raises(GraphcError, match="data input"):
        check_memory_plan(g, edited(x={"alias_of": "p"}))
    # An arena far larger than the buffers side by side.
    with pytest.raises(GraphcError, match="side by side"):
        check_memory_plan(g, dataclasses.replace(plan, arena_bytes=8 * 2**30))


def test_no_in_place_for_reductions_and_shape_changes():
    g = parse(
        """
        graph g(%x: f32[8,8], %y: f32[8]) {
          %a = exp(%x) : f32[8,8]
          %s = sum(%a) {axes=(1,), keepdims=False} : f32[8]
          %b = add(%s, %y) : f32[8]
          %c = broadcast_to(%b) {shape=(2, 8)} : f32[2,8]
          return %c
        }
        """
    )
    plan = plan_memory(g)
    check_memory_plan(g, plan)
    assert plan.buffers["s"].alias_of is None and plan.buffers["c"].alias_of is None
    assert plan.buffers["b"].alias_of in ("s", "y")


def _broken(plan: MemoryPlan, **changes) -> MemoryPlan:
    name, fields = next(iter(changes.items()))
    buffers = dict(plan.buffers)
    buffers[name] = dataclasses.replace(buffers[name], **fields)
    return MemoryPlan(plan.arena_bytes, buffers, plan.naive_bytes, plan.lower_bound, plan.alignment)


def test_checker_catches_overlaps_and_bad_buffers():
    g = parse(
        """
        graph g(%x: f32[16]) {
          %a = exp(%x) : f32[16]
          %b = sin(%x) : f32[16]
          %c = add(%a, %b) : f32[16]
          %r = reshape(%c) {shape=(4, 4)} : f32[4,4]
          %d = sum(%r) {axes=(1,), keepdims=False} : f32[4]
          return %d
        }
        """
    )
    plan = plan_memory(g)
    check_memory_plan(g, plan)
    a = plan.buffers["a"]
    with pytest.raises(GraphcError, match="overlap|outside its bytes"):  # b may be in place over x
        check_memory_plan(g, _broken(plan, b={"offset": a.offset}))
    with pytest.raises(GraphcError, match="overlap|outside its bytes"):
        check_memory_plan(g, _broken(plan, x={"offset": a.offset}))  # x is read by sin after exp wrote a
    with pytest.raises(GraphcError, match="aligned"):
        check_memory_plan(g, _broken(plan, a={"offset": a.offset + 4}))
    with pytest.raises(GraphcError, match="fit"):
        check_memory_plan(g, _broken(plan, d={"offset": plan.arena_bytes}))
    with pytest.raises(GraphcError, match="planned for"):
        check_memory_plan(g, _broken(plan, c={"end": 2}))
    missing = MemoryPlan(plan.arena_bytes, {k: v for k, v in plan.buffers.items() if k != "d"})
    with pytest.raises(GraphcError, match="missing"):
        check_memory_plan(g, missing)
    # A reduction's output may not take over its operand's bytes: it is not an in-place op.
    r, d = plan.buffers["r"], plan.buffers["d"]
    with pytest.raises(GraphcError, match="overlap"):
        check_memory_plan(g, _broken(plan, d={"offset": r.offset}))
    assert d.offset != r.offset or d.alias_of


def test_plan_round_trips_through_json():
    g, plan = planned(mlp_graph(batch=4, sizes=(5, 6, 3)))
    again = MemoryPlan.from_json(plan.to_json())
    check_memory_plan(g, again)
    assert again == plan


# ---------------------------------------------------------------- concat in place (gradient buckets)
def _bucket_graph(read_after: bool = False):
    """exp(x) [4x16 f32: 256 B], reshape(sum(y)) [4 f32], x + 1 (a graph input's neighbour): one
    packed bucket; ``read_after``: the first gradient is also read after the start."""
    from graphc.ir import Graph, TensorType

    g = Graph("bucket")
    x = g.add_input("x", TensorType((4, 16), "f32"))
    y = g.add_input("y", TensorType((3, 4), "f32"))
    a = g.op("exp", x)
    s = g.op("sum", y, axes=(0,))
    b = g.op("reshape", s, shape=(2, 2))
    grads = [a, b, x]
    start = g.add_node("allreduce_start", grads, {"bucket": 0, "packed": True})
    wait = g.add_node("allreduce_wait", [start.output], {"shapes": [v.shape for v in grads], "bucket": 0})
    for v in wait.outputs:
        g.add_output(v)
    if read_after:
        g.add_output(g.op("sum", a, axes=(0,)))
    return g, start


def test_bucket_gradients_are_placed_in_the_bucket_buffer():
    g, start = _bucket_graph()
    plan = plan_memory(g)
    check_memory_plan(g, plan)
    bufs = plan.buffers
    a, b, x = start.inputs
    s = g.producers()[b].inputs[0]
    root = bufs[start.output.name]
    assert root.alias_of is None
    # exp's output and the sum under the reshape are written straight into their places.
    assert bufs[a.name].alias_of == start.output.name and bufs[a.name].offset == root.offset
    assert bufs[s.name].alias_of == start.output.name and bufs[s.name].offset == root.offset + 256
    assert bufs[b.name].offset == root.offset + 256 and plan.is_view(g.producers()[b])
    # A graph input is not placed (the caller's bytes); the buffer is held from exp on.
    assert bufs[x.name].alias_of is None
    # The wait averages over the gradients' places (aligned ones): the buffer holds the results.
    wait = g.nodes[-1]
    assert [bufs[v.name].alias_of for v in wait.outputs] == [start.output.name] * 2 + [None]
    assert [bufs[v.name].offset - root.offset for v in wait.outputs[:2]] == [0, 256]
    assert root.start == 0 and root.end == len(g.nodes)
    assert_runs_in_arena(g, plan)
    # The planner without sharing leaves the packing copy.
    unshared = plan_memory(g, in_place=False).buffers
    assert unshared[a.name].alias_of is None and unshared[s.name].alias_of is None


def test_a_gradient_read_after_its_start_stays_out_of_the_bucket():
    g, start = _bucket_graph(read_after=True)
    plan = plan_memory(g)
    check_memory_plan(g, plan)
    a = start.inputs[0]
    assert plan.buffers[a.name].alias_of is None  # MPI writes the buffer while the sum reads a
    assert_runs_in_arena(g, plan)


def test_checker_accepts_bucket_places_and_rejects_corrupted_ones():
    g, start = _bucket_graph()
    plan = plan_memory(g)
    buffers, name = plan.buffers, start.output.name
    a, b, _ = start.inputs
    s = g.producers()[b].inputs[0]

    def edited(**changes):
        out = dict(buffers)
        for key, fields in changes.items():
            out[key] = dataclasses.replace(out[key], **fields)
        return dataclasses.replace(plan, buffers=out)

    check_memory_plan(g, plan)
    # The first gradient at the second one's place (and the sum with its view at the first's).
    root = buffers[name].offset
    with pytest.raises(GraphcError, match="gradient at its place"):
        check_memory_plan(g, edited(**{a.name: {"offset": root + 256}}))
    with pytest.raises(GraphcError, match="gradient at its place"):
        check_memory_plan(g, edited(**{s.name: {"offset": root}}, **{b.name: {"offset": root}}))
    # The reshape left at the old place of its operand: not a view of it.
    with pytest.raises(GraphcError, match="must sit at offset"):
        check_memory_plan(g, edited(**{b.name: {"offset": root}}))
    # An average at another average's place.
    out0, out1 = g.nodes[-1].outputs[:2]
    with pytest.raises(GraphcError, match="gradient at its place"):
        check_memory_plan(g, edited(**{out1.name: {"offset": root}}))
    # The bucket buffer read after its wait: the averages may not be written over it.
    g3, start3 = _bucket_graph()
    g3.add_output(g3.op("sum", start3.output, axes=(0,)))
    plan3 = plan_memory(g3)
    check_memory_plan(g3, plan3)
    first = g3.nodes[-2].outputs[0] if g3.nodes[-2].op == "allreduce_wait" else g3.nodes[-1].outputs[0]
    assert plan3.buffers[first.name].alias_of is None
    moved3 = dict(plan3.buffers)
    root3 = moved3[start3.output.name]
    moved3[first.name] = dataclasses.replace(moved3[first.name], offset=root3.offset, alias_of=root3.value)
    with pytest.raises(GraphcError, match="overlap"):
        check_memory_plan(g3, dataclasses.replace(plan3, buffers=moved3))
    # A gradient read after the start, put in the bucket: MPI would write it while it is read.
    g2, start2 = _bucket_graph(read_after=True)
    plan2 = plan_memory(g2)
    a2, name2 = start2.inputs[0], start2.output.name
    moved = dict(plan2.buffers)
    moved[a2.name] = dataclasses.replace(moved[a2.name], offset=moved[name2].offset, alias_of=name2)
    with pytest.raises(GraphcError, match="overlap"):
        check_memory_plan(g2, dataclasses.replace(plan2, buffers=moved))
