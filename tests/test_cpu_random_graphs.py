"""Random graphs of primitives, compiled whole for the CPU, give the reference executor's answer."""

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc.compiler import compile_graph
from graphc.kernels.reference import execute
from graphc.passes.testing import graphs, make_feeds

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
