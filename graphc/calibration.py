"""Entropy calibration: an activation's clipping threshold by KL divergence (TensorRT's method).

The magnitudes ``|x|`` of the calibration values go into a histogram of ``bins`` (2048) equal
bins over ``[0, max|x|]``. Each candidate threshold ``i`` bins wide (``levels <= i <= bins``)
gives

- ``P``: the first ``i`` bins, with the count of everything beyond the threshold added to the
  last one (values above the threshold clip to it);
- ``Q``: those ``i`` bins merged into ``levels`` quantized bins (``i // levels`` each, the last
  one taking the remainder) and expanded back, each quantized bin's count spread evenly over
  its source bins that are nonzero in ``P`` (zero bins of ``P`` stay zero);

both smoothed (every zero bin gets ``eps``, taken evenly from the nonzero ones, so the
divergence is finite) and normalized. The threshold is the upper edge of the candidate with the
smallest ``KL(P || Q)``. A long tail of rare outliers costs little divergence when clipped but
much when kept (it stretches the quantization step of everything else), so the threshold
lands near the bulk of the distribution, where min-max calibration would span the outliers.

``levels`` is 128 (int8's magnitudes) for values of both signs and 256 for non-negative values
(ReLU outputs, which use all of uint8's levels); ``entropy_range`` turns the threshold into the
``(lo, hi)`` range ``graphc.quantization.quantize_static(method="entropy")`` quantizes.
"""

from __future__ import annotations

import numpy as np

from graphc.ir import GraphcError

__all__ = ["abs_histogram", "entropy_range", "entropy_threshold", "kl_divergences"]

BINS = 2048
EPS = 1e-4


def abs_histogram(values: np.ndarray, bins: int = BINS) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of ``|values|`` (finite ones) in ``bins`` equal bins over ``[0, max|values|]``:
    ``(counts, edges)``, as float64 and ``bins + 1`` edges."""
    if bins < 2:
        raise GraphcError(f"calibration: the histogram needs at least 2 bins, got {bins}")
    mags = np.abs(np.asarray(values, np.float64).reshape(-1))
    mags = mags[np.isfinite(mags)]
    top = float(mags.max()) if mags.size else 0.0
    counts, edges = np.histogram(mags, bins=bins, range=(0.0, top if top > 0 else 1.0))
    return counts.astype(np.float64), edges


def _smooth(p: np.ndarray, eps: float) -> np.ndarray | None:
    """Give every zero bin ``eps``, taken evenly from the nonzero bins; None if all are zero or
    the nonzero bins cannot spare it."""
    zeros = p == 0
    n_zero = int(zeros.sum())
    n_nonzero = p.size - n_zero
    if n_nonzero == 0:
        return None
    out = p + np.where(zeros, eps, -eps * n_zero / n_nonzero)
    return out if np.all(out > 0) else None


def _candidate_kl(hist: np.ndarray, i: int, levels: int, eps: float) -> float:
    """KL(P || Q) of the threshold ``i`` bins wide (see the module docstring)."""
    p = hist[:i].copy()
    p[-1] += hist[i:].sum()
    nonzero = p != 0
    merged = i // levels
    # Quantized bin j covers source bins [j * merged, (j + 1) * merged); the last one takes the rest.
    owner = np.minimum(np.arange(i) // merged, levels - 1)
    sums = np.bincount(owner, weights=hist[:i], minlength=levels)
    counts = np.bincount(owner, weights=nonzero.astype(np.float64), minlength=levels)
    per_bin = np.divide(sums, counts, out=np.zeros(levels), where=counts > 0)
    q = np.where(nonzero, per_bin[owner], 0.0)
    ps, qs = _smooth(p, eps), _smooth(q, eps)
    if ps is None or qs is None:
        return np.inf
    ps, qs = ps / ps.sum(), qs / qs.sum()
    return float(np.sum(ps * np.log(ps / qs)))


def kl_divergences(hist: np.ndarray, levels: int = 128, eps: float = EPS) -> np.ndarray:
    """``KL(P || Q)`` of every candidate threshold ``levels .. len(hist)`` bins wide (an array of
    ``len(hist) - levels + 1``; ``inf`` where smoothing cannot apply)."""
    hist = np.asarray(hist, np.float64)
    if not 2 <= levels <= hist.size:
        raise GraphcError(f"calibration: levels must lie in [2, {hist.size}] (the bins), got {levels}")
    return np.array([_candidate_kl(hist, i, levels, eps) for i in range(levels, hist.size + 1)])


def entropy_threshold(values: np.ndarray, bins: int = BINS, levels: int | None = None) -> float:
    """The clipping threshold of ``|values|`` with the least KL divergence (0.0 for no data or all
    zeros). ``levels``: quantized magnitudes, default 256 for non-negative values, else 128."""
    values = np.asarray(values).reshape(-1)
    finite = values[np.isfinite(values)]
    if finite.size == 0 or not np.any(finite):
        return 0.0
    if levels is None:
        levels = 256 if finite.min() >= 0 else 128
    hist, edges = abs_histogram(finite, bins)
    kl = kl_divergences(hist, levels)
    if not np.isfinite(kl).any():
        return float(edges[-1])
    return float(edges[levels + int(np.argmin(kl))])


def entropy_range(values: np.ndarray, bins: int = BINS) -> tuple[float, float]:
    """``(lo, hi)``: the data's range clipped to ``[-t, t]`` by the entropy threshold ``t``."""
    values = np.asarray(values).reshape(-1)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 0.0
    t = entropy_threshold(finite, bins)
    return max(float(finite.min()), -t), min(float(finite.max()), t)
