"""Concat in place: a concat whose operands are each one contiguous run of its result (a channel
concat at batch 1) costs nothing: the memory planner puts each operand at its place in the
result's bytes, the producers write there, and the runtime skips the concat. The checker
verifies such plans on its own and rejects forged ones."""

import dataclasses

import numpy as np
import pytest
from graph_testing import make_feeds, run_in_arena

from graphc import passes
from graphc.ir import Graph, GraphcError, TensorType
from graphc.kernels.reference import execute
from graphc.passes import check_memory_plan, plan_memory
from graphc.runtime import Plan


def _branches(channels=(16, 32, 16), hw=(4, 4), batch=1):
    """Three branches off one input (exp, tanh, x * 2 of slices), concatenated on the channels."""
    g = Graph("branches")
    total = sum(channels)
    x = g.add_input("x", TensorType((batch, total, *hw), "f32"))
    parts, at = [], 0
    ops = ("exp", "tanh", "neg")
    for i, c in enumerate(channels):
        s = g.op(
            "slice",
            x,
            starts=(0, at, 0, 0),
            stops=(batch, at + c, *hw),
            steps=(1, 1, 1, 1),
        )
        parts.append(g.op(ops[i % 3], s))
        at += c
    y = g.op("concat", *parts, axis=1)
    g.add_output(g.op("add", y, y))
    return g, parts, y


def _concat_node(g: Graph):
    return next(n for n in g.nodes if n.op == "concat")


def _planned(g: Graph):
    plan = plan_memory(g)
    check_memory_plan(g, plan)
    return plan


def _assert_runs(g: Graph, plan) -> None:
    feeds = make_feeds(g, 0)
    want = execute(g, feeds)
    for w, r in zip(want, run_in_arena(g, plan, feeds)):
        np.testing.assert_allclose(r, w, rtol=1e-6, atol=1e-6)


def test_channel_concat_at_batch_one_is_planned_in_place():
    g, parts, y = _branches()
    plan = _planned(g)
    bufs = plan.buffers
    root = bufs[y.name]
    assert root.alias_of is None
    places = [0, 16 * 16 * 4, 48 * 16 * 4]
    assert [(bufs[p.name].alias_of, bufs[p.name].offset - root.offset) for p in parts] == [
        (y.name, at) for at in places
    ]
    assert plan.is_view(_concat_node(g))
    assert root.start == min(bufs[p.name].start for p in parts)  # held from the first producer
    _assert_runs(g, plan)


def test_runtime_skips_the_concat_and_matches_the_reference():
    g, _, _ = _branches()
    g = passes.schedule(g)
    plan = Plan(g, plan_memory(g))
    assert "concat" not in [n.op for n in plan.step_nodes]
    x = np.random.default_rng(0).standard_normal(g.data_inputs[0].shape).astype(np.float32)
    np.testing.assert_allclose(plan(x), execute(g, {"x": x})[0], rtol=1e-6)
    np.testing.assert_allclose(plan(x + 1), execute(g, {"x": x + 1})[0], rtol=1e-6)


def _two(first: str, second: str, shape=(1, 16, 4, 4)):
    """concat(first, second) on the channels of [1, 16, 4, 4] values: each ``exp`` (its own
    exp of x), ``x`` (the graph input), ``same`` (the first operand again) or ``slice`` (the
    second half of exp(x) over 32 channels, a view at an offset)."""
    g = Graph("two")
    x = g.add_input("x", TensorType(shape, "f32"))
    made = {}

    def value(kind):
        if kind == "x":
            return x
        if kind == "same":
            return made["first"]
        if kind == "slice":
            e = g.op("exp", g.op("concat", x, x, axis=0))  # [2, 16, 4, 4]: a batch-2 concat, copied
            return g.op("slice", e, starts=(1, 0, 0, 0), stops=(2, *shape[1:]), steps=(1, 1, 1, 1))
        return g.op(kind, x)

    made["first"] = value(first)
    y = g.op("concat", made["first"], value(second), axis=1)
    g.add_output(g.op("exp", y))
    return g


CANNOT = {
    "batch 2": lambda: _branches(batch=2)[0],  # each operand is two runs of the result
    "misaligned": lambda: _branches(channels=(3, 5, 8), hw=(1, 1))[0],  # the second place: byte 12
    "graph input": lambda: _two("exp", "x"),
    "twice": lambda: _two("exp", "same"),
    "a slice at an offset": lambda: _two("tanh", "slice"),
    "no sharing": lambda: _branches()[0],
}


@pytest.mark.parametrize("why", list(CANNOT))
def test_concats_that_cannot_be_placed_are_copied(why):
    g = CANNOT[why]()
    plan = plan_memory(g, in_place=why != "no sharing")
    check_memory_plan(g, plan)
    last = [n for n in g.nodes if n.op == "concat"][-1]
    assert not plan.is_view(last)
    y = last.outputs[0].name
    assert all(plan.buffers[v.name].alias_of != y for v in last.inputs if v.name in plan.buffers)
    _assert_runs(g, plan)


