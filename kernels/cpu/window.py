"""CPU generators of the window ops: im2col/col2im (convolution) and max pooling with its gradient."""

from __future__ import annotations

from graphc.ir import Node, Value
from graphc.ir.types import FLOAT_DTYPES
from graphc.kernels.windows import conv_window

from .loops import use_parallel
from .source import Source, literal


def _pool_window(node: Node, x: Value) -> tuple[list[str], list[tuple[int, int]], bool]:
    """Shared head of the max-pool kernels: (plane, row, col) views and loops, the window offsets."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = node.attrs["kernel"], node.attrs["stride"], node.attrs["dilation"]
    par = use_parallel(x.type.numel, n * c)
    lines = [
        f"x = a0.reshape(({n * c}, {h}, {w}))",
        f"for p in {'prange' if par else 'range'}({n * c}):",
        "    for oy in range(OH):",
        "        for ox in range(OW):",
        f"            y0 = oy * {sh}",
        f"            x0 = ox * {sw}",
    ]
    return lines, [(i * dh, j * dw) for i in range(kh) for j in range(kw)], par


def _better(x: Value) -> str:
    """Whether window value v replaces best: larger, or NaN (NaN is the maximum, as in PyTorch).

    Only the value is kept, so which NaN wins does not matter. Bitwise operators and
    conditional expressions, not ``or``/``if``: LLVM turns them into selects, where branches on
    random data mispredict half the time (8x slower on 2x2 pools).
    """
    return "(v > best) | (v != v)" if x.dtype in FLOAT_DTYPES else "v > best"


def max_pool_source(node: Node) -> str:
    """Each window's first maximal element (NaN wins): separable where windows overlap or tile."""
    (kh, _), (sh, _), (dh, _) = node.attrs["kernel"], node.attrs["stride"], node.attrs["dilation"]
    if sh <= kh * dh:
        narrow = node.outputs[0].shape[3] < NARROW_POOL
        return _flat_max_pool_source(node) if narrow else _separable_max_pool_source(node)
    x, y = node.inputs[0], node.outputs[0]
    head, offsets, par = _pool_window(node, x)
    lines = [f"OH, OW = {y.shape[2]}, {y.shape[3]}", f"o = a1.reshape(({y.shape[0] * y.shape[1]}, OH, OW))"]
    lines += head + ["            best = x[p, y0, x0]"]
    for di, dj in offsets[1:]:
        lines.append(f"            v = x[p, y0 + {di}, x0 + {dj}]")
        lines.append(f"            best = v if {_better(x)} else best")
    lines.append("            o[p, oy, ox] = best")
    return Source(f"max_pool2d {node.attrs['kernel']} stride {node.attrs['stride']}").render(2, lines, par)


# Planes per block of the separable max pool: each block allocates its row-maxima buffer once.
POOL_BLOCKS = 16


