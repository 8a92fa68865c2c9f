"""GEMMs bound to a loop step's arrays (``sgemm.bind_small_m_matmul``, ``blas.bind_product``, the
fused matmul's ``bind`` that kernels/cpu/control_flow.py's scan schedule calls): the bits of the
unbound call on every path (per-call packing, packed A, panels packed once per loop window),
declining where the unbound call declines, never a stale pack, never a dense copy bound; the
compiled entry points they call (``entry_points``), the cheap thread count (``threads.num_threads``)."""

import threading

import numba
import numpy as np
import pytest

import graphc
from graphc import control_flow as cf
from graphc import passes
from graphc.kernels.cpu import blas, sgemm
from graphc.kernels.cpu import loop_invariant as li
from graphc.kernels.cpu.entry_points import entry_point
from graphc.kernels.cpu.threads import num_threads
from graphc.runtime import Plan

avx512 = pytest.mark.skipif(not sgemm.HAVE_AVX512, reason="the small-m GEMM needs AVX-512")


def _bits(x: np.ndarray) -> np.ndarray:
    return x.view(np.int32)


def _on_threads(fn, counts=(1, 2)) -> list:
    """``fn()`` on each thread count (up to numba's pool), numba's count restored after."""
    before = numba.get_num_threads()
    try:
        out = []
        for t in counts:
            numba.set_num_threads(min(t, numba.config.NUMBA_NUM_THREADS))
            out.append(fn())
        return out
    finally:
        numba.set_num_threads(before)


# ---------------------------------------------------------------------------- the thread count
def test_num_threads_follows_set_num_threads_in_each_python_thread():
    def counts() -> tuple[int, int]:
        return num_threads(), numba.get_num_threads()

    for got, want in _on_threads(counts, (1, 2, 1)):
        assert got == want
    seen = []
    worker = threading.Thread(target=lambda: (numba.set_num_threads(1), seen.append(counts())))
    worker.start()
    worker.join()
    assert seen == [(1, 1)]


# ---------------------------------------------------------------------------- entry points
def test_entry_point_only_where_the_dispatcher_would_pass_the_arguments_as_they_are():
    from numba import types

    ro = types.Array(types.float32, 2, "A", readonly=True)

    @numba.njit(types.void(ro, types.Array(types.float32, 2, "A"), types.UniTuple(ro, 2)))
    def kernel(a, out, pair):
        out[0, 0] = a[0, 0] + pair[0][0, 0] + pair[1][0, 0]

    a = np.ones((2, 2), np.float32)
    out = np.zeros((2, 2), np.float32)
    fast = entry_point(kernel, (a, out, (a, a.T)))  # C and F layouts into "A", writable into read-only
    assert fast is not kernel
    fast(a, out, (a, a.T))
    assert out[0, 0] == 3
    assert entry_point(kernel, (a.astype(np.float64), out, (a, a))) is kernel  # another dtype
    frozen = out.copy()
    frozen.flags.writeable = False
    assert entry_point(kernel, (a, frozen, (a, a))) is kernel  # read-only into a written parameter
    assert entry_point(len, ((),)) is len  # not a dispatcher


def test_entry_point_follows_the_argument_types_and_new_overloads():
    @numba.njit
    def double(x, out):
        for i in range(x.shape[0]):
            out[i] = 2 * x[i]

    x, out = np.arange(8, dtype=np.float32), np.zeros(8, np.float32)
    assert entry_point(double, (x, out)) is double  # nothing compiled yet
    double(x, out)
    dense = entry_point(double, (x, out))
    assert dense is not double and entry_point(double, (x, out)) is dense
    strided = x[::2]
    assert entry_point(double, (strided, out[:4])) is double  # another layout: no overload yet
    double(strided, out[:4])
    other = entry_point(double, (strided, out[:4]))
    assert other is not double and other is not dense
    other(strided, out[:4])
    np.testing.assert_array_equal(out[:4], 2 * strided)


# ---------------------------------------------------------------------------- the bound kernel
@avx512
@pytest.mark.parametrize(
    ("m", "k", "n", "transposed", "leaves"),
    [
        (32, 256, 1024, False, "rm"),  # an LSTM step's h @ W_hh^T + bias + xs[t]
        (32, 1024, 256, True, ""),  # its backward's dgates @ W_hh (a transposed view)
        (13, 300, 100, False, "m"),  # two depth blocks, a ragged row tile and panel
        (9, 300, 70, True, "r"),
    ],
)
@pytest.mark.parametrize("window", [False, True])
def test_bound_gemm_has_the_bits_of_the_unbound_call(rng, m, k, n, transposed, leaves, window):
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k)).astype(np.float32).T if transposed else rng.standard_normal((k, n))
    b = b.astype(np.float32, copy=False)
    adds = tuple(rng.standard_normal((n,) if c == "r" else (m, n)).astype(np.float32) for c in leaves)

    def both() -> tuple[np.ndarray, np.ndarray]:
        want = np.full((m, n), np.nan, np.float32)
        got = np.full((m, n), np.nan, np.float32)
        call = sgemm.bind_small_m_matmul(a, b, got, adds)
        with li.loop_invariants([b] if window else []):
            assert sgemm.small_m_matmul(a, b, want, adds)
            for _ in range(2):  # the second call reuses the window's panels
                got[...] = np.nan
                assert call()
        return want, got

    for want, got in _on_threads(both):
        np.testing.assert_array_equal(_bits(got), _bits(want))
    ref = a.astype(np.float64) @ b.astype(np.float64) + sum(x.astype(np.float64) for x in adds)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@avx512
