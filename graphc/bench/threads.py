"""The same number of CPU threads for every engine."""

from __future__ import annotations

import os
from typing import Any

_THREAD_LIMITS: list[Any] = []
_SAVED: list[dict[str, Any]] = []  # what set_threads found, for restore_threads
_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def default_threads() -> int:
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def set_threads(n: int) -> str:
    """Limit every thread pool to n threads (env for subprocesses, threadpoolctl, numba); say how.

    NumPy's OpenBLAS is already loaded when the CLI runs, so environment variables would come too
    late for it: threadpoolctl sets its pool. The variables are what the compile-time subprocesses
    see at start-up.
    """
    # NUMBA_NUM_THREADS is not set here: numba re-reads it whenever it compiles, and a value that
    # differs from the size of an already launched pool is an error on every later compile (the
    # subprocesses call set_threads themselves).
    import numba

    _SAVED.append(
        {"env": {var: os.environ.get(var) for var in _ENV_VARS}, "limits": len(_THREAD_LIMITS), "numba": None}
    )
    for var in _ENV_VARS:
        os.environ[var] = str(n)
    how = ["env OMP/OPENBLAS/MKL_NUM_THREADS"]
    try:
        from threadpoolctl import threadpool_limits

        _THREAD_LIMITS.append(threadpool_limits(limits=n))
        how.append("threadpoolctl")
    except ImportError:
        how.append("no threadpoolctl: BLAS threads fixed at import")
    # set_num_threads starts numba's thread pool: the CPU backend must choose its threading layer
    # first (TBB, the one pool its kernels and GEMMs share), or numba starts the first layer of
    # its own order (a layer chosen this way once made the cnn_train step 1.7x slower).
    import graphc.kernels.cpu  # noqa: F401

    _SAVED[-1]["numba"] = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    how.append("numba.set_num_threads")
    return ", ".join(how)


def reapply_thread_limits(n: int) -> None:
    """Re-apply threadpoolctl after a library loaded its own OpenMP/BLAS (torch, onnxruntime)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    _THREAD_LIMITS.append(threadpool_limits(limits=n))


def restore_threads() -> None:
    """Undo the last ``set_threads`` (and the ``reapply_thread_limits`` since): the environment
    variables, the thread pools' limits and numba's thread count as they were before it, so a
    ``graphc.bench.run_bench`` called from a user's process leaves that process's threads alone."""
    if not _SAVED:
        return
    saved = _SAVED.pop()
    while len(_THREAD_LIMITS) > saved["limits"]:
        _THREAD_LIMITS.pop().restore_original_limits()
    for var, value in saved["env"].items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
    if saved["numba"] is not None:
        import numba

        numba.set_num_threads(saved["numba"])
