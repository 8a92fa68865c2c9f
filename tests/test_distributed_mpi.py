"""Data-parallel training under a real MPI job: ``mpiexec -n 2`` runs tests/mpi_scripts/*.py.

Each test launches two ranks in a subprocess with a timeout (NUMBA_NUM_THREADS=1 per rank, the
shared kernel cache), so a hang fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="the MPI tests need mpi4py and MPICH: pip install 'graphc[mpi]'")

SCRIPTS = pathlib.Path(__file__).resolve().parent / "mpi_scripts"
sys.path.insert(0, str(SCRIPTS))

import ddp_common as common  # noqa: E402

MPIEXEC = shutil.which("mpiexec", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install 'graphc[mpi]')")

# Parameters of 2 ranks x batch 8 against one process x batch 16, after 20 steps in float32: the
# averaged gradient differs from the 16-row gradient only in summation order (measured: at most
# 6e-8 apart, SGD and Adam).
RTOL, ATOL = 1e-5, 1e-6


def _run(script: str, *args: str, timeout: float = 120, env: dict | None = None) -> tuple[int, str, float]:
    full_env = {**os.environ, "NUMBA_NUM_THREADS": "1", **(env or {})}
    cmd = [MPIEXEC, "-n", "2", sys.executable, str(SCRIPTS / script), *args]  # script: a name or a path
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"mpiexec {script} {' '.join(args)} hung for {timeout} s: {err.stdout}{err.stderr}")
    return done.returncode, done.stdout + done.stderr, time.monotonic() - start


def _one_process(optimizer: str) -> dict[str, np.ndarray]:
    model = common.model()
    batches = common.batches(2)
    step = common.compile_step(model, optimizer, *batches[0], backend="cpu")
    for x, y in batches:
        step(x, y)
    return {k: np.array(v) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_two_ranks_of_batch_b_match_one_process_of_batch_2b(tmp_path, optimizer):
    # 700 bytes per bucket: one packed bucket of three gradients and one unpacked of one.
    rc, out, _ = _run("ddp_equivalence.py", optimizer, str(tmp_path), "--bucket-bytes", "700")
    assert rc == 0, out
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    assert int(ranks[0]["buckets"]) == 2
    assert not np.allclose(ranks[0]["losses"], ranks[1]["losses"])  # each rank saw its own rows
    expected = _one_process(optimizer)
    initial = common.model().state_dict()
    for name, want in expected.items():
        assert not np.allclose(want, initial[name]), name  # training moved every parameter
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)
        np.testing.assert_allclose(ranks[0][name], want, rtol=RTOL, atol=ATOL, err_msg=name)


def test_reference_backend_with_default_buckets_matches_too(tmp_path):
    rc, out, _ = _run("ddp_equivalence.py", "sgd", str(tmp_path), "--backend", "reference")
    assert rc == 0, out
    rank0 = np.load(tmp_path / "rank0.npz")
    assert int(rank0["buckets"]) == 1  # 25 MiB holds the whole model
    for name, want in _one_process("sgd").items():
        np.testing.assert_allclose(rank0[name], want, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize(
    "mode, message",
    [
        ("raise", "RuntimeError: rank 1 fails on purpose"),
        ("exit", None),
        ("kill", "BAD TERMINATION"),
        ("hang", "no answer from the other ranks within 3 s"),
    ],
)
def test_a_rank_that_dies_or_hangs_stops_the_others(mode, message):
    rc, out, seconds = _run("faults.py", mode, timeout=60, env={"GRAPHC_DIST_TIMEOUT": "3"})
    assert rc != 0, out
    assert "finished" not in out, out  # rank 0 did not carry on alone
    assert seconds < 45, f"took {seconds:.0f} s"
    if message:
        assert message in out, out
    if mode in ("raise", "hang"):
        assert "aborting the job" in out, out


@pytest.mark.parametrize(
    "mode, message",
    [
        ("shape", "(rank 1): 'hidden.weight' has shape (33, 12) on rank 1 but (32, 12) on rank 0"),
        ("name", "entry 2 is 'other.weight' on rank 1 but 'out.weight' on rank 0"),
        ("values", "the values of 'hidden.weight' differ between rank 1 and rank 0"),
    ],
)
def test_models_that_differ_across_ranks_are_refused_at_compile(mode, message):
    rc, out, _ = _run("faults.py", mode, timeout=60)
    assert rc != 0, out
    assert "GraphcError: graphc.distributed: the model differs across ranks" in out, out
    assert message in out, out
    assert "finished" not in out, out


def test_fit_evaluate_and_checkpoints_under_mpi(tmp_path):
    runs = {}
    for phase in ("full", "first", "resume"):
        rc, out, _ = _run("ddp_fit.py", phase, str(tmp_path))
        assert rc == 0, out
        runs[phase] = out
    full = runs["full"]
    assert full.count("epoch 1 4/4 [") == 1 and full.count("epoch 2: loss") == 1  # rank 0 prints alone
    # Every rank evaluates its 4 of the 8 test samples; the counts are summed over the ranks, and the
    # epoch's loss is averaged over them: both ranks report the same numbers.
    # Two processes share the pipe: a line of one rank may land in the middle of the other's.
    lines = sorted(re.findall(r"rank \d: (?:accuracy [\d.]+ over \d+ samples|epoch loss [\d.]+)", full))
    assert len(lines) == 4 and "over 8 samples" in lines[0], full
    assert lines[0].split(": ", 1)[1] == lines[2].split(": ", 1)[1]
    assert lines[1].split(": ", 1)[1] == lines[3].split(": ", 1)[1]
    # Rank 0 wrote the checkpoint after epoch 1; both ranks resumed from it and ended where the
    # uninterrupted run did.
    assert (tmp_path / "ckpt.gcc").exists()
    for r in range(2):
        whole, resumed = np.load(tmp_path / f"full_rank{r}.npz"), np.load(tmp_path / f"resume_rank{r}.npz")
        first = np.load(tmp_path / f"first_rank{r}.npz")
        for name in whole.files:
            np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)
            assert not np.array_equal(first[name], whole[name]), name


def test_digits_example_trains_and_resumes_on_two_ranks(tmp_path):
    pytest.importorskip("sklearn")
    example = str(SCRIPTS.parents[1] / "examples" / "train_digits.py")
    ckpt = str(tmp_path / "digits.gcc")
    args = ["--distributed", "--model", "mlp", "--checkpoint", ckpt, "--epochs"]
    rc, out, _ = _run(example, *args, "2")
    assert rc in (0, 1), out  # 1: below 95% after two epochs, which is not this test's point
    assert out.count("epoch 2: loss") == 1 and "after 2 epochs on 2 ranks" in out, out
    rc, out, _ = _run(example, *args, "3")  # resumes after epoch 2 on both ranks
    assert rc in (0, 1), out
    assert "epoch 1: loss" not in out and "epoch 2: loss" not in out, out
    assert out.count("epoch 3: loss") == 1 and "after 3 epochs on 2 ranks" in out, out


def test_buckets_sum_through_persistent_requests_beside_other_collectives():
    rc, out, _ = _run("persistent_sums.py", timeout=60)
    assert rc == 0, out
    assert "rank 0 ok 2" in out and "rank 1 ok 2" in out, out
    assert "freeing inactive persistent request" not in out, out  # freed before MPI_Finalize


def test_broadcast_parameters_makes_differing_initial_values_rank_0s():
    rc, out, _ = _run("faults.py", "broadcast", timeout=60)
    assert rc == 0, out
    assert "rank 0 finished" in out and "rank 1 finished" in out, out


# ---------------------------------------------------------------- the suite's MPI workloads
BENCHMARKS = SCRIPTS.parents[1] / "benchmarks"


def _workload(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


QUICK = {"compare": [], "threads": 1, "repeat": 2, "warmup": 1, "min_time": 0.0, "settle": 0.0, "quick": True}


@pytest.mark.slow
@pytest.mark.parametrize("name, peer", [("allreduce", "mpi4py"), ("ddp_mlp_train", "torch DDP gloo")])
def test_mpi_workloads_measure_quickly_and_agree(name, peer):
    module = _workload(name)
    assert module.WHAT and peer in module.PEERS
    lines: list[str] = []
    result = module.measure({**QUICK, "log": lines.append})
    assert lines and result["notes"] and result["cases"]
    (ratio, _), *_ = module.TARGETS
    for case in result["cases"]:
        engines = case["engines"]
        for engine in ("graphc", peer):
            assert engines[engine]["status"] == "ok", case
            assert 0 < engines[engine]["min_ms"] <= engines[engine]["median_ms"] <= engines[engine]["max_ms"]
        assert engines["graphc"].get("agrees", True), engines["graphc"]["agreement"]
        assert peer in engines["graphc"]["agreement"]
        assert case["ratios"][ratio] > 0
    if name == "ddp_mlp_train":
        extra = result["cases"][0]["extra"]
        assert 0 <= extra["allreduce_hidden_share"] <= 1 and extra["allreduce_ms_per_step"] > 0
    else:
        assert [c["case"] for c in result["cases"]] == ["4 KiB", "64 KiB"]
