"""The parallel GEMM driver's column split (kernels/cpu/blas.py): a short, wide product (an RNN
step's ``h @ W_hh^T``) is split between threads by blocks of 16 columns, so that each thread
packs only its share of B; checked against NumPy in float64."""

import numba
import numpy as np
import pytest

from graphc.kernels.cpu import blas

pytestmark = [
    pytest.mark.skipif(blas.numpy_openblas() is None, reason="NumPy here does not bundle OpenBLAS"),
    pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least 2 numba threads"),
]


@pytest.fixture
def split_seen(monkeypatch):
    """Every driver call's ``cols`` argument (its last), recorded; numba on all its threads."""
    before = numba.get_num_threads()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    seen = []
    real = blas._driver

    def driver(int_bytes):
        fn = real(int_bytes)

        def call(*args):
            seen.append(args[-1])
            return fn(*args)

        return call

    monkeypatch.setattr(blas, "_driver", driver)
    yield seen
    numba.set_num_threads(before)


def _check(a, b, dtype=np.float32):
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    out = np.full(want.shape, np.nan, dtype)
    assert blas.parallel_matmul(a, b, out), "the parallel path declined"
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, want, rtol=0, atol=tol * np.abs(want).max() * a.shape[-1] ** 0.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1024, 1000, 72])  # whole blocks of 16, a ragged last one, 5 blocks
def test_short_wide_products_split_their_columns(split_seen, dtype, n):
    rng = np.random.default_rng(n)
    a = rng.standard_normal((32, 256)).astype(dtype)
    w = rng.standard_normal((n, 256)).astype(dtype)
    _check(a, w.T, dtype)  # B transposed (a weight's view): its columns are rows of w
    _check(a, np.ascontiguousarray(w.T), dtype)
    assert split_seen == [1, 1]


def test_an_odd_batch_of_short_wide_products_and_tall_ones_keep_row_blocks(split_seen):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 20, 64)).astype(np.float32)  # 3 matrices on 2 threads: split each
    b = rng.standard_normal((64, 600)).astype(np.float32)
    _check(a, b)
    tall, narrow = rng.standard_normal((600, 64)), rng.standard_normal((64, 100))
    _check(tall.astype(np.float32), narrow.astype(np.float32))
    assert split_seen == [1, 0]
