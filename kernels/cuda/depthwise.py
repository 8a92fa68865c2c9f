"""CUDA generator of ``depthwise_conv2d``: one thread per output element sums its window directly."""

from __future__ import annotations

from graphc.ir import Node
from graphc.kernels.windows import depthwise_window

from .loops import IndexCtx, map_kernel
from .source import KernelSource, literal


def gen_depthwise_conv2d(node: Node) -> KernelSource:
    """y[n, c, oy, ox] = sum over (i, j) of w[c, 0, i, j] * x[n, c, oy*sh - ph + i*dh, ox*sw - pw + j*dw]."""
    x, wv = node.inputs
    n_, c_, h, w = x.shape
    win = depthwise_window(node.attrs, x.shape, wv.shape)
    taps = win.kh * win.kw

    def make(ctx: IndexCtx) -> list[str]:
        return [
            f"plane = i // {win.oh * win.ow}",
            f"c = plane % {c_}",
            f"y0 = ((i // {win.ow}) % {win.oh}) * {win.sh} - {win.ph}",
            f"x0 = (i % {win.ow}) * {win.sw} - {win.pw}",
            f"acc = {literal(0, x.dtype)}",
            f"for a in range({win.kh}):",
            f"    iy = y0 + a * {win.dh}",
            f"    if 0 <= iy < {h}:",
            f"        for b in range({win.kw}):",
            f"            ix = x0 + b * {win.dw}",
            f"            if 0 <= ix < {w}:",
            f"                acc += in1[c * {taps} + a * {win.kw} + b] * in0[(plane * {h} + iy) * {w} + ix]",
            "out0[i] = acc",
        ]

    return map_kernel(node, node.outputs[0].shape, make)
