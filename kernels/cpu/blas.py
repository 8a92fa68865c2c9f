"""GEMMs on numba's thread pool: each thread calls single-threaded BLAS on its share of the work.

NumPy's OpenBLAS runs a GEMM on threads of its own, which then spin for about 0.1 s waiting for
the next call. On 2 cores that spinning thread holds a core while numba's parallel kernels run
between GEMMs, so those ran no faster than serial ones; and a batched matmul (attention's 32
small GEMMs) paid OpenBLAS's thread hand-off once per matrix. Here one pool, numba's, does all
the parallel work: a GEMM's rows are split between its threads, or a batch's matrices are, and
each thread calls NumPy's own OpenBLAS with its thread count set to 1 for the duration
(``SINGLE_THREADED``: one counted, process-wide state, so that GEMMs started from several
Python threads never see the count change under them).

The BLAS is found in NumPy's bundled OpenBLAS by symbol name. Where it is not there (a NumPy
built against another BLAS), ``parallel_matmul`` declines and the caller uses ``np.matmul``.

A float32 product with few rows (8 to 64: an RNN step's 32 x 256 @ 256 x 1024) runs on graphc's
own AVX-512 kernel instead (``sgemm``; ``small_rows_matmul``), where OpenBLAS is weak: 2x faster
than the driver here on one thread; so does one with few columns (a batch-1 convolution's
``[O, K] @ [K, 7 * 7]``: ``few_columns_matmul``), as the transposed product, and so does a shallow
one (``k <= 128``) with many rows and columns (an LSTM's input projection: ``low_depth_matmul``,
0.8x the driver's time). Without AVX-512 they stay on the driver. Those kernels also make a fused
matmul's epilogue of adds (``folding``), with the bits of the separate adds.

Any other single float32 matrix product whose B has unit column stride, with rows for a whole
tile and columns for two panels (``conv_gemm.applies``), runs on the batch-1 convolution's
AVX-512 kernel with an empty epilogue (``tiled_matmul``) up to ``TILED_MAX_WORK`` (an LSTM's
input-weight gradient, an MLP's backward products: 0.7-0.85x OpenBLAS's time there); so do the
products the few-columns kernel declines (a large transposed A). B as a transposed view (a Linear
layer's ``x @ W.T``) and larger products stay on the driver.
"""

from __future__ import annotations

import ctypes
import glob
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core.errors import TypingError
from numba.extending import intrinsic

from . import conv_gemm, gemv, sgemm
from .threads import num_threads

# From this much work (multiply-adds over the whole batch) up, a GEMM runs here. OpenBLAS
# threads a GEMM from the same size on (its threshold), so below it np.matmul stays on the
# calling thread and OpenBLAS's pool asleep without any thread-count change; and its result
# does not depend on that count, which other threads may change meanwhile (tests/test_threads.py
# checks this against the OpenBLAS installed).
PARALLEL_GEMM_WORK = 1 << 19
# A product with one row or one column is a matrix-vector product to NumPy (BLAS gemv), which
# OpenBLAS splits over its threads from far less work: 2304 x GEMM_MULTITHREAD_THRESHOLD (4)
# multiply-adds. Small ones from this size up run with OpenBLAS held on one thread.
GEMV_SPLIT_WORK = 2304 * 4

# Below this much work (multiply-adds), a single float32 product no sgemm route takes runs on the
# convolution GEMM's kernel (``tiled_matmul``). Against OpenBLAS's own AVX-512 (SkylakeX) kernels
# on this machine's 2 cores it took 0.7-0.85x their time there ([1024, 2048] @ [2048, 64] with A
# transposed, an LSTM's dW_ih: 0.80-0.85; [64, 784] @ [784, 512]: 0.79; 256^3: 0.69-0.79); from
# 2^28 on, the two were even, run to run 0.8-1.3x either way (1024^3: 1.05-1.17), so OpenBLAS keeps
# those. (With OpenBLAS forced onto its AVX2 kernels, OPENBLAS_CORETYPE=Haswell, the kernel took
# half its time or less everywhere.)
TILED_MAX_WORK = 1 << 28
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
BLAS_INT = {4: "np.int32", 8: "np.int64"}


