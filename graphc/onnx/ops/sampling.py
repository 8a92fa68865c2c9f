"""Sampling, unpooling and small linear-algebra ONNX ops: GridSample, AffineGrid, LpPool, Col2Im,
CenterCropPad, ReverseSequence, MaxUnpool and Det, built from graphc primitives (gather, scatter,
where, matmul ...) so they compile on every backend; GridSample and AffineGrid go through
graphc.functional_sampling (the PyTorch functions).
"""

from __future__ import annotations

import math

import numpy as np

from graphc.functional_sampling import PADDING_MODES, make_affine_grid, sample_grid, scatter_flat
from graphc.ir.types import FLOAT_DTYPES, INT_DTYPES
from graphc.tensor import Tensor, where

from ..context import NodeContext
from ..proto import MAX_ELEMENTS
from ..registry import STATIC_SLOTS, converter
from .image import pool_geometry
from .nn import float_t
from .shape import check_static_size

# The inputs these ops need while compiling (a backend folds graph inputs that feed them).
STATIC_SLOTS.update({"AffineGrid": (1,), "Col2Im": (1, 2), "CenterCropPad": (1,), "MaxUnpool": (2,)})

_BIG = 2**20
_AUTO_PAD = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


@converter("GridSample", since=16)
def grid_sample(nc: NodeContext) -> list:
    """Sample X [N, C, *S] at Grid [N, *O, D]: linear, nearest or cubic; zeros, border or reflection
    padding; align_corners. Opset 16 names the modes bilinear/bicubic and takes 4-D X only; from opset
    20 X has 1 to 3 spatial axes. As ONNX Runtime and PyTorch, cubic border padding clamps each tap
    (onnx's reference evaluator also clamps the coordinate first)."""
    x = float_t(nc, 0)
    grid = float_t(nc, 1)
    modes = ("linear", "nearest", "cubic") if nc.opset >= 20 else ("bilinear", "nearest", "bicubic")
    mode = nc.attrs.string("mode", modes[0], modes)
    padding = nc.attrs.string("padding_mode", "zeros", PADDING_MODES)
    align = bool(nc.attrs.int("align_corners", 0, 0, 1))
    ranks = (3, 4, 5) if nc.opset >= 20 else (4,)
    if x.ndim not in ranks:
        raise nc.fail(
            f"X must have rank {' or '.join(map(str, ranks))} at opset {nc.opset}, got {list(x.shape)}"
        )
    d = x.ndim - 2
    if grid.ndim != x.ndim or grid.shape[0] != x.shape[0] or grid.shape[-1] != d:
        raise nc.fail(f"Grid must be [{x.shape[0]}, ..., {d}] of rank {x.ndim}, got {list(grid.shape)}")
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    return [sample_grid(x, grid, mode, padding, align)]


@converter("AffineGrid", since=20)
def affine_grid_op(nc: NodeContext) -> list:
    """The sampling grid [N, H, W, 2] ([N, D, H, W, 3]) of affine matrices theta [N, 2, 3] ([N, 3, 4])
    for a constant size (N, C, H, W) ((N, C, D, H, W))."""
    theta = float_t(nc, 0)
    size = nc.static_ints(1, "size", 1, MAX_ELEMENTS)
    align = bool(nc.attrs.int("align_corners", 0, 0, 1))
    d = len(size) - 2
    if d not in (2, 3) or theta.shape != (size[0], d, d + 1):
        raise nc.fail(
            f"needs size of 4 or 5 entries and theta [N, D, D + 1], got {size} and {list(theta.shape)}"
        )
    check_static_size(nc, (*size[2:], d + 1))  # the base grid constant
    return [make_affine_grid(theta, size, align, unit=-1.0)]  # a size-1 axis at -1, as onnx's reference


