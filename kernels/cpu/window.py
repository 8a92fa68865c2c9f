"""CPU generators of the window ops: im2col/col2im (convolution) and max pooling with its gradient."""

from __future__ import annotations

from graphc.ir import Node, Value
from graphc.ir.types import FLOAT_DTYPES
from graphc.kernels.windows import conv_window, pool_fill, pool_window

from .loops import use_parallel
from .source import Source, literal, planes_of


def _plus(expr: str, offset: int) -> str:
    """``expr + offset`` as source (nothing added for 0)."""
    return expr if offset == 0 else f"{expr} + {offset}" if offset > 0 else f"{expr} - {-offset}"


def _low(x: Value) -> str:
    """The padding cells' value: -inf, or the integer dtype's minimum."""
    return literal(pool_fill(x.dtype), x.dtype)


def _pool_title(node: Node, kind: str = "") -> str:
    win = pool_window(node.attrs, *node.inputs[0].shape[2:])
    pads = f" padding {(win.top, win.left, win.bottom, win.right)}" if win.padded else ""
    return f"{node.op} {node.attrs['kernel']} stride {node.attrs['stride']}{pads}{kind}"


def _pool_window(node: Node, x: Value) -> tuple[list[str], list[tuple[int, int]], bool]:
    """Shared head of the max-pool kernels: (plane, row, col) views and loops, the window offsets.

    ``y0``/``x0`` are the window's top-left cell in x's coordinates (negative in the padding)."""
    n, c, h, w = x.shape
    win = pool_window(node.attrs, h, w)
    par = use_parallel(x.type.numel, n * c)
    lines = [
        f"P = {planes_of('a0', h * w, n * c)}",
        f"x = a0.reshape((P, {h}, {w}))",
        f"for p in {'prange' if par else 'range'}(P):",
        "    for oy in range(OH):",
        "        for ox in range(OW):",
        f"            y0 = {_plus(f'oy * {win.sh}', -win.top)}",
        f"            x0 = {_plus(f'ox * {win.sw}', -win.left)}",
    ]
    return lines, [(i * win.dh, j * win.dw) for i in range(win.kh) for j in range(win.kw)], par


def _inside(h: int, w: int, di: int, dj: int) -> str:
    """Whether window tap (di, dj) of the window at (y0, x0) lies inside the h x w image."""
    return f"(y0 + {di} >= 0) & (y0 + {di} < {h}) & (x0 + {dj} >= 0) & (x0 + {dj} < {w})"


def _better(x: Value) -> str:
    """Whether window value v replaces best: larger, or NaN (NaN is the maximum, as in PyTorch).

    Only the value is kept, so which NaN wins does not matter. Bitwise operators and
    conditional expressions, not ``or``/``if``: LLVM turns them into selects, where branches on
    random data mispredict half the time (8x slower on 2x2 pools).
    """
    return "(v > best) | (v != v)" if x.dtype in FLOAT_DTYPES else "v > best"


def max_pool_source(node: Node) -> str:
    """Each window's first maximal element (NaN wins): separable where windows overlap or tile.

    Padding cells hold -inf (an integer's minimum); the kernels skip them (the separable
    kernel peels the border windows, the flat one copies each block into a padded scratch)."""
    x, y = node.inputs[0], node.outputs[0]
    win = pool_window(node.attrs, *x.shape[2:])
    if win.sh <= win.kh * win.dh:
        narrow = node.outputs[0].shape[3] < NARROW_POOL
        return _flat_max_pool_source(node) if narrow else _separable_max_pool_source(node)
    head, offsets, par = _pool_window(node, x)
    lines = [
        f"OH, OW = {y.shape[2]}, {y.shape[3]}",
        f"o = a1.reshape(({planes_of('a1', y.shape[2] * y.shape[3], y.shape[0] * y.shape[1])}, OH, OW))",
    ]
    if win.padded:
        lines += head + [f"            best = {_low(x)}"]
        for di, dj in offsets:
            lines.append(f"            if {_inside(x.shape[2], x.shape[3], di, dj)}:")
            lines.append(f"                v = x[p, y0 + {di}, x0 + {dj}]")
            lines.append(f"                best = v if {_better(x)} else best")
    else:
        lines += head + ["            best = x[p, y0, x0]"]
        for di, dj in offsets[1:]:
            lines.append(f"            v = x[p, y0 + {di}, x0 + {dj}]")
            lines.append(f"            best = v if {_better(x)} else best")
    lines.append("            o[p, oy, ox] = best")
    return Source(_pool_title(node)).render(2, lines, par)


