"""graphc bench: CLI, suite workload files, agreement with the peers, targets, JSON. No timing asserts.

The runs here use tiny model files written to tmp_path and ``--quick`` (one warm-up step, two
rounds of one step each, no compile-time subprocesses).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from graphc.bench import cli as bench_cli
from graphc.bench import (
    custom,
    engines,
    environment,
    peers,
    probe,
    report,
    runner,
    targets,
    weights,
    workloads,
)
from graphc.cli import build_parser, main
from graphc.ir import GraphcError

HAS_TORCH = importlib.util.find_spec("torch") is not None
SUITE = [  # the model workloads
    "cnn_train",
    "fusion_chain_infer",
    "mlp_small_train",
    "mlp_train",
    "mobilenet_infer",
    "transformer_infer",
]
CUSTOM = ["eager_ops", "int8_infer", "lstm_train", "onnx_zoo_infer"]  # custom workloads (of this task)
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")

TINY = '''
"""A tiny MLP, 6 -> 8 -> 3, batch 4."""
import numpy as np
from graphc import functional as F
from graphc import nn


def build(nn, F):
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = nn.Linear(6, 8)
            self.out = nn.Linear(8, 3)

        def forward(self, x):
            return self.out(F.relu(self.hidden(x)))

    return Tiny()


def model():
    return build(nn, F)


def torch_model():
    import torch

    return build(torch.nn, torch.nn.functional)


def example_inputs():
    return (np.random.default_rng(0).standard_normal((4, 6), dtype=np.float32),)
'''

TRAIN = """
LOSS = "cross_entropy"
OPTIMIZER = ("SGD", {"lr": 0.1})
TARGETS = [("time / torch eager", "<= 1000")]


def example_labels():
    return np.array([0, 1, 2, 1], dtype=np.int64)
