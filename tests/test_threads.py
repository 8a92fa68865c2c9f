"""Threads: the CPU backend's thread pool (kernels/cpu/threads.py: the layer it picks, a user's
choice, parallel work started from two Python threads at once), plans called from several
threads (one plan: serialized, bit-identical to one thread; several plans: bit-identical to
sequential runs), and run-time errors naming the user's source line."""

import ctypes.util
import math
import os
import subprocess
import sys
import threading

import numba
import numpy as np
import pytest

import graphc
from graphc import functional as F
from graphc import nn
from graphc.ir import GraphcError
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


# ---------------------------------------------------------------------------------------- plans
# A small encoder layer: packed q/k/v projection, matmul + softmax attention, feed-forward, norms.
# On [2, 32, 64] inputs its projections run on the parallel GEMM driver and its attention is
# the fused kernel (thread-local score buffers).
class _Encoder(nn.Module):
    def __init__(self, d: int = 64, heads: int = 4, ff: int = 128) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x):
        b, s, d = x.shape
        h = self.heads
        qkv = self.qkv(x).reshape(b, s, 3, h, d // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        probs = F.softmax((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d // h)), dim=-1)
        x = self.norm1(x + self.out((probs @ v).transpose(1, 2).reshape(b, s, d)))
        return self.norm2(x + self.ff2(F.gelu(self.ff1(x))))


# An MLP in float64 whose GEMMs (blocks of 128 x 96 x 178 and 128 x 178 x 130 on each of numba's
# threads) are large enough that OpenBLAS splits them over its own threads where its thread count
# is not 1, and shaped so that the last bits then differ (numbers of columns off its kernel's).
def _mlp64(seed: int) -> nn.Module:
    graphc.manual_seed(seed)
    f64 = np.float64
    return nn.Sequential(
        nn.Linear(96, 178, dtype=f64), nn.ReLU(), nn.Linear(178, 130, dtype=f64), nn.Softmax(-1)
    )


def _in_threads(jobs: list[tuple], calls: int) -> list[str]:
    """Run each job (plan, inputs, wanted results) on a thread of its own, ``calls`` calls cycling
    over its inputs from a different starting point; the calls whose result is not bit-identical
    to the wanted one."""
    errors: list[str] = []
    start = threading.Barrier(len(jobs))

    def work(t: int, plan, inputs: list[np.ndarray], want: list[np.ndarray]) -> None:
        start.wait()
        for c in range(calls):
            i = (t + c) % len(inputs)
            if not np.array_equal(plan(inputs[i]), want[i]):
                errors.append(f"thread {t}, call {c}: input {i} gave another result")

    pool = [threading.Thread(target=work, args=(t, *job)) for t, job in enumerate(jobs)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return errors


def test_one_plan_called_from_four_threads_gives_one_threads_results():
    graphc.manual_seed(0)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((2, 32, 64)).astype(np.float32) for _ in range(6)]
    plan = graphc.compile(_Encoder().eval(), inputs[0])
    assert any(n.attrs.get("kind") == "attention" for n in plan.step_nodes)
    want = [plan(x) for x in inputs]  # one thread
    assert len({w.tobytes() for w in want}) == len(want)  # the inputs give results apart
    errors = _in_threads([(plan, inputs, want)] * 4, calls=500)
    assert not errors, errors[:5]


def test_two_plans_in_two_threads_are_bit_identical_to_sequential_runs():
    openblas = blas.numpy_openblas()
    before = openblas.get_threads() if openblas else None  # what the plans must restore (other
    # tests in this process may have changed it since this module was imported)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((256, 96)) for _ in range(2)]
    plans = [graphc.compile(_mlp64(seed), x) for seed, x in zip((1, 2), xs)]
    want = [plan(x) for plan, x in zip(plans, xs)]  # one after the other
    for _ in range(3):
        errors = _in_threads([(plan, [x], [w]) for plan, x, w in zip(plans, xs, want)], calls=40)
        assert not errors, errors[:5]
    assert not blas.SINGLE_THREADED.active
    if before is not None:  # restored once the last plan finished
        assert openblas.get_threads() == before


@pytest.mark.skipif(blas.numpy_openblas() is None, reason="NumPy here does not bundle OpenBLAS")
@pytest.mark.parametrize(
    "m, k, n", [(40, 96, 130), (64, 64, 127), (8, 64, 1000), (1, 500, 1000), (500, 1000, 1)]
)
def test_small_gemms_do_not_depend_on_openblass_thread_count(m, k, n):
    # Plans run GEMMs below PARALLEL_GEMM_WORK on the calling thread, mostly outside
    # SINGLE_THREADED, while other threads may change OpenBLAS's count: where OpenBLAS would
    # split one (in float64, with these numbers of columns, the last bits then differ; one row
    # or column: its matrix-vector product), the matmul kernel must hold one thread itself.
    assert m * k * n < blas.PARALLEL_GEMM_WORK
    lib = blas.numpy_openblas()
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    matmul = blas.matmul_for(k, (m, n))
    alone, split = np.empty((m, n)), np.empty((m, n))
    with blas.SINGLE_THREADED:
        matmul(a, b, alone)
    before = lib.get_threads()
    lib.set_threads(4)
    try:
        matmul(a, b, split)
    finally:
        lib.set_threads(before)
    np.testing.assert_array_equal(split, alone)


def test_a_plans_results_are_the_callers_own_arrays():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 32, 64)).astype(np.float32)
    plan = graphc.compile(_Encoder().eval(), x)
    first = plan(x)
    kept = first.copy()
    second = plan(x + 1)
    assert second is not first and not np.shares_memory(first, second)
    assert not np.shares_memory(first, plan.arena) and not np.shares_memory(second, plan.arena)
    np.testing.assert_array_equal(first, kept)  # the second call wrote nothing into the first's


def _pick(table, idx):
    return F.embedding(idx, table)  # a bad index must be reported at this line


_PICK_LINE = _pick.__code__.co_firstlineno + 1


def test_an_index_error_at_run_time_names_the_users_line():
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    plan = graphc.compile(_pick, table, np.array([0, 1], np.int64))
    np.testing.assert_array_equal(plan(table, np.array([3, 1], np.int64)), table[[3, 1]])
    with pytest.raises(GraphcError) as caught:
        plan(table, np.array([0, 5], np.int64))
    message = str(caught.value)
    assert f"test_threads.py:{_PICK_LINE}: gather: index 5 out of range" in message, message
    assert "= gather)" in message, message