def test_bound_gemm_declines_where_the_unbound_call_does(rng):
    buf = rng.standard_normal((16, 128)).astype(np.float32)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    a, out = buf[:, :64], buf[:, 64:]  # out between the rows of a
    before = buf.copy()
    call = sgemm.bind_small_m_matmul(a, w, out)
    assert call is not None and not call()
    with li.loop_invariants([w]):
        assert not call()
    np.testing.assert_array_equal(buf, before)  # nothing written
    x = rng.standard_normal((16, 64)).astype(np.float32)
    assert sgemm.bind_small_m_matmul(x.astype(np.float64), w, out) is None  # float64
    assert sgemm.bind_small_m_matmul(x[:2], w, out[:2]) is None  # too few rows
    assert sgemm.bind_small_m_matmul(x, w, np.empty((16, 64), np.float32), (out[:, :3],)) is None


@avx512
def test_bound_gemm_repacks_a_weight_changed_in_place_in_the_next_window(rng):
    # One bound call, the same weight array (the same address) with new values in the next loop
    # call: its panels are packed again; a pack kept from the first window would give old values.
    a = rng.standard_normal((32, 128)).astype(np.float32)
    w = rng.standard_normal((128, 256)).astype(np.float32)
    out = np.empty((32, 256), np.float32)
    call = sgemm.bind_small_m_matmul(a, w, out)
    for _ in range(3):
        with li.loop_invariants([w]):
            assert call() and call()
        np.testing.assert_allclose(out, a.astype(np.float64) @ w, rtol=1e-4, atol=1e-4)
        w[...] = rng.standard_normal(w.shape)


def test_binding_is_packed_for_one_array(rng):
    w = rng.standard_normal((8, 6)).astype(np.float32)
    fills = []

    def fill(b, buf):
        fills.append(1)
        buf[:] = b.ravel()

    bound = li.binding("t", w, w.size, fill)
    assert bound() is None  # outside any window
    with li.loop_invariants([w]):
        first = bound()
        assert first is li.packed("t", w, w.size, fill) is bound() and len(fills) == 1
        assert li.binding("t", w[:0], 0, fill)() is None  # no bytes
    with li.loop_invariants([w[:4]]):
        assert bound() is None  # not wholly inside a promised array
    assert len(fills) == 1


@avx512
def test_bind_product_never_binds_a_dense_copy(rng):
    a = rng.standard_normal((32, 64)).astype(np.float32)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    out = np.empty((32, 256), np.float32)
    matmul = blas.matmul_for(64, (32, 256))
    assert matmul is blas.small_rows_matmul
    assert blas.bind_product(matmul, a, w, out, [a, w]) is not None
    assert blas.bind_product(matmul, a, w.copy(), out, [a, w]) is None  # b not a view of the inputs
    assert blas.bind_product(blas.matmul, a, w, out, [a, w]) is None  # OpenBLAS: no bound form


# ---------------------------------------------------------------------------- plans
@avx512
def test_a_scan_plan_binds_its_step_gemms_with_the_bits_of_unbound_ones(rng, monkeypatch):
    # An LSTM-like step: a product with folded adds (c @ W + bias + x[t]) whose halves feed a
    # pointwise cell, and a plain product on a transposed weight (new @ V.T): each step's two
    # GEMMs bound once, when the schedule is built.
    length, batch, hidden = 4, 32, 128

    def fn(h, x, w, v, bias):
        def step(c, xt):
            y = c @ w + bias + xt
            new = y[:, :hidden].tanh() * y[:, hidden:].tanh()
            return new, new @ v.T

        return cf.scan(step, h, x)

    h = rng.standard_normal((batch, hidden)).astype(np.float32)
    x = rng.standard_normal((length, batch, 2 * hidden)).astype(np.float32)
    w, v = ((rng.standard_normal((hidden, s * hidden)) / 12).astype(np.float32) for s in (2, 1))
    bias = rng.standard_normal(2 * hidden).astype(np.float32)
    g = passes.schedule(passes.optimize(graphc.trace(fn, h, x, w, v, bias), check=True))
    results, bound_calls, real = [], [], blas.bind_product

    def counted(*args, **kwargs):
        call = real(*args, **kwargs)
        bound_calls.append(call is not None)
        return call

    for bound in (True, False):
        bound_calls.clear()
        monkeypatch.setattr(blas, "bind_product", counted if bound else lambda *a, **k: None)
        plan = Plan(g, passes.plan_memory(g), "cpu")
        results.append([np.array(o) for o in plan(h, x, w, v, bias)])
        assert bound_calls == ([True] * 2 * length if bound else [])
    for got, want in zip(*results):
        np.testing.assert_array_equal(_bits(got), _bits(want))
    c, want_ys = h.astype(np.float64), []
    for t in range(length):
        y = c @ w + bias + x[t]
        c = np.tanh(y[:, :hidden]) * np.tanh(y[:, hidden:])
        want_ys.append(c @ v.T)
    np.testing.assert_allclose(results[0][0], c, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(results[0][1], np.stack(want_ys), rtol=2e-4, atol=2e-4)
