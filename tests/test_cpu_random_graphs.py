"""Random graphs of primitives, compiled whole for the CPU, give the reference executor's answer."""

import os

import numpy as np
import pytest
from graph_testing import graphs, make_feeds, parse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc.compiler import compile_graph
from graphc.kernels.reference import execute

# Each new graph compiles a few numba kernels (shape-generic, so later graphs reuse many):
# modest by default, GRAPHC_HYPOTHESIS_EXAMPLES=200 for a deeper search.
EXAMPLES = min(int(os.environ.get("GRAPHC_HYPOTHESIS_EXAMPLES", 15)), 200)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(max_ops=12), st.integers(0, 3))
def test_cpu_plan_of_a_random_graph_matches_reference(g, seed):
    feeds = make_feeds(g, seed)
    expected = execute(g, feeds)
    plan = compile_graph(g.copy())
    got = plan(*(feeds[v.name] for v in g.data_inputs))
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected)
    for r, e in zip(got, expected):
        np.testing.assert_allclose(r, e, rtol=2e-5, atol=1e-5)


# Graphs hypothesis found, kept as fixed cases.
VIEWS_OF_AN_IN_PLACE_RESULT = [
    # neg runs in place over x's copy in the arena and its result is returned in a fresh array;
    # the reshape (a view of the result) once still read the arena, which held x: min(x).
    """
    graph g(%x: f32[4]) {
      %0 = neg(%x) : f32[4]
      %3 = reshape(%0) {shape=(2, 2)} : f32[2,2]
      %10 = min(%3) {axes=(0, 1), keepdims=True} : f32[1,1]
      %12 = transpose(%10) {perm=(1, 0)} : f32[1,1]
      return %0, %12
    }
    """,
    # the same with a slice view (an offset into the result's bytes) in place of the reshape
    """
    graph g(%x: f32[2,16]) {
      %0 = neg(%x) : f32[2,16]
      %s = slice(%0) {starts=(1, 0), stops=(2, 16), steps=(1, 1)} : f32[1,16]
      %m = exp(%s) : f32[1,16]
      return %0, %m
    }
    """,
    # a result and a reshape of it both returned: the reshape is read from the arena after the
    # run, so the result may not go to a fresh array (the reshape once returned x)
    """
    graph g(%x: f32[9]) {
      %0 = neg(%x) : f32[9]
      %9 = reshape(%0) {shape=(9, 1)} : f32[9,1]
      return %0, %9
    }
    """,
]


@pytest.mark.parametrize("text", VIEWS_OF_AN_IN_PLACE_RESULT)
def test_views_of_an_in_place_result_read_its_values(text):
    g = parse(text)
    feeds = make_feeds(g, 0)
    expected = execute(g, feeds)
    plan = compile_graph(g.copy())
    bufs = plan.memory_plan.buffers
    assert bufs["0"].alias_of == "x"  # the case at issue: the result shares the input's bytes
    for _ in range(2):  # the second call reuses the first call's result arrays
        got = plan(*(feeds[v.name] for v in g.data_inputs))
        for r, e in zip(got, expected):
            np.testing.assert_allclose(r, e, rtol=2e-5, atol=1e-5)
