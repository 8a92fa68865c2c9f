"""Image ops: im2col/col2im, depthwise convolution, max pooling and its gradient."""

from __future__ import annotations

from ..types import FLOAT_DTYPES, TensorType
from .registry import NONNEGATIVE_PAIR, POSITIVE_PAIR, SIZE, Attr, ShapeSpec, TupleSpec, _check, _register


# ---------------------------------------------------------------- image
def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution/pooling window along one axis (PyTorch's formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _window(attrs, h, w):
    (kh, kw), (sh, sw) = attrs["kernel"], attrs["stride"]
    (ph, pw), (dh, dw) = attrs["padding"], attrs["dilation"]
    oh = conv_output_size(h, kh, sh, ph, dh)
    ow = conv_output_size(w, kw, sw, pw, dw)
    _check(oh > 0 and ow > 0, f"window {kh}x{kw} does not fit input {h}x{w}")
    return kh, kw, oh, ow


def _im2col(inputs, attrs):
    (x,) = inputs
    _check(x.rank == 4, f"im2col needs NCHW input, got rank {x.rank}")
    n, c, h, w = x.shape
    kh, kw, oh, ow = _window(attrs, h, w)
    return [TensorType((n, c * kh * kw, oh * ow), x.dtype)]


def _col2im(inputs, attrs):
    (cols,) = inputs
    n, c, h, w = attrs["image_shape"]
    kh, kw, oh, ow = _window(attrs, h, w)
    expect = (n, c * kh * kw, oh * ow)
    _check(cols.shape == expect, f"columns must have shape {expect}, got {cols.shape}")
    return [TensorType((n, c, h, w), cols.dtype)]


def pool_output_size(size: int, kernel: int, stride: int, lo: int, hi: int, dilation: int) -> int:
    """Output length of a pooling window along one axis padded by ``lo`` before and ``hi`` after."""
    return (size + lo + hi - dilation * (kernel - 1) - 1) // stride + 1


def max_pool_pad_limits(kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest (top, left, bottom, right) padding of a max_pool2d: half the kernel (PyTorch's
    rule), and at the end plus stride - 1 (ceil_mode's extra end padding)."""
    (kh, kw), (sh, sw) = kernel, stride
    return kh // 2, kw // 2, kh // 2 + sh - 1, kw // 2 + sw - 1


def _max_pool2d(inputs, attrs):
    (x,) = inputs
    _check(x.rank == 4, f"max_pool2d needs NCHW input, got rank {x.rank}")
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["stride"], attrs["dilation"]
    top, left, bottom, right = attrs["padding"]
    limits = max_pool_pad_limits((kh, kw), (sh, sw))
    for name, pad, limit in zip(("top", "left", "bottom", "right"), attrs["padding"], limits):
        _check(
            pad <= limit,
            f"{name} padding {pad} of kernel {(kh, kw)} stride {(sh, sw)} exceeds {limit} "
            "(half the kernel, plus stride - 1 at the end for ceil_mode)",
        )
    oh = pool_output_size(h, kh, sh, top, bottom, dh)
    ow = pool_output_size(w, kw, sw, left, right, dw)
    _check(
        oh > 0 and ow > 0,
        f"window {kh}x{kw} does not fit input {h}x{w} padded {attrs['padding']}",
    )
    return [TensorType((n, c, oh, ow), x.dtype)]


def _max_pool2d_grad(inputs, attrs):
    x, dy = inputs
    (y,) = _max_pool2d([x], attrs)
    _check(dy.shape == y.shape, f"max_pool2d_grad: dy must have the pooled shape {y.shape}, got {dy.shape}")
    _check(dy.dtype in FLOAT_DTYPES, f"max_pool2d_grad: dy must be a float tensor, got {dy.dtype}")
    return [TensorType(x.shape, dy.dtype)]


# Window sizes, strides and dilations are positive, paddings non-negative (all ints).
_WINDOW = {
    "kernel": Attr(POSITIVE_PAIR),
    "stride": Attr(POSITIVE_PAIR, (1, 1)),
    "padding": Attr(NONNEGATIVE_PAIR, (0, 0)),
    "dilation": Attr(POSITIVE_PAIR, (1, 1)),
}
_register("im2col", 1, "opaque", _im2col, dict(_WINDOW))
_register("col2im", 1, "opaque", _col2im, {**_WINDOW, "image_shape": Attr(ShapeSpec(rank=4))})


def _depthwise_conv2d(inputs, attrs):
    x, w = inputs
    _check(x.rank == 4, f"depthwise_conv2d needs NCHW input, got rank {x.rank}")
    n, c, h, wd = x.shape
    _check(
        w.rank == 4 and w.shape[0] == c and w.shape[1] == 1,
        f"depthwise_conv2d needs weight [{c}, 1, kh, kw] for {c} channels, got {w.shape}",
    )
    _check(
        x.dtype in FLOAT_DTYPES and w.dtype == x.dtype,
        f"depthwise_conv2d needs float operands of one dtype, got {x.dtype} and {w.dtype}",
    )
    _, _, oh, ow = _window({**attrs, "kernel": w.shape[2:]}, h, wd)
    return [TensorType((n, c, oh, ow), x.dtype)]


# Depthwise convolution (one [kh, kw] filter per channel, PyTorch's groups == channels, no
# bias): y[n, c, oy, ox] = sum over (i, j) of w[c, 0, i, j] * x[n, c, oy*sh - ph + i*dh, ox*sw - pw + j*dw],
# zero outside the image. The kernel size is the weight's.
_register(
    "depthwise_conv2d", 2, "opaque", _depthwise_conv2d, {k: v for k, v in _WINDOW.items() if k != "kernel"}
)


# Max pooling over an NCHW input padded by ``padding`` = (top, left, bottom, right) cells that
# hold -inf (an integer dtype's minimum): exactly pad(x, value=-inf) then the unpadded pool.
# Each window's value is its first maximal element in row-major window order, NaN counting as
# the maximum (PyTorch's rule); max_pool2d_grad(x, dy) routes dy[window] to that element, and
# drops it where that element is a padding cell (a window of -inf values beginning in padding).
# Each pad is at most half the kernel (PyTorch's rule), the end pads plus stride - 1 (the extra
# end padding of ceil_mode): ``max_pool_pad_limits``.
_POOL = {
    "kernel": Attr(POSITIVE_PAIR),
    "stride": Attr(POSITIVE_PAIR),
    "dilation": Attr(POSITIVE_PAIR, (1, 1)),
    "padding": Attr(TupleSpec(SIZE, length=4), (0, 0, 0, 0)),
}
_register("max_pool2d", 1, "opaque", _max_pool2d, dict(_POOL))
_register("max_pool2d_grad", 2, "opaque", _max_pool2d_grad, dict(_POOL))