@dataclass(frozen=True)
class OpenBLAS:
    """The entry points of the OpenBLAS NumPy ships: GEMM addresses by dtype, thread control."""

    gemm: dict  # np.dtype -> address of cblas_?gemm
    int_bytes: int  # 8 for an ILP64 build (NumPy's), 4 otherwise
    get_threads: ctypes._CFuncPtr
    set_threads: ctypes._CFuncPtr


# (prefix, suffix, integer bytes) of the symbol names: NumPy >= 2 ships scipy-openblas64
# ("scipy_cblas_sgemm64_"); older wheels an ILP64 OpenBLAS with a "64_" suffix only.
_NAMINGS = (("scipy_", "64_", 8), ("", "64_", 8), ("scipy_", "", 4), ("", "", 4))


@cache
def numpy_openblas() -> OpenBLAS | None:
    """NumPy's bundled OpenBLAS, or None where NumPy uses another BLAS."""
    libs_dir = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs_dir, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, int_bytes in _NAMINGS:
            try:
                sgemm = getattr(lib, f"{prefix}cblas_sgemm{suffix}")
                dgemm = getattr(lib, f"{prefix}cblas_dgemm{suffix}")
                get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
                put = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
            except AttributeError:
                continue
            get.restype, get.argtypes = ctypes.c_int, []
            put.restype, put.argtypes = None, [ctypes.c_int]
            gemm = {
                np.dtype(np.float32): ctypes.cast(sgemm, ctypes.c_void_p).value,
                np.dtype(np.float64): ctypes.cast(dgemm, ctypes.c_void_p).value,
            }
            return OpenBLAS(gemm, int_bytes, get, put)
    return None