def _separable_max_pool_source(node: Node) -> str:
    """Max pool in two passes per plane: each input row's maximum over the window's columns
    (``t[y, ox]``), then each output's maximum over the window's rows of ``t``; the second pass
    runs along contiguous rows, so LLVM vectorizes it (1.4-1.8x the one-pass kernel on the zoo's
    3x3 pools). Exact: both passes keep the first maximal element (strict ``>``), so the result is
    the row-major window's first maximal element (the sign of a zero included), as in the one-pass
    kernel, which stays where windows skip rows (stride above the window's height: the first pass
    would fill rows no window reads).
    """
    x, y = node.inputs[0], node.outputs[0]
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    (kh, kw), (sh, sw), (dh, dw) = node.attrs["kernel"], node.attrs["stride"], node.attrs["dilation"]
    planes = n * c
    par = use_parallel(x.type.numel, planes)
    blocks = min(planes, POOL_BLOCKS) if par else 1
    per = -(-planes // blocks)
    step = f"                best = v if {_better(x)} else best"
    lines = [
        f"x = a0.reshape(({planes}, {h}, {w}))",
        f"o = a1.reshape(({planes}, {oh}, {ow}))",
        f"for blk in {'prange' if par else 'range'}({blocks}):",
        f"    t = np.empty(({h}, {ow}), a0.dtype)",
        f"    for p in range(blk * {per}, min(blk * {per} + {per}, {planes})):",
        f"        for r in range({h}):",
        f"            for ox in range({ow}):",
        f"                best = x[p, r, ox * {sw}]",
    ]
    for j in range(1, kw):
        lines += [f"                v = x[p, r, ox * {sw} + {j * dw}]", step]
    lines += [
        "                t[r, ox] = best",
        f"        for oy in range({oh}):",
        f"            for ox in range({ow}):",
        f"                best = t[oy * {sh}, ox]",
    ]
    for i in range(1, kh):
        lines += [f"                v = t[oy * {sh} + {i * dh}, ox]", step]
    lines.append("                o[p, oy, ox] = best")
    title = f"max_pool2d {node.attrs['kernel']} stride {node.attrs['stride']} (separable)"
    return Source(title).render(2, lines, par)


# Output rows narrower than this go to the flat kernel: a loop this short along a row gives
# LLVM's 16-lane float loops no full vector (the zoo's 13 x 13 pools ran entirely scalar).
NARROW_POOL = 16


def _flat_max_pool_source(node: Node) -> str:
    """Max pool in two passes over each block of planes as one flat run (narrow planes: the
    loops are long and contiguous whatever the plane's width, so LLVM vectorizes them): ``t[f]``,
    the maximum over the window's columns starting at element ``f``, then, over ``t`` in place
    (each entry reads only entries at or after it), the maximum over the window's rows; entries
    whose window runs past a row's or a plane's end are computed and never read. Then each
    output is gathered from its window's first element. Exact, as the separable kernel: both
    passes keep the first maximal element (strict ``>``)."""
    x, y = node.inputs[0], node.outputs[0]
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    (kh, kw), (sh, sw), (dh, dw) = node.attrs["kernel"], node.attrs["stride"], node.attrs["dilation"]
    planes, hw = n * c, h * w
    par = use_parallel(x.type.numel, planes)
    blocks = min(planes, POOL_BLOCKS) if par else 1
    per = -(-planes // blocks)
    reach = (kw - 1) * dw  # the first pass's window past its start, along the run
    down = (kh - 1) * dh * w  # the second pass's
    better = _better(x)
    lines = [
        f"x = a0.reshape({planes * hw})",
        f"o = a1.reshape(({planes}, {oh}, {ow}))",
        f"for blk in {'prange' if par else 'range'}({blocks}):",
        f"    p0 = blk * {per}",
        f"    p1 = min(p0 + {per}, {planes})",
        f"    xs = x[p0 * {hw}:p1 * {hw}]",
        f"    run = (p1 - p0) * {hw} - {reach}",
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
            lines += [f"        v = t[f + {i * dh * w}]", f"        best = v if {better} else best"]
        lines += ["        t[f] = best"]
    lines += [
        "    for p in range(p0, p1):",
        f"        for oy in range({oh}):",
        f"            row = (p - p0) * {hw} + oy * {sh * w}",
        f"            for ox in range({ow}):",
        f"                o[p, oy, ox] = t[row + ox * {sw}]",
    ]
    title = f"max_pool2d {node.attrs['kernel']} stride {node.attrs['stride']} (flat)"
    return Source(title).render(2, lines, par)


def max_pool_grad_source(node: Node) -> str:
    """dx: each dy entry added to its window's first maximal element of x (windows may overlap).

    Per plane, one pass finds each window's maximum (the forward's select chain), then the
    first element equal to it (a second chain, last to first, over the loaded values; NaN
    matches NaN), and a second loop scatters dy. Tracking the index inside the maximum's chain
    ran 2.4x slower, and fusing the scatter into the first loop (dx stores numba cannot prove
    apart from the x loads) ten times slower.
    """
    x, dy = node.inputs
    n, c, h, w = x.shape
    oh, ow = dy.shape[2], dy.shape[3]
    head, offsets, par = _pool_window(node, x)
    lines = [
        f"OH, OW = {oh}, {ow}",
        f"g = a1.reshape(({n * c * oh * ow},))",
        f"dx = a2.reshape(({n * c * h * w},))",
    ]
    head[2:2] = [
        f"    at = np.empty({oh * ow}, np.int64)",
        f"    base = p * {h * w}",
        f"    for k in range(base, base + {h * w}):",
        "        dx[k] = 0",
    ]
    lines += head
    for k, (di, dj) in enumerate(offsets):
        lines.append(f"            v{k} = x[p, y0 + {di}, x0 + {dj}]")
    lines.append("            best = v0")
    for k in range(1, len(offsets)):
        lines.append(f"            v = v{k}")
        lines.append(f"            best = v if {_better(x)} else best")
    is_float = x.dtype in FLOAT_DTYPES
    if is_float:
        lines.append("            nb = best != best")
    last = len(offsets) - 1
    lines.append(f"            a = y0 * {w} + x0 + {offsets[last][0] * w + offsets[last][1]}")
    for k in range(last - 1, -1, -1):
        di, dj = offsets[k]
        equal = f"(v{k} == best) | ((v{k} != v{k}) & nb)" if is_float else f"v{k} == best"
        lines.append(f"            a = y0 * {w} + x0 + {di * w + dj} if {equal} else a")
    lines += [
        f"            at[oy * {ow} + ox] = a",
        f"    for q in range({oh * ow}):",
        f"        dx[base + at[q]] += g[p * {oh * ow} + q]",
    ]
    title = f"max_pool2d_grad {node.attrs['kernel']} stride {node.attrs['stride']}"
    return Source(title).render(3, lines, par)


def _window_setup(node: Node, image: Value, cols: Value) -> tuple[int, int, dict[str, int], bool]:
    """Output size, window constants and whether to prange, for an im2col/col2im kernel."""
    n, c, h, w = image.shape
    win = conv_window(node.attrs, h, w)
    p = dict(NC=n * c, H=h, W=w, KH=win.kh, KW=win.kw, SH=win.sh, SW=win.sw, PH=win.ph, PW=win.pw)
    p.update(DH=win.dh, DW=win.dw, L=win.oh * win.ow)
    return win.oh, win.ow, p, use_parallel(max(image.type.numel, cols.type.numel), n * c)


def _window_ranges(p: dict[str, int], oh: int, ow: int) -> list[str]:
    # Output rows ylo <= y < yhi and columns xlo <= x < xhi of window offset (i, j) read pixels
    # inside the image, so the loops over them need no bounds test and (stride 1) vectorize.
    def first(pad: str, dil: str, var: str, stride: str) -> str:
        return f"-((-({p[pad]} - {var} * {p[dil]})) // {p[stride]})"

    def stop(size: str, pad: str, dil: str, var: str, stride: str) -> str:
        return f"-((-({p[size]} + {p[pad]} - {var} * {p[dil]})) // {p[stride]})"

    return [
        f"        ylo = min(max({first('PH', 'DH', 'i', 'SH')}, 0), {oh})",
        f"        yhi = max(min({stop('H', 'PH', 'DH', 'i', 'SH')}, {oh}), ylo)",
        f"        for j in range({p['KW']}):",
        f"            xlo = min(max({first('PW', 'DW', 'j', 'SW')}, 0), {ow})",
        f"            xhi = max(min({stop('W', 'PW', 'DW', 'j', 'SW')}, {ow}), xlo)",
        f"            k = i * {p['KW']} + j",
    ]


def im2col_source(node: Node) -> str:
    """cols[n, (c, i, j), (y, x)] = the window pixel, or 0 in the padding; constants baked in.

    The prange runs over (plane, window row) pairs where there are few planes (a first
    convolution's 3, RGB, left one of two threads idle a third of the time), else over planes."""
    x, cols = node.inputs[0], node.outputs[0]
    oh, ow, p, par = _window_setup(node, x, cols)
    zero = literal(0, x.dtype)
    ranges = _window_ranges(p, oh, ow)
    if p["NC"] < FEW_PLANES and use_parallel(max(x.type.numel, cols.type.numel), p["NC"] * p["KH"]):
        par = True
        head = [
            f"for task in prange({p['NC'] * p['KH']}):",
            f"    q = task // {p['KH']}",
            f"    for i in range(task - q * {p['KH']}, task - q * {p['KH']} + 1):",
        ]
    else:
        head = [f"for q in {'prange' if par else 'range'}({p['NC']}):", f"    for i in range({p['KH']}):"]
    lines = [
        f"x = a0.reshape(({p['NC']}, {p['H']}, {p['W']}))",
        f"cols = a1.reshape(({p['NC']}, {p['KH'] * p['KW']}, {p['L']}))",
        *head,
        *ranges,
        f"            for t in range(ylo * {ow}):",
        f"                cols[q, k, t] = {zero}",
        f"            for t in range(yhi * {ow}, {oh * ow}):",
        f"                cols[q, k, t] = {zero}",
        "            for y in range(ylo, yhi):",
        f"                iy = y * {p['SH']} - {p['PH']} + i * {p['DH']}",
        f"                base = y * {ow}",
        "                for xo in range(xlo):",
        f"                    cols[q, k, base + xo] = {zero}",
        *_im2col_row(p, ow),
        f"                for xo in range(xhi, {ow}):",
        f"                    cols[q, k, base + xo] = {zero}",
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
        f"cols = a0.reshape(({p['NC']}, {p['KH'] * p['KW']}, {p['L']}))",
        f"x = a1.reshape(({p['NC']}, {p['H'] * p['W']}))",
        f"for q in {'prange' if par else 'range'}({p['NC']}):",
        f"    for t in range({p['H'] * p['W']}):",
        f"        x[q, t] = {literal(0, x.dtype)}",
        f"    for i in range({p['KH']}):",
        *_window_ranges(p, oh, ow),
        "            for y in range(ylo, yhi):",
        f"                iy = y * {p['SH']} - {p['PH']} + i * {p['DH']}",
        f"                row = iy * {p['W']} - {p['PW']} + j * {p['DW']}",
        f"                base = y * {ow}",
        "                for xo in range(xlo, xhi):",
        f"                    x[q, row + xo * {p['SW']}] += cols[q, k, base + xo]",
    ]
    return Source(f"col2im {_window_title(node)}").render(2, lines, par)


def _window_title(node: Node) -> str:
    a = node.attrs
    return f"kernel {a['kernel']} stride {a['stride']} padding {a['padding']} dilation {a['dilation']}"
