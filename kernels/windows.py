"""Convolution and pooling window arithmetic, once for every backend (and the NumPy reference)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from graphc.ir import to_numpy_dtype
from graphc.ir.ops import conv_output_size, pool_output_size
from graphc.ir.types import FLOAT_DTYPES


class Window(NamedTuple):
    """A 2-D window's kernel, stride, padding and dilation per axis, and the output size."""

    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    oh: int
    ow: int


def conv_window(attrs: dict, h: int, w: int) -> Window:
    """The window of an im2col/col2im/depthwise_conv2d node over an ``h`` x ``w`` image.

    (Max-pool nodes pad each side on its own: ``pool_window``.)
    """
    (kh, kw), (sh, sw) = attrs["kernel"], attrs["stride"]
    (ph, pw), (dh, dw) = attrs.get("padding", (0, 0)), attrs["dilation"]
    oh = conv_output_size(h, kh, sh, ph, dh)
    ow = conv_output_size(w, kw, sw, pw, dw)
    return Window(kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)


def depthwise_window(attrs: dict, x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> Window:
    """The window of a depthwise_conv2d node: input [N, C, H, W], weight [C, 1, kh, kw]."""
    return conv_window({**attrs, "kernel": tuple(w_shape[2:])}, x_shape[2], x_shape[3])


class PoolWindow(NamedTuple):
    """A max-pool node's window: kernel, stride, dilation, padding per side, output size."""

    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    top: int
    left: int
    bottom: int
    right: int
    oh: int
    ow: int

    @property
    def padded(self) -> bool:
        """Whether any side is padded."""
        return any((self.top, self.left, self.bottom, self.right))


def pool_window(attrs: dict, h: int, w: int) -> PoolWindow:
    """The window of a max_pool2d/max_pool2d_grad node over an ``h`` x ``w`` image."""
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["stride"], attrs["dilation"]
    top, left, bottom, right = attrs.get("padding", (0, 0, 0, 0))
    oh = pool_output_size(h, kh, sh, top, bottom, dh)
    ow = pool_output_size(w, kw, sw, left, right, dw)
    return PoolWindow(kh, kw, sh, sw, dh, dw, top, left, bottom, right, oh, ow)


def pool_fill(dtype: str) -> float | int | bool:
    """The value of a max pool's padding cells: -inf, or the integer dtype's minimum."""
    if dtype in FLOAT_DTYPES:
        return -math.inf
    if dtype == "bool":
        return False
    return int(np.iinfo(to_numpy_dtype(dtype)).min)
