"""The CPU backend's thread pool (kernels/cpu/threads.py): the layer it picks, a user's choice,
and parallel work started from two Python threads at once."""

import ctypes.util
import os
import subprocess
import sys
import threading

import numba
import numpy as np
import pytest

from graphc.kernels.cpu import blas
from graphc.kernels.cpu.threads import tbb_library_path

# A parallel elementwise kernel, a parallel GEMM and a compiled model, checked against NumPy,
# then the layer numba started; run in a fresh process so the layer is still unchosen.
_PROBE = """
import numpy as np, numba, graphc
from graphc import nn
from graphc.kernels.cpu import blas

rng = np.random.default_rng(0)
a, b = rng.standard_normal((256, 300)), rng.standard_normal((300, 200))
out = np.empty((256, 200))
if blas.parallel_matmul(a, b, out):
    assert np.allclose(out, a @ b), "parallel GEMM"
x = rng.standard_normal((300, 400)).astype(np.float32)
net = nn.Sequential(nn.Linear(400, 300), nn.ReLU())
y = graphc.compile(net, x)(x)
w, bias = (np.asarray(p) for p in net.parameters())
assert np.allclose(y, np.maximum(x @ w.T + bias, 0), atol=1e-4), "compiled model"
print(numba.threading_layer())
"""


# Run first in a probe: the tbb wheel looks absent, as on a platform it has no wheel for.
_HIDE_TBB = """
import importlib.metadata as m
_files, _dist = m.files, m.distribution
def _hide(real):
    def lookup(name):
        if name == "tbb":
            raise m.PackageNotFoundError(name)
        return real(name)
    return lookup
m.files, m.distribution = _hide(_files), _hide(_dist)
"""


def _probe_layer(prelude: str = "", **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    out = subprocess.run(
        [sys.executable, "-c", prelude + _PROBE],
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(tbb_library_path() is None, reason="the tbb wheel is not installed here")
def test_tbb_is_the_default_layer():
    assert _probe_layer() == "tbb"


def test_a_users_threading_layer_wins_and_gives_the_same_results():
    assert _probe_layer(NUMBA_THREADING_LAYER="workqueue") == "workqueue"


@pytest.mark.skipif(ctypes.util.find_library("tbb") is not None, reason="a system TBB is on the loader path")
def test_without_tbb_numba_falls_back_to_workqueue():
    assert _probe_layer(_HIDE_TBB) == "workqueue"


@pytest.mark.skipif(blas.numpy_openblas() is None, reason="NumPy here does not bundle OpenBLAS")
@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs at least 2 numba threads")
def test_parallel_gemms_from_two_python_threads_at_once():
    # The workqueue layer aborts the process when two threads launch parallel work together;
    # the layer graphc picks must not.
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    if numba.threading_layer() == "workqueue":
        pytest.skip("numba runs the workqueue layer here (a user's choice, or no TBB)")
    rng = np.random.default_rng(1)
    pairs = [(rng.standard_normal((4, 96, 80)), rng.standard_normal((4, 80, 120))) for _ in range(2)]
    errors: list[str] = []

    def work(a: np.ndarray, b: np.ndarray) -> None:
        out = np.empty((4, 96, 120))
        for _ in range(30):
            out.fill(np.nan)
            if not blas.parallel_matmul(a, b, out):
                errors.append("the parallel path declined")
                return
            if not np.allclose(out, a @ b):
                errors.append("wrong product")
                return

    threads = [threading.Thread(target=work, args=p) for p in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
