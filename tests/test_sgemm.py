"""The small-m float32 GEMM (kernels/cpu/sgemm.py, AVX-512 micro-kernel in sgemm_avx512.py) against
NumPy in float64: both drivers (B packed; A packed with the tiles stored transposed), every layout
of the operands, ragged edges of m, n and k, and the same bits on 1 and 2 numba threads."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphc.kernels.cpu import blas, conv_gemm, sgemm
from graphc.kernels.cpu.sgemm_avx512 import COLS, ROWS

pytestmark = pytest.mark.skipif(not sgemm.HAVE_AVX512, reason="this CPU (or numba's target) has no AVX-512")

DRIVERS = ("packed_a", "packed_b")


@pytest.fixture(autouse=True)
def restore_numba_threads():
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


def _operand(rng, rows: int, cols: int, layout: str) -> np.ndarray:
    """A float32 [rows, cols] matrix: row-major, a transposed view, or rows strided in a wider one."""
    if layout == "T":
        return rng.standard_normal((cols, rows), dtype=np.float32).T
    if layout == "strided":
        return rng.standard_normal((rows, cols + 5), dtype=np.float32)[:, 3 : 3 + cols]
    return rng.standard_normal((rows, cols), dtype=np.float32)


def _close64(out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """``out`` is the float64 ``a @ b`` within float64 rounding of each output's sum of |products|
    (OpenBLAS's blocking, which a thread split changes, may order the sum differently)."""
    assert np.all(np.abs(out - a @ b) <= 1e-13 * (np.abs(a) @ np.abs(b)))


def _check(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out`` is ``a @ b`` within float32 rounding of each output's sum of |products|."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    bound = np.abs(a64) @ np.abs(b64)
    err = np.abs(out.astype(np.float64) - a64 @ b64)
    assert np.all(err <= 1e-5 * bound + 1e-30), f"max error {np.max(err / (bound + 1e-30)):.3g} of sum |a||b|"


def _run(driver: str, a: np.ndarray, b: np.ndarray, parts: int) -> np.ndarray:
    out = np.full((a.shape[0], b.shape[1]), np.nan, np.float32)
    assert sgemm.run(driver, a, b, out, parts)
    return out


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("a_layout", ["C", "T", "strided"])
@pytest.mark.parametrize("b_layout", ["C", "T", "strided"])
def test_every_layout_matches_numpy(driver, a_layout, b_layout):
    rng = np.random.default_rng(0)
    m, k, n = 2 * ROWS + 3, 300, 2 * COLS + 7  # ragged everywhere; k > KC: two blocks of k
    assert k > sgemm.KC
    a, b = _operand(rng, m, k, a_layout), _operand(rng, k, n, b_layout)
    _check(a, b, _run(driver, a, b, 2))


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 70),
    k=st.integers(1, 2 * sgemm.KC + 20),
    n=st.integers(1, 3 * COLS + 5),
    transposed=st.booleans(),
    driver=st.sampled_from(DRIVERS),
    parts=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_ragged_shapes_and_any_split(m, k, n, transposed, driver, parts, seed):
    rng = np.random.default_rng(seed)
    a, b = _operand(rng, m, k, "C"), _operand(rng, k, n, "T" if transposed else "C")
    _check(a, b, _run(driver, a, b, parts))


@pytest.mark.parametrize("b_layout", ["C", "T"])
def test_same_bits_on_one_and_two_threads(b_layout):
    # Columns are shared out whole: every output is summed in one order, whatever the split.
    rng = np.random.default_rng(3)
    a, b = _operand(rng, 32, 520, "C"), _operand(rng, 520, 1000, b_layout)
    outs = []
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        numba.set_num_threads(threads)
        out = np.full((32, 1000), np.nan, np.float32)
        assert sgemm.small_m_matmul(a, b, out)
        outs.append(out)
    _check(a, b, outs[0])
    assert outs[0].tobytes() == outs[1].tobytes()
    for parts in (3, 7):  # any split of the panels gives the same bits as well
        for driver in DRIVERS:
            assert _run(driver, a, b, parts).tobytes() == _run(driver, a, b, 1).tobytes()


def test_read_only_operands_and_a_strided_output():
    # A plan's constant weights are read-only arrays; its outputs may be views into a wider arena.
    rng = np.random.default_rng(6)
    a, b = _operand(rng, 24, 200, "C"), _operand(rng, 200, 300, "T")
    a.flags.writeable = False
    b.base.flags.writeable = False
    arena = np.full((24, 310), np.nan, np.float32)
    assert sgemm.small_m_matmul(a, b, arena[:, 5:305])
    _check(a, b, arena[:, 5:305])
    assert np.isnan(arena[:, :5]).all() and np.isnan(arena[:, 305:]).all()


def test_declines_leave_the_output_alone():
    rng = np.random.default_rng(4)
    a, b = _operand(rng, 32, 256, "C"), _operand(rng, 256, 512, "C")
    for x, y in [
        (a.astype(np.float64), b.astype(np.float64)),  # another dtype
        (a[:, ::2], b[::2]),  # no unit stride
        (a[:4], b),  # too few rows: most of a tile idle
        (np.stack([a, a]), b),  # a batch
    ]:
        out = np.full((*x.shape[:-1], y.shape[-1]), np.nan, x.dtype)
        assert not sgemm.small_m_matmul(x, y, out)
        assert np.isnan(out).all()
    out = np.full((32, 512), np.nan, np.float32)
    assert not sgemm.small_m_matmul(a, b, out[:, ::-1])  # output columns not contiguous
    square = _operand(rng, 64, 64, "C")
    assert not sgemm.small_m_matmul(square, square, square)  # the output over an operand


def test_the_cpu_matmul_routes_short_wide_products_here(monkeypatch):
    # An LSTM step's h @ W_hh^T and its backward dgates @ W_hh; tall products stay on BLAS.
    assert blas.matmul_for(256, (32, 1024)) is blas.small_rows_matmul
    assert blas.matmul_for(1024, (32, 256)) is blas.small_rows_matmul
    assert blas.matmul_for(256, (2048, 1024)) is blas.matmul  # tall and large: OpenBLAS
    assert blas.matmul_for(64, (2048, 1024)).__name__ != "avx512_matmul"  # shallow: low_depth
    assert blas.matmul_for(256, (512, 1024)).__name__ == "avx512_matmul"  # tall: blas.tiled_matmul
    assert blas.matmul_for(256, (4, 32, 1024)) is blas.matmul  # batched
    monkeypatch.setattr(sgemm, "HAVE_AVX512", False)  # another CPU: OpenBLAS on numba's threads
    monkeypatch.setattr(conv_gemm, "HAVE_AVX512", False)
    assert blas.matmul_for(256, (32, 1024)) is blas.matmul
    assert blas.matmul_for(256, (2048, 1024)) is blas.matmul
    monkeypatch.undo()
    calls = []
    real = sgemm.small_m_matmul
    monkeypatch.setattr(sgemm, "small_m_matmul", lambda *args: calls.append(1) or real(*args))
    rng = np.random.default_rng(5)
    w = _operand(rng, 1024, 256, "C")
    h = _operand(rng, 32, 256, "C")
    out = np.full((32, 1024), np.nan, np.float32)
    blas.small_rows_matmul(h, w.T, out)
    _check(h, w.T, out)
    out64 = np.full((32, 1024), np.nan)
    blas.small_rows_matmul(h.astype(np.float64), w.T.astype(np.float64), out64)  # declined: BLAS
    _close64(out64, h.astype(np.float64), w.T.astype(np.float64))
    assert len(calls) == 2


# ---------------------------------------------------------------- few columns: c.T = b.T @ a.T


def _run_few_columns(a: np.ndarray, b: np.ndarray, parts: int) -> np.ndarray:
    out = np.full((a.shape[0], b.shape[1]), np.nan, np.float32)
    assert sgemm.run("few_columns", a, b, out, parts)
    return out


@pytest.mark.parametrize("a_layout", ["C", "T", "strided"])
@pytest.mark.parametrize("b_layout", ["C", "T", "strided"])
def test_few_columns_every_layout_matches_numpy(a_layout, b_layout):
    rng = np.random.default_rng(10)
    m, k, n = 2 * COLS + 5, 2 * sgemm.KC_T + 37, 3 * ROWS + 1  # ragged everywhere; three blocks of k
    a, b = _operand(rng, m, k, a_layout), _operand(rng, k, n, b_layout)
    _check(a, b, _run_few_columns(a, b, 2))


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 3 * COLS + 5),
    k=st.integers(1, 2 * sgemm.KC_T + 20),
    n=st.integers(1, 70),
    transposed=st.booleans(),
    parts=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_few_columns_ragged_shapes_and_any_split(m, k, n, transposed, parts, seed):
    rng = np.random.default_rng(seed)
    a, b = _operand(rng, m, k, "T" if transposed else "C"), _operand(rng, k, n, "C")
    _check(a, b, _run_few_columns(a, b, parts))


