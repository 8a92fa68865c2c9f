"""The CPU int8 kernels: the GEMM ``qmatmul(a, b) = a @ b.T`` (i8/u8 into an exact i32 product),
``qlinear`` (that GEMM with its epilogue) and ``qconv2d`` (windows as rows, then the same).

``a`` is [m, k] and ``b`` [n, k] (a Linear weight's own [out, in] layout), so each output element
is a dot product of two contiguous rows. Two generated numba kernels:

- VNNI (u8 ``a`` x i8 ``b``, the QDQ convention, on a CPU with AVX-512 VNNI, m, n >= 4 and
  k >= 64): 4 x 4 tiles of outputs, each from ``int8_vnni.vnni_tile`` (16 zmm accumulators of
  ``vpdpbusd``, 64 bytes of k per step), a block of 4 rows into an L1-resident i32 scratch
  [4, n], then one vectorizable pass over the scratch applies the epilogue and stores the rows.
  Tiles at the ragged edges overlap their neighbours (recomputing a few outputs to the same
  values) instead of falling back to scalar code;
- portable (anything else): an int32 reduction over k of ``int32(a[i, t]) * int32(b[j, t])``
  per output, rows of ``b`` in blocks of ``COLS`` so a block stays in L1.

Rows (blocks of 4 rows in the VNNI kernel) split over numba's threads (prange) when the product
is large. Each output passes through an epilogue as it is stored (``store``: the bare i32 for
``qmatmul``; dequantize, bias, ReLU and requantize for ``qlinear``), so nothing makes a second
pass over the product in memory. Shapes are constants of the source, so each distinct GEMM is
its own small cached module. Products sum exactly while |sum| < 2**31 (k < 2**17 for any i8/u8
operands).
"""

from __future__ import annotations

from collections.abc import Callable

from graphc.ir import Node
from graphc.kernels.scalar_ops import quant_range

from . import int8_vnni
from .loops import use_parallel
from .source import NP_TYPE, decorator

COLS = 64  # rows of b per block in the portable kernel (64 x k bytes: L1-resident for k of a few hundred)
TILE = int8_vnni.ROWS  # the VNNI kernel's square tile (ROWS == COLS == 4)

_HEADER = "import numpy as np\nfrom numba import njit, prange\n"

# (indent, output index, channel (column) expression, i32 value expression) -> lines storing it
Store = Callable[[str, str, str, str], list[str]]


def _store_i32(ind: str, dest: str, j: str, v: str) -> list[str]:
    return [f"{ind}out[{dest}] = {v}"]


def vnni_applies(m: int, k: int, n: int, a_dtype: str, b_dtype: str) -> bool:
    """Whether the VNNI kernel computes this GEMM (on this CPU)."""
    return int8_vnni.HAVE_VNNI and a_dtype == "u8" and b_dtype == "i8" and m >= TILE and n >= TILE and k >= 64