# Blocks of planes of the separable and flat max pools: each block allocates its scratch once.
POOL_BLOCKS = 16


def _pool_blocks(planes: int, plane_size: int, parallel: bool) -> list[str]:
    """Lines setting ``P`` (planes, read at run time), ``blocks`` and ``per`` (planes a block)."""
    blocks = f"min(P, {POOL_BLOCKS})" if parallel else "1"
    return [
        f"P = {planes_of('a0', plane_size, planes)}",
        f"blocks = max({blocks}, 1)",
        "per = -(-P // blocks)",
    ]


def _interior(size: int, out: int, k: int, s: int, d: int, lo: int) -> tuple[int, int]:
    """Outputs ``first <= o < stop`` whose windows (start ``o * s - lo``) lie inside ``[0, size)``."""
    first = min(-(-lo // s), out)
    stop = min(max((size - 1 - (k - 1) * d + lo) // s + 1, first), out)
    return first, stop


def _peeled(lines: list[str], step: str, indent: str, load, start: int, taps: list[int], size: int) -> bool:
    """Append the select chain over the taps ``start + tap`` inside ``[0, size)``; False if none is."""
    inside = [start + t for t in taps if 0 <= start + t < size]
    if not inside:
        return False
    lines.append(f"{indent}best = {load(inside[0])}")
    for at in inside[1:]:
        lines += [f"{indent}v = {load(at)}", f"{indent}{step.strip()}"]
    return True


def _separable_max_pool_source(node: Node) -> str:
    """Max pool in two passes per plane: each input row's maximum over the window's columns
    (``t[y, ox]``), then each output's maximum over the window's rows of ``t``; the second pass
    runs along contiguous rows, so LLVM vectorizes it (1.4-1.8x the one-pass kernel on the zoo's
    3x3 pools). Exact: both passes keep the first maximal element (strict ``>``), so the result is
    the row-major window's first maximal element (the sign of a zero included), as in the one-pass
    kernel, which stays where windows skip rows (stride above the window's height: the first pass
    would fill rows no window reads). With padding, the loops run over the windows inside the
    image and the border windows are peeled (their in-image taps only, constants baked in): the
    -inf padding cells never change a maximum, and a window of padding only is -inf.
    """
    x, y = node.inputs[0], node.outputs[0]
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    win = pool_window(node.attrs, h, w)
    kh, kw, sh, sw, dh, dw = win.kh, win.kw, win.sh, win.sw, win.dh, win.dw
    planes = n * c
    par = use_parallel(x.type.numel, planes)
    step = f"                best = v if {_better(x)} else best"
    x_lo, x_hi = _interior(w, ow, kw, sw, dw, win.left)
    y_lo, y_hi = _interior(h, oh, kh, sh, dh, win.top)
    # The interior loops count from their first window (``ox`` is output column ``ox + x_lo``), so
    # every index is a non-negative constant plus a multiple of the loop variable: numba then emits
    # no negative-index fix and LLVM vectorizes the loop (with ``ox * sw - left`` it ran 1.5x slower).
    x0 = x_lo * sw - win.left
    lines = [
        *_pool_blocks(planes, h * w, par),
        f"x = a0.reshape((P, {h}, {w}))",
        f"o = a1.reshape((P, {oh}, {ow}))",
        f"for blk in {'prange' if par else 'range'}(blocks):",
        f"    t = np.empty(({h}, {ow}), a0.dtype)",
        "    for p in range(blk * per, min(blk * per + per, P)):",
        f"        for r in range({h}):",
        f"            for ox in range({x_hi - x_lo}):",
        f"                best = x[p, r, {_plus(f'ox * {sw}', x0)}]",
    ]
    for j in range(1, kw):
        lines += [f"                v = x[p, r, {_plus(f'ox * {sw}', x0 + j * dw)}]", step]
    lines.append(f"                t[r, {_plus('ox', x_lo)}] = best")
    for ox in [*range(x_lo), *range(x_hi, ow)]:  # border windows: their in-image columns only
        taps = [j * dw for j in range(kw)]
        if not _peeled(lines, step, " " * 12, lambda at: f"x[p, r, {at}]", ox * sw - win.left, taps, w):
            lines.append(f"            t[r, {ox}] = {_low(x)}")
        else:
            lines.append(f"            t[r, {ox}] = best")
    y0 = y_lo * sh - win.top
    lines += [
        f"        for oy in range({y_hi - y_lo}):",
        f"            for ox in range({ow}):",
        f"                best = t[{_plus(f'oy * {sh}', y0)}, ox]",
    ]
    for i in range(1, kh):
        lines += [f"                v = t[{_plus(f'oy * {sh}', y0 + i * dh)}, ox]", step]
    lines.append(f"                o[p, {_plus('oy', y_lo)}, ox] = best")
    for oy in [*range(y_lo), *range(y_hi, oh)]:  # border rows of windows
        lines.append(f"        for ox in range({ow}):")
        taps = [i * dh for i in range(kh)]
        if not _peeled(lines, step, " " * 12, lambda at: f"t[{at}, ox]", oy * sh - win.top, taps, h):
            lines.append(f"            o[p, {oy}, ox] = {_low(x)}")
        else:
            lines.append(f"            o[p, {oy}, ox] = best")
    return Source(_pool_title(node, " (separable)")).render(2, lines, par)


# Output rows narrower than this go to the flat kernel: a loop this short along a row gives
# LLVM's 16-lane float loops no full vector (the zoo's 13 x 13 pools ran entirely scalar).
NARROW_POOL = 16


def _padded_copy(x: Value, win, hw2: int, w2: int) -> list[str]:
    """Lines filling ``xs``, the block's planes each padded with -inf cells (flat kernel)."""
    h, w = x.shape[2:]
    low = _low(x)
    return [
        f"    xs = np.empty((p1 - p0) * {hw2}, a0.dtype)",
        "    for q in range(p1 - p0):",
        f"        base = q * {hw2}",
        f"        src = (p0 + q) * {h * w}",
        f"        for f in range(base, base + {win.top * w2}):",
        f"            xs[f] = {low}",
        f"        for r in range({h}):",
        f"            row = base + (r + {win.top}) * {w2}",
        f"            for f in range({win.left}):",
        f"                xs[row + f] = {low}",
        f"            for f in range({w}):",
        f"                xs[row + {win.left} + f] = x[src + r * {w} + f]",
        f"            for f in range({win.left + w}, {w2}):",
        f"                xs[row + f] = {low}",
        f"        for f in range(base + {(win.top + h) * w2}, base + {hw2}):",
        f"            xs[f] = {low}",
    ]


def _flat_max_pool_source(node: Node) -> str:
    """Max pool in two passes over each block of planes as one flat run (narrow planes: the
    loops are long and contiguous whatever the plane's width, so LLVM vectorizes them): ``t[f]``,
    the maximum over the window's columns starting at element ``f``, then, over ``t`` in place
    (each entry reads only entries at or after it), the maximum over the window's rows; entries
    whose window runs past a row's or a plane's end are computed and never read. Then each
    output is gathered from its window's first element. Exact, as the separable kernel: both
    passes keep the first maximal element (strict ``>``). With padding, each block's planes are
    first copied into a scratch run with their -inf borders (cache-resident, not the arena)."""
    x, y = node.inputs[0], node.outputs[0]
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    win = pool_window(node.attrs, h, w)
    kh, kw, sh, sw, dh, dw = win.kh, win.kw, win.sh, win.sw, win.dh, win.dw
    w2 = w + win.left + win.right  # the padded plane's width and size
    hw2 = (h + win.top + win.bottom) * w2
    planes = n * c
    par = use_parallel(x.type.numel, planes)
    reach = (kw - 1) * dw  # the first pass's window past its start, along the run
    down = (kh - 1) * dh * w2  # the second pass's
    better = _better(x)
    lines = [
        *_pool_blocks(planes, h * w, par),
        "x = a0.reshape(a0.size)",
        f"o = a1.reshape((P, {oh}, {ow}))",
        f"for blk in {'prange' if par else 'range'}(blocks):",
        "    p0 = blk * per",
        "    p1 = min(p0 + per, P)",
    ]
    if win.padded:
        lines += _padded_copy(x, win, hw2, w2)
    else:
        lines.append(f"    xs = x[p0 * {hw2}:p1 * {hw2}]")
    lines += [
        f"    run = (p1 - p0) * {hw2} - {reach}",
        "    t = np.empty(max(run, 1), a0.dtype)",
        "    for f in range(run):",
        "        best = xs[f]",
    ]
    for j in range(1, kw):
        lines += [f"        v = xs[f + {j * dw}]", f"        best = v if {better} else best"]
    lines += ["        t[f] = best"]
    if kh > 1:
        lines += [f"    for f in range(run - {down}):", "        best = t[f]"]
        for i in range(1, kh):
            lines += [f"        v = t[f + {i * dh * w2}]", f"        best = v if {better} else best"]
        lines += ["        t[f] = best"]
    lines += [
        "    for p in range(p0, p1):",
        f"        for oy in range({oh}):",
        f"            row = (p - p0) * {hw2} + oy * {sh * w2}",
        f"            for ox in range({ow}):",
        f"                o[p, oy, ox] = t[row + ox * {sw}]",
    ]
    return Source(_pool_title(node, " (flat)")).render(2, lines, par)


def max_pool_grad_source(node: Node) -> str:
    """dx: each dy entry added to its window's first maximal element of x (windows may overlap).

    Per plane, one pass finds each window's maximum (the forward's select chain), then the
    first element equal to it (a second chain, last to first, over the loaded values; NaN
    matches NaN), and a second loop scatters dy. Tracking the index inside the maximum's chain
    ran 2.4x slower, and fusing the scatter into the first loop (dx stores numba cannot prove
    apart from the x loads) ten times slower. With padding, a tap in the padding loads -inf and
    has position -1: a window whose first maximum is a padding cell adds nothing.
    """
    x, dy = node.inputs
    n, c, h, w = x.shape
    oh, ow = dy.shape[2], dy.shape[3]
    padded = pool_window(node.attrs, h, w).padded
    head, offsets, par = _pool_window(node, x)
    lines = [
        f"OH, OW = {oh}, {ow}",
        "g = a1.reshape(a1.size)",
        "dx = a2.reshape(a2.size)",
    ]
    head[3:3] = [
        f"    at = np.empty({oh * ow}, np.int64)",
        f"    base = p * {h * w}",
        f"    for k in range(base, base + {h * w}):",
        "        dx[k] = 0",
    ]
    lines += head
    for k, (di, dj) in enumerate(offsets):
        if padded:
            lines.append(f"            in{k} = {_inside(h, w, di, dj)}")
            lines.append(f"            v{k} = x[p, y0 + {di}, x0 + {dj}] if in{k} else {_low(x)}")
        else:
            lines.append(f"            v{k} = x[p, y0 + {di}, x0 + {dj}]")
    lines.append("            best = v0")
    for k in range(1, len(offsets)):
        lines.append(f"            v = v{k}")
        lines.append(f"            best = v if {_better(x)} else best")
    is_float = x.dtype in FLOAT_DTYPES
    if is_float:
        lines.append("            nb = best != best")

    def position(k: int) -> str:
        di, dj = offsets[k]
        at = f"y0 * {w} + x0 + {di * w + dj}"
        return f"({at} if in{k} else -1)" if padded else at

    last = len(offsets) - 1
    lines.append(f"            a = {position(last)}")
    for k in range(last - 1, -1, -1):
        equal = f"(v{k} == best) | ((v{k} != v{k}) & nb)" if is_float else f"v{k} == best"
        lines.append(f"            a = {position(k)} if {equal} else a")
    lines.append(f"            at[oy * {ow} + ox] = a")
    lines.append(f"    for q in range({oh * ow}):")
    if padded:
        lines += ["        if at[q] >= 0:", f"            dx[base + at[q]] += g[p * {oh * ow} + q]"]
    else:
        lines.append(f"        dx[base + at[q]] += g[p * {oh * ow} + q]")
    return Source(_pool_title(node)).render(3, lines, par)


def _window_setup(node: Node, image: Value, cols: Value) -> tuple[int, int, dict[str, int], bool]:
    """Output size, window constants and whether to prange, for an im2col/col2im kernel."""
    n, c, h, w = image.shape
    win = conv_window(node.attrs, h, w)
    p = dict(NC=n * c, H=h, W=w, KH=win.kh, KW=win.kw, SH=win.sh, SW=win.sw, PH=win.ph, PW=win.pw)
    p.update(DH=win.dh, DW=win.dw, L=win.oh * win.ow)
    return win.oh, win.ow, p, use_parallel(max(image.type.numel, cols.type.numel), n * c)


def _image_sizes(p: dict[str, int], image: str, oh: int, ow: int) -> list[str]:
    """Lines naming the image's and the output's sizes (constants: the loops vectorize on them;
    read from the arrays they ran 2-3x slower) and the planes, read from ``image``'s size, so one
    kernel serves every channel count and batch of an image size (Inception v1: 11 im2col
    kernels, not 21)."""
    return [
        f"H, W = {p['H']}, {p['W']}",
        f"NC = {planes_of(image, p['H'] * p['W'], p['NC'])}",
        f"OH, OW = {oh}, {ow}",
        f"L = {oh * ow}",
    ]


def _window_ranges(p: dict[str, int]) -> list[str]:
    # Output rows ylo <= y < yhi and columns xlo <= x < xhi of window offset (i, j) read pixels
    # inside the image, so the loops over them need no bounds test and (stride 1) vectorize.
    def first(pad: str, dil: str, var: str, stride: str) -> str:
        return f"-((-({p[pad]} - {var} * {p[dil]})) // {p[stride]})"

    def stop(size: str, pad: str, dil: str, var: str, stride: str) -> str:
        return f"-((-({size} + {p[pad]} - {var} * {p[dil]})) // {p[stride]})"

    return [
        f"        ylo = min(max({first('PH', 'DH', 'i', 'SH')}, 0), OH)",
        f"        yhi = max(min({stop('H', 'PH', 'DH', 'i', 'SH')}, OH), ylo)",
        f"        for j in range({p['KW']}):",
        f"            xlo = min(max({first('PW', 'DW', 'j', 'SW')}, 0), OW)",
        f"            xhi = max(min({stop('W', 'PW', 'DW', 'j', 'SW')}, OW), xlo)",
        f"            k = i * {p['KW']} + j",
    ]


def im2col_source(node: Node) -> str:
    """cols[n, (c, i, j), (y, x)] = the window pixel, or 0 in the padding; the window baked in,
    the image's size read from its array.

    The prange runs over (plane, window row) pairs where there are few planes (a first
    convolution's 3, RGB, left one of two threads idle a third of the time), else over planes."""
    x, cols = node.inputs[0], node.outputs[0]
    oh, ow, p, par = _window_setup(node, x, cols)
    zero = literal(0, x.dtype)
    ranges = _window_ranges(p)
    if p["NC"] < FEW_PLANES and use_parallel(max(x.type.numel, cols.type.numel), p["NC"] * p["KH"]):
        par = True
        head = [
            f"for task in prange(NC * {p['KH']}):",
            f"    q = task // {p['KH']}",
            f"    for i in range(task - q * {p['KH']}, task - q * {p['KH']} + 1):",
        ]
    else:
        head = [f"for q in {'prange' if par else 'range'}(NC):", f"    for i in range({p['KH']}):"]
    if p["SH"] == p["SW"] == 1 and ow == p["W"]:
        return _im2col_shifted(node, p, oh, ow, head, par)
    lines = [
        *_image_sizes(p, "a0", oh, ow),
        "x = a0.reshape((NC, H, W))",
        f"cols = a1.reshape((NC, {p['KH'] * p['KW']}, L))",
        *head,
        *ranges,
        *_padding_rows(zero),
        *_image_rows(
            zero, [f"                iy = y * {p['SH']} - {p['PH']} + i * {p['DH']}"], _im2col_row(p, ow)
        ),
    ]
    return Source(f"im2col {_window_title(node)}").render(2, lines, par)


def _padding_rows(zero: str) -> list[str]:
    """The lines zeroing window tap k's output rows that read only padding (y < ylo, y >= yhi)."""
    return [
        "            for t in range(ylo * OW):",
        f"                cols[q, k, t] = {zero}",
        "            for t in range(yhi * OW, L):",
        f"                cols[q, k, t] = {zero}",
    ]


def _image_rows(zero: str, head: list[str] = (), copy: list[str] = ()) -> list[str]:
    """The loop over tap k's output rows that read the image (ylo <= y < yhi): ``head`` lines,
    the padding columns left of xlo zeroed, the ``copy`` lines, the columns from xhi zeroed."""
    return [
        "            for y in range(ylo, yhi):",
        *head,
        "                base = y * OW",
        "                for xo in range(xlo):",
        f"                    cols[q, k, base + xo] = {zero}",
        *copy,
        "                for xo in range(xhi, OW):",
        f"                    cols[q, k, base + xo] = {zero}",
    ]


def _im2col_shifted(node: Node, p: dict[str, int], oh: int, ow: int, head: list[str], par: bool) -> str:
    """im2col where the stride is 1 and the output is as wide as the image ("same" padding along
    x: a 3 x 3 convolution with padding 1). Output pixel t = y * W + x of window tap (i, j) is then
    image pixel t + off, off = (i * DH - PH) * W + j * DW - PW, for every in-image tap, so each
    tap's rows ylo..yhi are ONE shifted copy of the flat plane (a loop over whole rows, not one
    per output row: 7 x 7 and 14 x 14 images have too short rows to vectorize), with the pixels
    the copy took from the row beside (x outside xlo..xhi) zeroed after it. The copy's range is
    cut to the plane's pixels (those cut are such border pixels), and runs between zero-based
    slices, so no index is negative."""
    zero = literal(0, node.inputs[0].dtype)
    lines = [
        *_image_sizes(p, "a0", oh, ow),
        "x = a0.reshape((NC, H * W))",
        f"cols = a1.reshape((NC, {p['KH'] * p['KW']}, L))",
        *head,
        *_window_ranges(p),
        f"            off = (i * {p['DH']} - {p['PH']}) * W + j * {p['DW']} - {p['PW']}",
        *_padding_rows(zero),
        "            lo = max(ylo * OW, -off)",
        "            hi = min(yhi * OW, H * W - off)",
        "            if lo < hi:",
        "                dst = cols[q, k, lo:hi]",
        "                src = x[q, lo + off:hi + off]",
        "                for t in range(hi - lo):",
        "                    dst[t] = src[t]",
        *_image_rows(zero),
    ]
    return Source(f"im2col {_window_title(node)}").render(2, lines, par)


# From this output width up, im2col copies a row between zero-based slices: LLVM then drops the
# negative-index fixes from a strided row's loop (a stride-2 first convolution's 112-wide rows,
# 1.4x faster); on narrower rows making the two slices costs more than it saves.
WIDE_ROWS = 64


def _im2col_row(p: dict[str, int], ow: int) -> list[str]:
    """The lines copying output row ``y``'s in-image columns ``xlo <= xo < xhi`` of window tap k."""
    start = f"xlo * {p['SW']} - {p['PW']} + j * {p['DW']}"
    if ow >= WIDE_ROWS:
        return [
            "                dst = cols[q, k, base + xlo:base + xhi]",
            f"                src = x[q, iy, {start}:]",
            "                for xo in range(xhi - xlo):",
            f"                    dst[xo] = src[xo * {p['SW']}]",
        ]
    return [
        "                for xo in range(xlo, xhi):",
        f"                    cols[q, k, base + xo] = x[q, iy, xo * {p['SW']} - {p['PW']} + j * {p['DW']}]",
    ]


# Below this many planes im2col's prange runs over (plane, window row) pairs.
FEW_PLANES = 16


def col2im_source(node: Node) -> str:
    """The adjoint of im2col: each pixel the sum of its column entries, in (i, j) order."""
    cols, x = node.inputs[0], node.outputs[0]
    oh, ow, p, par = _window_setup(node, x, cols)
    lines = [
        *_image_sizes(p, "a1", oh, ow),
        f"cols = a0.reshape((NC, {p['KH'] * p['KW']}, L))",
        "x = a1.reshape((NC, H * W))",
        f"for q in {'prange' if par else 'range'}(NC):",
        "    for t in range(H * W):",
        f"        x[q, t] = {literal(0, x.dtype)}",
        f"    for i in range({p['KH']}):",
        *_window_ranges(p),
        "            for y in range(ylo, yhi):",
        f"                iy = y * {p['SH']} - {p['PH']} + i * {p['DH']}",
        f"                row = iy * W - {p['PW']} + j * {p['DW']}",
        "                base = y * OW",
        "                for xo in range(xlo, xhi):",
        f"                    x[q, row + xo * {p['SW']}] += cols[q, k, base + xo]",
    ]
    return Source(f"col2im {_window_title(node)}").render(2, lines, par)


def _window_title(node: Node) -> str:
    a = node.attrs
    return f"kernel {a['kernel']} stride {a['stride']} padding {a['padding']} dilation {a['dilation']}"