"""


@pytest.fixture(autouse=True)
def _restore_thread_env(monkeypatch):
    # run_bench sets the thread variables for its subprocesses; keep them out of other tests.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def tiny_infer(tmp_path) -> Path:
    path = tmp_path / "tiny_model.py"
    path.write_text(TINY + '\nTARGETS = [("time / torch eager", "<= 1000")]\n')
    return path


@pytest.fixture
def tiny_train(tmp_path) -> Path:
    path = tmp_path / "tiny_train.py"
    path.write_text(TINY + TRAIN)
    return path


def _quick(items, compare, **kw) -> dict:
    return runner.run_bench(
        [str(p) for p in items], compare, threads=1, quick=True, compile_time=False, log=lambda m: None, **kw
    )


# ------------------------------------------------------------------------------------------ CLI
def test_cli_parses_bench_options():
    args = build_parser().parse_args(
        "bench mlp_small_train my_model.py --compare torch,torch.compile,onnxruntime --json out.json "
        "--threads 2 --repeat 3 --warmup 1 --device cpu --plot out.png --quick".split()
    )
    assert args.func is bench_cli.cmd_bench
    assert args.workloads == ["mlp_small_train", "my_model.py"]
    assert args.compare == ["torch", "torch.compile", "onnxruntime"]
    assert (args.json, args.threads, args.repeat, args.warmup, args.plot, args.quick) == (
        "out.json",
        2,
        3,
        1,
        "out.png",
        True,
    )
    assert build_parser().parse_args(["bench"]).compare == []
    assert build_parser().parse_args(["bench", "--compare", "all"]).compare == list(engines.PEERS)


@pytest.mark.parametrize(
    "bad", [["--compare", "tensorflow"], ["--threads", "0"], ["--device", "tpu"], ["--repeat", "x"]]
)
def test_cli_rejects_bad_options(bad, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", *bad])


def test_unknown_workload_is_a_clear_error():
    with pytest.raises(GraphcError, match="resnet50"):
        workloads.resolve(["resnet50"])
    with pytest.raises(GraphcError, match="nope.py"):
        workloads.resolve(["nope.py"])


def test_list_names_the_suite_and_its_other_scripts(capsys):
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SUITE + CUSTOM)
    assert "compile_scaling.py" in out  # defines a measure() of its own, but is no custom workload


def test_suite_folder_can_be_given(tmp_path, tiny_infer):
    (tmp_path / "helper.py").write_text("print('a script, not a workload')\n")
    assert workloads.suite_files(tmp_path) == [tiny_infer]
    assert workloads.other_scripts(tmp_path) == [tmp_path / "helper.py"]
    assert workloads.resolve([], tmp_path) == [tiny_infer]
    with pytest.raises(GraphcError, match="no suite workloads"):
        workloads.resolve([], tmp_path / "empty")


# ------------------------------------------------------------------------------------------ suite
def test_suite_is_the_model_and_custom_workload_files():
    assert [p.stem for p in workloads.suite_files(kind="model")] == SUITE
    assert set(CUSTOM) <= {p.stem for p in workloads.suite_files(kind="custom")}
    assert set(workloads.suite_files()) >= set(workloads.suite_files(kind="custom"))


@pytest.mark.parametrize("name", CUSTOM)
def test_custom_workload_files_load(name):
    w = custom.load_custom(workloads.resolve([name])[0])
    assert w.name == name and w.what and w.peers and w.targets
    targets.check_custom_goals(w.targets, w.path)


@pytest.mark.parametrize("name", SUITE)
def test_suite_workload_files_load(name):
    w = workloads.load_workload(workloads.resolve([name])[0])
    assert w.name == name and w.what and w.targets
    targets.check_goals(w.targets, w.path)
    assert w.torch_model is not None  # every suite workload is compared with the peers
    assert w.kind == ("train" if name.endswith("_train") else "infer")
    a, b = w.inputs(), w.inputs()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)  # fixed seed: the same inputs every run
    assert all(x.dtype in (np.float32, np.int64) for x in a)
    if w.kind == "train":
        assert w.loss == "cross_entropy" and w.optimizer[0] in ("SGD", "Adam")
        assert a[-1].dtype == np.int64 and a[0].shape[0] == a[-1].shape[0] == w.batch


def test_suite_models_come_from_the_examples():
    # One definition of each model: the workload's graphc model is examples/<file>'s build().
    w = workloads.load_workload(workloads.resolve(["mlp_train"])[0])
    m = w.model()
    assert [k for k in m.state_dict()] == [
        f"{layer}.{p}" for layer in ("hidden", "hidden2", "out") for p in ("weight", "bias")
    ]
    assert m.hidden.weight.shape == (512, 784) and m.out.weight.shape == (10, 512)
    assert type(m).__module__.startswith("graphc_model_mlp_")  # built by examples/mlp.py


def test_fusion_chain_moves_three_big_arrays():
    w = workloads.load_workload(workloads.resolve(["fusion_chain_infer"])[0])
    inputs = w.inputs()
    assert [x.shape for x in inputs] == [(8192, 1024), (1024,), (1024,), (8192, 1024)]
    assert w.moved_bytes(inputs) == 3 * 8192 * 1024 * 4


def test_fusion_chain_nodes_name_the_workload_file():
    import graphc

    w = workloads.load_workload(workloads.resolve(["fusion_chain_infer"])[0])
    x, b, s, r = (np.ones(shape, np.float32) for shape in ((4, 16), (16,), (16,), (4, 16)))
    graph = graphc.trace(w.model(), x, b, s, r)
    sources = {n.source for n in graph.nodes if n.op != "const"}
    assert sources and all(s.split(":")[0].endswith("benchmarks/fusion_chain_infer.py") for s in sources)


@needs_torch
@pytest.mark.parametrize("name", ["mlp_small_train", "mlp_train", "cnn_train", "transformer_infer"])
def test_torch_twins_take_graphcs_weights(name):
    w = workloads.load_workload(workloads.resolve([name])[0])
    state = weights.state_of(weights.seeded_graphc_model(w.model))
    twin = w.torch_model()
    weights.load_state(twin, state, "torch", w.path)
    for (k, v), t in zip(state.items(), twin.state_dict().values()):
        np.testing.assert_array_equal(v, t.numpy(), err_msg=k)


@needs_torch
def test_fusion_chain_torch_matches_numpy():
    import torch
    from scipy.special import erf

    w = workloads.load_workload(workloads.resolve(["fusion_chain_infer"])[0])
    rng = np.random.default_rng(1)
    x, r = rng.standard_normal((2, 4, 16), dtype=np.float32)
    b, s = rng.standard_normal((2, 16), dtype=np.float32)
    out = w.torch_model()(*(torch.from_numpy(a) for a in (x, b, s, r))).numpy()
    h = x.astype(np.float64) + b
    y = 0.5 * h * (1 + erf(h / np.sqrt(2))) * s + r
    ref = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_twin_with_other_parameters_is_a_clear_error():
    import graphc.nn as gnn

    state = {"w.weight": np.zeros((2, 3), np.float32)}
    with pytest.raises(GraphcError, match="model.py"):
        weights.load_state(gnn.Linear(3, 2), state, "graphc", "model.py")


# ------------------------------------------------------------------------------------------ model files
def test_model_file_training_needs_all_three_parts(tmp_path):
    from graphc.modelfile import load_model_file

    path = tmp_path / "half.py"
    path.write_text(TINY + 'LOSS = "cross_entropy"\nOPTIMIZER = ("SGD", {"lr": 0.1})\n')
    with pytest.raises(GraphcError, match="example_labels"):
        load_model_file(path)
    path.write_text(TINY + 'TARGETS = [("time / tensorflow", "<= 1")]\n')
    with pytest.raises(GraphcError, match="tensorflow"):
        targets.check_goals(load_model_file(path).targets, str(path))
    path.write_text("import no_such_module_here\n")
    with pytest.raises(GraphcError, match="no_such_module_here"):
        load_model_file(path)


# ------------------------------------------------------------------------------------------ runs
@needs_torch
def test_bench_model_file_end_to_end(tiny_train, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(
        ["bench", str(tiny_train), "--compare", "torch", "--quick", "--no-compile-time", "--threads", "1"]
        + ["--repeat", "1", "--warmup", "1", "--json", str(out)]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "tiny_train" in text and "BLAS:" in text
    data = json.loads(out.read_text())
    (w,) = data["workloads"]
    g, t = w["engines"]["graphc"], w["engines"]["torch"]
    assert g["status"] == t["status"] == "ok"
    assert targets.agrees(g["agreement"]["torch"])  # same weights, same batch: the same first loss
    assert math.isclose(g["first_loss"], t["first_loss"], rel_tol=1e-5, abs_tol=1e-6)
    assert g["memory"]["arena_bytes"] > 0
    (goal,) = data["targets"]
    assert goal["status"] == "met" and goal["met"] is True


@needs_torch
def test_graphc_output_that_disagrees_misses_the_target(tiny_infer, monkeypatch):
    real = engines.build_graphc

    def perturbed(*args, **kwargs):
        r = real(*args, **kwargs)
        r.first = np.asarray(r.first) + 0.5  # a wrong answer, however fast
        return r

    monkeypatch.setattr(engines, "build_graphc", perturbed)
    data = _quick([tiny_infer], ["torch"])
    (w,) = data["workloads"]
    assert w["engines"]["graphc"]["status"] == "ok"
    assert not targets.agrees(w["engines"]["graphc"]["agreement"]["torch"])
    (goal,) = data["targets"]
    assert goal["met"] is False and goal["status"] == "missed" and "differs from torch" in goal["note"]
    assert "MISSED" in "\n".join(report.format_targets(data["targets"]))
    assert "differs from torch eager" in report.format_table(data)


@pytest.mark.parametrize("error", [ImportError("No module named 'graphc.kernels.cpu'"), RuntimeError("boom")])
def test_graphc_exception_is_a_failure_not_a_skip(tiny_infer, monkeypatch, capsys, error):
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(engines, "build_graphc", broken)
    data = _quick([tiny_infer], [])
    g = data["workloads"][0]["engines"]["graphc"]
    assert g["status"] == "failed" and str(error) in g["note"]
    (goal,) = data["targets"]
    assert goal["met"] is False and goal["status"] == "failed"
    assert runner.graphc_failures(data)
    # the command says so and exits non-zero
    assert main(["bench", str(tiny_infer), "--quick", "--no-compile-time", "--threads", "1"]) == 2
    assert "graphc failed on tiny_model" in capsys.readouterr().err


def test_a_missing_peer_is_skipped_with_a_note(tiny_infer, monkeypatch):
    def no_torch():
        raise engines.Skip("torch not installed (pip install 'graphc[compare]')")

    monkeypatch.setattr(peers, "import_torch", no_torch)
    data = _quick([tiny_infer], ["torch"])
    w = data["workloads"][0]
    assert w["engines"]["graphc"]["status"] == "ok"
    assert w["engines"]["torch"] == {
        "status": "skipped",
        "note": "torch not installed (pip install 'graphc[compare]')",
    }
    (goal,) = data["targets"]
    assert goal["met"] is None and goal["status"] == "n/a" and "torch skipped" in goal["note"]


def test_a_model_file_without_torch_model_has_no_peers(tmp_path):
    path = tmp_path / "graphc_only.py"
    path.write_text(TINY.replace("def torch_model", "def _unused"))
    data = _quick([path], ["torch"])
    assert data["workloads"][0]["engines"]["torch"]["note"] == "the model file defines no torch_model()"


def test_quick_run_with_an_inference_only_peer_writes_well_formed_json(tiny_train, tmp_path):
    data = _quick([tiny_train], ["onnxruntime"], profile=True)
    (w,) = data["workloads"]
    assert set(w["engines"]) == {"graphc", "onnxruntime"}
    assert w["engines"]["onnxruntime"] == {"status": "skipped", "note": "inference only"}
    g = w["engines"]["graphc"]
    assert g["status"] == "ok" and g["min_ms"] <= g["median_ms"] <= g["max_ms"] and g["runs"] >= 1
    prof = w["profile"]
    assert prof["n_kernels"] == len(prof["kernels"]) >= 1
    assert all(k["ms"] >= 0 and k["op"] for k in prof["kernels"])
    path = tmp_path / "bench.json"
    report.write_json(data, str(path))
    again = json.loads(path.read_text())
    assert again["schema"] == runner.SCHEMA_VERSION and again["limits"]["sgemm_gflops"] > 0
    table = report.format_table(data)
    assert "tiny_train" in table and "skipped: inference only" in table


# ------------------------------------------------------------------------------------------ targets
def _workload(name: str, engines_: dict, goals: list, kind: str = "infer") -> dict:
    return {"name": name, "kind": kind, "engines": engines_, "goals": goals}


AGREE = {"max_abs_diff": 0.0, "max_abs_ref": 1.0}


def test_targets_read_the_ratios():
    ok = {"status": "ok", "median_ms": 1.0, "min_ms": 1.0, "max_ms": 1.0}
    results = [
        _workload(
            "chain",
            {
                "graphc": {**ok, "vs_torch": 0.25, "vs_bound": 1.5, "agreement": {"torch": AGREE}},
                "torch": {**ok, "median_ms": 4.0},
            },
            [["time / bandwidth bound", "<= 1.3"], ["speedup over torch eager", ">= 3"]],
        ),
        _workload(
            "encoder",
            {
                "graphc": {**ok, "median_ms": 2.0, "agreement": {"onnxruntime": AGREE}},
                "onnxruntime": {**ok, "median_ms": 4.0},
            },
            [["time / onnxruntime", "<= 1"]],
        ),
        _workload("bound_only", {"graphc": {**ok, "vs_bound": 1.0}}, [["time / bandwidth bound", "<= 1.3"]]),
    ]
    got = {
        (t["workload"], t["what"]): (t["value"], t["met"], t["status"])
        for t in targets.evaluate_targets(results)
    }
    assert got[("chain", "time / bandwidth bound")] == (1.5, False, "missed")
    assert got[("chain", "speedup over torch eager")] == (4.0, True, "met")
    assert got[("encoder", "time / onnxruntime")] == (0.5, True, "met")
    # nothing checked graphc's output: no verdict
    assert got[("bound_only", "time / bandwidth bound")] == (None, None, "n/a")


def test_round_by_round_ratio_is_given_beside_the_median_ratio():
    # Rounds 1 and 3 ran in a slow phase of the machine: each median mixes the phases, the
    # round-by-round ratio does not. The target is still decided by the ratio of the medians.
    g = {
        "status": "ok",
        "median_ms": 11.0,
        "per_round_ms": [10.0, 11.0, 20.0],
        "agreement": {"onnxruntime": AGREE},
    }
    o = {"status": "ok", "median_ms": 10.0, "per_round_ms": [12.5, 10.0, 25.0]}
    assert targets.paired_ratio(g, o) == pytest.approx(0.8)
    assert targets.paired_ratio(g, {"status": "ok"}) is None
    w = _workload("encoder", {"graphc": g, "onnxruntime": o}, [["time / onnxruntime", "<= 1"]])
    (t,) = targets.evaluate_targets([w])
    assert t["value"] == pytest.approx(1.1) and t["paired"] == pytest.approx(0.8) and t["met"] is False
    assert "1.10 (target <= 1, by round 0.80): MISSED" in "\n".join(report.format_targets([t]))


def test_agreement():
    assert targets.agrees(targets.agreement(np.ones(3), np.ones(3) + 1e-4))
    assert not targets.agrees(targets.agreement(np.ones(3), np.ones(3) + 0.1))
    assert not targets.agrees(targets.agreement(np.ones(3), np.ones(4)))
    assert not targets.agrees(targets.agreement(np.array([np.nan]), np.ones(1)))
    assert not targets.agrees(None)


# ------------------------------------------------------------------------------------------ environment
def test_blas_kernel_is_named_and_a_forced_one_warned(monkeypatch):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    info = environment.blas_info()
    lines = environment.blas_lines(info)
    assert lines[0].startswith("BLAS:") and len(lines) == 1
    if importlib.util.find_spec("threadpoolctl") is not None:
        assert info["architecture"]  # what OpenBLAS picked for this CPU, e.g. SkylakeX or Haswell
        assert info["architecture"] in lines[0]
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    warning = environment.blas_lines(environment.blas_info())[1]
    assert "OPENBLAS_CORETYPE=Haswell" in warning and "AVX2" in warning and "OPENBLAS_L2_SIZE" in warning


def test_blas_without_threadpoolctl_is_a_note(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_threadpoolctl(name, *args, **kwargs):
        if name.startswith("threadpoolctl"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_threadpoolctl)
    assert "threadpoolctl not installed" in environment.blas_lines(environment.blas_info())[0]


# ------------------------------------------------------------------------------------------ output
def test_json_writer_is_strict_json(tmp_path):
    data = {"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float32(2.0), "d": np.arange(2)}
    path = tmp_path / "x.json"
    report.write_json(data, str(path))
    assert json.loads(path.read_text()) == {"a": None, "b": [None, 1.5], "c": 2.0, "d": [0, 1]}


def test_plot_without_matplotlib_is_a_note(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    data = {"workloads": [], "settings": {"engines": ["graphc"]}}
    assert "matplotlib" in report.plot(data, str(tmp_path / "p.png"))


def test_probe_reports_a_skip_as_json(tiny_train, capsys):
    assert probe.main([str(tiny_train), "onnxruntime", "cpu", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == {"skipped": "inference only"}


def test_package_does_not_import_the_peers():
    code = (
        "import sys, graphc.cli, graphc.bench.runner; "
        "print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_set_threads_keeps_the_backends_threading_layer():
    # numba.set_num_threads starts numba's pool; the CPU backend's layer must be chosen first.
    from graphc.kernels.cpu.threads import tbb_library_path

    if tbb_library_path() is None:
        pytest.skip("the tbb wheel is not installed here")
    code = (
        "import numba, graphc.bench.threads as t; t.set_threads(numba.config.NUMBA_NUM_THREADS); "
        "numba.njit(parallel=True)(lambda a: a.sum())(__import__('numpy').ones(10)); "
        "print(numba.threading_layer())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "tbb"


def test_docs_describe_the_suite():
    text = (Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md").read_text()
    assert all(name in text for name in SUITE + CUSTOM)


def test_set_threads_leaves_numbas_own_setting_alone():
    # numba re-reads NUMBA_NUM_THREADS whenever it compiles: set in this process while the pool
    # runs at another size, every later compile in the process failed.
    import numba

    from graphc.bench import threads

    try:
        threads.set_threads(1)
        assert "NUMBA_NUM_THREADS" not in os.environ
        numba.config.reload_config()
        assert numba.njit(lambda a: a + 1)(1) == 2
    finally:  # the BLAS pools and numba's back to what the other tests expect
        while threads._THREAD_LIMITS:
            threads._THREAD_LIMITS.pop().restore_original_limits()
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_run_bench_restores_the_callers_threads(tiny_infer):
    # run_bench limits every pool to its thread count; called from a user's process (or another
    # test), it must leave that process's settings as it found them, whatever they were.
    import numba
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return sorted(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")

    before_env = os.environ.get("OPENBLAS_NUM_THREADS")
    before = (numba.get_num_threads(), blas_threads())
    _quick([tiny_infer], [])  # threads=1: differs from the default of this 2-core machine
    assert (numba.get_num_threads(), blas_threads()) == before
    assert os.environ.get("OPENBLAS_NUM_THREADS") == before_env


# ------------------------------------------------------------------------------------------ custom workloads
CUSTOM_TINY = '''
"""A tiny custom workload: a NumPy sum timed against a second label of its own."""
import numpy as np

from graphc.bench.custom import time_steps

WHAT = "sum of 1000 floats, twice"
PEERS = ("torch", "numpy loop")
TARGETS = [("graphc / numpy loop", "<= 1000000"), ("graphc / torch", "<= 1")]
SEEN = []


def measure(opts):
    SEEN.append(dict(opts))
    opts["log"]("measuring the tiny workload")
    x = np.arange(1000, dtype=np.float32)
    cases = []
    for label, wrong in (("right", 0.0), ("wrong", 0.5)):
        timed = time_steps({"graphc": lambda: x.sum(), "numpy loop": lambda: sum(x[:10])}, opts)
        diff = abs(float(x.sum()) + wrong - float(np.sum(x, dtype=np.float64)))
        timed["graphc"].update(agreement={"numpy loop": f"max abs diff {diff:.3g}"}, agrees=diff == 0)
        timed["torch"] = {"status": "skipped", "note": "not asked for (--compare torch)"}
        ratio = timed["graphc"]["median_ms"] / timed["numpy loop"]["median_ms"]
        cases.append(
            {"case": label, "engines": timed, "ratios": {"graphc / numpy loop": ratio}, "extra": {"n": 1000}}
        )
    return {"cases": cases, "notes": ["a note for the report"]}
'''


@pytest.fixture
def custom_suite(tmp_path) -> Path:
    (tmp_path / "tiny_custom.py").write_text(CUSTOM_TINY)
    (tmp_path / "tiny_model.py").write_text(TINY)
    (tmp_path / "script.py").write_text("def measure(blocks):\n    return blocks\n")  # no PEERS: a script
    return tmp_path


def test_custom_workloads_are_found_by_what_they_define(custom_suite):
    assert workloads.suite_files(custom_suite, "custom") == [custom_suite / "tiny_custom.py"]
    assert workloads.suite_files(custom_suite, "model") == [custom_suite / "tiny_model.py"]
    assert workloads.other_scripts(custom_suite) == [custom_suite / "script.py"]
    assert workloads.describe(custom_suite / "tiny_custom.py") == "sum of 1000 floats, twice"
    assert workloads.resolve(["tiny_custom"], custom_suite) == [custom_suite / "tiny_custom.py"]


def test_list_prints_custom_workloads_with_what_they_time(custom_suite, capsys):
    assert main(["bench", "--list", "--suite", str(custom_suite)]) == 0
    out = capsys.readouterr().out
    assert "custom workloads" in out and "tiny_custom" in out and "sum of 1000 floats, twice" in out
    assert "script.py" in out


def test_custom_workload_runs_through_report_json_and_targets(custom_suite, tmp_path, capsys):
    out = tmp_path / "custom.json"
    rc = main(
        ["bench", "tiny_custom", "--suite", str(custom_suite), "--quick", "--threads", "1"]
        + ["--json", str(out)]
    )
    assert rc == 0  # a MISSED goal is not a failure of graphc
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    (w,) = data["workloads"]
    assert w["kind"] == "custom" and w["what"] == "sum of 1000 floats, twice"
    assert [c["case"] for c in w["cases"]] == ["right", "wrong"]
    g = w["cases"][0]["engines"]["graphc"]
    assert (
        g["status"] == "ok" and g["min_ms"] <= g["median_ms"] <= g["max_ms"] and len(g["per_round_ms"]) == 2
    )
    assert w["notes"] == ["a note for the report"]
    verdicts = {(t["workload"], t["what"]): (t["status"], t["note"]) for t in data["targets"]}
    assert verdicts[("tiny_custom right", "graphc / numpy loop")] == ("met", "")
    status, note = verdicts[("tiny_custom wrong", "graphc / numpy loop")]
    assert status == "missed" and "differs from numpy loop" in note and "max abs diff 0.5" in note
    # torch was not asked for (the workload has two peers): its goal has no verdict
    assert verdicts[("tiny_custom right", "graphc / torch")][0] == "n/a"
    assert "not asked" in verdicts[("tiny_custom right", "graphc / torch")][1]
    assert "tiny_custom" in text and "ratios: graphc / numpy loop" in text and "extra: n 1000" in text
    assert "DISAGREES" in text and "MISSED" in text and "a note for the report" in text


def test_custom_workload_gets_the_runs_settings(custom_suite):
    path = custom_suite / "tiny_custom.py"
    logged = []
    result = custom.run_custom(
        path,
        ["torch"],
        threads=1,
        repeat=3,
        warmup=1,
        min_time=0.0,
        settle=0.0,
        quick=True,
        log=logged.append,
    )
    assert "error" not in result
    (module,) = [m for m in list(sys.modules.values()) if getattr(m, "__file__", None) == str(path)]
    opts = module.SEEN[-1]
    assert opts["compare"] == ["torch"] and opts["quick"] is True and opts["threads"] == 1
    assert (opts["repeat"], opts["warmup"], opts["min_time"], opts["settle"]) == (3, 1, 0.0, 0.0)
    assert "measuring the tiny workload" in logged
    assert len(result["cases"][0]["engines"]["graphc"]["per_round_ms"]) == 3


def test_a_workloads_only_standard_peer_always_runs():
    kw = dict(threads=1, repeat=1, warmup=1, min_time=0.0, settle=0.0, quick=True, log=print)
    assert custom.options([], ("torch",), **kw)["compare"] == ["torch"]
    assert custom.options([], ("graphc float32", "onnxruntime int8"), **kw)["compare"] == []
    assert custom.options([], ("torch", "mpi4py"), **kw)["compare"] == []
    assert custom.options(["onnxruntime"], ("torch", "mpi4py"), **kw)["compare"] == ["onnxruntime"]


@pytest.mark.parametrize(
    "body, error",
    [
        ("def measure(opts):\n    raise RuntimeError('boom')\n", "measure() raised RuntimeError: boom"),
        ("def measure(opts):\n    return [1, 2]\n", "must return"),
        (
            "def measure(opts):\n    return {'cases': [{'case': 'a', 'engines': {'graphc': "
            "{'status': 'ok'}}}]}\n",
            "lacks median",
        ),
        ("TARGETS = [('graphc vs torch', '<= 1')]\ndef measure(opts):\n    return {'cases': []}\n", "A / B"),
    ],
)
def test_a_broken_custom_workload_is_a_graphc_failure(tmp_path, body, error, capsys):
    path = tmp_path / "broken.py"
    path.write_text(f'WHAT = "broken"\nPEERS = ("torch",)\nTARGETS = [("graphc / torch", "<= 1")]\n{body}')
    data = _quick([path], [])
    (w,) = data["workloads"]
    assert error in w["error"]
    assert all(t["status"] == "failed" for t in data["targets"])  # (none when the file did not load)
    assert runner.graphc_failures(data) and "FAILED" in report.format_table(data)
    assert main(["bench", str(path), "--quick", "--threads", "1"]) == 2
    assert "graphc failed on broken" in capsys.readouterr().err


def test_a_failed_graphc_engine_in_a_case_fails_its_goal():
    w = {
        "name": "w",
        "kind": "custom",
        "goals": [["graphc int8 / onnxruntime int8", "<= 1"]],
        "cases": [
            {
                "case": "mlp",
                "engines": {
                    "graphc int8": {"status": "failed", "note": "GraphcError: no"},
                    "onnxruntime int8": {"status": "ok", "median_ms": 1.0, "min_ms": 1.0, "max_ms": 1.0},
                },
                "ratios": {},
            }
        ],
    }
    (t,) = targets.evaluate_targets([w])
    assert t["status"] == "failed" and "GraphcError: no" in t["note"]
    assert runner.graphc_failures({"workloads": [w]}) == ["w mlp (graphc int8): GraphcError: no"]


def test_agreement_per_peer_decides_each_goal():
    ok = {"status": "ok", "median_ms": 1.0, "min_ms": 1.0, "max_ms": 1.0}
    case = {
        "case": "c",
        "engines": {"graphc int8": {**ok, "agrees": {"a": True, "b": False}}, "a": ok, "b": ok},
        "ratios": {"graphc int8 / a": 0.5, "graphc int8 / b": 0.5},
    }
    w = {
        "name": "w",
        "kind": "custom",
        "cases": [case],
        "goals": [["graphc int8 / a", "<= 1"], ["graphc int8 / b", "<= 1"]],
    }
    assert [t["status"] for t in targets.evaluate_targets([w])] == ["met", "missed"]


def _run_quick(name: str) -> dict:
    path = workloads.resolve([name])[0]
    return custom.run_custom(
        path, [], threads=1, repeat=1, warmup=1, min_time=0.0, settle=0.0, quick=True, log=lambda m: None
    )


def _checked(result: dict, ratios: list[str]) -> list[dict]:
    assert "error" not in result, result.get("error")
    assert result["cases"]
    for case in result["cases"]:
        for engine, e in case["engines"].items():
            assert e["status"] == "ok", (case["case"], engine, e)
        g = case["engines"].get("graphc") or case["engines"]["graphc int8"]
        flags = g["agrees"] if isinstance(g["agrees"], dict) else {"peer": g["agrees"]}
        assert all(v is True for v in flags.values()), (case["case"], g.get("agreement"))
        assert all(case["ratios"].get(r, 0) > 0 for r in ratios), case["ratios"]
    return result["cases"]


@needs_torch
def test_eager_ops_quick():
    cases = _checked(_run_quick("eager_ops"), ["graphc / torch"])
    assert [c["case"] for c in cases] == [
        "add",
        "matmul 16x16",
        "relu",
        "add (grad)",
        "matmul (grad)",
        "relu (grad)",
        "MLP train step",
    ]


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime not installed")
def test_onnx_zoo_infer_quick():
    (case,) = _checked(_run_quick("onnx_zoo_infer"), ["graphc / onnxruntime"])
    assert case["case"] == "squeezenet" and case["extra"]["compile_s"] > 0


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime not installed")
def test_int8_infer_quick():
    (case,) = _checked(
        _run_quick("int8_infer"), ["graphc int8 / graphc float32", "graphc int8 / onnxruntime int8"]
    )
    assert case["case"] == "mlp_train" and case["extra"]["int8_layers"] == 3


@needs_torch
def test_lstm_train_quick():
    result = _run_quick("lstm_train")
    short, long = _checked(result, ["graphc / torch"])
    assert (short["case"], long["case"]) == ("T=4", "T=16")
    assert long["ratios"]["compile T=512 / T=64"] > 0
    assert long["extra"]["build_s_T4"] > 0 and "per_step_us_graphc" in long["extra"]
