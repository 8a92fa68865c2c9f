"""CUDA tests run in their own pytest process with NUMBA_ENABLE_CUDASIM=1 (``make test-cuda``), or on
a machine with a GPU. Anywhere else the whole directory is skipped with the reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent


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
