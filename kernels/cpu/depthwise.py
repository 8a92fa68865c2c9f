"""CPU generator of ``depthwise_conv2d``: a direct kernel that reads the input through the window.

Each (image, channel) plane's outputs split, per axis, into the interior (the window lies inside
the image) and the few border positions before and after it. Every (row part, column part) pair
gets one unrolled sum of the window taps that fall inside the image, with no bounds test: over
the interior a loop that LLVM vectorizes along the row at stride 1, on the border one statement
per position whose valid taps are known when the kernel is generated. Nothing like im2col's
``kh * kw`` columns is materialized. Windows with more than ``MAX_UNROLLED_TAPS`` taps, or more
than ``MAX_BORDER`` border positions on an axis, take a plain loop with bounds tests instead.
"""

from __future__ import annotations

from graphc.ir import Node
from graphc.kernels.windows import Window, depthwise_window

from .loops import use_parallel
from .source import Source, literal, planes_of

MAX_UNROLLED_TAPS = 49
MAX_BORDER = 8


def interior(size: int, kernel: int, stride: int, pad: int, dil: int, out: int) -> tuple[int, int]:
    """Outputs ``lo <= o < hi`` along one axis whose window lies inside ``[0, size)``."""
    lo = min(-(-pad // stride), out)
    hi = (size - 1 + pad - (kernel - 1) * dil) // stride + 1
    return lo, max(min(hi, out), lo)


def _parts(size: int, kernel: int, stride: int, pad: int, dil: int, out: int) -> list[tuple[str, int, int]]:
    """The axis as parts: ("at", o, o + 1) for each border position, ("range", lo, hi) for the interior."""
    lo, hi = interior(size, kernel, stride, pad, dil, out)
    parts = [("at", o, o + 1) for o in range(lo)]
    if hi > lo:
        parts.append(("range", lo, hi))
    return parts + [("at", o, o + 1) for o in range(hi, out)]


def _taps(part: tuple[str, int, int], var: str, size: int, kernel: int, stride: int, pad: int, dil: int):
    """[(tap, input index expression)] of the taps inside the image for one part of an axis."""
    kind, o, _ = part
    if kind == "range":
        return [(t, f"{var} * {stride} + {t * dil - pad}") for t in range(kernel)]
    return [
        (t, str(o * stride - pad + t * dil)) for t in range(kernel) if 0 <= o * stride - pad + t * dil < size
    ]


def _unrolled(win: Window, h: int, w: int, zero: str) -> list[str]:
    rows = _parts(h, win.kh, win.sh, win.ph, win.dh, win.oh)
    cols = _parts(w, win.kw, win.sw, win.pw, win.dw, win.ow)
    lines = [f"    w{k} = wt[c, {k}]" for k in range(win.kh * win.kw)]
    for row in rows:
        row_taps = _taps(row, "y", h, win.kh, win.sh, win.ph, win.dh)
        y = "y" if row[0] == "range" else str(row[1])
        if row[0] == "range":
            lines.append(f"    for y in range({row[1]}, {row[2]}):")
        body = []
        for col in cols:
            col_taps = _taps(col, "xo", w, win.kw, win.sw, win.pw, win.dw)
            terms = [
                f"w{i * win.kw + j} * x[q, ({ri}) * {w} + {cj}]" for i, ri in row_taps for j, cj in col_taps
            ]
            xo = "xo" if col[0] == "range" else str(col[1])
            store = f"o[q, {y} * {win.ow} + {xo}] = " + (" + ".join(terms) or zero)
            if col[0] == "range":
                body += [f"for xo in range({col[1]}, {col[2]}):", f"    {store}"]
            else:
                body.append(store)
        indent = "        " if row[0] == "range" else "    "
        lines += [indent + line for line in body]
    return lines


def _checked(win: Window, h: int, w: int, zero: str) -> list[str]:
    return [
        f"    for y in range({win.oh}):",
        f"        for xo in range({win.ow}):",
        f"            acc = {zero}",
        f"            for i in range({win.kh}):",
        f"                iy = y * {win.sh} - {win.ph} + i * {win.dh}",
        f"                if 0 <= iy < {h}:",
        f"                    for j in range({win.kw}):",
        f"                        ix = xo * {win.sw} - {win.pw} + j * {win.dw}",
        f"                        if 0 <= ix < {w}:",
        f"                            acc += wt[c, i * {win.kw} + j] * x[q, iy * {w} + ix]",
        f"            o[q, y * {win.ow} + xo] = acc",
    ]


def depthwise_conv2d_source(node: Node) -> str:
    """y[n, c] = the window sums of x[n, c] weighted by w[c]: the window, image size and channel
    count baked in, the batch size read from the arrays."""
    x, wv = node.inputs
    n, c, h, w = x.shape
    win = depthwise_window(node.attrs, x.shape, wv.shape)
    zero = literal(0, x.dtype)
    y_lo, y_hi = interior(h, win.kh, win.sh, win.ph, win.dh, win.oh)
    x_lo, x_hi = interior(w, win.kw, win.sw, win.pw, win.dw, win.ow)
    border = max(win.oh - (y_hi - y_lo), win.ow - (x_hi - x_lo))
    unroll = win.kh * win.kw <= MAX_UNROLLED_TAPS and border <= MAX_BORDER
    par = use_parallel(x.type.numel + node.outputs[0].type.numel, n * c)
    lines = [
        f"NC = {planes_of('a0', h * w, n * c)}",
        f"x = a0.reshape((NC, {h * w}))",
        f"wt = a1.reshape(({c}, {win.kh * win.kw}))",
        f"o = a2.reshape((NC, {win.oh * win.ow}))",
        f"for q in {'prange' if par else 'range'}(NC):",
        f"    c = q % {c}",  # a constant divisor (C read at run time: 7x7 planes 13% slower)
        *(_unrolled if unroll else _checked)(win, h, w, zero),
    ]
    a = node.attrs
    title = f"depthwise_conv2d kernel {(win.kh, win.kw)} stride {a['stride']} padding {a['padding']}"
    return Source(f"{title} dilation {a['dilation']}").render(3, lines, par)
