"""The plan's warm-up compiles kernels without running their work where it can, so building a plan
costs the same whatever the size of its arrays (an LSTM's plan at T=512 as at T=64)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc
from graphc import functional as F
from graphc import nn
from graphc.kernels.cpu import blas
from graphc.runtime.plan import ByteRanges, _warm


def test_fused_matmul_warm_up_runs_no_gemm_and_the_first_call_is_right(monkeypatch):
    calls = []
    real = blas.matmul_for

    def counting(k, shape):
        fn = real(k, shape)

        def counted(a, b, out):
            calls.append(shape)
            fn(a, b, out)

        return counted

    monkeypatch.setattr(blas, "matmul_for", counting)
    model = nn.Linear(48, 40)
    x = np.random.default_rng(0).standard_normal((64, 48)).astype(np.float32)
    compiled = graphc.compile(lambda v: F.relu(model(v)) * 2.0, x)  # a matmul with an epilogue
    assert calls == []  # built and warmed up without a GEMM
    got = compiled(x)
    assert len(calls) == 1
    w, b = (np.asarray(p.data, np.float64) for p in (model.weight, model.bias))
    want = np.maximum(x.astype(np.float64) @ w.T + b, 0) * 2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_kernel_that_does_not_run_zeroes_only_outputs_on_bytes_written_during_the_warm_up():
    arena = np.zeros(64, np.float32)
    ran_out, fresh_out, reused_out = arena[0:16], arena[32:48], arena[8:24]

    def runs(a, out):
        out[:] = 5.0

    def compiled_only(a, out):
        raise AssertionError("the warm-up must not run a kernel that has warm_up")

    compiled_only.warm_up = lambda a, out: None
    dirty = ByteRanges()
    _warm(runs, [arena[48:], ran_out], 1, dirty)
    assert np.all(ran_out == 5.0)
    fresh_out[:] = 3.0  # stands for bytes nothing wrote during the warm-up: left alone
    _warm(compiled_only, [arena[48:], fresh_out], 1, dirty)
    assert np.all(fresh_out == 3.0)
    arena[16:24] = 3.0  # stands for bytes of reused_out nothing wrote during the warm-up
    _warm(compiled_only, [arena[48:], reused_out], 1, dirty)  # overlaps what `runs` wrote
    assert np.all(reused_out[:8] == 0.0)  # the bytes `runs` wrote, zeroed ...
    assert np.all(reused_out[8:] == 3.0)  # ... and only those (a large output's pages stay untouched)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 12)), max_size=25), st.integers(0, 70))
def test_byte_ranges_answer_as_a_scan_of_every_range_added(added, probe_lo):
    # The warm-up's dirty set: merged and binary-searched, it must answer as the set of its bytes does.
    ranges, written = ByteRanges(), set()
    for lo, size in added:
        ranges.add(lo, lo + size)
        written.update(range(lo, lo + size))
    assert all(a < b for a, b in zip(ranges.ends[:-1], ranges.starts[1:]))  # disjoint, sorted, merged
    for size in range(0, 8):
        lo, hi = probe_lo, probe_lo + size
        assert ranges.overlaps(lo, hi) == bool(written.intersection(range(lo, hi))), (lo, hi, added)
        covered = {byte for a, b in ranges.spans(lo, hi) for byte in range(a, b)}
        assert covered == written.intersection(range(lo, hi)), (lo, hi, added)