def test_few_columns_same_bits_on_one_and_two_threads():
    # A late ResNet convolution's [O, K] @ [K, 7 * 7]: rows of the output shared out whole.
    rng = np.random.default_rng(11)
    a, b = _operand(rng, 200, 700, "C"), _operand(rng, 700, 49, "C")
    outs = []
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        numba.set_num_threads(threads)
        out = np.full((200, 49), np.nan, np.float32)
        assert sgemm.few_columns_matmul(a, b, out)
        outs.append(out)
    _check(a, b, outs[0])
    assert outs[0].tobytes() == outs[1].tobytes()
    for parts in (3, 7):
        assert _run_few_columns(a, b, parts).tobytes() == _run_few_columns(a, b, 1).tobytes()


def test_few_columns_into_a_strided_output_and_declines():
    rng = np.random.default_rng(12)
    a, b = _operand(rng, 300, 200, "C"), _operand(rng, 200, 24, "strided")
    a.flags.writeable = False
    arena = np.full((300, 40), np.nan, np.float32)
    assert sgemm.few_columns_matmul(a, b, arena[:, 5:29])
    _check(a, b, arena[:, 5:29])
    assert np.isnan(arena[:, :5]).all() and np.isnan(arena[:, 29:]).all()
    for x, y in [
        (a.astype(np.float64), b.astype(np.float64)),  # another dtype
        (a, _operand(rng, 200, 10, "C")),  # too few columns: most of two 8-row tiles idle
        (a, _operand(rng, 200, 100, "C")),  # too many: OpenBLAS does as well
        (a[:40], b),  # too few rows to share out
        (np.stack([a, a]), b),  # a batch
    ]:
        out = np.full((*x.shape[:-1], y.shape[-1]), np.nan, x.dtype)
        assert not sgemm.few_columns_matmul(x, y, out)
        assert np.isnan(out).all()
    out = np.full((300, 24), np.nan, np.float32)
    assert not sgemm.few_columns_matmul(a, b, out[:, ::-1])  # output columns not contiguous
    big = np.zeros((300, 300), np.float32)
    assert not sgemm.few_columns_matmul(big, big[:, :24], big[:, 100:124])  # the output over an operand


