"""The CUDA integer GEMM: ``qmatmul(a, b) = a @ b.T`` of 2-D i8/u8 operands into an exact i32 product.

One thread per output element (a grid-stride loop) sums ``int32(a[i, t]) * int32(b[j, t])`` over
k in an int32 accumulator (``a`` is [m, k], ``b`` [n, k]): exact while |sum| < 2**31, as the CPU
kernel and the reference.
"""

from __future__ import annotations

from graphc.ir import Node

from .loops import IndexCtx, map_kernel
from .source import KernelSource


def gen_qmatmul(node: Node) -> KernelSource:
    """The kernel of a ``qmatmul`` node over flat device arrays ``in0`` (m x k), ``in1`` (n x k)."""
    m, k = node.inputs[0].shape
    n = node.inputs[1].shape[0]

    def make(ctx: IndexCtx) -> list[str]:
        return [
            f"r = i // {n}",
            f"c = i % {n}",
            "acc = int32(0)",
            f"for t in range({k}):",
            f"    acc += int32(in0[r * {k} + t]) * int32(in1[c * {k} + t])",
            "out0[i] = acc",
        ]

    return map_kernel(node, (m, n), make)
