"""A float32 GEMM for products with few rows (an RNN step's ``h @ W_hh^T``: 32 x 256 @ 256 x 1024).

OpenBLAS is weak on these short, wide shapes (its 2-thread split of 32 x 1024 ran little faster
than one thread), and ``blas.parallel_matmul``'s column split, one single-threaded BLAS call per
thread, slower still. Here numba's threads share the columns of the product, each computing
whole tiles with the AVX-512 micro-kernels of ``sgemm_avx512`` (8 x 32 tiles, 16 zmm
accumulators), in one of four ways (``sgemm_source``):

- ``packed_b``: each thread packs a panel of B (32 columns, ``KC`` rows at a time) into a buffer
  that stays in L1 and runs ``sgemm_tile`` down the rows of A over it; where B's rows are
  contiguous the first row tile reads B as it lies and stores the panel as it goes
  (``sgemm_tile_copy``), saving the separate packing pass's second read of B (an LSTM step's
  1 MiB ``W_hh^T``, 0.90-0.99x the time per call);
- ``packed_a``, where B is a transposed view of a row-major weight W (the backward's
  ``dgates @ W``): ``c.T = W @ a.T``, with the small A transposed into panels once and W's rows
  broadcast as they lie (no 16 x 16 transposes of the large operand), each tile stored
  transposed (``sgemm_tile_t``);
- ``prepacked_b``, where B is a loop's invariant (an RNN's weight, inside
  ``loop_invariant.loop_invariants``): ``packed_b``'s tiles over panels of all of B that
  ``pack_panels`` made on the loop's first step (``loop_invariant.packed``), reused on the
  others, whatever B's layout (the backward's ``dgates @ W`` too, instead of ``packed_a``);
- ``few_columns``, for a product with few COLUMNS instead (batch-1 inference's convolution
  ``[O, K] @ [K, 7 * 7]``): its transpose ``c.T = b.T @ a.T`` is a few-rows product, run as
  ``packed_b`` runs one, each thread packing panels of ``a.T`` (32 rows of ``a``, ``KC_T`` deep)
  and broadcasting ``b``'s columns over them, each tile stored transposed into ``c`` (the
  transpose of the transposed product: rows of ``c``, 8 floats per row).

The few-columns kernel also runs shallow products with many rows and columns (``k <= KC_T``: an
LSTM's input projection ``[T * B, 64] @ W_ih.T``; ``low_depth_matmul``), where writing the
output in blocks of whole rows beat OpenBLAS.

A fused matmul's epilogue that is a chain of adds (``((a @ b + x) + y) ...``, each addend a row
vector or a matrix of the output's shape: an LSTM step's ``+ bias + xs[t]``) is made in the
kernels too (``leaves``): once a thread has finished its block of ``c`` (all k blocks), one pass
over the block adds the addends in order (``sgemm_add_leaves``), each addition rounded to
float32, so the bits are those of the separate elementwise adds.

Every output is one chain of FMAs in k order (per ``KC`` or ``KC_T`` block, then added): its bits do not
depend on the thread count or on how the work is shared. ``small_m_matmul`` declines
(returns False, nothing written) where this does not apply: no AVX-512, another dtype, a batch,
a layout without a unit stride, an output over an operand, or a shape outside ``applies``;
``few_columns_matmul`` likewise (``applies_few_columns``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from functools import cache
from types import ModuleType

import numpy as np

from . import loop_invariant
from .entry_points import entry_point
from .sgemm_avx512 import COLS, HAVE_AVX512, ROWS
from .threads import num_threads

KC = 256  # rows of B per packed panel: 256 x COLS floats = 32 KiB, within L1 beside A's rows
KC_T = 128  # depth of few_columns's panels: a.T's (16 KiB) and b's rows (49: 25 KiB) both stay in L1
MIN_ROWS = ROWS  # fewer rows leave most of a tile's FMAs idle: OpenBLAS's gemm-with-few-rows then
MIN_COLUMNS = 2 * ROWS  # of a few-columns product (see ``applies_few_columns``)
MAX_ROWS = 64  # from here on up OpenBLAS's own blocking does as well (see ``applies``)
MAX_LEAVES = 4  # addends an epilogue folded into the kernels may add (``small_m_matmul``)
# From this many elements up, a transposed A (an LSTM's dW_ih = dgates.T @ x: 1024 x 2048) stays on
# OpenBLAS: few_columns reads it 32 rows (128 bytes of each row of a.T) per panel, and ran
# 1.1-1.2x the driver's time there (parity at 512 x 4608; 0.9x at 256 x 2304).
TRANSPOSED_A_LIMIT = 1 << 20

__all__ = [
    "HAVE_AVX512",
    "KC",
    "MAX_LEAVES",
    "MAX_ROWS",
    "MIN_COLUMNS",
    "MIN_ROWS",
    "applies",
    "applies_few_columns",
    "applies_low_depth",
    "bind_small_m_matmul",
    "driver",
    "few_columns_matmul",
    "low_depth_matmul",
    "run",
    "sgemm_source",
    "small_m_matmul",
]


def sgemm_source() -> str:
    """Numba source of the small-m GEMM drivers, ``c = a @ b`` with the columns of ``c`` shared over
    ``parts`` tasks of numba's pool: ``packed_b`` packs panels of B (``sgemm_pack``) and runs
    ``sgemm_tile`` down the rows of A over each; ``packed_a``, for B a transposed view of a
    weight W (``b.T`` row-major), computes ``c.T = W @ a.T`` instead: A's transpose is packed
    once (it is small) and W's rows are read as they lie, each tile stored transposed;
    ``few_columns`` computes ``c = a @ b`` with few columns as ``c.T = b.T @ a.T``, sharing the
    rows of ``c`` (panels of ``a.T``), each tile stored transposed; ``pack_panels`` packs all of
    B at once (for each block of ``KC`` rows, its panels one after another) and ``prepacked_b``
    runs ``packed_b``'s tiles over those panels (a loop-invariant B, packed once per loop call)."""
    return f"""# graphc CPU kernel: small-m float32 GEMM (AVX-512 {ROWS} x {COLS} tiles, one operand packed)
import numpy as np
from numba import njit, prange, types

from graphc.kernels.cpu.sgemm_avx512 import (
    sgemm_add_leaves,
    sgemm_pack,
    sgemm_tile,
    sgemm_tile_copy,
    sgemm_tile_leaves,
    sgemm_tile_t,
)

# Any strides (the kernels read them): one compiled version whatever the operands' layouts; the
# operands read-only (a plan's constant weights are), which writable arrays convert to.
OPERAND = types.Array(types.float32, 2, "A", readonly=True)
# leaves: the epilogue's addends ([1, n] rows broadcast down c, or [m, n]), the first ``count`` used
LEAVES = types.UniTuple(OPERAND, {MAX_LEAVES})
SIGNATURE = types.void(OPERAND, OPERAND, types.Array(types.float32, 2, "A"), types.intp, LEAVES, types.intp)


@njit(SIGNATURE, cache=True, nogil=True, parallel=True)
def packed_b(a, b, c, parts, leaves, count):
    m, k = a.shape
    n = b.shape[1]
    panels = (n + {COLS - 1}) // {COLS}
    direct = b.strides[1] == 4
    for part in prange(parts):
        buf = np.empty(min({KC}, k) * {COLS}, np.float32)
        for panel in range(part * panels // parts, (part + 1) * panels // parts):
            j0 = panel * {COLS}
            width = min({COLS}, n - j0)
            for p0 in range(0, k, {KC}):
                kc = min({KC}, k - p0)
                if direct:  # the first row tile reads B as it lies and packs its panel meanwhile
                    sgemm_tile_copy(a, 0, min({ROWS}, m), p0, kc, b, j0, buf, c, 0, j0, width, p0)
                else:
                    sgemm_pack(b, p0, kc, j0, width, buf)
                for i0 in range({ROWS} if direct else 0, m, {ROWS}):
                    sgemm_tile(a, i0, min({ROWS}, m - i0), p0, kc, buf, 0, {COLS}, c, i0, j0, width, p0)
        if count:  # on the part's columns once all are done: whole rows of them, one pass
            lo = part * panels // parts * {COLS}
            sgemm_add_leaves(c, 0, m, lo, min(n, (part + 1) * panels // parts * {COLS}) - lo, leaves, count)


BUFFER = types.Array(types.float32, 1, "C")


@njit(types.void(OPERAND, BUFFER, types.intp), cache=True, nogil=True, parallel=True)
def pack_panels(b, buf, parts):
    k, n = b.shape
    panels = (n + {COLS - 1}) // {COLS}
    blocks = (k + {KC - 1}) // {KC}
    for task in prange(blocks * parts):  # a block of KC rows, a share of its panels: rows read whole
        p0 = task // parts * {KC}
        part = task % parts
        kc = min({KC}, k - p0)
        lo = part * panels // parts
        hi = (part + 1) * panels // parts
        if hi > lo:
            at = p0 * panels * {COLS} + lo * kc * {COLS}
            width = min(n, hi * {COLS}) - lo * {COLS}
            sgemm_pack(b, p0, kc, lo * {COLS}, width, buf[at : at + (hi - lo) * kc * {COLS}])


PANELS = types.Array(types.float32, 1, "C", readonly=True)
OUTPUT = types.Array(types.float32, 2, "A")
PREPACKED = types.void(OPERAND, PANELS, types.intp, OUTPUT, types.intp, LEAVES, types.intp)


@njit(PREPACKED, cache=True, nogil=True, parallel=True)
def prepacked_b(a, bp, n, c, parts, leaves, count):
    m, k = a.shape
    panels = (n + {COLS - 1}) // {COLS}
    for part in prange(parts):
        for p0 in range(0, k, {KC}):  # outermost: A's block [:, p0:p0 + kc] stays in L1 over the panels
            kc = min({KC}, k - p0)
            last = count and p0 + kc >= k  # the epilogue's adds made as the last k block is stored
            n_ = count
            for panel in range(part * panels // parts, (part + 1) * panels // parts):
                j0 = panel * {COLS}
                width = min({COLS}, n - j0)
                b0 = (p0 * panels + panel * kc) * {COLS}
                for i0 in range(0, m, {ROWS}):
                    r = min({ROWS}, m - i0)
                    if last:
                        sgemm_tile_leaves(a, i0, r, p0, kc, bp, b0, {COLS}, c, i0, j0, width, p0, leaves, n_)
                    else:
                        sgemm_tile(a, i0, r, p0, kc, bp, b0, {COLS}, c, i0, j0, width, p0)


@njit(SIGNATURE, cache=True, nogil=True, parallel=True)
def packed_a(a, b, c, parts, leaves, count):
    m, k = a.shape
    n = b.shape[1]
    w = b.T
    panels = (m + {COLS - 1}) // {COLS}
    buf = np.empty(k * panels * {COLS}, np.float32)
    sgemm_pack(a.T, 0, k, 0, m, buf)
    blocks = (n + {ROWS - 1}) // {ROWS}
    for part in prange(parts):
        lo = part * blocks // parts * {ROWS}
        hi = min(n, (part + 1) * blocks // parts * {ROWS})
        for p0 in range(0, k, {KC}):
            kc = min({KC}, k - p0)
            for j0 in range(lo, hi, {ROWS}):
                for q in range(panels):
                    sgemm_tile_t(
                        w, j0, min({ROWS}, n - j0), p0, kc, buf, q * k * {COLS} + p0 * {COLS}, {COLS},
                        c, q * {COLS}, j0, min({COLS}, m - q * {COLS}), p0,
                    )
        if count and hi > lo:  # on the part's columns once all are done, as packed_b adds them
            sgemm_add_leaves(c, 0, m, lo, hi - lo, leaves, count)


@njit(SIGNATURE, cache=True, nogil=True, parallel=True)
def few_columns(a, b, c, parts, leaves, count):
    m, k = a.shape
    n = b.shape[1]
    bt = b.T
    at = a.T
    panels = (m + {COLS - 1}) // {COLS}
    for part in prange(parts):
        buf = np.empty(min({KC_T}, k) * {COLS}, np.float32)
        for panel in range(part * panels // parts, (part + 1) * panels // parts):
            j0 = panel * {COLS}
            width = min({COLS}, m - j0)
            for p0 in range(0, k, {KC_T}):
                kc = min({KC_T}, k - p0)
                sgemm_pack(at, p0, kc, j0, width, buf)
                for i0 in range(0, n, {ROWS}):
                    sgemm_tile_t(bt, i0, min({ROWS}, n - i0), p0, kc, buf, 0, {COLS}, c, j0, i0, width, p0)
            if count:
                sgemm_add_leaves(c, j0, width, 0, n, leaves, count)
"""


