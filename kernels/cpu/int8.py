"""The CPU integer GEMM: ``qmatmul(a, b) = a @ b.T`` of 2-D i8/u8 operands into an exact i32 product.

``a`` is [m, k] and ``b`` [n, k] (a Linear weight's own [out, in] layout), so each output element
is a dot product of two contiguous rows. The generated numba kernel runs that dot product as an
int32 reduction over k of ``int32(a[i, t]) * int32(b[j, t])``: LLVM vectorizes it (sign/zero
extension to 32-bit lanes, multiply, add; integer sums need no fast-math to reorder). Rows of
``b`` are walked in blocks of ``COLS`` so a block stays in L1 while every row of ``a`` passes
over it; rows of ``a`` split over numba's threads (prange) when the product is large. Shapes are
constants of the source, so each distinct GEMM is its own small cached module. Products sum
exactly while |sum| < 2**31 (k < 2**17 for any i8/u8 operands).
"""

from __future__ import annotations

from graphc.ir import Node

from .loops import use_parallel
from .source import decorator

COLS = 64  # rows of b per block (64 x k bytes: L1-resident for k up to a few hundred)

_HEADER = "import numpy as np\nfrom numba import njit, prange\n"


def qmatmul_source(node: Node) -> str:
    """The numba source of a ``qmatmul`` node: ``kernel(a, b, out)`` over C-contiguous arrays."""
    a, b = node.inputs
    m, k = a.shape
    n = b.shape[0]
    parallel = use_parallel(m * n * k, m)
    loop = "prange" if parallel else "range"
    return f"""# graphc CPU kernel: qmatmul {a.dtype}[{m},{k}] x {b.dtype}[{n},{k}]^T -> i32 (cpu.int8)
{_HEADER}

{decorator(parallel)}
def kernel(a, b, out):
    for j0 in range(0, {n}, {COLS}):
        j1 = min(j0 + {COLS}, {n})
        for i in {loop}({m}):
            arow = a[i]
            for j in range(j0, j1):
                brow = b[j]
                acc = np.int32(0)
                for t in range({k}):
                    acc += np.int32(arow[t]) * np.int32(brow[t])
                out[i, j] = acc
"""