def _window_pads(
    nc: NodeContext, spatial: tuple[int, ...], kernel, strides, dilations
) -> list[tuple[int, int]]:
    """(begin, end) pads per spatial axis from pads / auto_pad."""
    n = len(spatial)
    auto = nc.attrs.string("auto_pad", "NOTSET", _AUTO_PAD)
    pads = nc.attrs.ints("pads", [0] * (2 * n), 2 * n, 0, _BIG)
    if auto == "VALID":
        return [(0, 0)] * n
    if auto == "NOTSET":
        return [(pads[i], pads[i + n]) for i in range(n)]
    out = []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
        out.append((lo, total - lo))
    return out


def _window_sum(nc: NodeContext, y: Tensor, axis: int, k: int, s: int, d: int, out: int) -> Tensor:
    """Sums of ``y``'s windows along ``axis`` (already padded): one gather of the taps, one sum."""
    idx = (np.arange(out)[:, None] * s + np.arange(k)[None, :] * d).reshape(-1)
    check_static_size(nc, idx.shape)
    taps = nc.op("gather", y, nc.tensor(idx.astype(np.int64), "lp_pool_index"), axis=axis)
    shape = (*y.shape[:axis], out, k, *y.shape[axis + 1 :])
    return nc.op("sum", nc.op("reshape", taps, shape=shape), axes=(axis + 1,))


@converter("LpPool")
def lp_pool(nc: NodeContext) -> list:
    """(sum over each window of |x|^p)^(1/p) over 1 to 3 spatial axes (zero padding): kernel_shape,
    strides, pads, auto_pad, dilations, ceil_mode."""
    x = float_t(nc, 0)
    n = x.ndim - 2
    if n not in (1, 2, 3):
        raise nc.fail(f"input must be [N, C, ...] with 1 to 3 spatial axes, got {list(x.shape)}")
    p = float(nc.attrs.float("p", 2.0)) if nc.opset < 2 else float(nc.attrs.int("p", 2, 1, 64))
    if not p > 0:
        raise nc.fail(f"attribute 'p' must be positive, got {p}")
    kernel = nc.attrs.ints("kernel_shape", None, n, 1, _BIG)
    if kernel is None:
        raise nc.fail("missing attribute 'kernel_shape'")
    strides = nc.attrs.ints("strides", [1] * n, n, 1, _BIG)
    dilations = nc.attrs.ints("dilations", [1] * n, n, 1, _BIG)
    ceil = bool(nc.attrs.int("ceil_mode", 0, 0, 1))
    pads = _window_pads(nc, x.shape[2:], kernel, strides, dilations)
    geo = [
        pool_geometry(size, k, s, d, lo, hi, ceil)
        for size, k, s, d, (lo, hi) in zip(x.shape[2:], kernel, strides, dilations, pads)
    ]
    if any(o <= 0 for o, _ in geo):
        raise nc.fail(f"kernel {kernel} does not fit input {list(x.shape)}")
    y = x.abs()
    y = y * y if p == 2 else (y if p == 1 else y**p)
    grow = tuple((lo, hi + extra) for (lo, hi), (_, extra) in zip(pads, geo))
    if any(lo or hi for lo, hi in grow):
        y = nc.op("pad", y, pads=((0, 0), (0, 0), *grow), value=0.0)
    for a, ((out, _), k, s, d) in enumerate(zip(geo, kernel, strides, dilations)):
        y = _window_sum(nc, y, a + 2, k, s, d, out)
    return [y.sqrt() if p == 2 else (y if p == 1 else y ** (1.0 / p))]


