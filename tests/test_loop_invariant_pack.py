"""Loop-invariant GEMM operands packed once per loop call (kernels/cpu/loop_invariant.py, the
small-m GEMM's ``prepacked_b``): the window's rules (a pack is reused within one loop call only,
never outside one, never for memory the loop writes), the same bits as the per-call packing, and
plans whose weights change between calls (in place: the same address) against NumPy float64."""

import numba
import numpy as np
import pytest

import graphc
from graphc import control_flow as cf
from graphc import passes
from graphc.kernels.cpu import loop_invariant as li
from graphc.kernels.cpu import sgemm
from graphc.runtime import Plan

avx512 = pytest.mark.skipif(not sgemm.HAVE_AVX512, reason="the small-m GEMM needs AVX-512")


class Fills:
    """A ``fill`` for ``loop_invariant.packed`` that copies ``b`` and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, b: np.ndarray, buf: np.ndarray) -> None:
        self.calls += 1
        buf[:] = b.ravel()


# ---------------------------------------------------------------------------- the window's rules
def test_packs_only_inside_a_window_and_once_per_window(rng):
    w = rng.standard_normal((8, 6)).astype(np.float32)
    fill = Fills()
    assert li.packed("t", w, w.size, fill) is None and fill.calls == 0  # outside any window
    with li.loop_invariants([w]):
        assert li.active()
        first = li.packed("t", w, w.size, fill)
        again = li.packed("t", w, w.size, fill)
        assert first is again and fill.calls == 1
        np.testing.assert_array_equal(first, w.ravel())
        assert li.packed("t", w[:4], 24, fill) is not None and fill.calls == 2  # a view inside: its own
    assert not li.active() and li.packed("t", w, w.size, fill) is None and fill.calls == 2


def test_the_next_window_repacks_an_array_changed_in_place(rng):
    # The arena gives the next call's weights the same address: the pack must not outlive its call.
    w = rng.standard_normal((8, 6)).astype(np.float32)
    fill = Fills()
    with li.loop_invariants([w]):
        np.testing.assert_array_equal(li.packed("t", w, w.size, fill), w.ravel())
    w[...] = rng.standard_normal(w.shape)
    with li.loop_invariants([w]):
        np.testing.assert_array_equal(li.packed("t", w, w.size, fill), w.ravel())
    assert fill.calls == 2


def test_no_pack_for_memory_not_promised_or_written_by_the_loop(rng):
    base = rng.standard_normal((10, 6)).astype(np.float32)
    fill = Fills()
    with li.loop_invariants([base[:5]]):
        assert li.packed("t", base, base.size, fill) is None  # reaches past the promised rows
        assert li.packed("t", base[5:], 30, fill) is None  # not promised at all
        assert li.packed("t", base[1:4], 18, fill) is not None
    with li.loop_invariants([base], written=[base[9]]):  # an output over it: no promise
        assert not li.active() and li.packed("t", base, base.size, fill) is None
    with li.loop_invariants([base[:, :3]]):  # not contiguous: its bounds hold base[:, 3:] too
        assert not li.active() and li.packed("t", base[:4, 3:], 12, fill) is None
    assert fill.calls == 1


def test_nested_windows_keep_the_outer_promise_and_invalidate_packs(rng):
    w, v = (rng.standard_normal((4, 4)).astype(np.float32) for _ in range(2))
    fill = Fills()
    with li.loop_invariants([w]):
        li.packed("t", w, 16, fill)
        with li.loop_invariants([v]):
            assert li.packed("t", w, 16, fill) is not None  # still promised, packed again
            assert li.packed("t", v, 16, fill) is not None
        assert fill.calls == 3
        assert li.packed("t", v, 16, fill) is None  # the inner promise ended with its window
        li.packed("t", w, 16, fill)
        assert fill.calls == 4
    with pytest.raises(RuntimeError), li.loop_invariants([w]):
        raise RuntimeError("a kernel failed")
    assert not li.active()


# ---------------------------------------------------------------------------- the GEMM
@avx512
@pytest.mark.parametrize(
    ("m", "k", "n", "transposed", "leaves"),
    [
        (32, 256, 1024, False, "rm"),  # an LSTM step's h @ W_hh^T + bias + xs[t]
        (32, 1024, 256, True, ""),  # its backward's dgates @ W_hh (W_hh^T's transposed view)
        (13, 300, 100, False, "m"),  # two depth blocks, a ragged row tile and panel
        (9, 300, 70, True, "r"),
    ],
)
def test_prepacked_gemm_has_the_bits_of_the_per_call_one(rng, monkeypatch, m, k, n, transposed, leaves):
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k)).astype(np.float32).T if transposed else rng.standard_normal((k, n))
    b = b.astype(np.float32, copy=False)
    adds = tuple(rng.standard_normal((n,) if c == "r" else (m, n)).astype(np.float32) for c in leaves)
    want = np.empty((m, n), np.float32)
    assert sgemm.small_m_matmul(a, b, want, adds)
    fills = []
    pack = sgemm._pack_panels
    monkeypatch.setattr(sgemm, "_pack_panels", lambda b, buf: (fills.append(1), pack(b, buf)))
    with li.loop_invariants([b]):
        for _ in range(3):
            got = np.full((m, n), np.nan, np.float32)
            assert sgemm.small_m_matmul(a, b, got, adds)
            np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))
    # packed once for the three calls (on one thread packed_a reads a transposed B as it lies)
    assert len(fills) == (0 if transposed and -m % 32 < 16 and numba.get_num_threads() == 1 else 1)
    ref = a.astype(np.float64) @ b.astype(np.float64) + sum(x.astype(np.float64) for x in adds)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@avx512
def test_prepacked_gemm_has_the_same_bits_on_one_and_two_threads(rng):
    a = rng.standard_normal((24, 300)).astype(np.float32)
    b = rng.standard_normal((300, 200)).astype(np.float32)
    x = rng.standard_normal((24, 200)).astype(np.float32)
    threads = numba.get_num_threads()
    got = []
    try:
        for t in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(t)
            out = np.empty((24, 200), np.float32)
            with li.loop_invariants([b]):
                assert sgemm.small_m_matmul(a, b, out, (x,))
            got.append(out.view(np.int32))
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(got[0], got[1])


@avx512
def test_prepacked_gemm_declines_an_output_over_a(rng):
    buf = rng.standard_normal((16, 128)).astype(np.float32)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    with li.loop_invariants([w]):
        assert not sgemm.small_m_matmul(buf[:, :64], w, buf[:, 64:])  # out between the rows of a


# ---------------------------------------------------------------------------- plans
def _plan(fn, *arrays) -> Plan:
    g = passes.schedule(passes.optimize(graphc.trace(fn, *arrays), check=True))
    mp = passes.plan_memory(g)
    passes.check_memory_plan(g, mp)
    return Plan(g, mp, "cpu")


def _count_packs(monkeypatch) -> list:
    fills: list = []
    pack = sgemm._pack_panels
    monkeypatch.setattr(sgemm, "_pack_panels", lambda b, buf: (fills.append(b.shape), pack(b, buf)))
    return fills


@avx512
@pytest.mark.parametrize(("batch", "hidden", "transposed"), [(32, 128, False), (16, 300, True)])
def test_a_scan_plan_follows_weights_changed_in_place_between_calls(
    rng, monkeypatch, batch, hidden, transposed
):
    # The same plan, the same weight array (so the same addresses in the loop) with new values:
    # each call packs the weight again and matches NumPy; a stale pack would give the old values.
    # (Products of at least blas.PARALLEL_GEMM_WORK multiply-adds: smaller ones stay on OpenBLAS.)
    length = 5

    def fn(h, x, w, bias):
        def step(c, xt):
            y = c @ (w.T if transposed else w) + bias + xt
            return y.tanh(), y

        return cf.scan(step, h, x)

    h = rng.standard_normal((batch, hidden)).astype(np.float32)
    x = rng.standard_normal((length, batch, hidden)).astype(np.float32)
    w = (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
    bias = rng.standard_normal(hidden).astype(np.float32)
    plan = _plan(fn, h, x, w, bias)
    fills = _count_packs(monkeypatch)
    outs = []
    for call in range(3):
        if call:
            w[...] = rng.standard_normal(w.shape) / np.sqrt(hidden)
        c, ys = plan(h, x, w, bias)
        wm = (w.T if transposed else w).astype(np.float64)
        want_c, want_ys = h.astype(np.float64), []
        for t in range(length):
            y = want_c @ wm + bias + x[t]
            want_c = np.tanh(y)
            want_ys.append(y)
        np.testing.assert_allclose(c, want_c, rtol=2e-4, atol=2e-4)
        np.testing.assert_allclose(ys, np.stack(want_ys), rtol=2e-4, atol=2e-4)
        outs.append(np.array(c))
    assert len(fills) == 3  # once per call, not per step
    assert not np.allclose(outs[0], outs[1]) and not np.allclose(outs[1], outs[2])


@avx512
def test_a_while_loop_plan_packs_its_invariant_weight_once_per_call(rng, monkeypatch):
    batch, hidden, trips = 32, 128, 4

    def fn(h, w):
        body = lambda c: ((c[0] @ w).tanh(), c[1] + 1)  # noqa: E731
        return cf.while_loop(lambda c: c[1] < trips, body, (h, h[0, 0] * 0))[0]

    h = rng.standard_normal((batch, hidden)).astype(np.float32)
    w = (rng.standard_normal((hidden, hidden)) / 8).astype(np.float32)
    plan = _plan(fn, h, w)
    fills = _count_packs(monkeypatch)
    for call in range(2):
        if call:
            w *= -1.5
        want = h.astype(np.float64)
        for _ in range(trips):
            want = np.tanh(want @ w.astype(np.float64))
        np.testing.assert_allclose(plan(h, w), want, rtol=2e-4, atol=2e-4)
    assert len(fills) == 2
