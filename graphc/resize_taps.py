"""Resampling tables for one axis: the input positions each output position reads, and their weights.

Linear and cubic interpolation (ONNX Resize, optionally antialiased, optionally excluding taps
outside the input; PyTorch's bicubic) are all ``out[i] = sum_k w[i, k] * x[idx[i, k]]`` along one
axis, with constant ``idx`` and ``w``. This module computes the two tables in float64 NumPy;
the callers turn them into one gather, a multiply and a sum, so gradients come from the gather.
"""

from __future__ import annotations

import math

import numpy as np

from graphc.ir import GraphcError

__all__ = ["KERNELS", "kernel_weights", "taps", "tf_crop_coords"]

# Each kernel's half-width (it is zero from here on) at scale 1.
KERNELS = {"linear": 1, "cubic": 2}


def kernel_weights(mode: str, t: np.ndarray, cubic_a: float = -0.75) -> np.ndarray:
    """The interpolation kernel at distances ``t``: the triangle (linear) or Keys' cubic with ``a``."""
    t = np.abs(t)
    if mode == "linear":
        return np.clip(1.0 - t, 0.0, 1.0)
    if mode != "cubic":
        raise GraphcError(f"resize: unknown interpolation kernel {mode!r} (linear, cubic)")
    a = cubic_a
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def taps(
    mode: str,
    src: np.ndarray,
    size: int,
    scale: float = 1.0,
    *,
    cubic_a: float = -0.75,
    antialias: bool = False,
    exclude_outside: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices [out, n] into ``size`` positions, weights [out, n]) sampling at source coordinates ``src``.

    ONNX Resize's rule: the ``n`` taps nearest ``src`` (ties to the left), the kernel evaluated
    at each tap's distance; with ``antialias`` and ``scale < 1`` the kernel is stretched by
    1/scale and its weights normalised to sum 1; ``exclude_outside`` drops taps outside
    [0, size) and renormalises; taps outside repeat the edge value.
    """
    if mode not in KERNELS:
        raise GraphcError(f"resize: unknown interpolation kernel {mode!r} (linear, cubic)")
    if size < 1:
        raise GraphcError(f"resize: cannot interpolate an axis of size {size}")
    stretch = min(float(scale), 1.0) if antialias else 1.0
    if not stretch > 0:
        raise GraphcError(f"resize: scale must be positive, got {scale}")
    n = 2 - 2 * (math.floor(-KERNELS[mode] / stretch) + 1)
    src = np.asarray(src, dtype=np.float64)
    first = np.ceil(src).astype(np.int64) - n // 2
    idx = first[:, None] + np.arange(n, dtype=np.int64)[None, :]
    w = kernel_weights(mode, stretch * (idx - src[:, None]), cubic_a)
    if antialias:
        w = w / w.sum(axis=1, keepdims=True)
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= size), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    return np.clip(idx, 0, size - 1), w


def tf_crop_coords(
    roi_start: float, roi_end: float, size: int, out: int, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """ONNX's 'tf_crop_and_resize' source coordinates along one axis, and which fall outside the input.

    ``roi_start``/``roi_end`` are the crop box's ends as fractions of (size - 1); ``scale`` is the
    axis' resize scale (its resized length is ``size * scale``).
    """
    length = size * scale
    span = roi_end - roi_start
    i = np.arange(out, dtype=np.float64)
    if length == 1:
        src = np.full(out, span * (size - 1) / 2, dtype=np.float64)
    else:
        src = i * span * (size - 1) / (length - 1)
    src = src + roi_start * (size - 1)
    return src, (src < 0) | (src > size - 1)