@converter("Col2Im", since=18)
def col2im(nc: NodeContext) -> list:
    """Sum the sliding blocks [N, C * prod(block), L] into [N, C, *image_shape] (any number of spatial
    axes): one scatter-add of every block element to its place in the padded image, then a crop."""
    x = nc.t(0)
    image = nc.static_ints(1, "image_shape", 1, _BIG)
    block = nc.static_ints(2, "block_shape", 1, _BIG)
    n = len(image)
    if len(block) != n or x.ndim != 3:
        raise nc.fail(
            f"needs input [N, C*K, L] and image_shape, block_shape of one length, got {list(x.shape)}"
        )
    strides = nc.attrs.ints("strides", [1] * n, n, 1, _BIG)
    dilations = nc.attrs.ints("dilations", [1] * n, n, 1, _BIG)
    pads = nc.attrs.ints("pads", [0] * (2 * n), 2 * n, 0, _BIG)
    padded = [image[i] + pads[i] + pads[i + n] for i in range(n)]
    blocks = [(pz - d * (k - 1) - 1) // s + 1 for pz, d, k, s in zip(padded, dilations, block, strides)]
    kernel = math.prod(block)
    if any(b < 1 for b in blocks) or x.shape[2] != math.prod(blocks) or x.shape[1] % kernel:
        raise nc.fail(
            f"input {list(x.shape)} does not fit {blocks} blocks of {block} in image {image} (pads {pads})"
        )
    check_static_size(nc, (kernel, x.shape[2]))  # the index constant
    offsets = np.stack(np.meshgrid(*[np.arange(k) * d for k, d in zip(block, dilations)], indexing="ij"), -1)
    starts = np.stack(np.meshgrid(*[np.arange(b) * s for b, s in zip(blocks, strides)], indexing="ij"), -1)
    pos = offsets.reshape(-1, 1, n) + starts.reshape(1, -1, n)  # [K, L, n]
    flat = np.ravel_multi_index(tuple(pos.reshape(-1, n).T), padded).astype(np.int64)
    c = x.shape[1] // kernel
    cols = nc.op("reshape", x, shape=(x.shape[0], c, kernel * x.shape[2]))
    img = nc.op(
        "scatter_add", nc.tensor(flat, "col2im_index"), cols, axis=2, shape=(x.shape[0], c, math.prod(padded))
    )
    img = nc.op("reshape", img, shape=(x.shape[0], c, *padded))
    if padded != image:
        rank = img.ndim
        starts_ = (0, 0, *pads[:n])
        stops = (x.shape[0], c, *(pads[i] + image[i] for i in range(n)))
        img = nc.op("slice", img, starts=starts_, stops=stops, steps=(1,) * rank)
    return [img]


@converter("CenterCropPad", since=18)
def center_crop_pad(nc: NodeContext) -> list:
    """Crop or zero-pad the given axes to a constant shape, centred (the odd element at the end)."""
    x = nc.t(0)
    rank = x.ndim
    shape = nc.static_ints(1, "shape", 0, MAX_ELEMENTS)
    axes = nc.attrs.ints("axes")
    axes = list(range(rank)) if axes is None else [nc.axis(a, rank) for a in axes]
    if len(shape) != len(axes) or len(set(axes)) != len(axes):
        raise nc.fail(f"shape {shape} needs one entry per distinct axis {axes}")
    starts, stops, pads = [0] * rank, list(x.shape), [(0, 0)] * rank
    for a, target in zip(axes, shape):
        dim = x.shape[a]
        if target < dim:
            starts[a] = (dim - target) // 2
            stops[a] = starts[a] + target
        elif target > dim:
            lo = (target - dim) // 2
            pads[a] = (lo, target - dim - lo)
    if starts != [0] * rank or stops != list(x.shape):
        x = nc.op("slice", x, starts=tuple(starts), stops=tuple(stops), steps=(1,) * rank)
    if any(lo or hi for lo, hi in pads):
        x = nc.op("pad", x, pads=tuple(pads), value=0.0 if x.value.dtype in FLOAT_DTYPES else 0)
    return [x]


@converter("ReverseSequence", since=10)
def reverse_sequence(nc: NodeContext) -> list:
    """Reverse the first sequence_lens[b] steps along time_axis of each batch entry b (lengths may be
    computed at run time): one gather of rows (b, source step)."""
    x = nc.t(0)
    rank = x.ndim
    if rank < 2:
        raise nc.fail(f"input must have rank >= 2, got {list(x.shape)}")
    batch_axis = nc.attrs.int("batch_axis", 1, 0, 1)
    time_axis = nc.attrs.int("time_axis", 0, 0, 1)
    if batch_axis == time_axis:
        raise nc.fail("batch_axis and time_axis must differ")
    lens = nc.t(1)
    b, t = x.shape[batch_axis], x.shape[time_axis]
    if lens.value.dtype not in INT_DTYPES or lens.shape != (b,):
        raise nc.fail(
            f"sequence_lens must be integers of shape [{b}], got {lens.value.dtype}{list(lens.shape)}"
        )
    rest = [i for i in range(rank) if i not in (batch_axis, time_axis)]
    perm = (batch_axis, time_axis, *rest)
    xt = nc.op("transpose", x, perm=perm) if perm != tuple(range(rank)) else x
    rows = nc.op("reshape", xt, shape=(b * t, math.prod(x.shape[i] for i in rest)))
    lens = nc.op("cast", lens, dtype="i64") if lens.value.dtype != "i64" else lens
    length = nc.op("reshape", lens.clamp(0, t), shape=(b, 1))
    step = nc.tensor(np.arange(t, dtype=np.int64).reshape(1, t), "reverse_step")
    src = where(step < length, length - 1 - step, step)
    src = src + nc.tensor((np.arange(b, dtype=np.int64) * t).reshape(b, 1), "reverse_row")
    y = nc.op("reshape", nc.op("gather", rows, src, axis=0), shape=xt.shape)
    if perm != tuple(range(rank)):
        y = nc.op("transpose", y, perm=tuple(int(i) for i in np.argsort(perm)))
    return [y]


@converter("MaxUnpool", since=9)
def max_unpool(nc: NodeContext) -> list:
    """Put each value of X at its flat index (MaxPool's Indices, over the whole output) of a zero tensor
    of output_shape if given, else of the inferred shape ((in - 1) * stride - pads + kernel).

    As ONNX Runtime and PyTorch, the indices address the output_shape tensor (so MaxPool then MaxUnpool
    to the pooled input's shape puts every maximum back); onnx's reference evaluator scatters into the
    inferred shape and pads that at the end instead (test_maxunpool_export_with_output_shape)."""
    x = nc.t(0)
    idx = nc.t(1)
    n = x.ndim - 2
    if n not in (1, 2, 3) or idx.shape != x.shape or idx.value.dtype not in INT_DTYPES:
        raise nc.fail(
            f"needs X [N, C, ...] and integer indices of its shape, got {list(x.shape)}, {list(idx.shape)}"
        )
    kernel = nc.attrs.ints("kernel_shape", None, n, 1, _BIG)
    if kernel is None:
        raise nc.fail("missing attribute 'kernel_shape'")
    strides = nc.attrs.ints("strides", [1] * n, n, 1, _BIG)
    pads = nc.attrs.ints("pads", [0] * (2 * n), 2 * n, 0, _BIG)
    inferred = [
        *x.shape[:2],
        *((x.shape[i + 2] - 1) * strides[i] - pads[i] - pads[i + n] + kernel[i] for i in range(n)),
    ]
    shape = nc.static_ints(2, "output_shape", 1, MAX_ELEMENTS) if nc.has(2) else inferred
    if len(shape) != x.ndim or list(shape[:2]) != list(x.shape[:2]) or min(shape) < 1:
        raise nc.fail(
            f"output_shape {shape} must be [{x.shape[0]}, {x.shape[1]}, ...] with {n} positive sizes"
        )
    idx = nc.op("cast", idx, dtype="i64") if idx.value.dtype != "i64" else idx
    return [nc.op("reshape", scatter_flat(x, idx, math.prod(shape), grad=False), shape=tuple(shape))]


def _slice(nc: NodeContext, x: Tensor, starts: tuple, stops: tuple) -> Tensor:
    return nc.op("slice", x, starts=starts, stops=stops, steps=(1,) * x.ndim)


def _det_elimination(nc: NodeContext, a: Tensor) -> Tensor:
    """Determinants of [B, M, M] ``a`` by Gaussian elimination with partial pivoting, unrolled over M:
    each step picks the largest pivot (argmax), swaps it up with a one-hot blend, and eliminates."""
    b, m = a.shape[0], a.shape[1]
    dtype = a.value.dtype
    det = sign = None
    for size in range(m, 1, -1):
        col = nc.op("reshape", _slice(nc, a, (0, 0, 0), (b, size, 1)), shape=(b, size))
        p = nc.op("argmax", col.abs(), axis=1, keepdims=True)  # [B, 1]
        rows = nc.tensor(np.arange(size, dtype=np.int64).reshape(1, size), "det_rows")
        hot = nc.op("cast", nc.op("eq", rows, p), dtype=dtype)  # [B, size]
        pivot_row = nc.op("sum", nc.op("mul", nc.op("reshape", hot, shape=(b, size, 1)), a), axes=(1,))
        top = nc.op("reshape", _slice(nc, a, (0, 0, 0), (b, 1, size)), shape=(b, size))
        swapped = a + nc.op("reshape", hot, shape=(b, size, 1)) * nc.op(
            "reshape", top - pivot_row, shape=(b, 1, size)
        )
        rest = _slice(nc, swapped, (0, 1, 0), (b, size, size))  # rows 1.. after the swap
        flip = 1.0 - 2.0 * nc.op("cast", nc.op("ne", p, nc.ctx.const(0, "i64")), dtype=dtype)
        sign = flip if sign is None else sign * flip
        pivot = _slice(nc, pivot_row, (0, 0), (b, 1))  # [B, 1]
        det = pivot if det is None else det * pivot
        safe = where(pivot == 0.0, nc.ctx.const(1.0, dtype), pivot)
        factor = _slice(nc, rest, (0, 0, 0), (b, size - 1, 1)) / nc.op("reshape", safe, shape=(b, 1, 1))
        tail = nc.op("reshape", _slice(nc, pivot_row, (0, 1), (b, size)), shape=(b, 1, size - 1))
        a = _slice(nc, rest, (0, 0, 1), (b, size - 1, size)) - factor * tail
    last = nc.op("reshape", a, shape=(b, 1))
    return det * last * sign


@converter("Det", since=11)
def det(nc: NodeContext) -> list:
    """Determinants of [..., M, M] matrices: the cofactor formula for M <= 3, Gaussian elimination with
    partial pivoting (unrolled) up to M = 32."""
    x = float_t(nc, 0)
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise nc.fail(f"needs square matrices [..., M, M], got {list(x.shape)}")
    m = x.shape[-1]
    if m > 32:
        raise nc.fail(f"graphc computes determinants of matrices up to 32x32, got {m}x{m}")
    batch = x.shape[:-2]
    rank = x.ndim

    def e(i: int, j: int) -> Tensor:
        part = nc.op(
            "slice", x, starts=(0,) * (rank - 2) + (i, j), stops=(*batch, i + 1, j + 1), steps=(1,) * rank
        )
        return nc.op("reshape", part, shape=batch)

    if m > 3:
        b = math.prod(batch)
        d = _det_elimination(nc, nc.op("reshape", x, shape=(b, m, m)))
        return [nc.op("reshape", d, shape=batch)]
    if m == 1:
        return [e(0, 0)]
    if m == 2:
        return [e(0, 0) * e(1, 1) - e(0, 1) * e(1, 0)]
    return [
        e(0, 0) * (e(1, 1) * e(2, 2) - e(1, 2) * e(2, 1))
        - e(0, 1) * (e(1, 0) * e(2, 2) - e(1, 2) * e(2, 0))
        + e(0, 2) * (e(1, 0) * e(2, 1) - e(1, 1) * e(2, 0))
    ]
