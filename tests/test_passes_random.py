"""Every pass keeps the meaning of random well-typed graphs (hypothesis), and plans stay valid."""

import os

import numpy as np
from graph_testing import assert_same_outputs, graphs, make_feeds, run_in_arena
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc import passes
from graphc.ir import print_graph, verify
from graphc.passes import check_memory_plan, plan_memory
from graphc.passes.schedule import is_topological

# Modest by default so the suite stays fast; GRAPHC_HYPOTHESIS_EXAMPLES=1000 for a deeper search.
EXAMPLES = int(os.environ.get("GRAPHC_HYPOTHESIS_EXAMPLES", 40))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SINGLE = [
    passes.dce,
    passes.cse,
    passes.constant_fold,
    passes.simplify,
    passes.fusion,
    passes.schedule,
    passes.freeze,
]


@SETTINGS
@given(graphs(), st.sampled_from(SINGLE), st.integers(0, 3))
def test_each_pass_keeps_meaning(g, p, seed):
    verify(g)
    out = p(g.copy())
    verify(out)
    assert_same_outputs(g, out, make_feeds(g, seed))


@SETTINGS
@given(graphs(max_ops=14), st.booleans(), st.integers(0, 3))
def test_pipeline_keeps_meaning(g, freeze, seed):
    out = passes.optimize(g, freeze=freeze, check=True)
    # freeze folds scales into weights, which rounds differently
    rtol = 1e-4 if freeze else 1e-5
    assert_same_outputs(g, out, make_feeds(g, seed), rtol=rtol, atol=1e-5)
    assert passes.kernel_count(out) <= passes.kernel_count(g)


@SETTINGS
@given(graphs(max_ops=14), st.integers(0, 3))
def test_random_plans_are_valid_and_run_in_their_arena(g, seed):
    out = passes.schedule(passes.optimize(g))
    assert is_topological(out, out.nodes)
    plan = plan_memory(out)
    check_memory_plan(out, plan)
    assert plan.lower_bound <= plan.arena_bytes <= plan.naive_bytes + 64 * (len(plan.buffers) + 1)
    feeds = make_feeds(out, seed)
    want = passes.optimize(g, passes=[])  # a plain copy, executed as written
    from graphc.kernels.reference import execute

    expected = execute(want, feeds)
    for e, r in zip(expected, run_in_arena(out, plan, feeds)):
        np.testing.assert_allclose(r, e, rtol=1e-5, atol=1e-6, equal_nan=True)


@settings(max_examples=min(EXAMPLES, 30), deadline=None)
@given(graphs(max_ops=14))
def test_optimized_text_round_trips(g):
    from graphc.ir import parse_graph

    out = passes.optimize(g)
    text = print_graph(out)
    assert print_graph(parse_graph(text)) == text
