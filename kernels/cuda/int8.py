"""The CUDA int8 kernels: ``qmatmul(a, b) = a @ b.T`` (i8/u8 into an exact i32 product), and
``qlinear``/``qconv2d`` (ir/ops/quantized.py), mirroring graphc.kernels.cpu.int8 one thread per output.

One thread per output element (a grid-stride loop) sums ``int32(a[i, t]) * int32(b[j, t])`` over
k in an int32 accumulator (``a`` is [m, k], ``b`` [n, k]): exact while |sum| < 2**31, as the CPU
kernel and the reference.
"""

from __future__ import annotations

from graphc.ir import Node
from graphc.kernels.scalar_ops import quant_range

from .loops import IndexCtx, map_kernel
from .source import NUMBA_TYPES, KernelSource


def _dot(n: int, k: int) -> list[str]:
    """Thread ``i``'s output element (r, c) of an [m, n] int8 GEMM: ``acc``, the i32 dot product of
    row r of ``in0`` (m x k) and row c of ``in1`` (n x k)."""
    return [
        f"r = i // {n}",
        f"c = i % {n}",
        "acc = int32(0)",
        f"for t in range({k}):",
        f"    acc += int32(in0[r * {k} + t]) * int32(in1[c * {k} + t])",
    ]


def gen_qmatmul(node: Node) -> KernelSource:
    """The kernel of a ``qmatmul`` node over flat device arrays ``in0`` (m x k), ``in1`` (n x k)."""
    m, k = node.inputs[0].shape
    n = node.inputs[1].shape[0]

    def make(ctx: IndexCtx) -> list[str]:
        return [
            *_dot(n, k),
            "out0[i] = acc",
        ]

    return map_kernel(node, (m, n), make)


_ROUND_MAGIC = 6755399441055744.0  # 1.5 * 2**52: + and - round a float64 to an integer, ties to even


def _epilogue(node: Node, first: int, col: str) -> list[str]:
    """qlinear's epilogue (ir/ops/quantized.py) of ``acc`` into ``out0[i]``: operands ``in{first}``.. are
    shift, scale, bias (per channel, indexed by ``col``, or one element)[, out_scale, out_zero]."""
    F = NUMBA_TYPES[node.inputs[first + 1].dtype]

    def param(v: int) -> str:
        return f"in{v}[{col}]" if node.inputs[v].shape else f"in{v}[0]"

    lines = [
        f"y = {F}({F}(int32(acc - {param(first)})) * {param(first + 1)})",
        f"y = {F}(y + {param(first + 2)})",
    ]
    if bool(node.attrs["relu"]):
        lines.append(f"y = {F}(0) if y <= {F}(0) else y")
    if len(node.inputs) == first + 5:
        lo, hi = quant_range(node.inputs[-1].dtype)
        lines += [
            f"z = int64(in{first + 4}[0])",
            f"q = {F}(y / in{first + 3}[0])",
            f"lo = {F}({lo} - z)",
            f"hi = {F}({hi} - z)",
            "q = q if q > lo else lo",
            "q = q if q < hi else hi",
            f"rq = (float64(q) + {_ROUND_MAGIC!r}) - {_ROUND_MAGIC!r}",
            f"out0[i] = {NUMBA_TYPES[node.inputs[-1].dtype]}(int64(rq) + z)",
        ]
    else:
        lines.append("out0[i] = y")
    return lines


def gen_qlinear(node: Node) -> KernelSource:
    """The kernel of a ``qlinear`` node (ir/ops/quantized.py): the dot product of ``gen_qmatmul``, then the
    epilogue (dequantize, bias, ReLU, requantize) in the same thread, as the CPU kernel renders it."""
    m, k = node.inputs[0].shape
    n = node.inputs[1].shape[0]

    def make(ctx: IndexCtx) -> list[str]:
        return [
            *_dot(n, k),
            *_epilogue(node, 2, "c"),
        ]

    return map_kernel(node, (m, n), make)


def gen_qconv2d(node: Node) -> KernelSource:
    """The kernel of a ``qconv2d`` node (ir/ops/quantized.py): one thread per output [n, o, l] sums the
    window (x_zero outside the image) against w [O, kh, kw, C], then qlinear's epilogue."""
    n, c, h, wd = node.inputs[0].shape
    o, kh, kw, _ = node.inputs[1].shape
    (sh, sw), (ph, pw), (dh, dw) = (tuple(map(int, node.attrs[k])) for k in ("stride", "padding", "dilation"))
    L = node.outputs[0].shape[2]
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    def make(ctx: IndexCtx) -> list[str]:
        return [
            f"b = i // {o * L}",
            f"oc = (i // {L}) % {o}",
            f"oy = (i % {L}) // {ow}",
            f"ox = i % {ow}",
            "zx = int32(in2[0])",
            "acc = int32(0)",
            f"for ki in range({kh}):",
            f"    iy = oy * {sh} - {ph} + ki * {dh}",
            f"    for kj in range({kw}):",
            f"        ix = ox * {sw} - {pw} + kj * {dw}",
            f"        inside = iy >= 0 and iy < {h} and ix >= 0 and ix < {wd}",
            f"        for ch in range({c}):",
            f"            xv = int32(in0[((b * {c} + ch) * {h} + iy) * {wd} + ix]) if inside else zx",
            f"            acc += int32(in1[((oc * {kh} + ki) * {kw} + kj) * {c} + ch]) * xv",
            *_epilogue(node, 3, "oc"),
        ]

    return map_kernel(node, (n, o, L), make)
