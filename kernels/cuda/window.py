"""CUDA generators of the window ops: im2col/col2im (convolution) and max pooling with its gradient."""

from __future__ import annotations

from graphc.ir import Node, Value
from graphc.ir.types import FLOAT_DTYPES
from graphc.kernels.windows import PoolWindow, conv_window, pool_fill, pool_window

from .loops import (
    IndexCtx,
    map_kernel,
)
from .source import NUMBA_TYPES, KernelSource, indent, literal


def gen_im2col(node: Node) -> KernelSource:
    """cols[n, (c, i, j), (y, x)] = xpad[n, c, y*sh + i*dh, x*sw + j*dw] (zero outside)."""
    n_, c_, h, w = node.inputs[0].shape
    kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = conv_window(node.attrs, h, w)
    zero = literal(0, node.inputs[0].dtype)

    def make(ctx: IndexCtx) -> list[str]:
        return [
            f"n = i // {c_ * kh * kw * oh * ow}",
            f"row = (i // {oh * ow}) % {c_ * kh * kw}",
            f"pos = i % {oh * ow}",
            f"c = row // {kh * kw}",
            f"ki = (row // {kw}) % {kh}",
            f"kj = row % {kw}",
            f"y = (pos // {ow}) * {sh} - {ph} + ki * {dh}",
            f"x = (pos % {ow}) * {sw} - {pw} + kj * {dw}",
            f"if 0 <= y < {h} and 0 <= x < {w}:",
            f"    out0[i] = in0[((n * {c_} + c) * {h} + y) * {w} + x]",
            "else:",
            f"    out0[i] = {zero}",
        ]

    return map_kernel(node, node.outputs[0].shape, make)


def gen_col2im(node: Node) -> KernelSource:
    """Gather form: each image pixel sums the column entries that read it (no atomics)."""
    n_, c_, h, w = node.attrs["image_shape"]
    kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = conv_window(node.attrs, h, w)
    dtype = node.outputs[0].dtype
    acc_t = "i64" if dtype in ("i32", "i64") else dtype

    def make(ctx: IndexCtx) -> list[str]:
        return [
            f"n = i // {c_ * h * w}",
            f"c = (i // {h * w}) % {c_}",
            f"yy = (i // {w}) % {h} + {ph}",
            f"xx = i % {w} + {pw}",
            f"acc = {literal(0, acc_t)}",
            f"for ki in range({kh}):",
            f"    ty = yy - ki * {dh}",
            f"    if ty >= 0 and ty % {sh} == 0 and ty // {sh} < {oh}:",
            f"        for kj in range({kw}):",
            f"            tx = xx - kj * {dw}",
            f"            if tx >= 0 and tx % {sw} == 0 and tx // {sw} < {ow}:",
            f"                col = ((n * {c_} + c) * {kh} + ki) * {kw} + kj",
            f"                at = col * {oh * ow} + (ty // {sh}) * {ow} + tx // {sw}",
            f"                acc += {NUMBA_TYPES[acc_t]}(in0[at])",
            f"out0[i] = {NUMBA_TYPES[dtype]}(acc)",
        ]

    return map_kernel(node, node.outputs[0].shape, make)


def _first_max_lines(x: Value, win: PoolWindow, w: int, h: int) -> list[str]:
    """Lines leaving in ``best``/``arg`` the value and x offset of the window's first maximum.

    The window's top-left cell is at row ``y0``, column ``x0`` of plane ``nc`` (negative in the
    padding); elements are visited in row-major window order and NaN counts as the maximum (the
    first NaN wins), as in PyTorch. A padding cell holds -inf (an integer's minimum) and has
    ``arg`` -1, so a window whose first maximum is padding adds its gradient nowhere.
    """
    take = "v > best or (v != v and best == best)" if x.dtype in FLOAT_DTYPES else "v > best"
    low = literal(pool_fill(x.dtype), x.dtype)
    load = [
        f"        at = nc * {h * w} + yy * {w} + xx",
        "        v = in0[at]",
    ]
    if win.padded:
        load = [
            f"        if 0 <= yy < {h} and 0 <= xx < {w}:",
            *indent(load, 1),
            "        else:",
            "            at = -1",
            f"            v = {low}",
        ]
    return [
        f"best = {low}" if win.padded else f"best = in0[nc * {h * w} + y0 * {w} + x0]",
        "arg = -1" if win.padded else f"arg = nc * {h * w} + y0 * {w} + x0",
        f"for a in range({win.kh}):",
        f"    for b in range({win.kw}):",
        f"        yy = y0 + a * {win.dh}",
        f"        xx = x0 + b * {win.dw}",
        *load,
        f"        if {take}{' or (a == 0 and b == 0)' if win.padded else ''}:",
        "            best = v",
        "            arg = at",
    ]


def gen_max_pool2d(node: Node) -> KernelSource:
    """y[n, c, oy, ox] = the first maximum of x's window at (oy*sh - top, ox*sw - left), padding
    cells -inf (NaN counts as the maximum)."""
    x = node.inputs[0]
    n_, c_, h, w = x.shape
    win = pool_window(node.attrs, h, w)
    oh, ow = win.oh, win.ow

    def make(ctx: IndexCtx) -> list[str]:
        return [
            f"nc = i // {oh * ow}",
            f"y0 = ((i // {ow}) % {oh}) * {win.sh} - {win.top}",
            f"x0 = (i % {ow}) * {win.sw} - {win.left}",
            *_first_max_lines(x, win, w, h),
            "out0[i] = best",
        ]

    return map_kernel(node, node.outputs[0].shape, make)


def gen_max_pool2d_grad(node: Node) -> KernelSource:
    """Gather form: each x element sums dy over the windows whose first maximum it is (no atomics)."""
    x, dy = node.inputs
    n_, c_, h, w = x.shape
    win = pool_window(node.attrs, h, w)
    kh, kw, sh, sw, dh, dw, oh, ow = win.kh, win.kw, win.sh, win.sw, win.dh, win.dw, win.oh, win.ow
    dtype = node.outputs[0].dtype
    # Window (oy, ox) reads this element at (ki, kj) when iy + top = oy*sh + ki*dh and
    # ix + left = ox*sw + kj*dw; its first maximum is recomputed there, and dy[oy, ox] is added if
    # that maximum is this element.
    window = [
        f"y0 = oy * {sh} - {win.top}",
        f"x0 = ox * {sw} - {win.left}",
        *_first_max_lines(x, win, w, h),
        "if arg == i:",
        f"    acc += in1[nc * {oh * ow} + oy * {ow} + ox]",
    ]

    def make(ctx: IndexCtx) -> list[str]:
        return [
            f"nc = i // {h * w}",
            f"iy = (i // {w}) % {h} + {win.top}",
            f"ix = i % {w} + {win.left}",
            f"acc = {literal(0, dtype)}",
            f"for ki in range({kh}):",
            f"    ty = iy - ki * {dh}",
            f"    if ty >= 0 and ty % {sh} == 0 and ty // {sh} < {oh}:",
            f"        oy = ty // {sh}",
            f"        for kj in range({kw}):",
            f"            tx = ix - kj * {dw}",
            f"            if tx >= 0 and tx % {sw} == 0 and tx // {sw} < {ow}:",
            f"                ox = tx // {sw}",
            *indent(window, 4),
            "out0[i] = acc",
        ]

    return map_kernel(node, node.outputs[0].shape, make)
