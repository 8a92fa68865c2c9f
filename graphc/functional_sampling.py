"""Sampling and pooling functions of torch.nn.functional graphc lacked: ``grid_sample``, ``affine_grid``,
``lp_pool1d``/``lp_pool2d`` and ``max_unpool2d`` (PyTorch's signatures and defaults).

Everything is built from graphc primitives (floor, round, where, gather, scatter, matmul), so it compiles
on every backend and differentiates like PyTorch: ``grid_sample`` with respect to the input (a scatter of
the tap weights) and to the grid (through the tap weights; the integer tap positions have no gradient).
ONNX's GridSample (graphc/onnx/ops/sampling.py) is ``sample_grid`` too: ONNX Runtime computes what
PyTorch does (onnx's Python reference evaluator differs in one case: cubic with border padding, where it
also clamps the coordinate before taking the taps).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.functional_base import _eager
from graphc.ir import GraphcError
from graphc.ir.types import FLOAT_DTYPES, to_numpy_dtype
from graphc.tensor import Tensor, _at, as_tensor, user_source, where

__all__ = ["affine_grid", "grid_sample", "lp_pool1d", "lp_pool2d", "max_unpool2d"]

MODES = ("linear", "nearest", "cubic")
PADDING_MODES = ("zeros", "border", "reflection")
_TORCH_MODES = {"bilinear": "linear", "nearest": "nearest", "bicubic": "cubic"}
_CUBIC_A = -0.75  # PyTorch's and ONNX's bicubic coefficient


def _fail(name: str, message: str) -> GraphcError:
    return GraphcError(f"{_at(user_source())}{name}: {message}")


def _const(like: Tensor, values: np.ndarray, name: str) -> Tensor:
    """An array constant of ``like``'s dtype (or of the array's own, for integer arrays)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        arr = arr.astype(to_numpy_dtype(like.value.dtype))
    return like.ctx.array(np.ascontiguousarray(arr), name=name)


def _reflect(c: Tensor, lo: float, hi: float) -> Tensor:
    """``c`` reflected at ``lo`` and ``hi`` until it lies between them (PyTorch's reflect_coordinates)."""
    span = hi - lo
    if span <= 0:
        return c * 0.0
    a = (c - lo).abs()
    flips = (a * (1.0 / span)).floor()
    extra = a - flips * span
    even = (flips * 0.5).floor() * 2.0 == flips
    return where(even, extra + lo, (-extra) + hi)


def _pad_coordinate(c: Tensor, size: int, padding: str, align: bool) -> Tensor:
    """Bring an out-of-range source coordinate back in (border, reflection); zeros leaves it."""
    if padding == "border":
        return c.clamp(0.0, size - 1.0)
    if padding == "reflection":
        lo, hi = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
        return _reflect(c, lo, hi).clamp(0.0, size - 1.0)
    return c


