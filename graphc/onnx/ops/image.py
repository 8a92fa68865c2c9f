"""Convolution (1-D, 2-D; transposed 3-D too), pooling (1-D to 3-D) and resizing ONNX ops, built from
im2col, col2im, matmul, gather."""

from __future__ import annotations

import math

import numpy as np

from graphc.convolution_transpose import crop_transposed, full_size, transposed_volume
from graphc.ir.ops import conv_output_size, max_pool_pad_limits
from graphc.ir.types import FLOAT_DTYPES, INT_DTYPES, to_numpy_dtype
from graphc.resize_taps import taps, tf_crop_coords
from graphc.tensor import Tensor
from graphc.tensor_functions import where

from ..context import NodeContext
from ..proto import MAX_ELEMENTS
from ..registry import converter
from .elementwise import const_like
from .nn import float_t, like
from .shape import check_static_size

_AUTO_PAD = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
_BIG = 2**20


def as_2d(nc: NodeContext, x: Tensor, what: str = "input") -> tuple[Tensor, bool]:
    """An [N, C, L] input as [N, C, 1, L] (flag True), an [N, C, H, W] one unchanged."""
    if x.ndim == 3:
        return nc.op("reshape", x, shape=(x.shape[0], x.shape[1], 1, x.shape[2])), True
    if x.ndim != 4:
        raise nc.fail(f"{what} must be [N, C, L] or [N, C, H, W] (1-D or 2-D), got {list(x.shape)}")
    return x, False


def from_2d(nc: NodeContext, y: Tensor, was_1d: bool) -> Tensor:
    """Undo ``as_2d``."""
    return nc.op("reshape", y, shape=(y.shape[0], y.shape[1], y.shape[3])) if was_1d else y


def window_attrs(nc: NodeContext, spatial: tuple[int, ...], kernel: list[int], was_1d: bool):
    """(strides, dilations, [(begin, end) pads]) for 2-D, from the node's attributes."""
    n = 1 if was_1d else 2
    strides = nc.attrs.ints("strides", [1] * n, n, 1, _BIG)
    dilations = nc.attrs.ints("dilations", [1] * n, n, 1, _BIG)
    auto = nc.attrs.string("auto_pad", "NOTSET", _AUTO_PAD)
    pads = nc.attrs.ints("pads", [0] * (2 * n), 2 * n, 0, _BIG)
    pairs = [(pads[i], pads[i + n]) for i in range(n)]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pairs = []
        for size, k, s, d in zip(spatial[-n:], kernel, strides, dilations):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pairs.append((lo, total - lo))
    elif auto == "VALID":
        pairs = [(0, 0)] * n
    if was_1d:
        return [1, *strides], [1, *dilations], [(0, 0), *pairs]
    return strides, dilations, pairs


def _kernel(nc: NodeContext, name: str, n: int, default: list[int] | None) -> list[int]:
    k = nc.attrs.ints(name, default, n, 1, _BIG)
    if k is None:
        raise nc.fail(f"missing attribute {name!r}")
    return k


