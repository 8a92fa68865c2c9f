"""Batch-1 matrix-vector products on numba's threads: ``[1, K] @ W.T`` and ``[1, K] @ [K, N]``.

A classifier's last layer at batch 1 (``[1, 2048] @ [2048, 1000]``) reads 8 MB of weights for
2 M multiply-adds: it is bound by memory bandwidth, not arithmetic. Through the GEMM driver it
was one single-threaded OpenBLAS GEMM call (1.34 ms in ResNet-50's plan, 0.72 ms for Inception
v1's 4 MB ``[1, 1024] @ [1024, 1000]``; 0.41 and 0.42 ms here, per-step minima on a loaded
2-core machine). Here the outputs are shared over numba's threads, each reading its part of the
weight once, in order, with vector loads (``gemv_source``):

- ``rows``, where B is the transposed view of a row-major weight W ``[N, K]`` (ONNX ``Gemm`` with
  ``transB``, a ``Linear``): each output is the dot product of one contiguous row of W with x,
  four rows at a time (x's loads shared), each dot product's sum reassociated into vector lanes
  (``fastmath`` reassoc: the one place the order of the sum changes; its error is that of any
  blocked dot product);
- ``columns``, where B is row-major ``[K, N]``: each thread's outputs (whole blocks of
  ``COLUMN_BLOCK``) are accumulated over the rows of B, four rows per pass over them, in k
  order (vector multiply-adds along the rows, no reduction: the same bits on any split).

Every output is computed the same way whatever the thread count (``rows``'s groups start at
multiples of four rows; ``columns`` has no reduction), so its bits do not depend on it. ``vector_matmul``
hands the product to ``blas.one_thread_serial_matmul`` where this does not apply (another dtype,
a layout without one contiguous axis, an output over an operand).
"""

from __future__ import annotations

import math
from functools import cache
from types import ModuleType

import numpy as np

from .threads import num_threads

# From this many weights (K * N: 2 MiB of float32, more than L2) up a product with one row runs
# here. Smaller weights stay in cache between calls (an RNN step's W_hh), where OpenBLAS on one
# thread was faster (6 against 9 us for 128 x 512, 120 against 140 us for 512 x 2048, hot); a
# classifier's weights come from memory, where two threads streaming them win.
MIN_WEIGHTS = 1 << 19
ROW_GROUP = 4  # rows of W per dot-product group in ``rows`` (x's loads shared between them)
COLUMN_BLOCK = 16  # ``columns`` shares the outputs in blocks of this many (one vector of float32)

__all__ = ["COLUMN_BLOCK", "MIN_WEIGHTS", "applies", "driver", "gemv", "gemv_source", "vector_matmul"]


