"""Shared test helpers for the front end."""

import numpy as np
import pytest
from graphc.kernels.reference import execute


def run_graph(graph, *arrays):
    """Execute a traced graph on data arrays (in data-input order) with the reference kernels."""
    feeds = {v.name: np.asarray(a) for v, a in zip(graph.data_inputs, arrays)}
    outs = execute(graph, feeds)
    return outs[0] if len(outs) == 1 else outs


@pytest.fixture
def rng():
    """A fixed-seed NumPy generator."""
    return np.random.default_rng(1234)