def conv2d(nc: NodeContext, x: Tensor, w: Tensor, strides, dilations, pads, group: int) -> Tensor:
    """Grouped 2-D convolution as im2col + (batched) matmul; pads are (begin, end) pairs."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if c != cg * group or o % group:
        raise nc.fail(f"input has {c} channels, weight {list(w.shape)} with group={group} does not fit")
    if all(lo == hi for lo, hi in pads):
        im_pad = (pads[0][0], pads[1][0])
    else:
        x = nc.op("pad", x, pads=((0, 0), (0, 0), *pads), value=0.0)
        im_pad = (0, 0)
        h, wd = x.shape[2:]
    oh = conv_output_size(h, kh, strides[0], im_pad[0], dilations[0])
    ow = conv_output_size(wd, kw, strides[1], im_pad[1], dilations[1])
    if oh <= 0 or ow <= 0:
        raise nc.fail(f"kernel {kh}x{kw} does not fit input {list(x.shape)}")
    from graphc.convolution import is_depthwise

    if is_depthwise(x, w, group):  # one filter per channel: the direct kernel, no im2col
        return nc.op(
            "depthwise_conv2d", x, w, stride=tuple(strides), padding=im_pad, dilation=tuple(dilations)
        )
    cols = nc.op(
        "im2col", x, kernel=(kh, kw), stride=tuple(strides), padding=im_pad, dilation=tuple(dilations)
    )
    k = cg * kh * kw
    if group == 1:
        out = nc.op("matmul", nc.op("reshape", w, shape=(o, k)), cols)
    else:
        cols = nc.op("reshape", cols, shape=(n, group, k, oh * ow))
        out = nc.op("matmul", nc.op("reshape", w, shape=(group, o // group, k)), cols)
    return nc.op("reshape", out, shape=(n, o, oh, ow))


def _bias(nc: NodeContext, y: Tensor, i: int) -> Tensor:
    if not nc.has(i):
        return y
    b = like(nc, i, y)
    if b.shape != (y.shape[1],):
        raise nc.fail(f"bias must have shape [{y.shape[1]}], got {list(b.shape)}")
    return nc.op("add", y, nc.op("reshape", b, shape=(1, y.shape[1], 1, 1)))


@converter("Conv")
def conv(nc: NodeContext) -> list:
    """N-D convolution for 1-D and 2-D: groups, dilations, pads, auto_pad."""
    x, was_1d = as_2d(nc, float_t(nc, 0))
    w = like(nc, 1, x)
    if w.ndim != (3 if was_1d else 4):
        raise nc.fail(f"weight {list(w.shape)} does not match input rank")
    if was_1d:
        w = nc.op("reshape", w, shape=(w.shape[0], w.shape[1], 1, w.shape[2]))
    group = nc.attrs.int("group", 1, 1, _BIG)
    kernel = _kernel(nc, "kernel_shape", 1 if was_1d else 2, list(w.shape[2:])[-(1 if was_1d else 2) :])
    if ([1] + kernel if was_1d else kernel) != list(w.shape[2:]):
        raise nc.fail(f"kernel_shape {kernel} does not match weight {list(w.shape)}")
    strides, dilations, pads = window_attrs(nc, x.shape[2:], kernel, was_1d)
    y = _bias(nc, conv2d(nc, x, w, strides, dilations, pads, group), 2)
    return [from_2d(nc, y, was_1d)]


def _transpose_pads(
    nc: NodeContext, sizes: list[int], strides: list[int], full: list[int], outpad: list[int]
) -> list[tuple[int, int]]:
    """ConvTranspose's (begin, end) crop per spatial axis: ``pads``, or what ``output_shape`` or
    auto_pad SAME_UPPER/SAME_LOWER (output = input * stride) asks for."""
    m = len(sizes)
    auto = nc.attrs.string("auto_pad", "NOTSET", _AUTO_PAD)
    out_shape = nc.attrs.ints("output_shape", None, m, 1, _BIG)
    pads_attr = nc.attrs.ints("pads", [0] * (2 * m), 2 * m, 0, _BIG)
    pads = [(pads_attr[i], pads_attr[i + m]) for i in range(m)]
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        targets = out_shape if out_shape is not None else [i * s for i, s in zip(sizes, strides)]
        pads = []
        for f, op_, t in zip(full, outpad, targets):
            total = f + op_ - t
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads.append((lo, total - lo))
    if any(f + op_ - hi - lo <= 0 for f, op_, (lo, hi) in zip(full, outpad, pads)):
        raise nc.fail("pads leave an empty output")
    return pads


@converter("ConvTranspose")
def conv_transpose(nc: NodeContext) -> list:
    """Transposed 1-D and 2-D convolution as matmul + col2im; 3-D as matmul and two col2im
    (graphc/convolution_transpose.py)."""
    x = float_t(nc, 0)
    if x.ndim == 5:
        return [_conv_transpose3d(nc, x)]
    if x.ndim not in (3, 4):
        raise nc.fail(f"input must be [N, C, L], [N, C, H, W] or [N, C, D, H, W], got {list(x.shape)}")
    x, was_1d = as_2d(nc, x)
    w = like(nc, 1, x)
    if was_1d and w.ndim == 3:
        w = nc.op("reshape", w, shape=(w.shape[0], w.shape[1], 1, w.shape[2]))
    if w.ndim != 4:
        raise nc.fail(f"weight {list(w.shape)} does not match input rank")
    n, c, h, wd = x.shape
    cin, og, kh, kw = w.shape
    group = nc.attrs.int("group", 1, 1, _BIG)
    if cin != c or c % group:
        raise nc.fail(f"input has {c} channels, weight {list(w.shape)} with group={group} does not fit")
    strides, dilations, _ = window_attrs(nc, (h, wd), [kh, kw][-(1 if was_1d else 2) :], was_1d)
    m = 1 if was_1d else 2
    outpad = nc.attrs.ints("output_padding", [0] * m, m, 0, _BIG)
    full = [full_size(i, s, d, k) for i, s, d, k in zip((h, wd), strides, dilations, (kh, kw))]
    pads = _transpose_pads(nc, [h, wd][-m:], strides[-m:], full[-m:], outpad)
    if was_1d:
        outpad, pads = [0, *outpad], [(0, 0), *pads]
    cg = c // group
    xs = nc.op("reshape", x, shape=(n, group, cg, h * wd))
    wt = nc.op("reshape", w, shape=(group, cg, og * kh * kw))
    cols = nc.op("matmul", nc.op("transpose", wt, perm=(0, 2, 1)), xs)  # [N, G, og*kh*kw, h*w]
    cols = nc.op("reshape", cols, shape=(n, group * og * kh * kw, h * wd))
    img = nc.op(
        "col2im",
        cols,
        kernel=(kh, kw),
        stride=tuple(strides),
        padding=(0, 0),
        dilation=tuple(dilations),
        image_shape=(n, group * og, full[0], full[1]),
    )
    img = crop_transposed(img, full, outpad, pads)
    return [from_2d(nc, _bias(nc, img, 2), was_1d)]


def _conv_transpose3d(nc: NodeContext, x: Tensor) -> Tensor:
    """ConvTranspose of an [N, C, D, H, W] input (graphc/convolution_transpose.py's two col2im)."""
    w = like(nc, 1, x)
    if w.ndim != 5:
        raise nc.fail(f"weight {list(w.shape)} does not match input rank 5")
    c = x.shape[1]
    group = nc.attrs.int("group", 1, 1, _BIG)
    if w.shape[0] != c or c % group:
        raise nc.fail(f"input has {c} channels, weight {list(w.shape)} with group={group} does not fit")
    kernel = _kernel(nc, "kernel_shape", 3, list(w.shape[2:]))
    if kernel != list(w.shape[2:]):
        raise nc.fail(f"kernel_shape {kernel} does not match weight {list(w.shape)}")
    strides = nc.attrs.ints("strides", [1] * 3, 3, 1, _BIG)
    dilations = nc.attrs.ints("dilations", [1] * 3, 3, 1, _BIG)
    outpad = nc.attrs.ints("output_padding", [0] * 3, 3, 0, _BIG)
    sizes = list(x.shape[2:])
    full = [full_size(i, s, d, k) for i, s, d, k in zip(sizes, strides, dilations, kernel)]
    pads = _transpose_pads(nc, sizes, strides, full, outpad)
    y = crop_transposed(transposed_volume(x, w, group, strides, dilations), full, outpad, pads)
    if not nc.has(2):
        return y
    b = like(nc, 2, y)
    if b.shape != (y.shape[1],):
        raise nc.fail(f"bias must have shape [{y.shape[1]}], got {list(b.shape)}")
    return nc.op("add", y, nc.op("reshape", b, shape=(1, y.shape[1], 1, 1, 1)))


def pool_geometry(size: int, k: int, s: int, d: int, lo: int, hi: int, ceil: bool) -> tuple[int, int]:
    """(output length, extra end padding) of a pooling window along one axis."""
    span = (k - 1) * d + 1
    numer = size + lo + hi - span
    out = (-(-numer // s) if ceil else numer // s) + 1
    if ceil and (out - 1) * s >= size + lo:
        out -= 1
    extra = max(0, (out - 1) * s + span - (size + lo + hi))
    return out, extra


class _Window:
    """A pooling node's per-axis window (1 to 3 spatial axes): kernel, strides, dilations, pads."""

    def __init__(self, nc: NodeContext, x: Tensor) -> None:
        n = x.ndim - 2
        if n not in (1, 2, 3):
            raise nc.fail(f"input must be [N, C, L], [N, C, H, W] or [N, C, D, H, W], got {list(x.shape)}")
        self.kernel = _kernel(nc, "kernel_shape", n, None)
        self.strides = nc.attrs.ints("strides", [1] * n, n, 1, _BIG)
        self.dilations = nc.attrs.ints("dilations", [1] * n, n, 1, _BIG)
        auto = nc.attrs.string("auto_pad", "NOTSET", _AUTO_PAD)
        pads = nc.attrs.ints("pads", [0] * (2 * n), 2 * n, 0, _BIG)
        self.pads = [(pads[i], pads[i + n]) for i in range(n)]
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            self.pads = []
            for size, k, s, d in zip(x.shape[2:], self.kernel, self.strides, self.dilations):
                total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
                lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
                self.pads.append((lo, total - lo))
        elif auto == "VALID":
            self.pads = [(0, 0)] * n
        self.ceil = bool(nc.attrs.int("ceil_mode", 0, 0, 1))

    def axes(self, first: int, stop: int) -> tuple[list, list, list, list]:
        """(kernel, strides, dilations, pads) of spatial axes ``first:stop``."""
        return tuple(list(v[first:stop]) for v in (self.kernel, self.strides, self.dilations, self.pads))


def _crop(nc: NodeContext, y: Tensor, oh: int, ow: int) -> Tensor:
    if y.shape[2:] == (oh, ow):
        return y
    return nc.op("slice", y, starts=(0, 0, 0, 0), stops=(*y.shape[:2], oh, ow), steps=(1, 1, 1, 1))


def _lowest(x: Tensor) -> float | int:
    """The max-pool padding value: -inf, or the integer dtype's minimum."""
    if x.value.dtype in FLOAT_DTYPES:
        return -math.inf
    return int(np.iinfo(to_numpy_dtype(x.value.dtype)).min)


def _max_pool2d(
    nc: NodeContext, x: Tensor, kernel: list, strides: list, dilations: list, grow: tuple
) -> Tensor:
    """One ``max_pool2d`` whose padding cells are -inf, where the pads fit its limits (at most half
    the kernel, plus stride - 1 at the end); else a ``pad`` of -inf, then the unpadded pool."""
    (top, bottom), (left, right) = grow
    attrs = {"kernel": tuple(kernel), "stride": tuple(strides), "dilation": tuple(dilations)}
    padding = (top, left, bottom, right)
    if all(p <= limit for p, limit in zip(padding, max_pool_pad_limits(attrs["kernel"], attrs["stride"]))):
        return nc.op("max_pool2d", x, **attrs, padding=padding)
    x = nc.op("pad", x, pads=((0, 0), (0, 0), *grow), value=_lowest(x))
    return nc.op("max_pool2d", x, **attrs)


def _pool2d(nc: NodeContext, x: Tensor, window: tuple, ceil: bool, include: bool | None) -> Tensor:
    """Max (``include`` None) or average pool of [N, C, H, W] ``x`` over a 2-D window."""
    kernel, strides, dilations, pads = window
    n, c, h, w = x.shape
    geo = [
        pool_geometry(size, k, s, d, lo, hi, ceil)
        for size, k, s, d, (lo, hi) in zip((h, w), kernel, strides, dilations, pads)
    ]
    if any(o <= 0 for o, _ in geo):
        raise nc.fail(f"kernel {kernel} does not fit input {list(x.shape)}")
    (oh, _), (ow, _) = geo
    grow = tuple((lo, hi + extra) for (lo, hi), (_, extra) in zip(pads, geo))
    if include is None:
        return _crop(nc, _max_pool2d(nc, x, kernel, strides, dilations, grow), oh, ow)
    if any(lo or hi for lo, hi in grow):
        x = nc.op("pad", x, pads=((0, 0), (0, 0), *grow), value=0.0)
    cols = nc.op(
        "im2col", x, kernel=tuple(kernel), stride=tuple(strides), padding=(0, 0), dilation=tuple(dilations)
    )
    h2 = conv_output_size(x.shape[2], kernel[0], strides[0], 0, dilations[0])
    w2 = conv_output_size(x.shape[3], kernel[1], strides[1], 0, dilations[1])
    total = nc.op("sum", nc.op("reshape", cols, shape=(n, c, kernel[0] * kernel[1], h2, w2)), axes=(2,))
    total = _crop(nc, total, oh, ow)
    divisor = np.outer(
        *(
            _counts(size, k, s, d, lo, hi, o, include)
            for size, k, s, d, (lo, hi), o in zip((h, w), kernel, strides, dilations, pads, (oh, ow))
        )
    )
    if np.all(divisor == divisor.flat[0]):
        return nc.op("mul", total, const_like(nc, 1.0 / float(divisor.flat[0]), total))
    scale = (1.0 / divisor).astype(to_numpy_dtype(total.value.dtype))
    return nc.op("mul", total, nc.tensor(scale, "pool_scale"))


def _pool(nc: NodeContext, x: Tensor, include: bool | None) -> Tensor:
    """Pool ``x`` over 1 to 3 spatial axes with the node's window (see ``_pool2d``).

    A 3-D pool is separable: a 2-D pool over (H, W) of [N, C*D, H, W], then a (kd, 1) pool over
    D of the [N, C, D, OH*OW] view. Exact for max; for average too, as the divisor of a box is the
    product of its per-axis counts (valid positions, or kernel positions inside the padded input).
    """
    win = _Window(nc, x)
    if x.ndim == 3:
        n, c, length = x.shape
        k, s, d, p = win.axes(0, 1)
        x4 = nc.op("reshape", x, shape=(n, c, 1, length))
        y = _pool2d(nc, x4, ([1, *k], [1, *s], [1, *d], [(0, 0), *p]), win.ceil, include)
        return nc.op("reshape", y, shape=(n, c, y.shape[3]))
    if x.ndim == 4:
        return _pool2d(nc, x, win.axes(0, 2), win.ceil, include)
    n, c, depth, h, w = x.shape
    y = _pool2d(nc, nc.op("reshape", x, shape=(n, c * depth, h, w)), win.axes(1, 3), win.ceil, include)
    oh, ow = y.shape[2:]
    y = nc.op("reshape", y, shape=(n, c, depth, oh * ow))
    k, s, d, p = win.axes(0, 1)
    y = _pool2d(nc, y, ([*k, 1], [*s, 1], [*d, 1], [*p, (0, 0)]), win.ceil, include)
    return nc.op("reshape", y, shape=(n, c, y.shape[2], oh, ow))


def _max_indices(nc: NodeContext, x: Tensor, window: tuple, ceil: bool, column_major: bool) -> Tensor:
    """MaxPool's Indices of [N, C, H, W] ``x``: each window's first maximal element (row-major scan,
    as ``max_pool2d``) as a flat NCHW index into ``x`` (H and W column-major for storage_order=1).

    The windows' columns (``im2col``) are reduced by ``argmax``, whose tap index becomes (h, w).
    """
    kernel, strides, dilations, pads = window
    n, c, h, w = x.shape
    geo = [
        pool_geometry(size, k, s, d, lo, hi, ceil)
        for size, k, s, d, (lo, hi) in zip((h, w), kernel, strides, dilations, pads)
    ]
    (oh, _), (ow, _) = geo
    grow = tuple((lo, hi + extra) for (lo, hi), (_, extra) in zip(pads, geo))
    if any(lo or hi for lo, hi in grow):
        x = nc.op("pad", x, pads=((0, 0), (0, 0), *grow), value=_lowest(x))
    cols = nc.op(
        "im2col", x, kernel=tuple(kernel), stride=tuple(strides), padding=(0, 0), dilation=tuple(dilations)
    )
    h2 = conv_output_size(x.shape[2], kernel[0], strides[0], 0, dilations[0])
    w2 = conv_output_size(x.shape[3], kernel[1], strides[1], 0, dilations[1])
    cols = nc.op("reshape", cols, shape=(n, c, kernel[0] * kernel[1], h2, w2))
    if (h2, w2) != (oh, ow):
        cols = nc.op("slice", cols, starts=(0,) * 5, stops=(n, c, cols.shape[2], oh, ow), steps=(1,) * 5)
    tap = nc.op("argmax", cols, axis=2)

    def i64(v: np.ndarray | int) -> Tensor:
        return nc.tensor(np.asarray(v, dtype=np.int64), "pool_index")

    (sh, sw), (dh, dw), ((top, _), (left, _)) = strides, dilations, pads
    rows = nc.op("mul", nc.op("floordiv", tap, i64(kernel[1])), i64(dh))
    rows = nc.op("add", rows, i64((np.arange(oh) * sh - top).reshape(1, 1, oh, 1)))
    cols_ = nc.op("mul", nc.op("remainder", tap, i64(kernel[1])), i64(dw))
    cols_ = nc.op("add", cols_, i64((np.arange(ow) * sw - left).reshape(1, 1, 1, ow)))
    flat = (
        nc.op("add", rows, nc.op("mul", cols_, i64(h)))
        if column_major
        else nc.op("add", nc.op("mul", rows, i64(w)), cols_)
    )
    return nc.op("add", flat, i64((np.arange(n * c) * (h * w)).reshape(n, c, 1, 1)))


@converter("MaxPool")
def max_pool(nc: NodeContext) -> list:
    """Max pooling over 1 to 3 spatial axes (pads with -inf, or an integer dtype's minimum).

    The Indices output (1-D and 2-D) is each window's first maximal element's flat index.
    """
    column_major = bool(nc.attrs.int("storage_order", 0, 0, 1))
    x = nc.t(0)
    if x.value.dtype not in FLOAT_DTYPES + INT_DTYPES:
        raise nc.fail(f"input 0 must be float or integer, got {x.value.dtype}")
    y = _pool(nc, x, None)
    if not (nc.n_outputs > 1 and nc.node.output[1]):
        return [y]
    if x.ndim == 5:
        raise nc.fail("the Indices output is supported for 1-D and 2-D pools, not 3-D")
    win = _Window(nc, x)
    if x.ndim == 4:
        return [y, _max_indices(nc, x, win.axes(0, 2), win.ceil, column_major)]
    k, s, d, p = win.axes(0, 1)
    x4 = nc.op("reshape", x, shape=(x.shape[0], x.shape[1], 1, x.shape[2]))
    idx = _max_indices(nc, x4, ([1, *k], [1, *s], [1, *d], [(0, 0), *p]), win.ceil, column_major)
    return [y, nc.op("reshape", idx, shape=y.shape)]


def _counts(size: int, k: int, s: int, d: int, lo: int, hi: int, out: int, include_pad: bool) -> np.ndarray:
    counts = []
    for i in range(out):
        pos = [i * s - lo + j * d for j in range(k)]
        low, high = (-lo, size + hi) if include_pad else (0, size)
        counts.append(sum(1 for p in pos if low <= p < high))
    return np.maximum(np.array(counts, dtype=np.float64), 1.0)


@converter("AveragePool")
def average_pool(nc: NodeContext) -> list:
    """Average pooling over 1 to 3 spatial axes (count_include_pad, ceil_mode, dilations, auto_pad)."""
    include = bool(nc.attrs.int("count_include_pad", 0, 0, 1))
    return [_pool(nc, float_t(nc, 0), include)]


@converter("GlobalAveragePool", "GlobalMaxPool")
def global_pool(nc: NodeContext) -> list:
    """Mean (max) over all spatial axes, kept as size 1."""
    x = float_t(nc, 0)
    if x.ndim < 3:
        raise nc.fail(f"needs input [N, C, ...], got {list(x.shape)}")
    axes = tuple(range(2, x.ndim))
    if nc.op_type == "GlobalMaxPool":
        return [nc.op("max", x, axes=axes, keepdims=True)]
    n = math.prod(x.shape[2:])
    return [nc.op("mul", nc.op("sum", x, axes=axes, keepdims=True), const_like(nc, 1.0 / n, x))]


_COORD = (
    "half_pixel",
    "align_corners",
    "asymmetric",
    "pytorch_half_pixel",
    "half_pixel_symmetric",
    "tf_crop_and_resize",
)
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def source_coords(mode: str, size: int, out: int, scale: float) -> np.ndarray:
    """Input coordinates of each output index along one axis (ONNX Resize's transforms)."""
    i = np.arange(out, dtype=np.float64)
    if mode == "align_corners":
        length = size * scale  # ONNX uses the unrounded resized length here
        return i * (size - 1) / (length - 1) if length > 1 else np.zeros(out)
    if mode == "asymmetric":
        return i / scale
    if mode == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if out > 1 else np.zeros(out)
    if mode == "half_pixel_symmetric":
        adjustment = out / (scale * size)
        offset = size / 2 * (1 - adjustment)
        return offset + (i + 0.5) / scale - 0.5
    return (i + 0.5) / scale - 0.5


def _nearest(x: np.ndarray, mode: str) -> np.ndarray:
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    frac = x - np.floor(x)
    if mode == "round_prefer_ceil":
        return np.where(frac == 0.5, np.ceil(x), np.round(x))
    return np.where(frac == 0.5, np.floor(x), np.round(x))


def _resize_axis(nc: NodeContext, x: Tensor, axis: int, out: int, scale: float, how: dict) -> Tensor:
    """Resample one axis of ``x`` to ``out`` positions: one gather, then (linear, cubic) a weighted sum."""
    size = x.shape[axis]
    outside = None
    if how["coord"] == "tf_crop_and_resize":
        src, outside = tf_crop_coords(*how["roi"][axis], size, out, scale)
    else:
        src = source_coords(how["coord"], size, out, scale)
    if how["mode"] == "nearest":
        idx = np.clip(_nearest(src, how["nearest"]), 0, size - 1).astype(np.int64)
        y = nc.op("gather", x, nc.tensor(idx, "resize_index"), axis=axis)
    else:
        idx, w = taps(
            how["mode"],
            src,
            size,
            scale,
            cubic_a=how["cubic_a"],
            antialias=how["antialias"],
            exclude_outside=how["exclude_outside"],
        )
        n = idx.shape[1]
        y = nc.op("gather", x, nc.tensor(idx.reshape(-1), "resize_index"), axis=axis)
        shape = [*x.shape[:axis], out, n, *x.shape[axis + 1 :]]
        y = nc.op("reshape", y, shape=tuple(shape))
        view = [1] * len(shape)
        view[axis], view[axis + 1] = out, n
        np_dtype = to_numpy_dtype(x.value.dtype)
        weights = nc.tensor(w.astype(np_dtype).reshape(view), "resize_weight")
        y = nc.op("sum", nc.op("mul", y, weights), axes=(axis + 1,))
    if outside is not None and outside.any():
        view = [1] * x.ndim
        view[axis] = out
        fill = const_like(nc, how["extrapolation"], y)
        y = where(nc.tensor(outside.reshape(view), "resize_outside"), fill, y)
    return y


def _roi(nc: NodeContext, axes: list[int]) -> dict[int, tuple[float, float]]:
    """tf_crop_and_resize's crop box per resized axis, from the roi input ([starts..., ends...])."""
    roi = nc.static(1, "roi").reshape(-1)
    if roi.size != 2 * len(axes):
        raise nc.fail(f"roi needs {2 * len(axes)} entries (starts, then ends), got {roi.size}")
    k = len(axes)
    return {a: (float(roi[i]), float(roi[k + i])) for i, a in enumerate(axes)}


@converter("Resize", "Upsample")
def resize(nc: NodeContext) -> list:
    """Nearest, (multi-)linear and cubic resizing with ONNX's coordinate transforms.

    Also antialiased (linear, cubic) downsampling, ``exclude_outside``, ``cubic_coeff_a`` and
    'tf_crop_and_resize' with its ``roi`` and ``extrapolation_value``; each axis is resampled
    on its own (graphc/resize_taps.py has the weight tables).
    """
    x = float_t(nc, 0)
    rank = x.ndim
    mode = nc.attrs.string("mode", "nearest", ("nearest", "linear", "bilinear", "cubic"))
    mode = "linear" if mode == "bilinear" else mode
    old = nc.op_type == "Upsample" or nc.opset < 11
    coord = "asymmetric" if old else nc.attrs.string("coordinate_transformation_mode", "half_pixel", _COORD)
    nearest = "floor" if old else nc.attrs.string("nearest_mode", "round_prefer_floor", _NEAREST)
    antialias = bool(nc.attrs.int("antialias", 0, 0, 1))
    if antialias and mode == "nearest":
        raise nc.fail("antialias=1 needs mode 'linear' or 'cubic', not 'nearest'")
    how = {
        "mode": mode,
        "coord": coord,
        "nearest": nearest,
        "antialias": antialias,
        "cubic_a": nc.attrs.float("cubic_coeff_a", -0.75),
        "exclude_outside": bool(nc.attrs.int("exclude_outside", 0, 0, 1)),
        "extrapolation": nc.attrs.float("extrapolation_value", 0.0),
    }
    policy = nc.attrs.string("keep_aspect_ratio_policy", "stretch", ("stretch", "not_larger", "not_smaller"))
    axes = nc.attrs.ints("axes")
    axes = list(range(rank)) if axes is None else [nc.axis(a, rank) for a in axes]
    if nc.op_type == "Upsample" and nc.opset < 9:
        scales = nc.attrs.floats("scales")
        sizes = None
    elif old:
        scales, sizes = [float(v) for v in nc.static(1, "scales").reshape(-1)], None
    else:
        scales = [float(v) for v in nc.static(2, "scales").reshape(-1)] if nc.has(2) else None
        scales = scales or None
        sizes = nc.static_ints(3, "sizes", 1, MAX_ELEMENTS) if nc.has(3) else None
    if (scales is None) == (sizes is None):
        raise nc.fail("needs exactly one of scales and sizes")
    if sizes is not None:
        if len(sizes) != len(axes):
            raise nc.fail(f"sizes needs {len(axes)} entries")
        ratios = [s / x.shape[a] for s, a in zip(sizes, axes)]
        if policy != "stretch":
            r = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [r] * len(axes)
            sizes = [int(math.floor(r * x.shape[a] + 0.5)) for a in axes]
        scales = ratios
    else:
        if len(scales) != len(axes) or any(not (math.isfinite(s) and s > 0) for s in scales):
            raise nc.fail(f"scales must be {len(axes)} positive numbers, got {scales}")
        sizes = [int(math.floor(x.shape[a] * s)) for a, s in zip(axes, scales)]
        if any(s < 1 or s > MAX_ELEMENTS for s in sizes):
            raise nc.fail("scales give an empty or too large output")
    if coord == "tf_crop_and_resize":
        how["roi"] = _roi(nc, axes)
    for a, out, scale in zip(axes, sizes, scales):
        check_static_size(nc, (out,))
        crop = how.get("roi", {}).get(a, (0.0, 1.0)) != (0.0, 1.0)
        if out != x.shape[a] or scale != 1.0 or crop:
            x = _resize_axis(nc, x, a, out, scale, how)
    return [x]