def gemv_source() -> str:
    """Numba source of the two matrix-vector kernels ``rows(x, w, out, parts)`` (``out = w @ x``,
    w row-major ``[N, K]``) and ``columns(x, w, out, parts)`` (``out = x @ w``, w ``[K, N]``),
    each sharing the outputs over ``parts`` tasks of numba's pool."""
    g = ROW_GROUP
    return f"""# graphc CPU kernel: batch-1 matrix-vector products (outputs shared over numba's threads)
from numba import njit, prange, types

SIGNATURES = [
    types.void(
        types.Array(t, 1, "C", readonly=True),
        types.Array(t, 2, "C", readonly=True),
        types.Array(t, 1, "C"),
        types.intp,
    )
    for t in (types.float32, types.float64)
]


@njit(SIGNATURES, cache=True, nogil=True, parallel=True, fastmath={{"reassoc", "contract"}})
def rows(x, w, out, parts):
    n, k = w.shape
    groups = n // {g}
    for p in prange(parts):
        lo = p * groups // parts
        hi = (p + 1) * groups // parts
        for gr in range(lo, hi):
            r = gr * {g}
            x0 = x[0]
            s0 = w[r, 0] * x0
            s1 = w[r + 1, 0] * x0
            s2 = w[r + 2, 0] * x0
            s3 = w[r + 3, 0] * x0
            for i in range(1, k):
                xi = x[i]
                s0 += w[r, i] * xi
                s1 += w[r + 1, i] * xi
                s2 += w[r + 2, i] * xi
                s3 += w[r + 3, i] * xi
            out[r] = s0
            out[r + 1] = s1
            out[r + 2] = s2
            out[r + 3] = s3
        if p == parts - 1:
            for r in range(groups * {g}, n):
                s = w[r, 0] * x[0]
                for i in range(1, k):
                    s += w[r, i] * x[i]
                out[r] = s


@njit(SIGNATURES, cache=True, nogil=True, parallel=True)
def columns(x, w, out, parts):
    k, n = w.shape
    blocks = (n + {COLUMN_BLOCK - 1}) // {COLUMN_BLOCK}
    for p in prange(parts):
        c0 = min(p * blocks // parts * {COLUMN_BLOCK}, n)
        c1 = min((p + 1) * blocks // parts * {COLUMN_BLOCK}, n)
        m = c1 - c0
        o = out[c0:c1]
        r0 = w[0, c0:c1]
        a0 = x[0]
        for j in range(m):
            o[j] = a0 * r0[j]
        i = 1
        while i + 4 <= k:
            a0 = x[i]
            a1 = x[i + 1]
            a2 = x[i + 2]
            a3 = x[i + 3]
            r0 = w[i, c0:c1]
            r1 = w[i + 1, c0:c1]
            r2 = w[i + 2, c0:c1]
            r3 = w[i + 3, c0:c1]
            for j in range(m):
                o[j] += a0 * r0[j] + a1 * r1[j] + a2 * r2[j] + a3 * r3[j]
            i += 4
        while i < k:
            a0 = x[i]
            r0 = w[i, c0:c1]
            for j in range(m):
                o[j] += a0 * r0[j]
            i += 1
"""


@cache
def driver() -> ModuleType:
    """The loaded module of ``gemv_source`` (compiled, or from the kernel cache, on first use)."""
    from .cache import load_module

    return load_module(gemv_source())


def applies(k: int, out_shape: tuple[int, ...]) -> bool:
    """Whether a product over ``k`` with result shape ``out_shape`` is a matrix-vector product
    this module takes: one row (a 1-D result, or ``[..., 1, N]`` with batch axes all 1), and at
    least ``MIN_WEIGHTS`` weights."""
    if not out_shape:
        return False
    if len(out_shape) >= 2 and math.prod(out_shape[:-1]) != 1:
        return False
    return k >= 1 and k * out_shape[-1] >= MIN_WEIGHTS


def gemv(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """``out = a @ b`` for one row ``a`` (``[K]`` or ``[..., 1, K]``, batch axes 1) and a matrix ``b``
    ``[K, N]`` one of whose axes is contiguous, split over numba's threads; False, with nothing
    written, where it does not apply: another dtype (float32 and float64 run here), other
    shapes, a matrix with neither ``b`` nor ``b.T`` C-contiguous, or an output over an operand."""
    if b.ndim > 2 and math.prod(b.shape[:-2]) == 1:
        b = b[(0,) * (b.ndim - 2)]  # batch axes of size 1: the one matrix
    if b.ndim != 2 or a.size != b.shape[0] or out.size != b.shape[1]:
        return False
    if not (a.dtype == b.dtype == out.dtype and out.dtype in (np.float32, np.float64)):
        return False
    if not out.flags.c_contiguous or np.may_share_memory(out, a) or np.may_share_memory(out, b):
        return False
    x = np.ascontiguousarray(a.reshape(-1))  # one small row: a copy where it is strided
    y = out.reshape(-1)
    threads = num_threads()
    k, n = b.shape
    if b.T.flags.c_contiguous:
        driver().rows(x, b.T, y, max(1, min(threads, n // ROW_GROUP)))
    elif b.flags.c_contiguous:
        driver().columns(x, b, y, max(1, min(threads, -(-n // COLUMN_BLOCK))))
    else:
        return False
    return True


def vector_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a @ b`` for a product with one row (``applies``): ``gemv``, or where it declines
    ``blas.one_thread_serial_matmul`` (OpenBLAS on one thread)."""
    if not gemv(a, b, out):
        from .blas import one_thread_serial_matmul

        one_thread_serial_matmul(a, b, out)
