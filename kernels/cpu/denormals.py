"""Flush-to-zero while a loop kernel runs: arithmetic on denormal floats is ~100x slower on x86.

A recurrent network's backward pass (a reverse scan) carries cotangents that shrink step by
step; deep into a long sequence they pass through the denormal range (below ~1.2e-38 in
float32), where every multiply and GEMM that touches them takes microcode assists: a T=512
LSTM's backward spent ~15x its usual time on a dozen such steps. Inside ``flush_denormals()``
the calling thread's MXCSR has FTZ (denormal results become zero) and DAZ (denormal operands
read as zero) set, as XLA's CPU backend and ``torch.set_flush_denormal(True)`` do; TBB's worker
threads (numba's default layer here) take the caller's floating-point settings with each
parallel region, so parallel kernels and GEMMs flush too. Only values below the smallest normal
float change (to zero). On leaving, FTZ and DAZ are put back as they were (nesting is fine).
Elsewhere than x86-64 it does nothing.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

# MXCSR bits: FTZ (flush to zero, bit 15) and DAZ (denormals are zero, bit 6).
FTZ_DAZ = 0x8040
SUPPORTED = platform.machine().lower() in ("x86_64", "amd64")


def _build() -> tuple:
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def _update_mxcsr(typingctx, and_mask, or_mask):  # noqa: ANN001, ANN202
        """MXCSR = (MXCSR & and_mask) | or_mask; returns the old MXCSR."""
        sig = types.uint32(types.uint32, types.uint32)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            i32, p8 = ir.IntType(32), ir.IntType(8).as_pointer()
            fnty = ir.FunctionType(ir.VoidType(), [p8])
            store = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.stmxcsr")
            load = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.ldmxcsr")
            slot = cgutils.alloca_once(builder, i32)
            ptr = builder.bitcast(slot, p8)
            builder.call(store, [ptr])
            old = builder.load(slot)
            builder.store(builder.or_(builder.and_(old, args[0]), args[1]), slot)
            builder.call(load, [ptr])
            return old

        return sig, codegen

    @njit(cache=True, nogil=True)
    def update(and_mask: np.uint32, or_mask: np.uint32) -> np.uint32:
        return _update_mxcsr(and_mask, or_mask)

    return (update,)


_update = None


def mxcsr_update(and_mask: int, or_mask: int) -> int:
    """Set this thread's MXCSR to ``(MXCSR & and_mask) | or_mask``; return the old value (x86-64 only)."""
    global _update
    if _update is None:
        (_update,) = _build()
    return int(_update(np.uint32(and_mask), np.uint32(or_mask)))


class _Depth(threading.local):
    depth = 0


_DEPTH = _Depth()


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Run the body with FTZ and DAZ set on this thread (a no-op off x86-64, and when nested:
    the outermost one sets and restores the bits)."""
    if not SUPPORTED or _DEPTH.depth:
        _DEPTH.depth += 1
        try:
            yield
        finally:
            _DEPTH.depth -= 1
        return
    old = mxcsr_update(0xFFFFFFFF, FTZ_DAZ)
    _DEPTH.depth = 1
    try:
        yield
    finally:
        _DEPTH.depth = 0
        mxcsr_update(~FTZ_DAZ & 0xFFFFFFFF, old & FTZ_DAZ)
