"""Checks of generated kernels that the simulator cannot make (it does no type checking).

Both need a process where the simulator is OFF (NUMBA_ENABLE_CUDASIM unset) but no GPU:
- ``typecheck``: numba's CUDA typing and lowering to LLVM IR for compute capability 8.0. Needs
  only numba-cuda (no driver, no NVVM); catches typing errors a real GPU would hit.
- ``compile_ptx``: the full path to PTX; needs NVVM/NVRTC (``pip install "numba-cuda[cu13]"``).
  ``ptx_unavailable()`` says why it cannot run here, or None.
"""

from __future__ import annotations

import functools

from .codegen import KernelSource, simulator
from .compiled import load_source

CC = (8, 0)


def _kernels(ks: KernelSource):
    if simulator():
        raise RuntimeError("kernel checks need the real CUDA target: unset NUMBA_ENABLE_CUDASIM")
    module = load_source(ks.source)
    for name, sig in ks.kernels:
        yield name, getattr(module, name).py_func, sig


def typecheck(ks: KernelSource, cc: tuple[int, int] = CC) -> None:
    """Type and lower every kernel of a generated module for the CUDA target (raises on error)."""
    from numba.core import sigutils
    from numba.cuda.compiler import compile_cuda

    for _, pyfunc, sig in _kernels(ks):
        args, ret = sigutils.normalize_signature(sig)
        compile_cuda(pyfunc, ret, args, cc=cc)


def compile_ptx(ks: KernelSource, cc: tuple[int, int] = CC) -> list[str]:
    """PTX text of every kernel of a generated module."""
    from numba import cuda

    return [cuda.compile_ptx(pyfunc, sig, cc=cc)[0] for _, pyfunc, sig in _kernels(ks)]


@functools.lru_cache(maxsize=1)
def ptx_unavailable() -> str | None:
    """Why numba.cuda.compile_ptx cannot run in this process (None when it can)."""
    if simulator():
        return "the CUDA simulator is on (compile_ptx needs the real target)"
    try:
        from numba import cuda

        def probe(a):
            a[0] = 1.0

        cuda.compile_ptx(probe, "void(float32[::1])", cc=CC)
    except Exception as err:
        text = str(err).strip().splitlines()
        return f"{type(err).__name__}: {text[0] if text else ''} (install numba-cuda[cu13] for NVVM/NVRTC)"
    return None
