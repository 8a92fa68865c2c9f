"""The AVX-512 GEMM's folded epilogue (kernels/cpu/sgemm.py ``leaves``; kernels/cpu/__init__.py
``_added_leaves``, blas.folding) and its low-depth route (``low_depth_matmul``): ``a @ b + x + y``
in one kernel gives the bits of the product followed by the separate float32 adds in the graph's
order, on every driver, layout and thread count; against NumPy in float64 and torch."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc
from graphc.kernels.cpu import blas, sgemm
from graphc.kernels.cpu.sgemm_avx512 import COLS, ROWS

pytestmark = pytest.mark.skipif(not sgemm.HAVE_AVX512, reason="this CPU (or numba's target) has no AVX-512")

DRIVERS = ("packed_a", "packed_b", "few_columns")


@pytest.fixture(autouse=True)
def restore_numba_threads():
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


def _leaf(rng, m: int, n: int, kind: str) -> np.ndarray:
    """An addend: a row vector ``[n]`` or ``[1, n]``, a ``[m, n]`` matrix, or one strided in a wider one."""
    if kind == "vector":
        return rng.standard_normal(n, dtype=np.float32)
    if kind == "row":
        return rng.standard_normal((1, n), dtype=np.float32)
    if kind == "strided":
        return rng.standard_normal((m, n + 9), dtype=np.float32)[:, 4 : 4 + n]
    return rng.standard_normal((m, n), dtype=np.float32)


def _separately(driver: str, a, b, leaves, parts: int) -> np.ndarray:
    """The product from the same kernel, then each addend added by NumPy in float32, in order."""
    out = np.full((a.shape[0], b.shape[1]), np.nan, np.float32)
    assert sgemm.run(driver, a, b, out, parts)
    for leaf in leaves:
        out = out + leaf
    return out


def _folded(driver: str, a, b, leaves, parts: int) -> np.ndarray:
    out = np.full((a.shape[0], b.shape[1]), np.nan, np.float32)
    assert sgemm.run(driver, a, b, out, parts, leaves)
    return out


def _check_close(a, b, leaves, out) -> None:
    """``out`` is ``a @ b + sum(leaves)`` within float32 rounding (float64 oracle)."""
    want = a.astype(np.float64) @ b.astype(np.float64)
    bound = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    for leaf in leaves:
        want = want + leaf
        bound = bound + np.abs(leaf)
    assert np.all(np.abs(out - want) <= 1e-5 * bound + 1e-30)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("kinds", [("vector",), ("vector", "matrix"), ("matrix", "row", "strided", "vector")])
def test_folded_adds_are_the_separate_adds_bit_for_bit(driver, kinds):
    rng = np.random.default_rng(0)
    m, k, n = 2 * COLS + 5, 300, 3 * ROWS + 37  # ragged; k over two blocks of every driver
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((n, k), dtype=np.float32).T
    leaves = tuple(_leaf(rng, m, n, kind) for kind in kinds)
    got = _folded(driver, a, b, leaves, 2)
    assert got.tobytes() == _separately(driver, a, b, leaves, 2).tobytes()
    _check_close(a, b, leaves, got)


@settings(max_examples=20, deadline=None)
@given(
    m=st.integers(1, 70),
    k=st.integers(1, 2 * sgemm.KC + 3),
    n=st.integers(1, 3 * COLS + 5),
    driver=st.sampled_from(DRIVERS),
    kinds=st.lists(st.sampled_from(["vector", "row", "matrix", "strided"]), min_size=1, max_size=4),
    parts=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_ragged_shapes_any_split(m, k, n, driver, kinds, parts, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    leaves = tuple(_leaf(rng, m, n, kind) for kind in kinds)
    got = _folded(driver, a, b, leaves, parts)
    assert got.tobytes() == _separately(driver, a, b, leaves, 1).tobytes()


def test_same_bits_on_one_and_two_threads():
    rng = np.random.default_rng(1)
    h = rng.standard_normal((32, 256), dtype=np.float32)
    w = rng.standard_normal((1024, 256), dtype=np.float32)
    leaves = (_leaf(rng, 32, 1024, "vector"), _leaf(rng, 32, 1024, "matrix"))
    outs = []
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        numba.set_num_threads(threads)
        for b in (w.T, np.ascontiguousarray(w.T)):  # packed_a, packed_b
            out = np.full((32, 1024), np.nan, np.float32)
            assert sgemm.small_m_matmul(h, b, out, leaves)
            outs.append(out.tobytes())
    assert len(set(outs)) == 1


def test_addends_that_do_not_fit_are_declined():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((32, 64), dtype=np.float32)
    b = rng.standard_normal((64, 128), dtype=np.float32)
    out = np.full((32, 128), np.nan, np.float32)
    column = rng.standard_normal((32, 1), dtype=np.float32)
    for leaves in [
        (column,),  # a column broadcast along the rows: not a row vector
        (np.zeros(128),),  # float64
        (np.zeros((32, 128), np.float32)[:, ::-1],),  # no unit stride along a row
        (out,),  # the output itself: written before it is read
        (np.zeros(128, np.float32),) * (sgemm.MAX_LEAVES + 1),  # too many
    ]:
        assert not sgemm.small_m_matmul(a, b, out, leaves)
        assert np.isnan(out).all()


# ---------------------------------------------------------------- through the compiler


@pytest.fixture
def folds(monkeypatch):
    """The number of addends of every AVX-512 kernel call (0: the product only)."""
    seen = []
    for name in ("small_m_matmul", "few_columns_matmul", "low_depth_matmul"):
        real = getattr(sgemm, name)

        def spy(a, b, out, leaves=(), _real=real):
            seen.append(len(leaves))
            return _real(a, b, out, leaves)

        monkeypatch.setattr(sgemm, name, spy)
    monkeypatch.setattr(
        blas,
        "_FOLDING",
        {
            blas.small_rows_matmul: sgemm.small_m_matmul,
            blas.few_columns_matmul: sgemm.few_columns_matmul,
            blas.low_depth_matmul: sgemm.low_depth_matmul,
        },
    )
    return seen


BODIES = {
    "lstm step": lambda h, w, bias, xs: xs + (h @ w.T + bias),
    "bias first": lambda h, w, bias, xs: (bias + h @ w.T) + xs,
    "matrix first": lambda h, w, bias, xs: (h @ w.T + xs) + bias,
}


@pytest.mark.parametrize("body", list(BODIES))
@pytest.mark.parametrize("m", [24, 256])  # few rows (small-m kernel); many (low-depth route, k = 64)
def test_a_compiled_matmul_plus_adds_folds_and_matches(folds, monkeypatch, body, m):
    import torch

    k = 256 if m < 64 else 64
    rng = np.random.default_rng(3)
    h = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((160, k), dtype=np.float32)
    bias = rng.standard_normal(160, dtype=np.float32)
    xs = rng.standard_normal((m, 160), dtype=np.float32)
    fn = BODIES[body]
    got = graphc.compile(fn, h, w, bias, xs)(h, w, bias, xs)
    assert folds and max(folds) == 2, "the adds did not fold into the kernel"
    monkeypatch.setattr(blas, "folding", lambda matmul: None)  # the separate epilogue loop
    unfolded = graphc.compile(fn, h, w, bias, xs)(h, w, bias, xs)
    assert got.tobytes() == unfolded.tobytes()
    th, tw, tb, tx = (torch.from_numpy(v.astype(np.float64)) for v in (h, w, bias, xs))
    want = fn(th, tw, tb, tx).numpy()
    bound = (th.abs() @ tw.abs().T + tb.abs() + tx.abs()).numpy()
    assert np.all(np.abs(got - want) <= 1e-5 * bound)


def test_other_epilogues_keep_their_loop(folds):
    rng = np.random.default_rng(4)
    h = rng.standard_normal((24, 256), dtype=np.float32)
    w = rng.standard_normal((160, 256), dtype=np.float32)
    bias = rng.standard_normal(160, dtype=np.float32)
    got = graphc.compile(lambda h, w, bias: graphc.functional.relu(h @ w.T + bias), h, w, bias)(h, w, bias)
    assert folds and max(folds) == 0
    want = np.maximum(h.astype(np.float64) @ w.T.astype(np.float64) + bias, 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- low depth: x @ W.T with k <= KC_T


def test_shallow_products_route_to_the_kernel():
    assert blas.matmul_for(64, (2048, 1024)) is blas.low_depth_matmul  # an LSTM's input projection
    assert blas.matmul_for(sgemm.KC_T, (256, 256)) is blas.low_depth_matmul
    # deeper, or too shallow: the convolution GEMM's kernel without an epilogue (blas.tiled_matmul),
    # up to blas.TILED_MAX_WORK multiply-adds, then OpenBLAS
    assert blas.matmul_for(sgemm.KC_T + 1, (1024, 1024)).__name__ == "avx512_matmul"
    assert blas.matmul_for(8, (2048, 1024)).__name__ == "avx512_matmul"
    assert blas.matmul_for(sgemm.KC_T + 1, (2048, 1024)) is blas.matmul
    assert blas.matmul_for(64, (4, 2048, 1024)) is blas.matmul  # a batch


@pytest.mark.parametrize("m, k, n", [(2048, 64, 1024), (300, 17, 100), (97, 128, 333)])
def test_low_depth_matches_numpy_with_the_same_bits_on_any_thread_count(m, k, n):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    outs = []
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        numba.set_num_threads(threads)
        out = np.full((m, n), np.nan, np.float32)
        assert sgemm.low_depth_matmul(x, w.T, out)
        outs.append(out)
    _check_close(x, w.T, (), outs[0])
    assert outs[0].tobytes() == outs[1].tobytes()


def test_low_depth_declines_a_row_major_b():
    # B row-major: OpenBLAS did as well there; blas.low_depth_matmul then runs the driver.
    rng = np.random.default_rng(6)
    x = rng.standard_normal((300, 64), dtype=np.float32)
    b = rng.standard_normal((64, 200), dtype=np.float32)
    out = np.full((300, 200), np.nan, np.float32)
    assert not sgemm.low_depth_matmul(x, b, out)
    assert np.isnan(out).all()
    blas.low_depth_matmul(x, b, out)
    _check_close(x, b, (), out)