def test_nested_concats_and_operands_read_later():
    g = Graph("nested")
    x = g.add_input("x", TensorType((1, 16, 4, 4), "f32"))
    a, b, c = g.op("exp", x), g.op("tanh", x), g.op("neg", x)
    inner = g.op("concat", a, b, axis=1)
    outer = g.op("concat", inner, c, axis=1)
    late = g.op("mul", a, c)  # a and c read after both concats
    g.add_output(g.op("add", g.op("sum", outer, axes=(1,)), g.op("sum", late, axes=(1,))))
    plan = _planned(g)
    bufs = plan.buffers
    root = bufs[outer.name]
    assert [bufs[v.name].alias_of for v in (a, b, c, inner)] == [outer.name] * 4
    assert [bufs[v.name].offset - root.offset for v in (a, b, inner, c)] == [0, 1024, 0, 2048]
    assert all(plan.is_view(n) for n in g.nodes if n.op == "concat")
    _assert_runs(g, plan)


def test_a_reshaped_product_is_placed_with_its_producer():
    # A 1x1 convolution's shape: the [C, HW] product reshaped to [1, C, H, W] before the concat.
    g = Graph("reshaped")
    x = g.add_input("x", TensorType((8, 16), "f32"))
    w1 = g.add_input("w1", TensorType((16, 8), "f32"))
    w2 = g.add_input("w2", TensorType((16, 8), "f32"))
    p1 = g.op("reshape", g.op("matmul", w1, x), shape=(1, 16, 4, 4))
    p2 = g.op("reshape", g.op("matmul", w2, x), shape=(1, 16, 4, 4))
    y = g.op("concat", p1, p2, axis=1)
    g.add_output(g.op("exp", y))
    plan = _planned(g)
    products = [n.outputs[0] for n in g.nodes if n.op == "matmul"]
    assert [plan.buffers[v.name].alias_of for v in products] == [y.name] * 2
    assert plan.is_view(_concat_node(g))
    _assert_runs(g, plan)


def _forge(plan, **moves):
    buffers = dict(plan.buffers)
    for name, (alias, offset) in moves.items():
        buffers[name] = dataclasses.replace(buffers[name], alias_of=alias, offset=offset)
    return dataclasses.replace(plan, buffers=buffers)


def test_checker_rejects_operands_off_their_places():
    g, parts, y = _branches()
    plan = _planned(g)
    root = plan.buffers[y.name]
    # The first and last operands (16 channels each) swapped: inside the result, not at their places.
    forged = _forge(
        plan,
        **{
            parts[0].name: (y.name, root.offset + 48 * 16 * 4),
            parts[2].name: (y.name, root.offset),
        },
    )
    with pytest.raises(GraphcError, match="alias"):
        check_memory_plan(g, forged)


def test_checker_rejects_a_concat_whose_operands_are_not_runs():
    # Batch 2: placing the operands back to back would be a wrong concat (they interleave).
    g, parts, y = _branches(batch=2)
    plan = plan_memory(g)
    root = plan.buffers[y.name]
    places, at = {}, 0
    for p in parts:
        places[p.name] = (y.name, root.offset + at)
        at += p.type.nbytes
    forged = _forge(plan, **places)
    assert not forged.is_view(_concat_node(g))  # the runtime would run it: still a bad plan
    with pytest.raises(GraphcError):
        check_memory_plan(g, forged)


def test_checker_rejects_an_operand_overwritten_while_the_result_lives():
    g = Graph("overwrite")
    x = g.add_input("x", TensorType((1, 16, 4, 4), "f32"))
    a, b = g.op("exp", x), g.op("tanh", x)
    y = g.op("concat", a, b, axis=1)
    z = g.op("neg", a)  # a's last reader: in place over a would clobber y's first half
    g.add_output(g.op("add", g.op("sum", y, axes=(1,)), g.op("sum", z, axes=(1,))))
    plan = _planned(g)
    za, aa = plan.buffers[z.name], plan.buffers[a.name]
    assert za.alias_of != y.name or za.offset != aa.offset  # not in place over a: y still lives
    _assert_runs(g, plan)
    forged = _forge(plan, **{z.name: (y.name, plan.buffers[a.name].offset)})
    with pytest.raises(GraphcError, match="overlap"):
        check_memory_plan(g, forged)


def test_in_place_over_an_operand_where_the_result_dies():
    # add(a, the second half of y) is the last reader of y's bytes: it may write over a's place.
    g = Graph("handoff")
    x = g.add_input("x", TensorType((1, 16, 4, 4), "f32"))
    a, b = g.op("exp", x), g.op("tanh", x)
    y = g.op("concat", a, b, axis=1)
    s = g.op("slice", y, starts=(0, 16, 0, 0), stops=(1, 32, 4, 4), steps=(1, 1, 1, 1))
    z = g.op("add", a, s)
    g.add_output(g.op("sum", z, axes=(0, 1)))
    plan = _planned(g)
    zb, yb = plan.buffers[z.name], plan.buffers[y.name]
    assert (zb.alias_of, zb.offset) == (y.name, yb.offset)
    assert (plan.buffers[s.name].alias_of, plan.buffers[s.name].offset) == (y.name, yb.offset + 1024)
    _assert_runs(g, plan)
