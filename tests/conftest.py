"""Shared fixtures for the front-end tests, and the order the test files run in."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def rng():
    """A fixed-seed NumPy generator."""
    return np.random.default_rng(1234)


# Test files by what they cost with an empty kernel cache on the 2-core CI machine (seconds of
# their slowest tests, from `pytest --durations`), most first. `make test` distributes whole
# files over the workers (``--dist loadfile``) in collection order (``--no-loadscope-reorder``):
# these go first, so that no worker is left with one of them while the other has run dry (by
# default xdist orders files by their number of tests, which put the CUDA simulator's CNN
# example, 100 s in a file of 4 tests, and the compression example last). The rest follow, most
# tests first, as xdist would order them.
SLOWEST_FILES = (
    "cuda/test_examples_cuda.py",
    "cuda/test_device_check.py",
    "cuda/test_example_transformer_cuda.py",
    "cuda/test_fused_workloads.py",
    "test_onnx_zoo.py",
    "test_distillation.py",
    "test_bench.py",
    "test_distributed_mpi.py",
    "test_cpu_attention.py",
    "test_depthwise.py",
    "test_examples_compiled.py",
    "test_kernel_cache.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the collected tests by file: ``SLOWEST_FILES`` first, in that order, then the other
    files by their number of tests, most first; tests keep their order within a file."""
    here = Path(__file__).resolve().parent
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}

    def file_of(item: pytest.Item) -> str:
        path = Path(str(item.path)).resolve()
        return path.relative_to(here).as_posix() if here in path.parents else path.as_posix()

    files = [file_of(item) for item in items]
    counts = Counter(files)
    first = {}
    for i, name in enumerate(files):
        first.setdefault(name, i)
    order = sorted(
        range(len(items)),
        key=lambda i: (rank.get(files[i], len(rank)), -counts[files[i]], first[files[i]], i),
    )
    items[:] = [items[i] for i in order]