def gemm_source(
    m: int,
    k: int,
    n: int,
    a_dtype: str,
    b_dtype: str,
    args: str,
    store: Store,
    what: str,
    vnni: bool | None = None,
    prologue: str = "",
) -> str:
    """A numba module whose ``kernel(a, b, {args})`` stores ``store(i, j, a[i] . b[j])`` for every output.

    ``vnni``: force the kernel (None: the VNNI one where ``vnni_applies``). ``prologue``: lines
    run once before the loops (the epilogue's per-tensor values).
    """
    use_vnni = vnni_applies(m, k, n, a_dtype, b_dtype) if vnni is None else vnni
    if use_vnni:
        blocks = -(-m // TILE)
        parallel = use_parallel(m * n * k, blocks)
        loop = "prange" if parallel else "range"
        body = [
            f"    for ib in {loop}({blocks}):",
            f"        i0 = min(ib * {TILE}, {m - TILE})",
            f"        acc = np.empty(({TILE}, {n}), np.int32)",
            f"        for jb in range({-(-n // TILE)}):",
            f"            vnni_tile(a, i0, b, min(jb * {TILE}, {n - TILE}), {k}, acc)",
            f"        for r in range({TILE}):",
            f"            for j in range({n}):",
            *store("                ", "i0 + r, j", "j", "acc[r, j]"),
        ]
        header = _HEADER + "from graphc.kernels.cpu.int8_vnni import vnni_tile\n"
        kind = "VNNI 4x4 tiles"
    else:
        parallel = use_parallel(m * n * k, m)
        loop = "prange" if parallel else "range"
        body = [
            f"    for j0 in range(0, {n}, {COLS}):",
            f"        j1 = min(j0 + {COLS}, {n})",
            f"        for i in {loop}({m}):",
            "            arow = a[i]",
            "            for j in range(j0, j1):",
            "                brow = b[j]",
            "                acc = np.int32(0)",
            f"                for t in range({k}):",
            "                    acc += np.int32(arow[t]) * np.int32(brow[t])",
            *store("                ", "i, j", "j", "acc"),
        ]
        header = _HEADER
        kind = "portable"
    lines = "\n".join(([prologue] if prologue else []) + body)
    return f"""# graphc CPU kernel: {what} {a_dtype}[{m},{k}] x {b_dtype}[{n},{k}]^T ({kind}, cpu.int8)
{header}

{decorator(parallel)}
def kernel(a, b, {args}):
{lines}
"""


def qmatmul_source(node: Node, vnni: bool | None = None) -> str:
    """The numba source of a ``qmatmul`` node: ``kernel(a, b, out)`` over C-contiguous arrays.

    ``vnni``: force the VNNI (True) or the portable (False) kernel; None picks (``vnni_applies``).
    """
    a, b = node.inputs
    m, k = a.shape
    n = b.shape[0]
    return gemm_source(m, k, n, a.dtype, b.dtype, "out", _store_i32, "qmatmul -> i32", vnni)


ROUND_MAGIC = 6755399441055744.0  # 1.5 * 2**52: + and - round a float64 to an integer, ties to even


def _epilogue(node: Node, first: int) -> tuple[str, Store]:
    """The prologue lines and the per-output store of a ``qlinear``/``qconv2d`` node's epilogue
    (ir/ops/quantized.py), whose operands from ``first`` on are shift, scale, bias[, out_scale, out_zero]."""
    shift, scale, bias = node.inputs[first : first + 3]
    F = NP_TYPE[scale.dtype]
    quantized = len(node.inputs) == first + 5
    pre = []
    names = {}
    for name, v in (("shift", shift), ("scale", scale), ("bias", bias)):
        if v.shape == ():
            pre.append(f"    {name}_s = {name}[()]")
            names[name] = lambda j, name=name: f"{name}_s"
        else:
            names[name] = lambda j, name=name: f"{name}[{j}]"
    if quantized:
        lo, hi = quant_range(node.inputs[-1].dtype)
        pre += [
            "    oscale_s = out_scale[()]",
            "    ozero_s = np.int64(out_zero[()])",
            f"    lo_s = {F}({lo} - ozero_s)",
            f"    hi_s = {F}({hi} - ozero_s)",
        ]
    relu = bool(node.attrs["relu"])
    Z = NP_TYPE[node.inputs[-1].dtype] if quantized else None

    def store(ind: str, dest: str, j: str, v: str) -> list[str]:
        lines = [
            f"{ind}y = {F}({F}(np.int32({v} - {names['shift'](j)})) * {names['scale'](j)})",
            f"{ind}y = {F}(y + {names['bias'](j)})",
        ]
        if relu:  # where(y <= 0, 0, y): NaN stays NaN
            lines.append(f"{ind}y = {F}(0) if y <= {F}(0) else y")
        if quantized:  # quantize(y, out_scale, out_zero), as kernels/scalar_ops renders it
            lines += [
                f"{ind}q = {F}(y / oscale_s)",
                f"{ind}q = q if q > lo_s else lo_s",
                f"{ind}q = q if q < hi_s else hi_s",
                f"{ind}rq = (np.float64(q) + {ROUND_MAGIC!r}) - {ROUND_MAGIC!r}",
                f"{ind}out[{dest}] = {Z}(np.int64(rq) + ozero_s)",
            ]
        else:
            lines.append(f"{ind}out[{dest}] = y")
        return lines

    return "\n".join(pre), store


def qlinear_source(node: Node, vnni: bool | None = None) -> str:
    """The numba source of a ``qlinear`` node: ``kernel(a, b, shift, scale, bias[, out_scale,
    out_zero], out)``, the GEMM with the epilogue applied as each output is stored."""
    a, b = node.inputs[:2]
    m, k = a.shape
    n = b.shape[0]
    args = (
        "shift, scale, bias, out_scale, out_zero, out" if len(node.inputs) == 7 else "shift, scale, bias, out"
    )
    pre, store = _epilogue(node, 2)
    what = f"qlinear (relu={bool(node.attrs['relu'])}) -> {node.outputs[0].dtype}"
    return gemm_source(m, k, n, a.dtype, b.dtype, args, store, what, vnni, pre)


def qconv2d_source(node: Node, vnni: bool | None = None) -> str:
    """The numba source of a ``qconv2d`` node: ``kernel(x, w, x_zero, shift, scale, bias[,
    out_scale, out_zero], out)``.

    Per image (prange over the batch): a padded NHWC copy of the image (padding = x_zero), its
    windows as rows [OH * OW, kh * kw * C] (in the weight's (i, j, c) order: each window row is
    kw * C contiguous bytes of the copy without dilation, C with), zero-padded to 64 columns when
    shorter (the weight too, once), then the GEMM of the rows by the weight's rows (VNNI tiles
    stored transposed into an i32 [O, OH * OW] scratch, or portable), the epilogue storing each
    output at [n, o, l] in one vectorizable pass over the scratch.
    """
    x, w = node.inputs[:2]
    n, c, h, wd = x.shape
    o, kh, kw, _ = w.shape
    # Validated int attributes (ir/ops/quantized.py), int() again since they become source text.
    (sh, sw), (ph, pw), (dh, dw) = (tuple(map(int, node.attrs[k])) for k in ("stride", "padding", "dilation"))
    L = node.outputs[0].shape[2]
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    oh = L // ow
    k = kh * kw * c
    hp, wp = h + 2 * ph, wd + 2 * pw
    use_vnni = vnni_applies(L, 64, o, x.dtype, w.dtype) if vnni is None else vnni
    kp = max(k, 64) if use_vnni else k
    parallel = use_parallel(n * o * L * k, n)
    loop = "prange" if parallel else "range"
    X, W = NP_TYPE[x.dtype], NP_TYPE[w.dtype]
    quantized = len(node.inputs) == 8
    args = "shift, scale, bias, out_scale, out_zero, out" if quantized else "shift, scale, bias, out"
    pre, store = _epilogue(node, 3)
    body = [
        pre,
        "    zpt = x_zero[()]",
        f"    wr = np.zeros(({o}, {kp}), {W})",
        f"    wr[:, :{k}] = w.reshape({o}, {k})",
        f"    for nb in {loop}({n}):",
        f"        xt = np.empty({hp * wp * c}, {X})  # the padded image, NHWC, flat",
        "        xt[:] = zpt",
        f"        for ch in range({c}):",
        f"            for yy in range({h}):",
        f"                for xx in range({wd}):",
        f"                    xt[((yy + {ph}) * {wp} + xx + {pw}) * {c} + ch] = x[nb, ch, yy, xx]",
        f"        rows = np.empty(({L}, {kp}), {X})",
        f"        rows[:, {k}:] = 0" if kp > k else "",
        f"        for oy in range({oh}):",
        f"            for ox in range({ow}):",
        f"                row = rows[oy * {ow} + ox]",
        f"                for i in range({kh}):",
        *(
            [  # the window's row i: kw * C contiguous bytes of the image
                f"                    s0 = ((oy * {sh} + i * {dh}) * {wp} + ox * {sw}) * {c}",
                f"                    for t in range({kw * c}):",
                f"                        row[i * {kw * c} + t] = xt[s0 + t]",
            ]
            if dw == 1
            else [
                f"                    for j in range({kw}):",
                f"                        s0 = ((oy * {sh} + i * {dh}) * {wp} + ox * {sw} + j * {dw}) * {c}",
                f"                        for t in range({c}):",
                f"                            row[(i * {kw} + j) * {c} + t] = xt[s0 + t]",
            ]
        ),
    ]
    if use_vnni:
        body += [
            f"        acc = np.empty(({o}, {L}), np.int32)  # the image's product, [O, L] as out",
            f"        for lb in range({-(-L // TILE)}):",
            f"            l0 = min(lb * {TILE}, {L - TILE})",
            f"            for ob in range({-(-o // TILE)}):",
            f"                vnni_tile_t(rows, l0, wr, min(ob * {TILE}, {o - TILE}), {kp}, acc)",
            f"        for oc in range({o}):",
            f"            for l in range({L}):",
            *store("                ", "nb, oc, l", "oc", "acc[oc, l]"),
        ]
        header = _HEADER + "from graphc.kernels.cpu.int8_vnni import vnni_tile_t\n"
    else:
        body += [
            f"        for l in range({L}):",
            "            row = rows[l]",
            f"            for oc in range({o}):",
            "                wrow = wr[oc]",
            "                acc = np.int32(0)",
            f"                for t in range({k}):",
            "                    acc += np.int32(row[t]) * np.int32(wrow[t])",
            *store("                ", "nb, oc, l", "oc", "acc"),
        ]
        header = _HEADER
    lines = "\n".join(line for line in body if line)
    kind = "VNNI 4x4 tiles" if use_vnni else "portable"
    relu = bool(node.attrs["relu"])
    what = f"qconv2d (relu={relu}) {x.dtype}[{n},{c},{h},{wd}] * {w.dtype}[{o},{kh},{kw},{c}]"
    return f"""# graphc CPU kernel: {what} -> {node.outputs[0].dtype} ({kind}, cpu.int8)
{header}

{decorator(parallel)}
def kernel(x, w, x_zero, {args}):
{lines}
"""
