"""Batch-1 matrix-vector products (kernels/cpu/gemv.py): ``[1, K] @ W.T`` and ``[1, K] @ [K, N]``
against a float64 NumPy oracle, the same bits on any thread count, the layouts it declines, and
that plain and fused matmuls with one row reach it through ``blas.matmul_for``."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc
from graphc import functional as F
from graphc import nn
from graphc.kernels.cpu import blas, gemv


def _operands(k, n, dtype, layout, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((1, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    b = w.T if layout == "rows" else np.ascontiguousarray(w.T)
    return a, b


def _tol(dtype, k):
    return (2e-6 if dtype == np.float32 else 1e-13) * np.sqrt(k) * 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["rows", "columns"])
@settings(max_examples=12, deadline=None)
@given(k=st.integers(1, 300), n=st.integers(1, 200))
def test_matches_float64_oracle(dtype, layout, k, n):
    a, b = _operands(k, n, dtype, layout, seed=k * 1000 + n)
    out = np.full((1, n), np.nan, dtype)
    assert gemv.gemv(a, b, out)
    want = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    assert np.all(np.abs(out - want) <= _tol(dtype, k) * (scale + 1))


@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_same_bits_on_any_thread_count(layout):
    a, b = _operands(1024, 1003, np.float32, layout)
    outs = []
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            out = np.empty((1, 1003), np.float32)
            assert gemv.gemv(a, b, out)
            outs.append(out)
    finally:
        numba.set_num_threads(before)
    assert all(np.array_equal(outs[0], o) for o in outs)


def test_vector_shapes_and_unit_batch_axes():
    a, b = _operands(64, 40, np.float32, "columns")
    out = np.empty(40, np.float32)
    assert gemv.gemv(a[0], b[None], out)  # [K] @ [1, K, N] -> [N]
    np.testing.assert_allclose(out, a[0] @ b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("why", ["int", "strided", "over an operand", "matrix"])
def test_declines_and_the_fallback_is_right(why):
    a, b = _operands(256, 300, np.float32, "columns")
    out = np.empty((1, 300), np.float32)
    if why == "int":
        a, b, out = a.astype(np.int32), b.astype(np.int32), np.zeros((1, 300), np.int32)
    elif why == "strided":
        b = np.asfortranarray(np.zeros((512, 600), np.float32))[::2, ::2]
        b[...] = _operands(256, 300, np.float32, "columns")[1]
    elif why == "over an operand":
        a = np.zeros((1, 256), np.float32)
        b = np.eye(256, dtype=np.float32)
        out = a
    elif why == "matrix":
        a = np.ones((2, 256), np.float32)
        out = np.empty((2, 300), np.float32)
    want = a.astype(np.float64) @ b.astype(np.float64)
    assert not gemv.gemv(a, b, out)
    if why != "matrix":
        gemv.vector_matmul(a, b, out)
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-3)


def test_matmul_for_dispatch():
    assert blas.matmul_for(1024, (1, 1000)) is gemv.vector_matmul
    assert blas.matmul_for(1024, (1000,)) is gemv.vector_matmul
    assert blas.matmul_for(1024, (1, 1, 1000)) is gemv.vector_matmul
    assert blas.matmul_for(1024, (2, 1000)) is not gemv.vector_matmul
    assert blas.matmul_for(16, (1, 100)) is not gemv.vector_matmul  # small: serial BLAS
    assert blas.matmul_for(512, (1, 512)) is not gemv.vector_matmul  # weights that stay in cache


class _Head(nn.Module):
    def __init__(self, k, n):
        super().__init__()
        self.fc = nn.Linear(k, n)

    def forward(self, x):
        return F.relu(self.fc(x))


def test_fused_and_plain_one_row_matmuls_reach_gemv(monkeypatch):
    calls = []
    real = gemv.gemv

    def counting(a, b, out):
        done = real(a, b, out)
        calls.append(done)
        return done

    monkeypatch.setattr(gemv, "gemv", counting)
    model = _Head(1024, 600)  # 614,400 weights: above gemv.MIN_WEIGHTS
    x = np.random.default_rng(1).standard_normal((1, 1024)).astype(np.float32)
    plan = graphc.compile(model, x, freeze=True)
    assert any(n.op == "fused" and n.attrs.get("kind") == "matmul" for n in plan.graph.nodes)
    calls.clear()
    got = plan(x)
    assert calls and all(calls)
    w = model.fc.weight.numpy().astype(np.float64)
    bias = model.fc.bias.numpy().astype(np.float64)
    want = np.maximum(x.astype(np.float64) @ w.T + bias, 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