def test_the_cpu_matmul_routes_few_column_and_batch_one_products_here(monkeypatch):
    # Batch-1 convolutions: [O, K] @ [1, K, HW] into [1, O, HW]; few columns (7 x 7) or few rows.
    assert blas.matmul_for(4608, (1, 512, 49)) is blas.few_columns_matmul
    assert blas.matmul_for(1024, (2048, 49)) is blas.few_columns_matmul
    assert blas.matmul_for(576, (1, 64, 3136)) is blas.small_rows_matmul
    assert blas.matmul_for(1024, (1, 1, 256, 196)).__name__ == "avx512_matmul"  # 196 columns: tiled
    assert blas.matmul_for(4608, (2, 512, 49)) is blas.matmul  # a batch
    assert blas.matmul_for(2048, (4, 1000)) is blas.matmul  # batch-1 inference's few rows: OpenBLAS
    assert blas.matmul_for(512, (128, 10)) is blas.matmul  # an MLP's logits: too few columns
    monkeypatch.setattr(sgemm, "HAVE_AVX512", False)
    monkeypatch.setattr(conv_gemm, "HAVE_AVX512", False)
    assert blas.matmul_for(4608, (1, 512, 49)) is blas.matmul
    monkeypatch.undo()
    calls = []
    real = sgemm.few_columns_matmul
    monkeypatch.setattr(sgemm, "few_columns_matmul", lambda *args: calls.append(1) or real(*args))
    rng = np.random.default_rng(13)
    w, cols = _operand(rng, 256, 300, "C"), rng.standard_normal((1, 300, 49), dtype=np.float32)
    out = np.full((1, 256, 49), np.nan, np.float32)
    blas.few_columns_matmul(w, cols, out)
    _check(w, cols[0], out[0])
    out64 = np.full((1, 256, 49), np.nan)
    blas.few_columns_matmul(w.astype(np.float64), cols.astype(np.float64), out64)  # declined: BLAS
    _close64(out64[0], w.astype(np.float64), cols[0].astype(np.float64))
    assert len(calls) == 2


