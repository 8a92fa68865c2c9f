"""The parallel GEMM driver (kernels/cpu/blas.py) against NumPy's matmul in float64."""

import numba
import numpy as np
import pytest

from graphc.kernels.cpu import blas

pytestmark = [
    pytest.mark.skipif(blas.numpy_openblas() is None, reason="NumPy here does not bundle OpenBLAS"),
    pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least 2 numba threads"),
]

TOL = {np.float32: 2e-5, np.float64: 1e-12}


@pytest.fixture(autouse=True)
def all_numba_threads():
    # Other tests (the bench's) may have left numba on fewer threads.
    before = numba.get_num_threads()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    yield
    numba.set_num_threads(before)


def _check(a, b, dtype=np.float32):
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    out = np.full(want.shape, np.nan, dtype)
    assert blas.parallel_matmul(a, b, out), "the parallel path declined"
    scale = np.abs(want).max()
    np.testing.assert_allclose(out, want, rtol=0, atol=TOL[dtype] * scale * a.shape[-1] ** 0.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_matrix_split_in_row_blocks(dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((203, 160)).astype(dtype)  # odd rows: unequal blocks
    b = rng.standard_normal((160, 90)).astype(dtype)
    _check(a, b, dtype)


def test_transposed_and_strided_operands():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((160, 300)).astype(np.float32).T  # (300, 160), unit row stride
    b = rng.standard_normal((96, 2 * 160)).astype(np.float32)[:, 7 : 7 + 160].T  # ld 320
    _check(a, b)


def test_attention_views_of_one_projection():
    # q and k read straight out of a [batch, seq, 3 * heads * dim] projection, as attention does.
    rng = np.random.default_rng(2)
    qkv = rng.standard_normal((4, 64, 3 * 2 * 32)).astype(np.float32)
    q = qkv[..., :64].reshape(4, 64, 2, 32).transpose(0, 2, 1, 3)
    k = qkv[..., 64:128].reshape(4, 64, 2, 32).transpose(0, 2, 3, 1)
    _check(q, k)


@pytest.mark.parametrize("batch", [3, 8])  # 3 does not share out evenly: row blocks too
def test_batches_with_broadcast_operands(batch):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((48, 72)).astype(np.float32)  # one matrix for the whole batch
    cols = rng.standard_normal((batch, 72, 100)).astype(np.float32)
    _check(w, cols)
    x = rng.standard_normal((batch, 1, 40, 72)).astype(np.float32)  # a size-1 batch axis
    y = rng.standard_normal((1, 2, 72, 90)).astype(np.float32)
    _check(x, y)


def test_declines_leave_the_output_alone():
    rng = np.random.default_rng(4)
    big = rng.standard_normal((256, 256)).astype(np.float32)
    cases = [
        (big.astype(np.int64), big.astype(np.int64), np.int64),  # no integer GEMM in BLAS
        (big[:8, :8], big[:8, :8], np.float32),  # too little work
        (big[::2, ::2], big[::2, ::2], np.float32),  # no unit stride: BLAS cannot take it
        (big, big.astype(np.float64), np.float64),  # mixed dtypes
    ]
    for a, b, dtype in cases:
        out = np.zeros((a.shape[0], b.shape[1]), dtype)
        assert not blas.parallel_matmul(a, b, out)
        assert not out.any()


def test_wrong_shapes_are_refused():
    a = np.ones((256, 64), np.float32)
    with pytest.raises(ValueError, match="matmul of"):
        blas.parallel_matmul(a, np.ones((65, 256), np.float32), np.empty((256, 256), np.float32))
    with pytest.raises(ValueError, match="does not broadcast"):
        blas.parallel_matmul(
            np.ones((3, 256, 64), np.float32),
            np.ones((2, 64, 256), np.float32),
            np.empty((2, 256, 256), np.float32),
        )


def test_blas_thread_count_is_restored_and_one_numba_thread_declines():
    lib = blas.numpy_openblas()
    before = lib.get_threads()
    a = np.ones((256, 256), np.float32)
    out = np.empty_like(a)
    assert blas.parallel_matmul(a, a, out)
    assert lib.get_threads() == before
    numba.set_num_threads(1)
    assert not blas.parallel_matmul(a, a, out)


def test_matmul_agrees_with_numpy_on_every_path():
    # blas.matmul is the CPU matmul kernel: the tall single GEMM, the parallel driver, np.matmul.
    rng = np.random.default_rng(5)
    for a_shape, b_shape in [((2, 96, 160), (160, 64)), ((4, 8, 8), (4, 8, 8)), ((300, 200), (200, 50))]:
        a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
        out = np.empty(np.matmul(a, b).shape)
        blas.matmul(a, b, out)
        np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)


def test_small_gemms_skip_the_thread_pool():
    # Decided once per kernel from the shapes: below the threshold NumPy runs the GEMM directly.
    assert blas.matmul_for(256, (64, 20)) is blas.serial_matmul  # mlp_small_train: 327K multiply-adds
    assert blas.matmul_for(256, (8, 128, 1024)) is blas.matmul
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((3, 5, 7)).astype(np.float32), rng.standard_normal((7, 4)).astype(np.float32)
    out = np.full((3, 5, 4), np.nan, np.float32)
    blas.serial_matmul(a, b, out)  # a stack of rows times one matrix: one GEMM over all rows
    np.testing.assert_allclose(out, a.astype(np.float64) @ b.astype(np.float64), rtol=0, atol=1e-5)