@cache
def driver() -> ModuleType:
    """The loaded module of ``sgemm_source`` (compiled, or from the kernel cache, on first use)."""
    from .cache import load_module

    return load_module(sgemm_source())


def applies(m: int, k: int, n: int) -> bool:
    """Whether a float32 GEMM of these sizes runs here (on a host with AVX-512): few rows, and
    enough columns and depth that the packing and the thread hand-off pay."""
    return HAVE_AVX512 and MIN_ROWS <= m <= MAX_ROWS and n >= 2 * COLS and k >= 16


def _unit_stride(x: np.ndarray) -> bool:
    """Whether the matrix ``x`` has one unit stride and the other a positive whole number of floats."""
    sr, sc = x.strides
    return (sc == 4 and sr > 0 and sr % 4 == 0) or (sr == 4 and sc > 0 and sc % 4 == 0)


def applies_few_columns(m: int, k: int, n: int) -> bool:
    """Whether a float32 GEMM with few COLUMNS runs here (``few_columns_matmul``: a convolution's
    ``[O, K] @ [K, 7 * 7]``): its transpose ``c.T = b.T @ a.T`` is a product ``applies`` takes,
    with at least ``MIN_COLUMNS`` columns (an MLP's 128 x 512 @ 512 x 10 logits ran slower here
    than on OpenBLAS: most of two 8-row tiles idle, and all of ``a`` transposed into panels)."""
    return n >= MIN_COLUMNS and applies(n, k, m)


