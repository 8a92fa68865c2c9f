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
from graphc.bench import engines, environment, peers, probe, report, runner, targets, weights, workloads
from graphc.cli import build_parser, main
from graphc.ir import GraphcError

HAS_TORCH = importlib.util.find_spec("torch") is not None
SUITE = [
    "cnn_train",
    "fusion_chain_infer",
    "lstm_train",
    "mlp_small_train",
    "mlp_train",
    "mobilenet_infer",
    "transformer_infer",
]
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
    assert all(name in out for name in SUITE)


def test_suite_folder_can_be_given(tmp_path, tiny_infer):
    (tmp_path / "helper.py").write_text("print('a script, not a workload')\n")
    assert workloads.suite_files(tmp_path) == [tiny_infer]
    assert workloads.other_scripts(tmp_path) == [tmp_path / "helper.py"]
    assert workloads.resolve([], tmp_path) == [tiny_infer]
    with pytest.raises(GraphcError, match="no suite workloads"):
        workloads.resolve([], tmp_path / "empty")


# ------------------------------------------------------------------------------------------ suite
def test_suite_is_the_five_workload_files():
    assert [p.stem for p in workloads.suite_files()] == SUITE


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
    assert all(name in text for name in SUITE)


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
