"""A transpose that only matmuls read, several of them, joins each one's prologue (passes/fusion.py)."""

import numpy as np

import graphc
from graphc import passes


def test_a_transpose_read_by_two_matmuls_is_a_view_in_each(rng):
    # cse merges the two a.T (as it does an LSTM's dgates^T of dW_ih and dW_hh); fusion gives each
    # matmul its own copy in its prologue, so BLAS reads a transposed view and nothing copies a.
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in ((6, 4), (6, 3), (6, 5)))
    g = graphc.trace(lambda a, b, c: ((a.T @ b) * 2, (a.T @ c) + 1), a, b, c)
    opt = passes.optimize(g)
    assert [n.op for n in opt.nodes] == ["fused", "fused"]
    assert all(n.attrs["kind"] == "matmul" for n in opt.nodes)
    got = graphc.compile(lambda a, b, c: ((a.T @ b) * 2, (a.T @ c) + 1), a, b, c)(a, b, c)
    np.testing.assert_allclose(got[0], (a.T @ b) * 2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], (a.T @ c) + 1, rtol=1e-5, atol=1e-5)


def test_a_transpose_also_read_by_something_else_stays_one_node(rng):
    a, b = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((6, 3)).astype(np.float32)
    g = graphc.trace(lambda a, b: (a.T @ b, a.T.exp()), a, b)
    opt = passes.optimize(g)
    assert sum(n.op == "transpose" for n in opt.nodes) <= 1
    got = graphc.compile(lambda a, b: (a.T @ b, a.T.exp()), a, b)(a, b)
    np.testing.assert_allclose(got[0], a.T @ b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], np.exp(a.T), rtol=1e-5, atol=1e-6)