def applies_low_depth(m: int, k: int, n: int) -> bool:
    """Whether a float32 GEMM with little depth (``k`` up to ``KC_T``: an LSTM's input projection
    ``[T * B, 64] @ [64, 4 H]``) and many rows and columns runs here (``low_depth_matmul``): 10-40%
    faster than OpenBLAS on numba's threads where B is a transposed view of a row-major weight
    (a Linear layer's ``x @ W.T``): the output is written in blocks of whole rows, where OpenBLAS
    spends much of a shallow product packing and storing."""
    return HAVE_AVX512 and 16 <= k <= KC_T and m >= 2 * COLS and n >= 2 * COLS


def _fits(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """Whether ``out = a @ b`` has operands the kernels take, overlaps aside: 2-D float32 of
    matching shapes, each operand with a unit stride, the output's columns contiguous."""
    if not (a.ndim == b.ndim == out.ndim == 2 and a.dtype == b.dtype == out.dtype == np.float32):
        return False
    (m, k), n = a.shape, b.shape[1]
    if b.shape[0] != k or out.shape != (m, n):
        return False
    return (
        _unit_stride(a)
        and _unit_stride(b)
        and out.strides[1] == 4
        and out.strides[0] >= 4 * n
        and out.strides[0] % 4 == 0
    )


def _accepts(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """Whether ``out = a @ b`` has operands the kernels take (``_fits``), the output over neither."""
    return _fits(a, b, out) and not (np.may_share_memory(out, a) or np.may_share_memory(out, b))


def _check_leaves(leaves: Sequence[np.ndarray], out: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """``_leaves`` without its cache."""
    if len(leaves) > MAX_LEAVES:
        return None
    m, n = out.shape
    got = []
    for leaf in leaves:
        if leaf.dtype != np.float32 or leaf.shape not in ((n,), (1, n), (m, n)):
            return None
        leaf = leaf.reshape(1, n) if leaf.ndim == 1 else leaf
        if (leaf.strides[1] != 4 and n > 1) or np.may_share_memory(leaf, out):
            return None
        got.append(leaf)
    return (*got, *(out,) * (MAX_LEAVES - len(got)))


# The checked addends of recent calls, by the identities of ``out`` and the addends: a plan (and a
# loop's schedule, one set per step) passes the same array objects on every call. Weak references
# keep the entries from holding arrays alive and tell a dead array's reused id from the array.
_LEAVES: dict[tuple[int, ...], tuple[tuple[weakref.ref, ...], tuple[tuple, ...], object]] = {}
MAX_CACHED_LEAVES = 4096  # entries (a T=4096 loop's steps); the cache is emptied when it is full


def _leaves(leaves: Sequence[np.ndarray], out: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """The epilogue's addends as the kernels take them (``MAX_LEAVES`` of them, the unused ones
    ``out`` itself, never read), or None where one does not fit: more than ``MAX_LEAVES``, not
    float32, not ``[n]``, ``[1, n]`` or ``out``'s shape, no unit stride along a row, or over
    ``out`` (which the kernels write before they read the addends). Checked once per set of
    array objects (their shapes and strides part of the key: NumPy lets those be set)."""
    arrays = (out, *leaves)
    key = tuple(map(id, arrays))
    layout = tuple((x.shape, x.strides) for x in arrays)
    hit = _LEAVES.get(key)
    if hit is not None and hit[1] == layout and all(r() is x for r, x in zip(hit[0], arrays)):
        return hit[2]  # type: ignore[return-value]
    padded = _check_leaves(leaves, out)
    if len(_LEAVES) >= MAX_CACHED_LEAVES:
        _LEAVES.clear()
    try:
        _LEAVES[key] = (tuple(weakref.ref(x) for x in arrays), layout, padded)
    except TypeError:  # an array type without weak references: not cached
        pass
    return padded


def run(
    kernel: str, a: np.ndarray, b: np.ndarray, out: np.ndarray, parts: int, leaves: Sequence[np.ndarray] = ()
) -> bool:
    """Run driver ``kernel`` (``packed_b``, ``packed_a`` or ``few_columns``) over ``parts`` tasks:
    ``out = a @ b``, then each of ``leaves`` added in turn (``_leaves``); False, with nothing
    written, where the addends do not fit. No other check: callers have made them."""
    padded = _leaves(leaves, out) if leaves else (out,) * MAX_LEAVES
    if padded is None:
        return False
    getattr(driver(), kernel)(a, b, out, parts, padded, len(leaves))
    return True


PANELS_KIND = "sgemm panels"  # loop_invariant.packed's name for ``pack_panels``'s layout


def _pack_panels(b: np.ndarray, buf: np.ndarray) -> None:
    """Fill ``buf`` with all of ``b``'s panels (``pack_panels``: for each block of ``KC`` rows from
    ``p0``, at ``p0 * panels * COLS``, its panels one after another, each ``kc`` rows of ``COLS``
    floats, zeros past ``b``'s last column), shared over numba's threads."""
    panels = (b.shape[1] + COLS - 1) // COLS
    driver().pack_panels(b, buf, max(1, min(num_threads(), panels)))


def small_m_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, leaves: Sequence[np.ndarray] = ()) -> bool:
    """``out = a @ b`` (``+ leaves[0] + leaves[1] ...``: row vectors ``[n]`` or ``[1, n]`` broadcast
    down ``out``, or matrices of its shape, added in that order as each block of ``out`` is
    finished: the bits of the separate additions) for 2-D float32 operands on the AVX-512 kernel,
    split over numba's threads; False, with nothing written, where it does not apply (see the
    module docstring; and ``_leaves``)."""
    if a.ndim != 2 or b.ndim != 2 or not applies(a.shape[0], a.shape[1], b.shape[1]):
        return False
    if not _fits(a, b, out):
        return False
    (m, k), n = a.shape, b.shape[1]
    threads = num_threads()
    transposed = b.strides[0] == 4 and b.strides[1] != 4 and -m % COLS < COLS // 2  # packed_a's case
    # B invariant over this loop call: packed once, on its first step. (Not for packed_a on one
    # thread: it reads B as it lies, and ran 0.97x prepacked_b's time there on an LSTM backward's
    # 32 x 1024 x 256, against 1.2x on two threads.)
    panels = (
        None
        if transposed and threads == 1
        else loop_invariant.packed(PANELS_KIND, b, (n + COLS - 1) // COLS * COLS * k, _pack_panels)
    )
    if panels is not None:
        if np.may_share_memory(out, a):  # (B is read from its panels: out may not be over A only)
            return False
        padded = _leaves(leaves, out) if leaves else (out,) * MAX_LEAVES
        if padded is None:
            return False
        parts = max(1, min(threads, (n + COLS - 1) // COLS))
        driver().prepacked_b(a, panels, n, out, parts, padded, len(leaves))
        return True
    if np.may_share_memory(out, a) or np.may_share_memory(out, b):
        return False
    if transposed:  # B a transposed view of a row-major weight, and A's rows fill most of their panels
        return run("packed_a", a, b, out, max(1, min(threads, (n + ROWS - 1) // ROWS)), leaves)
    return run("packed_b", a, b, out, max(1, min(threads, (n + COLS - 1) // COLS)), leaves)


def bind_small_m_matmul(
    a: np.ndarray, b: np.ndarray, out: np.ndarray, leaves: Sequence[np.ndarray] = ()
) -> Callable[[], bool] | None:
    """``small_m_matmul(a, b, out, leaves)`` for these very arrays, as a function of no arguments
    to call again and again (a loop schedule binds the same arrays to a step on every call): the
    same kernels, arguments and bits, with the checks of shapes, layouts, overlaps and addends
    made here, once, and each driver called through its compiled entry point; only what may
    change between calls is read per call (the thread count, the loop window's panels of B).
    None where ``small_m_matmul`` declines these arrays on every call. The arrays must keep
    their shapes and strides (a schedule's views do)."""
    if a.ndim != 2 or b.ndim != 2 or not applies(a.shape[0], a.shape[1], b.shape[1]) or not _fits(a, b, out):
        return None
    padded = _check_leaves(leaves, out) if leaves else (out,) * MAX_LEAVES
    if padded is None:
        return None
    (m, k), n, count = a.shape, b.shape[1], len(leaves)
    transposed = b.strides[0] == 4 and b.strides[1] != 4 and -m % COLS < COLS // 2  # as small_m_matmul
    over_a, over_b = np.may_share_memory(out, a), np.may_share_memory(out, b)
    panels_of = loop_invariant.binding(PANELS_KIND, b, (n + COLS - 1) // COLS * COLS * k, _pack_panels)
    column_parts, row_parts = (n + COLS - 1) // COLS, (n + ROWS - 1) // ROWS
    drv = driver()
    prepacked = entry_point(drv.prepacked_b, (a, np.empty(0, np.float32), n, out, 1, padded, count))
    unpacked = entry_point(drv.packed_a if transposed else drv.packed_b, (a, b, out, 1, padded, count))

    def call() -> bool:
        threads = num_threads()
        panels = None if transposed and threads == 1 else panels_of()
        if panels is not None:
            if over_a:
                return False
            prepacked(a, panels, n, out, max(1, min(threads, column_parts)), padded, count)
            return True
        if over_a or over_b:
            return False
        unpacked(a, b, out, max(1, min(threads, row_parts if transposed else column_parts)), padded, count)
        return True

    return call


def few_columns_matmul(
    a: np.ndarray, b: np.ndarray, out: np.ndarray, leaves: Sequence[np.ndarray] = ()
) -> bool:
    """``out = a @ b`` (``+ leaves``, as ``small_m_matmul`` adds them) for 2-D float32 operands with
    few columns (8 to 64: a late convolution's ``[O, K] @ [K, 49]``) on the AVX-512 kernel: the
    transposed product ``out.T = b.T @ a.T``, a few-rows product (49 rows: 7 tiles of 8, where 49
    columns would fill 2 panels of 32 to 77%), each tile stored transposed into ``out``. The rows
    of ``out`` are shared over numba's threads in blocks of ``COLS``: the same bits on any thread
    count. False, with nothing written, where it does not apply (as ``small_m_matmul``)."""
    if a.ndim != 2 or b.ndim != 2 or not applies_few_columns(a.shape[0], a.shape[1], b.shape[1]):
        return False
    if a.strides[0] == 4 and a.strides[1] != 4 and a.size >= TRANSPOSED_A_LIMIT:
        return False  # a large transposed view: its panels read 128 bytes a row (OpenBLAS did better)
    if not _accepts(a, b, out):
        return False
    return _few_columns(a, b, out, leaves)


def _few_columns(a: np.ndarray, b: np.ndarray, out: np.ndarray, leaves: Sequence[np.ndarray]) -> bool:
    """``few_columns`` with the rows of ``out`` shared over numba's threads, ``COLS`` at a time."""
    threads = num_threads()
    return run("few_columns", a, b, out, max(1, min(threads, (a.shape[0] + COLS - 1) // COLS)), leaves)


def low_depth_matmul(
    a: np.ndarray, b: np.ndarray, out: np.ndarray, leaves: Sequence[np.ndarray] = ()
) -> bool:
    """``out = a @ b`` (``+ leaves``, as ``small_m_matmul`` adds them) for a shallow product
    (``applies_low_depth``) whose B is a transposed view of a row-major matrix, on the
    few-columns kernel (``few_columns``: blocks of ``COLS`` rows of ``out``, written whole, each
    thread broadcasting the rows of ``b.T`` as they lie); False, with nothing written, elsewhere
    (B row-major: OpenBLAS did as well there)."""
    if a.ndim != 2 or b.ndim != 2 or not applies_low_depth(a.shape[0], a.shape[1], b.shape[1]):
        return False
    if not (b.strides[0] == 4 and b.strides[1] != 4 and _accepts(a, b, out)):
        return False
    return _few_columns(a, b, out, leaves)