def _cubic_weights(t: Tensor) -> list[Tensor]:
    """Keys' cubic convolution weights of the taps at -1, 0, 1, 2 for the fraction ``t``."""
    a = _CUBIC_A

    def near(x: Tensor) -> Tensor:  # |x| <= 1
        return ((x * (a + 2.0)) - (a + 3.0)) * x * x + 1.0

    def far(x: Tensor) -> Tensor:  # 1 < |x| < 2
        return ((x * a - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    return [far(t + 1.0), near(t), near((-t) + 1.0), far((-t) + 2.0)]


def _stack0(parts: list[Tensor]) -> Tensor:
    """Tensors of one shape stacked on a new leading axis."""
    if len(parts) == 1:
        return parts[0].reshape(1, *parts[0].shape)
    return parts[0].ctx.op("concat", *[p.reshape(1, *p.shape) for p in parts], axis=0)


def _axis_taps(c: Tensor, size: int, mode: str, padding: str, align: bool):
    """One spatial axis: (tap indices i64 [K, N, *O], weights [K, N, *O] or None) of coordinate ``c``."""
    if mode == "nearest":  # pad, then round half to even (nearbyint)
        taps, weights = _stack0([_pad_coordinate(c, size, padding, align).round()]), None
    else:
        if mode == "linear":  # bicubic pads each tap, not the coordinate
            c = _pad_coordinate(c, size, padding, align)
        base = c.floor()
        t = c - base
        if mode == "linear":
            offsets, weights = [0.0, 1.0], _stack0([(-t) + 1.0, t])
        else:
            offsets, weights = [-1.0, 0.0, 1.0, 2.0], _stack0(_cubic_weights(t))
        shape = (len(offsets),) + (1,) * c.ndim
        taps = base.reshape(1, *base.shape) + _const(c, np.array(offsets).reshape(shape), "grid_tap")
    if padding == "zeros":
        inside = ((taps >= 0.0) & (taps <= size - 1.0)).to(c.value.dtype)
        weights = inside if weights is None else weights * inside
    elif padding == "reflection":
        lo, hi = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
        taps = _reflect(taps, lo, hi)
    taps = where(taps.isnan(), taps.ctx.const(0.0, taps.value.dtype), taps)  # a NaN point reads element 0
    return taps.clamp(0.0, size - 1.0).to("i64"), weights


def sample_grid(x: Tensor, grid: Tensor, mode: str, padding_mode: str, align_corners: bool) -> Tensor:
    """Sample [N, C, *S] ``x`` (1 to 3 spatial axes) at the normalized points of [N, *O, D] ``grid``.

    ``mode`` is 'linear', 'nearest' or 'cubic'; every tap of every output point is one gathered row
    of the channels-last input (one gather for all taps), weighted and summed. Out-of-range taps:
    weight 0 (zeros), clamped (border) or reflected (reflection), as in PyTorch.
    """
    name = "grid_sample"
    if mode not in MODES or padding_mode not in PADDING_MODES:
        raise _fail(name, f"mode {mode!r} / padding_mode {padding_mode!r} not in {MODES} / {PADDING_MODES}")
    d = x.ndim - 2
    if d not in (1, 2, 3) or grid.ndim != x.ndim or grid.shape[0] != x.shape[0] or grid.shape[-1] != d:
        raise _fail(
            name,
            f"needs input [N, C, *S] and grid [N, *O, {max(d, 1)}] of equal rank, got "
            f"{list(x.shape)} and {list(grid.shape)}",
        )
    if x.value.dtype not in FLOAT_DTYPES:
        raise _fail(name, f"input must be float, got {x.value.dtype}")
    if grid.value.dtype != x.value.dtype:
        grid = grid.to(x.value.dtype)
    n, c = x.shape[:2]
    sizes = x.shape[2:]
    out = grid.shape[1:-1]
    op = x.ctx.op
    strides = [int(np.prod(sizes[a + 1 :])) for a in range(d)]
    plane = int(np.prod(sizes))
    index = _const(x, (np.arange(n) * plane).reshape((1,) * d + (n,) + (1,) * len(out)), "grid_batch")
    weight = None
    for a in range(d):  # spatial axis a reads grid component d-1-a (the grid lists x, y, z)
        first = (0,) * (grid.ndim - 1) + (d - a - 1,)
        g = op("slice", grid, starts=first, stops=(*grid.shape[:-1], d - a), steps=(1,) * grid.ndim)
        g = g.reshape(n, *out)
        size = sizes[a]
        coord = (g + 1.0) * ((size - 1) / 2.0) if align_corners else ((g + 1.0) * size - 1.0) * 0.5
        idx, w = _axis_taps(coord, size, mode, padding_mode, align_corners)
        k = idx.shape[0]
        view = (1,) * a + (k,) + (1,) * (d - a - 1) + (n, *out)
        index = index + (idx * strides[a] if strides[a] != 1 else idx).reshape(*view)
        if w is not None:
            w = w.reshape(*view)
            weight = w if weight is None else weight * w
    rows = op("transpose", x, perm=(0, *range(2, x.ndim), 1)).reshape(n * plane, c)
    taps = op("gather", rows, index, axis=0)  # [K..., N, *O, C]
    if weight is not None:
        taps = taps * weight.reshape(*weight.shape, 1)
    y = op("sum", taps, axes=tuple(range(d))) if taps.shape[:d] != (1,) * d else taps.reshape(*taps.shape[d:])
    return op("transpose", y, perm=(0, y.ndim - 1, *range(1, y.ndim - 1)))


def grid_sample(
    input: Any,
    grid: Any,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool | None = None,
) -> Tensor:
    """torch.nn.functional.grid_sample: 4-D input (bilinear, nearest, bicubic) or 5-D (bilinear,
    nearest); padding 'zeros', 'border' or 'reflection'; ``align_corners`` None means False."""
    x = as_tensor(input)
    g = as_tensor(grid, like=x)
    if mode not in _TORCH_MODES:
        raise _fail("grid_sample", f"mode must be 'bilinear', 'nearest' or 'bicubic', got {mode!r}")
    if x.ndim not in (4, 5):
        raise _fail("grid_sample", f"needs a 4-D or 5-D input, got {list(x.shape)}")
    if mode == "bicubic" and x.ndim == 5:
        raise _fail("grid_sample", "mode 'bicubic' needs a 4-D input")
    return sample_grid(x, g, _TORCH_MODES[mode], padding_mode, bool(align_corners))


def base_grid(sizes: tuple[int, ...], align_corners: bool, unit: float = 0.0) -> np.ndarray:
    """[*sizes, D + 1] homogeneous normalized coordinates (x, y[, z], 1) of every point (float64).

    An axis of size 1 has the coordinate ``unit`` (PyTorch: 0; onnx's reference AffineGrid: -1 with
    align_corners, else 0)."""
    axes = []
    for s in sizes:
        if s == 1:
            axes.append(np.array([unit if align_corners else 0.0]))
            continue
        lin = np.linspace(-1.0, 1.0, s)
        axes.append(lin if align_corners else lin * (s - 1) / s)
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([*mesh[::-1], np.ones(tuple(sizes))], axis=-1)


def affine_grid(theta: Any, size: Any, align_corners: bool | None = None) -> Tensor:
    """torch.nn.functional.affine_grid: [N, 2, 3] (or [N, 3, 4]) ``theta`` and ``size`` (N, C, H, W)
    (or (N, C, D, H, W)) give the [N, H, W, 2] (or [N, D, H, W, 3]) sampling grid."""
    return make_affine_grid(as_tensor(theta), [int(v) for v in size], bool(align_corners))


def make_affine_grid(t: Tensor, size: list[int], align_corners: bool, unit: float = 0.0) -> Tensor:
    """``affine_grid`` of a traced ``t``; a size-1 axis has the coordinate ``unit`` (see base_grid)."""
    d = len(size) - 2
    if d not in (2, 3) or t.ndim != 3 or tuple(t.shape) != (size[0], d, d + 1):
        raise _fail(
            "affine_grid",
            f"needs theta [N, {max(d, 2)}, {max(d, 2) + 1}] for size {size}, got {list(t.shape)}",
        )
    if t.value.dtype not in FLOAT_DTYPES:
        raise _fail("affine_grid", f"theta must be float, got {t.value.dtype}")
    if any(s < 1 for s in size):
        raise _fail("affine_grid", f"size must be positive, got {size}")
    base = base_grid(tuple(size[2:]), align_corners, unit)
    points = int(np.prod(size[2:]))
    base_t = _const(t, base.reshape(1, points, d + 1), "affine_base")
    grid = t.ctx.op("matmul", base_t, t.ctx.op("transpose", t, perm=(0, 2, 1)))  # [N, P, D]
    return grid.reshape(size[0], *size[2:], d)


def _lp(x: Tensor, norm_type: float, kernel: tuple[int, int], stride: Any, ceil_mode: bool) -> Tensor:
    from graphc.functional_layers import avg_pool2d

    p = float(norm_type)
    if not np.isfinite(p) or p == 0:
        raise _fail("lp_pool", f"norm_type must be a finite non-zero number, got {norm_type}")
    mean = avg_pool2d(x**p if p != 1 else x, kernel, stride, 0, ceil_mode)
    total = mean * float(kernel[0] * kernel[1])
    return total ** (1.0 / p) if p != 1 else total


def lp_pool2d(
    input: Any, norm_type: float, kernel_size: Any, stride: Any = None, ceil_mode: bool = False
) -> Tensor:
    """torch.nn.functional.lp_pool2d: (sum over each window of x^p)^(1/p), as PyTorch computes it
    (an average pool of x^p times the kernel size; with ceil_mode a clipped window's average is scaled)."""
    x = as_tensor(input)
    if x.ndim != 4:
        raise _fail("lp_pool2d", f"needs input [N, C, H, W], got {list(x.shape)}")
    k = (
        (int(kernel_size), int(kernel_size))
        if isinstance(kernel_size, int)
        else tuple(int(v) for v in kernel_size)
    )
    return _lp(x, norm_type, k, stride, ceil_mode)


def lp_pool1d(
    input: Any, norm_type: float, kernel_size: int, stride: Any = None, ceil_mode: bool = False
) -> Tensor:
    """torch.nn.functional.lp_pool1d over [N, C, L]."""
    x = as_tensor(input)
    if x.ndim != 3:
        raise _fail("lp_pool1d", f"needs input [N, C, L], got {list(x.shape)}")
    k = int(kernel_size if isinstance(kernel_size, int) else kernel_size[0])
    s = k if stride is None else int(stride if isinstance(stride, int) else stride[0])
    n, c, length = x.shape
    y = _lp(x.reshape(n, c, 1, length), norm_type, (1, k), (1, s), ceil_mode)
    return y.reshape(n, c, y.shape[3])


def scatter_flat(values: Tensor, flat_index: Tensor, total: int, grad: bool = True) -> Tensor:
    """A [total] vector, zero but at ``flat_index`` where it holds ``values`` (both any shape, equal).

    Indices repeated with equal values (overlapping pooling windows that found one maximum) give
    that value once. The gradient of each value is the output gradient at its index (PyTorch's,
    repeated indices included): the values are a max-scatter without gradient plus a zero-valued
    sum-scatter that carries it (left out with ``grad=False``, for inference)."""
    idx = flat_index.reshape(-1)
    vals = values.reshape(-1)
    ctx = values.ctx
    most = ctx.op("scatter_reduce", idx, vals, axis=0, shape=(total,), reduction="max")
    ones = ctx.op("broadcast_to", ctx.const(1.0, "f32"), shape=tuple(vals.shape))
    hits = ctx.op("scatter_add", idx, ones, axis=0, shape=(total,))
    zero = ctx.const(0, values.value.dtype)
    if grad and values.value.dtype in FLOAT_DTYPES:
        finite = where(vals.isfinite(), vals, zero)  # inf - inf would make the zero a NaN
        summed = ctx.op("scatter_add", idx, finite, axis=0, shape=(total,))
        most = most.detach() + (summed - summed.detach())
    return where(hits > 0.0, most, zero)


def max_unpool2d(
    input: Any, indices: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, output_size: Any = None
) -> Tensor:
    """torch.nn.functional.max_unpool2d: each value of [N, C, H, W] ``input`` put at its (per-plane
    flat) index of a zero [N, C, OH, OW] output; OH = (H - 1) * stride - 2 * padding + kernel unless
    ``output_size`` is given."""
    x = as_tensor(input)
    idx = as_tensor(indices)
    if x.ndim != 4 or tuple(idx.shape) != tuple(x.shape):
        raise _fail(
            "max_unpool2d", f"needs input and indices [N, C, H, W], got {list(x.shape)}, {list(idx.shape)}"
        )

    def pair(v: Any) -> tuple[int, int]:
        return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))

    k = pair(kernel_size)
    s = k if stride is None else pair(stride)
    p = pair(padding)
    n, c, h, w = x.shape
    oh, ow = ((h - 1) * s[0] - 2 * p[0] + k[0], (w - 1) * s[1] - 2 * p[1] + k[1])
    if output_size is not None:
        oh, ow = (int(v) for v in tuple(output_size)[-2:])
    if oh < 1 or ow < 1:
        raise _fail("max_unpool2d", f"the output [{oh}, {ow}] is empty")
    plane = oh * ow
    index = idx.to("i64") + _const(
        x, (np.arange(n * c, dtype=np.int64) * plane).reshape(n, c, 1, 1), "unpool"
    )
    return scatter_flat(x, index, n * c * plane).reshape(n, c, oh, ow)


# Outside a trace, NumPy arguments run the function in eager mode (graphc/eager.py).
for _name in __all__:
    globals()[_name] = _eager(globals()[_name])
