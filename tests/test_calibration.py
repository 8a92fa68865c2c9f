"""Entropy (KL-divergence) calibration: the threshold search against a plain loop reimplementation
of TensorRT's/MXNet's algorithm, its effect on synthetic distributions, and quantize_static's
``method="entropy"`` against min-max."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import calibration, nn, quantization
from graphc.ir import GraphcError


def _loop_smooth(p, eps=1e-4):
    is_zeros = (p == 0).astype(np.float64)
    n_zeros = is_zeros.sum()
    n_nonzeros = p.size - n_zeros
    if n_nonzeros == 0:
        return None
    eps1 = eps * n_zeros / n_nonzeros
    out = p.astype(np.float64) + eps * is_zeros - eps1 * (1 - is_zeros)
    return out if (out <= 0).sum() == 0 else None


def _loop_kl(hist, levels):
    """MXNet's _get_optimal_threshold inner loop, bin by bin (the oracle)."""
    out = []
    for i in range(levels, len(hist) + 1):
        sliced = hist[:i].astype(np.float64)
        p = sliced.copy()
        p[i - 1] += hist[i:].sum()
        is_nonzeros = (p != 0).astype(np.int64)
        merged = len(sliced) // levels
        quantized = np.zeros(levels)
        for j in range(levels):
            quantized[j] = sliced[j * merged : (j + 1) * merged].sum()
        quantized[-1] += sliced[levels * merged :].sum()
        q = np.zeros(len(sliced))
        for j in range(levels):
            start = j * merged
            stop = len(sliced) if j == levels - 1 else start + merged
            norm = is_nonzeros[start:stop].sum()
            if norm != 0:
                q[start:stop] = quantized[j] / norm
        q[p == 0] = 0
        ps, qs = _loop_smooth(p), _loop_smooth(q)
        if ps is None or qs is None:
            out.append(np.inf)
            continue
        ps, qs = ps / ps.sum(), qs / qs.sum()
        out.append(float(np.sum(ps * np.log(ps / qs))))
    return np.array(out)


def _gaussian_with_outliers(seed, n=20000, outliers=20, at=40.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    x[rng.choice(n, outliers, replace=False)] = rng.uniform(at / 2, at, outliers) * rng.choice(
        [-1, 1], outliers
    )
    return x.astype(np.float32)


@pytest.mark.parametrize("seed,bins,levels", [(0, 512, 128), (1, 300, 64), (2, 2048, 128)])
def test_kl_search_matches_a_loop_reimplementation(seed, bins, levels):
    x = _gaussian_with_outliers(seed)
    hist, edges = calibration.abs_histogram(x, bins)
    want_hist, want_edges = np.histogram(np.abs(x.astype(np.float64)), bins=bins, range=(0, np.abs(x).max()))
    np.testing.assert_array_equal(hist, want_hist)
    np.testing.assert_allclose(edges, want_edges)
    want = _loop_kl(hist, levels)
    got = calibration.kl_divergences(hist, levels)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    k = int(np.argmin(want))
    assert calibration.entropy_threshold(x, bins, levels) == pytest.approx(edges[levels + k])


def test_entropy_clips_outliers_min_max_does_not():
    x = _gaussian_with_outliers(3)
    t = calibration.entropy_threshold(x)
    assert 2.5 < t < 10.0  # near the Gaussian's bulk, far below the outliers at 20..40
    lo, hi = calibration.entropy_range(x)
    assert (lo, hi) == (pytest.approx(-t), pytest.approx(t))
    assert min(x) < -20 and max(x) > 20  # what min-max would span
    # Non-negative (ReLU) data: 256 levels, and the range starts at the data's minimum.
    r = np.maximum(x, 0)
    lo, hi = calibration.entropy_range(r)
    assert lo == 0.0 and 2.0 < hi < 10.0
    # Without outliers the threshold keeps (nearly) everything.
    u = np.random.default_rng(4).uniform(-1, 1, 20000)
    assert calibration.entropy_threshold(u) > 0.95


def test_degenerate_inputs():
    assert calibration.entropy_threshold(np.zeros(10)) == 0.0
    assert calibration.entropy_range(np.array([np.nan, np.inf])) == (0.0, 0.0)
    with pytest.raises(GraphcError, match="levels must lie"):
        calibration.kl_divergences(np.ones(10), levels=20)
    with pytest.raises(GraphcError, match="at least 2 bins"):
        calibration.abs_histogram(np.ones(3), bins=1)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(graphc.relu(self.fc1(x)))


def test_quantize_static_entropy_beats_minmax_with_outlier_inputs():
    graphc.manual_seed(0)
    model = _Net()
    rng = np.random.default_rng(5)
    calib = [rng.standard_normal((64, 16)).astype(np.float32) for _ in range(4)]
    calib[0][0, :4] = 60.0  # a few huge outliers in the calibration data
    x = rng.standard_normal((64, 16)).astype(np.float32)
    want = graphc.compile(model, x, backend="reference")(x)
    errs = {}
    for method in ("minmax", "entropy"):
        plan = quantization.quantize_static(model, calib, x, method=method)
        assert plan.graph.op_counts().get("qlinear", 0) == 2
        errs[method] = float(np.abs(plan(x) - want).mean())
    assert errs["entropy"] < 0.5 * errs["minmax"], errs
    with pytest.raises(GraphcError, match="method must be one of"):
        quantization.quantize_static(model, calib, x, method="kl")