def test_a_fused_conv_bias_relu_on_a_7x7_image_matches_torch(monkeypatch):
    # The convolution's GEMM [128, 576] @ [576, 49] takes the few-columns kernel and the fused
    # epilogue (bias, ReLU) still applies to its product.
    import torch

    import graphc
    from graphc import functional as F

    calls = []
    real = sgemm.few_columns_matmul
    monkeypatch.setattr(sgemm, "few_columns_matmul", lambda *args: calls.append(1) or real(*args))
    rng = np.random.default_rng(14)
    x = rng.standard_normal((1, 64, 7, 7), dtype=np.float32)
    w = rng.standard_normal((128, 64, 3, 3), dtype=np.float32) * 0.1
    bias = rng.standard_normal(128, dtype=np.float32)
    plan = graphc.compile(lambda x, w, bias: F.relu(F.conv2d(x, w, bias, 1, 1)), x, w, bias)
    got = plan(x, w, bias)
    tx, tw, tb = (torch.from_numpy(v.astype(np.float64)) for v in (x, w, bias))
    want = torch.relu(torch.nn.functional.conv2d(tx, tw, tb, 1, 1)).numpy()
    bound = torch.nn.functional.conv2d(tx.abs(), tw.abs(), tb.abs(), 1, 1).numpy()
    assert got.shape == want.shape and calls
    assert np.all(np.abs(got - want) <= 1e-5 * bound + 1e-30)
    assert (got == 0).any() and (got > 0).any()  # the ReLU ran


# ---------------------------------------------------------------- the first row tile packs B's panel


@pytest.mark.parametrize("width", [COLS, COLS - 7, 5])
def test_the_copying_tile_stores_the_panel_sgemm_pack_stores(width):
    # packed_b's first row tile reads B's rows as they lie and leaves the packed panel for the
    # others: the same panel (zeros past the width) and the same product bits as pack-then-tile.
    from numba import njit

    from graphc.kernels.cpu.sgemm_avx512 import sgemm_pack, sgemm_tile, sgemm_tile_copy

    @njit
    def copying(a, b, j0, width, buf, c):
        sgemm_tile_copy(a, 0, a.shape[0], 3, 40, b, j0, buf, c, 0, 0, width, 0)

    @njit
    def packing(a, b, j0, width, buf, c):
        sgemm_pack(b, 3, 40, j0, width, buf)
        sgemm_tile(a, 0, a.shape[0], 3, 40, buf, 0, COLS, c, 0, 0, width, 0)

    rng = np.random.default_rng(20)
    a = rng.standard_normal((ROWS - 2, 50), dtype=np.float32)
    b = rng.standard_normal((50, 3 * COLS), dtype=np.float32)[:, 2:]  # rows contiguous, strided
    j0 = b.shape[1] - width
    got = [np.full(40 * COLS, np.nan, np.float32), np.full((ROWS - 2, COLS), np.nan, np.float32)]
    want = [np.full(40 * COLS, np.nan, np.float32), np.full((ROWS - 2, COLS), np.nan, np.float32)]
    copying(a, b, j0, width, *got)
    packing(a, b, j0, width, *want)
    assert got[0].tobytes() == want[0].tobytes()
    assert (got[0].reshape(40, COLS)[:, width:] == 0).all()
    assert got[1].tobytes() == want[1].tobytes()
    _check(a[:, 3:43], b[3:43, j0:], got[1][:, :width])


def test_few_columns_leaves_a_large_transposed_a_to_blas():
    # An LSTM's dW_ih = dgates.T @ x: a transposed view of 2M elements runs on OpenBLAS.
    rng = np.random.default_rng(21)
    g = rng.standard_normal((2048, 1024), dtype=np.float32)
    x = rng.standard_normal((2048, 64), dtype=np.float32)
    out = np.full((1024, 64), np.nan, np.float32)
    assert g.size >= sgemm.TRANSPOSED_A_LIMIT
    assert not sgemm.few_columns_matmul(g.T, x, out)
    assert np.isnan(out).all()
    blas.few_columns_matmul(g.T, x, out)  # the driver instead
    _check(g.T, x, out)
    small = g[:256].T[:, :]  # 1024 x 256: a transposed view below the limit stays here
    out = np.full((1024, 64), np.nan, np.float32)
    assert sgemm.few_columns_matmul(small, x[:256], out)
    _check(small, x[:256], out)
