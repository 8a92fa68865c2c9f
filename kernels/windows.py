"""Convolution and pooling window arithmetic, once for every backend (and the NumPy reference)."""

from __future__ import annotations

from typing import NamedTuple

from graphc.ir.ops import conv_output_size


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
    """The window of an im2col/col2im/max_pool2d node over an ``h`` x ``w`` image.

    Pooling nodes have no ``padding`` attribute: their windows are unpadded.
    """
    (kh, kw), (sh, sw) = attrs["kernel"], attrs["stride"]
    (ph, pw), (dh, dw) = attrs.get("padding", (0, 0)), attrs["dilation"]
    oh = conv_output_size(h, kh, sh, ph, dh)
    ow = conv_output_size(w, kw, sw, pw, dw)
    return Window(kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)


def depthwise_window(attrs: dict, x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> Window:
    """The window of a depthwise_conv2d node: input [N, C, H, W], weight [C, 1, kh, kw]."""
    return conv_window({**attrs, "kernel": tuple(w_shape[2:])}, x_shape[2], x_shape[3])