@intrinsic
def call_gemm(typingctx, fn, order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Call the ``cblas_?gemm`` at address ``fn``; ``a``, ``b`` and ``c`` are addresses too."""
    ints = (order, ta, tb, m, n, k, lda, ldb, ldc)
    if not all(isinstance(t, types.Integer) for t in (fn, a, b, c, *ints)):
        raise TypingError("call_gemm takes integers for the address, sizes and flags")
    if not (isinstance(alpha, types.Float) and alpha == beta):
        raise TypingError("call_gemm takes alpha and beta of one float type")
    sig = types.void(fn, order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        pointer = ir.IntType(8).as_pointer()
        call_args = list(args[1:])
        for at in (7, 9, 12):  # a, b and c
            call_args[at] = builder.inttoptr(call_args[at], pointer)
        fnty = ir.FunctionType(ir.VoidType(), [v.type for v in call_args])
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), call_args)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True, nogil=True, inline="always")
def batch_offset(index: int, shape: np.ndarray, strides: np.ndarray) -> int:
    """Element offset of batch matrix ``index`` (C order over ``shape``) in an operand with
    these batch strides (0 along broadcast axes)."""
    offset = 0
    for d in range(shape.shape[0] - 1, -1, -1):
        offset += (index % shape[d]) * strides[d]
        index //= shape[d]
    return offset


def gemm_source(int_bytes: int) -> str:
    """Numba source of the parallel GEMM driver for a BLAS with ``int_bytes``-byte integers.

    Task t is part ``t % nsplit`` (a block of rows, or with ``cols`` of columns, 16 at a time) of
    batch matrix ``t // nsplit``; a batch index becomes element offsets through the batch shape
    and each operand's batch strides.
    """
    bi = BLAS_INT[int_bytes]
    return f"""# graphc CPU kernel: parallel GEMM driver (single-threaded BLAS calls on numba's threads)
import numpy as np
from numba import njit, prange

from graphc.kernels.cpu.blas import batch_offset, call_gemm


@njit(cache=True, nogil=True, parallel=True)
def kernel(fn, ta, tb, m, n, k, one, zero, pa, lda, pb, ldb, pc, ldc, shape, sa, sb, sc, nsplit, item, cols):
    nbatch = 1
    for d in range(shape.shape[0]):
        nbatch *= shape[d]
    for t in prange(nbatch * nsplit):
        matrix = t // nsplit
        part = t % nsplit
        oa = batch_offset(matrix, shape, sa)
        ob = batch_offset(matrix, shape, sb)
        oc = batch_offset(matrix, shape, sc)
        rows, width = m, n
        if cols:
            blocks = (n + 15) // 16
            lo = part * blocks // nsplit * 16
            hi = n if part == nsplit - 1 else (part + 1) * blocks // nsplit * 16
            ob += lo if tb == {NO_TRANS} else lo * ldb
            oc += lo
            width = hi - lo
        else:
            lo = part * m // nsplit
            hi = (part + 1) * m // nsplit
            oa += lo * lda if ta == {NO_TRANS} else lo
            oc += lo * ldc
            rows = hi - lo
        call_gemm(
            fn, np.int32({ROW_MAJOR}), np.int32(ta), np.int32(tb), {bi}(rows), {bi}(width), {bi}(k), one,
            pa + oa * item, {bi}(lda), pb + ob * item, {bi}(ldb), zero, pc + oc * item, {bi}(ldc),
        )
"""


def matrix_layout(x: np.ndarray) -> tuple[int, int] | None:
    """(transpose flag, leading dimension) of ``x``'s trailing matrix for row-major BLAS, or None."""
    item = x.itemsize
    (r, c), (sr, sc) = x.shape[-2:], x.strides[-2:]
    if sc == item and sr % item == 0 and sr // item >= max(1, c):
        return NO_TRANS, sr // item
    if sr == item and sc % item == 0 and sc // item >= max(1, r):
        return TRANS, sc // item
    return None


def batch_strides(x: np.ndarray, batch: tuple[int, ...]) -> np.ndarray | None:
    """Element strides of ``x``'s batch axes broadcast to ``batch`` (0 where broadcast), or None
    where one is negative or not a whole number of elements."""
    lead = x.shape[:-2]
    pad = len(batch) - len(lead)
    if pad < 0:
        raise ValueError(f"matmul operand {x.shape} has more batch axes than its result {batch}")
    strides = [0] * pad
    for size, stride, want in zip(lead, x.strides[:-2], batch[pad:]):
        if size != want and size != 1:
            raise ValueError(f"matmul operand {x.shape} does not broadcast to the batch {batch}")
        if size != 1 and (stride < 0 or stride % x.itemsize):
            return None
        strides.append(0 if size == 1 else stride // x.itemsize)
    return np.array(strides, np.int64)


@cache
def _driver(int_bytes: int):
    from .cache import load_kernel

    return load_kernel(gemm_source(int_bytes))


def _rows_as_one_matrix(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``out`` as 2-D where a stack of rows times one matrix can be one GEMM."""
    if b.ndim == 2 and a.ndim > 2 and a.flags.c_contiguous:
        # np.matmul would loop over the leading axes with one small GEMM each; one tall GEMM
        # over all rows runs 1.5-2x faster (Linear layers on [batch, seq, features]).
        return a.reshape(-1, a.shape[-1]), out.reshape(-1, out.shape[-1])
    return a, out


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a @ b`` through NumPy's BLAS on numba's threads; a stack of rows times one matrix
    is one GEMM. Where the driver declines, np.matmul runs it with OpenBLAS on one thread too
    (``SINGLE_THREADED``), so its bits never depend on what other threads do."""
    a, out = _rows_as_one_matrix(a, b, out)
    if not parallel_matmul(a, b, out):
        with SINGLE_THREADED:
            np.matmul(a, b, out=out)


def serial_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a @ b`` through NumPy's BLAS on the calling thread (``matmul`` for small GEMMs)."""
    a, out = _rows_as_one_matrix(a, b, out)
    np.matmul(a, b, out=out)


def one_thread_serial_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``serial_matmul`` with OpenBLAS held on one thread (``SINGLE_THREADED``): for a small
    matrix-vector product, whose bits would otherwise depend on the thread count other threads
    may set meanwhile."""
    with SINGLE_THREADED:
        serial_matmul(a, b, out)


def _matrices(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The operands of a product whose batch axes are all 1 (batch-1 inference's ``[1, O, HW]``
    convolution output) as 2-D views; arrays already 2-D as they are."""
    if a.ndim == b.ndim == out.ndim == 2:  # the common case, without the generator
        return a, b, out
    return tuple(x[(0,) * (x.ndim - 2)] if x.ndim > 2 else x for x in (a, b, out))


def small_rows_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a @ b`` on the AVX-512 small-m kernel (``sgemm``: an RNN step's 32 x 256 @ 256 x 1024,
    where OpenBLAS is weak), or ``matmul`` where it declines (another dtype or layout). Batch axes
    of size 1 (a batch-1 convolution's) are dropped first."""
    if not sgemm.small_m_matmul(*_matrices(a, b, out)):
        matmul(a, b, out)


def few_columns_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a @ b`` with few columns (a batch-1 convolution's ``[O, K] @ [K, 7 * 7]``) on the
    AVX-512 kernel as the transposed few-rows product (``sgemm.few_columns_matmul``), or
    where it declines ``tiled_matmul``'s kernel, or ``matmul``. Batch axes of size 1 are dropped
    first."""
    if not sgemm.few_columns_matmul(*_matrices(a, b, out)):
        if a.shape[-2] * a.shape[-1] * b.shape[-1] < TILED_MAX_WORK:
            _shared_tiled_matmul()(a, b, out)
        else:
            matmul(a, b, out)


def low_depth_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a @ b`` for a shallow product with many rows and columns (an LSTM's input
    projection ``[T * B, 64] @ W_ih.T``) on the AVX-512 few-columns kernel
    (``sgemm.low_depth_matmul``: B a transposed view), or ``matmul`` where it declines. Batch
    axes of size 1 are dropped first."""
    if not sgemm.low_depth_matmul(*_matrices(a, b, out)):
        matmul(a, b, out)


def tiled_matmul() -> Callable[..., None]:
    """``fn(a, b, out)``: ``out = a @ b`` on the convolution GEMM's AVX-512 kernel with no epilogue
    (``conv_gemm``: 8 x 32 tiles, B packed by panels as the first row tile reads it), for one
    float32 matrix (batch axes of size 1 dropped) whose B has unit column stride; ``matmul``
    where it declines (another dtype, B a transposed view, an output over an operand). See
    ``TILED_MAX_WORK`` for where it beat ``matmul``. The bits are the kernel's (one FMA chain
    per output in k order per block), the same on any thread count. Each call site gets its
    own kernel call object, which keeps the operands' views of the arrays it last saw."""
    gemm = conv_gemm.ConvGemm(conv_gemm.Epilogue("", (), ()))

    def avx512_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        if not gemm(*_matrices(a, b, out), ()):
            matmul(a, b, out)

    return avx512_matmul


@cache
def _shared_tiled_matmul() -> Callable[..., None]:
    """One ``tiled_matmul`` for the products ``few_columns_matmul`` declines (a large transposed
    A: an LSTM's ``dW_ih = dgates.T @ x``, [1024, 2048] @ [2048, 64]: 0.80-0.85x OpenBLAS's time
    here); it takes what it can and hands the rest to ``matmul``."""
    return tiled_matmul()


# Each AVX-512 route's kernel call, which also adds an epilogue's addends (``folding``).
_FOLDING = {
    small_rows_matmul: sgemm.small_m_matmul,
    few_columns_matmul: sgemm.few_columns_matmul,
    low_depth_matmul: sgemm.low_depth_matmul,
}


def folding(matmul: Callable[..., None]) -> Callable[..., bool] | None:
    """For a function ``matmul_for`` chose, ``fn(a, b, out, leaves) -> bool`` computing ``out = a
    @ b + leaves[0] + ...`` in one kernel (the adds of a fused matmul's epilogue, each addend a
    row vector or a matrix of the output's shape: ``sgemm.small_m_matmul``), False where it
    declines (nothing written: the caller runs ``matmul`` and its epilogue); None for a function
    without such a kernel (OpenBLAS's). Where the kernel has a bound form (``bind_product``),
    ``fn.bind(a, b, out, leaves)`` makes it (``sgemm.bind_small_m_matmul``)."""
    kernel = _FOLDING.get(matmul)
    if kernel is None:
        return None

    def folded(a: np.ndarray, b: np.ndarray, out: np.ndarray, leaves: tuple[np.ndarray, ...]) -> bool:
        if out.ndim != 2:
            return False
        return kernel(a, b, out, leaves)

    binder = _BINDING.get(matmul)
    if binder is not None:
        folded.bind = binder  # type: ignore[attr-defined]
    return folded


# Routes whose folded kernel can also be bound to fixed arrays (``folded.bind(a, b, out, leaves)``:
# a function of no arguments doing ``folded(a, b, out, leaves)``, or None where that declines).
_BINDING = {small_rows_matmul: sgemm.bind_small_m_matmul}


def bind_product(
    fn: Callable[..., object],
    a: np.ndarray,
    b: np.ndarray,
    out: np.ndarray,
    inputs: Sequence[np.ndarray],
    leaves: tuple[np.ndarray, ...] = (),
) -> Callable[[], bool] | None:
    """``fn(a, b, out, leaves)`` (a ``folding`` function) or ``fn(a, b, out)`` (a function of
    ``matmul_for``) bound to these arrays: a function of no arguments to call on every step of
    a loop that binds them, True where it computed the product, False where it declined
    (nothing written); None where ``fn`` has no bound form or it would decline every time.
    ``a`` and ``b`` are a fused matmul's operands over its ``inputs``: bound only where both are
    views of those (never a dense copy their getter made, which would go stale)."""
    bind = getattr(fn, "bind", None) or _BOUND_MATMUL.get(fn)
    if bind is None or not all(any(np.may_share_memory(x, y) for y in inputs) for x in (a, b)):
        return None
    return bind(a, b, out, leaves)


def _bind_small_rows(
    a: np.ndarray, b: np.ndarray, out: np.ndarray, leaves: tuple[np.ndarray, ...]
) -> Callable[[], bool] | None:
    """``small_rows_matmul`` bound (``bind_product``): its AVX-512 kernel, or None."""
    return None if leaves else sgemm.bind_small_m_matmul(*_matrices(a, b, out))


# The routes of ``matmul_for`` with a bound form (``bind_product``).
_BOUND_MATMUL = {small_rows_matmul: _bind_small_rows}


def matmul_for(k: int, out_shape: tuple[int, ...]) -> Callable[..., None]:
    """The matmul function for a product of shape ``out_shape`` over ``k``: ``serial_matmul``
    where the work is below the thread pool's threshold (decided once, saving its checks on
    every call of a small GEMM: training steps of small models make many), or
    ``one_thread_serial_matmul`` where that is a matrix-vector product OpenBLAS may split;
    for one matrix (2-D, or batch axes all 1) ``small_rows_matmul`` where it has few
    rows (``sgemm.applies``), ``few_columns_matmul`` where it has few columns
    (``sgemm.applies_few_columns``) and ``low_depth_matmul`` where it has little depth
    (``sgemm.applies_low_depth``; float32 only, others go on to ``matmul``); else ``matmul``."""
    work = math.prod(out_shape) * k
    if gemv.applies(k, out_shape):  # one row (a batch-1 classifier): bandwidth-bound, gemv
        gemv.driver()
        return gemv.vector_matmul
    if work >= PARALLEL_GEMM_WORK:
        route = sgemm_route(k, out_shape)
        if route is not None:
            sgemm.driver()  # loaded (or compiled) with the plan, not in its first step
            return route
        if len(out_shape) >= 2 and math.prod(out_shape[:-2]) == 1:
            m, n = out_shape[-2:]
            if conv_gemm.applies(m, k, n) and work < TILED_MAX_WORK:
                conv_gemm.driver("")
                return tiled_matmul()
        return matmul
    rows = out_shape[-2] if len(out_shape) >= 2 else 1
    cols = out_shape[-1] if out_shape else 1
    if (rows == 1 or cols == 1) and work >= GEMV_SPLIT_WORK:
        return one_thread_serial_matmul
    return serial_matmul


def sgemm_route(k: int, out_shape: tuple[int, ...]) -> Callable[..., None] | None:
    """The sgemm route ``matmul_for`` takes for this product (``small_rows_matmul``,
    ``few_columns_matmul`` or ``low_depth_matmul``), or None; decided from the shapes alone,
    loading no kernel."""
    if math.prod(out_shape) * k < PARALLEL_GEMM_WORK or len(out_shape) < 2 or math.prod(out_shape[:-2]) != 1:
        return None
    m, n = out_shape[-2:]
    if sgemm.applies(m, k, n):
        return small_rows_matmul
    if sgemm.applies_few_columns(m, k, n):
        return few_columns_matmul
    if sgemm.applies_low_depth(m, k, n):
        return low_depth_matmul
    return None


def parallel_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """``out = a @ b`` split over numba's threads, each calling BLAS on one thread; False, with
    nothing written, where this does not apply: no bundled OpenBLAS, one thread, a dtype other
    than float32/64, vectors, little work, or a layout BLAS cannot take as it is."""
    if a.ndim < 2 or b.ndim < 2:
        return False
    (m, k), n = a.shape[-2:], b.shape[-1]
    batch = out.shape[:-2]
    nbatch = math.prod(batch)
    if m * n * k * nbatch < PARALLEL_GEMM_WORK:  # first: the cheapest test, and most GEMMs
        return False
    lib = numpy_openblas()
    if lib is None or not (a.dtype == b.dtype == out.dtype) or out.dtype not in lib.gemm:
        return False
    threads = num_threads()
    if threads < 2:
        return False
    if b.shape[-2] != k or out.shape[-2:] != (m, n):
        raise ValueError(f"matmul of {a.shape} and {b.shape} into {out.shape}")
    la, lb, lc = matrix_layout(a), matrix_layout(b), matrix_layout(out)
    if la is None or lb is None or lc is None or lc[0] != NO_TRANS:
        return False
    sa, sb, sc = (batch_strides(x, batch) for x in (a, b, out))
    if sa is None or sb is None or sc is None:
        return False
    # Whole matrices per thread where the batch shares out evenly; otherwise row blocks too.
    nsplit = 1 if nbatch % threads == 0 or nbatch >= 4 * threads else threads
    # A short, wide product (an RNN step's h @ W_hh^T: 32 x 1024) splits its columns: each thread
    # then packs its share of B instead of all of it (2.2x faster per thread there). Not a few rows
    # (a classifier's 1 x 1024 @ 1024 x 1000): one call keeps every column's rounding the same
    # (OpenBLAS's kernel for a ragged column block sums in another order), as before.
    cols = int(nsplit > 1 and 8 <= m < n and m < 256)
    nsplit = min(nsplit, (n + 15) // 16 if cols else m)
    with one_thread_per_call(lib):
        _driver(lib.int_bytes)(
            lib.gemm[out.dtype], la[0], lb[0], m, n, k, out.dtype.type(1), out.dtype.type(0),
            a.ctypes.data, la[1], b.ctypes.data, lb[1], out.ctypes.data, lc[1],
            np.array(batch, np.int64), sa, sb, sc, nsplit, out.itemsize, cols,
        )  # fmt: skip
    return True


class OneThreadBLAS:
    """A context in which NumPy's OpenBLAS runs on one thread: one process-wide, counted state.

    OpenBLAS's thread count is process-wide and the last bits of a GEMM it splits depend on it,
    so a GEMM of graphc's must never see it change: the first thread to enter (of all Python
    threads) saves the count and sets it to 1, the last to leave restores it, and entering again
    on a thread already inside costs only a thread-local check. (Each thread saving and
    restoring on its own, as before, let one thread restore the count while another's driver
    ran.) The GEMM drivers, ``np.matmul`` for the large GEMMs they decline and small
    matrix-vector products (``GEMV_SPLIT_WORK``) run inside; other small GEMMs run outside, as
    OpenBLAS never splits them (``PARALLEL_GEMM_WORK``). So results are bit-identical whether
    plans run one at a time or together, at no cost per plan call (entering costs a few
    microseconds, two thread-count changes, next to a GEMM of at least tens of microseconds).
    Meanwhile a user's own ``np.matmul`` on another thread runs on one OpenBLAS thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self._users = 0  # threads inside
        self._saved = 1  # the count to restore when the last one leaves

    def __enter__(self) -> OneThreadBLAS:
        local = self._local
        depth = getattr(local, "depth", 0)
        if depth == 0:
            with self._lock:
                if self._users == 0:
                    lib = numpy_openblas()
                    self._saved = lib.get_threads() if lib is not None else 1
                    if self._saved != 1:
                        lib.set_threads(1)
                self._users += 1
        local.depth = depth + 1
        return self

    def __exit__(self, *exc: object) -> None:
        local = self._local
        local.depth -= 1
        if local.depth == 0:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._saved != 1:
                    numpy_openblas().set_threads(self._saved)

    @property
    def active(self) -> bool:
        """Whether some thread is inside (OpenBLAS is then on one thread)."""
        return self._users > 0


SINGLE_THREADED = OneThreadBLAS()


def one_thread_per_call(lib: OpenBLAS | None = None) -> OneThreadBLAS:
    """The process-wide one-thread OpenBLAS context (``SINGLE_THREADED``) the GEMM drivers hold
    while numba's threads each call BLAS; ``lib`` is accepted for callers that name it (it is
    always NumPy's bundled OpenBLAS)."""
    return SINGLE_THREADED
