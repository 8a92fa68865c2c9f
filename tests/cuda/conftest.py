"""CUDA tests run in their own pytest process with NUMBA_ENABLE_CUDASIM=1 (``make test-cuda``), or on
a machine with a GPU. Anywhere else the whole directory is skipped with the reason."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent

# The simulator runs each CUDA thread as a Python thread and syncthreads() as a barrier; with
# Python's default 5 ms GIL switch interval every barrier costs milliseconds, which made a tiled
# matmul of 32x27x1024 take four minutes. A short interval makes it 24 times faster.
sys.setswitchinterval(1e-5)


def _serialise_simulated_shared_arrays() -> None:
    """Make the simulator's ``cuda.shared.array`` safe when threads switch often.

    numba-cuda's FakeCUDAShared.array looks its block's array up by call site and creates it if
    missing, without a lock: two threads can each create one, and the block's threads then
    work on different arrays. The 5 ms switch interval hid this; at 10 us a tiled matmul
    returned garbage. Same lookup, under a lock.
    """
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    original = kernelapi.FakeCUDAShared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:
            return original(self, shape, dtype, alignment)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            found = self._allocations.get(key)
            if found is None:
                if not isinstance(dtype, np.dtype):
                    dtype = numpy_support.as_dtype(dtype)
                found = self._allocations[key] = np.empty(shape, dtype)
        return found

    kernelapi.FakeCUDAShared.array = array


if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
    _serialise_simulated_shared_arrays()


def _skip_reason() -> str | None:
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return None
    from graphc.kernels.cuda import device_problem

    problem = device_problem()
    if problem is None:
        return None
    return (
        "CUDA tests need a GPU or numba's simulator: run them as "
        f"`NUMBA_ENABLE_CUDASIM=1 pytest tests/cuda` (make test-cuda); here {problem}"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every test of this directory when there is neither a GPU nor the simulator."""
    mine = [item for item in items if HERE in Path(str(item.path)).parents]
    if not mine:
        return
    reason = _skip_reason()
    if reason:
        for item in mine:
            item.add_marker(pytest.mark.skip(reason=reason))
