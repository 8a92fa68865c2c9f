"""``F.interpolate`` (nearest, nearest-exact, linear/bilinear/trilinear, bicubic, area) and
``F.pixel_shuffle`` / ``F.pixel_unshuffle`` with PyTorch's index arithmetic.

Interpolation is separable: each spatial dim is resampled on its own by a ``gather`` of constant
source indices (nearest), by two gathers blended with constant weights (linear), or by one
gather of the four cubic taps and a weighted sum (bicubic, graphc/resize_taps.py), so gradients
are the gathers' VJPs. "area" is adaptive average pooling.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphc.functional import _eager
from graphc.ir import GraphcError
from graphc.resize_taps import taps
from graphc.tensor import Tensor, _at, as_tensor, user_source

__all__ = ["interpolate", "pixel_shuffle", "pixel_unshuffle", "upsample"]

_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "trilinear", "area", "bicubic")
_LINEAR_RANK = {"linear": 1, "bilinear": 2, "trilinear": 3}


def _sizes(x: Tensor, size: Any, scale_factor: Any, recompute: Any) -> tuple[list[int], list[float | None]]:
    """(output sizes, the scale PyTorch's kernels use per dim: 1/scale_factor, or None for in/out)."""
    spatial = x.ndim - 2
    where = f"{_at(user_source())}interpolate"
    if (size is None) == (scale_factor is None):
        raise GraphcError(f"{where}: give exactly one of size and scale_factor")
    if size is not None:
        sizes = [int(size)] * spatial if isinstance(size, int) else [int(s) for s in size]
        if len(sizes) != spatial:
            raise GraphcError(f"{where}: size {size} needs {spatial} entries for input of shape {x.shape}")
        return sizes, [None] * spatial
    factors = (
        [float(scale_factor)] * spatial if not isinstance(scale_factor, (list, tuple)) else list(scale_factor)
    )
    if len(factors) != spatial:
        raise GraphcError(f"{where}: scale_factor {scale_factor} needs {spatial} entries for shape {x.shape}")
    sizes = [int(math.floor(n * f)) for n, f in zip(x.shape[2:], factors)]
    return sizes, [None if recompute else 1.0 / f for f in factors]


def _take(x: Tensor, axis: int, index: np.ndarray) -> Tensor:
    return x.ctx.op("gather", x, x.ctx.array(index.astype(np.int64), name="index"), axis=axis)


def _source(n_in: int, n_out: int, scale: float | None, align_corners: bool) -> np.ndarray:
    """Linear modes' float source coordinate of each output position (PyTorch's area_pixel rules)."""
    dst = np.arange(n_out, dtype=np.float64)
    if align_corners:
        return dst * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    s = n_in / n_out if scale is None else scale
    return np.maximum((dst + 0.5) * s - 0.5, 0.0)


def _bicubic_axis(x: Tensor, axis: int, n_out: int, scale: float | None, align_corners: bool) -> Tensor:
    """PyTorch's bicubic along one axis: Keys' cubic (a = -0.75) on 4 taps, edges repeated."""
    n_in = x.shape[axis]
    dst = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:  # unlike linear, cubic does not clamp negative source coordinates to 0
        src = (dst + 0.5) * (n_in / n_out if scale is None else scale) - 0.5
    idx, w = taps("cubic", src, n_in, cubic_a=-0.75)
    g = _take(x, axis, idx.reshape(-1))
    g = g.reshape(*x.shape[:axis], n_out, idx.shape[1], *x.shape[axis + 1 :])
    view = [1] * g.ndim
    view[axis], view[axis + 1] = idx.shape
    return (g * x.ctx.array(w.reshape(view).astype(np.dtype(x.value.type.np_dtype)), name="weight")).sum(
        axis + 1
    )


def interpolate(
    input: Any,
    size: Any = None,
    scale_factor: Any = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> Tensor:
    """Resize the spatial dims of [N, C, *spatial] (PyTorch's F.interpolate)."""
    x = as_tensor(input)
    where = f"{_at(user_source())}interpolate"
    if mode not in _MODES or antialias:
        raise GraphcError(
            f"{where}: mode={mode!r}{' with antialias' if antialias else ''} is not supported "
            "(nearest, nearest-exact, linear, bilinear, trilinear, bicubic, area)"
        )
    if x.ndim < 3:
        raise GraphcError(f"{where}: needs input [N, C, *spatial], got shape {x.shape}")
    if mode in _LINEAR_RANK and _LINEAR_RANK[mode] != x.ndim - 2:
        raise GraphcError(f"{where}: mode={mode!r} needs {_LINEAR_RANK[mode] + 2}-D input, got {x.shape}")
    if mode == "bicubic" and x.ndim != 4:
        raise GraphcError(f"{where}: mode='bicubic' needs 4-D input, got {x.shape}")
    if align_corners is not None and mode not in _LINEAR_RANK and mode != "bicubic":
        raise GraphcError(f"{where}: align_corners only goes with the linear modes, not {mode!r}")
    sizes, scales = _sizes(x, size, scale_factor, recompute_scale_factor)
    if mode == "area":
        from graphc.convolution import adaptive_avg_pool1d, adaptive_avg_pool2d

        if x.ndim == 3:
            return adaptive_avg_pool1d(x, sizes[0])
        if x.ndim == 4:
            return adaptive_avg_pool2d(x, tuple(sizes))
        raise GraphcError(f"{where}: mode='area' supports 3-D and 4-D input, got {x.shape}")
    if not x.value.dtype.startswith(("f", "bf")) and mode not in ("nearest", "nearest-exact"):
        raise GraphcError(f"{where}: mode={mode!r} needs a float input, got {x.value.dtype}")
    for d, (n_out, scale) in enumerate(zip(sizes, scales)):
        axis, n_in = d + 2, x.shape[d + 2]
        if mode in ("nearest", "nearest-exact"):
            s = n_in / n_out if scale is None else scale
            dst = np.arange(n_out, dtype=np.float64)
            src = np.floor((dst + 0.5) * s if mode == "nearest-exact" else dst * s)
            x = _take(x, axis, np.minimum(src, n_in - 1))
            continue
        if mode == "bicubic":
            x = _bicubic_axis(x, axis, n_out, scale, bool(align_corners))
            continue
        src = _source(n_in, n_out, scale, bool(align_corners))
        lo = np.minimum(np.floor(src), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        shape = [1] * x.ndim
        shape[axis] = n_out
        w = x.ctx.array((src - lo).reshape(shape).astype(np.dtype(x.value.type.np_dtype)), name="weight")
        a, b = _take(x, axis, lo), _take(x, axis, hi)
        x = a + (b - a) * w
    return x


def upsample(
    input: Any, size: Any = None, scale_factor: Any = None, mode: str = "nearest", align_corners: Any = None
) -> Tensor:
    """F.upsample: interpolate."""
    return interpolate(input, size, scale_factor, mode, align_corners)


def pixel_shuffle(input: Any, upscale_factor: int) -> Tensor:
    """[*, C*r*r, H, W] -> [*, C, H*r, W*r]."""
    x = as_tensor(input)
    r = int(upscale_factor)
    if x.ndim < 3 or x.shape[-3] % (r * r):
        raise GraphcError(
            f"{_at(user_source())}pixel_shuffle: channels (dim -3) of {x.shape} must divide by {r * r}"
        )
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c // (r * r), r, r, h, w)
    k = len(lead)
    y = y.permute(*range(k), k, k + 3, k + 1, k + 4, k + 2)
    return y.reshape(*lead, c // (r * r), h * r, w * r)


def pixel_unshuffle(input: Any, downscale_factor: int) -> Tensor:
    """[*, C, H*r, W*r] -> [*, C*r*r, H, W]."""
    x = as_tensor(input)
    r = int(downscale_factor)
    if x.ndim < 3 or x.shape[-1] % r or x.shape[-2] % r:
        raise GraphcError(f"{_at(user_source())}pixel_unshuffle: H and W of {x.shape} must divide by {r}")
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c, h // r, r, w // r, r)
    k = len(lead)
    y = y.permute(*range(k), k, k + 2, k + 4, k + 1, k + 3)
    return y.reshape(*lead, c * r * r, h // r, w // r)


# Outside a trace, NumPy arguments run the function in eager mode (graphc/eager.py).
for _name in __all__:
    globals()[_name] = _eager(globals()[_name])
