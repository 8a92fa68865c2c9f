"""graphc bench: CLI, workload definitions, the torch twin's agreement, JSON output. No timing asserts."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

from graphc import bench
from graphc.cli import build_parser

HAS_TORCH = importlib.util.find_spec("torch") is not None


def _graphc_front_end() -> bool:
    try:
        bench.graphc_lib()
        import graphc.tracing  # noqa: F401
    except (bench.Skip, ImportError):
        return False
    return True


@pytest.fixture(autouse=True)
def _restore_thread_env(monkeypatch):
    # run_bench sets the thread variables for its subprocesses; keep them out of other tests.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_parses_bench_options():
    args = build_parser().parse_args(
        [
            "bench",
            "mlp_small_train",
            "fusion_chain_infer",
            "--compare",
            "torch,torch.compile,onnxruntime",
            "--json",
            "out.json",
            "--threads",
            "2",
            "--repeat",
            "3",
            "--device",
            "cpu",
            "--plot",
            "out.png",
            "--quick",
        ]
    )
    assert args.func is bench.cmd_bench
    assert args.workloads == ["mlp_small_train", "fusion_chain_infer"]
    assert args.compare == ["torch", "torch.compile", "onnxruntime"]
    assert (args.json, args.threads, args.repeat, args.device, args.plot, args.quick) == (
        "out.json",
        2,
        3,
        "cpu",
        "out.png",
        True,
    )
    assert build_parser().parse_args(["bench"]).compare == []
    assert build_parser().parse_args(["bench", "--compare", "all"]).compare == list(bench.PEERS)


@pytest.mark.parametrize("bad", [["--compare", "tensorflow"], ["--threads", "0"], ["--device", "tpu"]])
def test_cli_rejects_bad_options(bad, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", *bad])


def test_unknown_workload_is_a_clear_error():
    from graphc.ir import GraphcError

    args = build_parser().parse_args(["bench", "resnet50"])
    with pytest.raises(GraphcError, match="resnet50"):
        bench.cmd_bench(args)


# ------------------------------------------------------------------------------------------ workloads
def test_workloads_are_the_five_of_the_spec():
    assert list(bench.WORKLOADS) == [
        "mlp_small_train",
        "mlp_train",
        "cnn_train",
        "transformer_infer",
        "fusion_chain_infer",
    ]
    for w in bench.WORKLOADS.values():
        assert w.kind in ("train", "infer")
        assert (w.model is None) != (w.function is None)
        assert (w.optimizer is not None) == (w.kind == "train")
        a = w.make_inputs(np.random.default_rng(0))
        b = w.make_inputs(np.random.default_rng(0))
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)  # fixed seed: the same inputs every run
        assert all(x.dtype in (np.float32, np.int64) for x in a)
        if w.kind == "train":
            assert a[-1].dtype == np.int64 and a[0].shape[0] == w.batch


def test_fusion_chain_moves_three_big_arrays():
    w = bench.WORKLOADS["fusion_chain_infer"]
    inputs = w.make_inputs(np.random.default_rng(0))
    assert [x.shape for x in inputs] == [(8192, 1024), (1024,), (1024,), (8192, 1024)]
    assert w.moved_bytes(inputs) == 3 * 8192 * 1024 * 4


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("name", ["mlp_small_train", "mlp_train", "cnn_train", "transformer_infer"])
def test_torch_twins_build_and_run(name):
    import torch

    w = bench.WORKLOADS[name]
    lib = bench.torch_lib()
    model = w.model(lib)
    inputs = w.make_inputs(np.random.default_rng(0))
    with torch.no_grad():
        out = model(torch.from_numpy(inputs[0]))
    expected = {"transformer_infer": (8, 128, 256)}.get(name, (w.batch, 10))
    assert tuple(out.shape) == expected


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_fusion_chain_torch_matches_numpy():
    import torch
    from scipy.special import erf

    w = bench.WORKLOADS["fusion_chain_infer"]
    rng = np.random.default_rng(1)
    x, r = rng.standard_normal((2, 4, 16), dtype=np.float32)
    b, s = rng.standard_normal((2, 16), dtype=np.float32)
    out = w.function(bench.torch_lib())(*(torch.from_numpy(a) for a in (x, b, s, r))).numpy()
    h = x + b
    y = 0.5 * h * (1 + erf(h / np.sqrt(2))) * s + r
    ref = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not _graphc_front_end(), reason="graphc front end not built yet")
@pytest.mark.parametrize("name", ["mlp_small_train", "mlp_train", "cnn_train", "transformer_infer"])
def test_graphc_models_have_the_torch_twins_parameters(name):
    w = bench.WORKLOADS[name]
    graphc_model, _ = bench.build_model(w, bench.graphc_lib())
    state = {k: bench._to_numpy(v) for k, v in graphc_model.state_dict().items()}
    if HAS_TORCH:
        twin, _ = bench.build_model(w, bench.torch_lib())
        bench.load_state(twin, state, bench.torch_lib())
        for (k, v), t in zip(state.items(), twin.state_dict().values()):
            np.testing.assert_array_equal(v, t.numpy(), err_msg=k)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.skipif(not _graphc_front_end(), reason="graphc front end not built yet")
def test_torch_peer_computes_graphcs_loss_on_the_same_weights():
    w = bench.WORKLOADS["mlp_small_train"]
    inputs = w.make_inputs(np.random.default_rng(0))
    state = bench.initial_state(w)
    try:
        ours = bench.build_engine("graphc", w, inputs, state, "cpu", bench.default_threads())
    except bench.Skip as err:
        pytest.skip(str(err))
    theirs = bench.build_engine("torch", w, inputs, state, "cpu", bench.default_threads())
    assert math.isclose(ours.first, theirs.first, rel_tol=1e-5, abs_tol=1e-6)
    # one SGD update each: the second losses agree too
    assert math.isclose(float(ours.step()), float(theirs.step()), rel_tol=1e-4, abs_tol=1e-5)


# ------------------------------------------------------------------------------------------ results
def _check_schema(data: dict) -> None:
    assert data["schema"] == bench.SCHEMA_VERSION
    assert {"platform", "threads", "device", "versions"} <= set(data["machine"])
    assert {"repeat", "warmup", "quick", "engines", "baseline"} <= set(data["settings"])
    limits = data["limits"]
    for key in ("sgemm_gflops", "copy_bandwidth_gbs", "copy_bytes"):
        assert limits[key] > 0
    for w in data["workloads"]:
        assert {"name", "kind", "what", "engines"} <= set(w)
        for engine, e in w["engines"].items():
            assert engine in bench.ENGINES
            assert e["status"] in ("ok", "skipped", "failed")
            if e["status"] == "ok":
                assert e["min_ms"] <= e["median_ms"] <= e["max_ms"]
                assert e["runs"] >= 1 and e["steps_per_run"] >= 1
                if "memory" in e:
                    assert set(e["memory"]) == {"naive_bytes", "lower_bound", "arena_bytes"}
            else:
                assert e["note"]
    for t in data["targets"]:
        assert {"workload", "what", "target", "value", "met"} <= set(t)


def test_quick_run_with_a_skipped_peer_writes_well_formed_json(tmp_path):
    # onnxruntime does no training: its row must be a skip with a note, not a crash.
    data = bench.run_bench(
        ["mlp_small_train"],
        ["onnxruntime"],
        threads=bench.default_threads(),
        quick=True,
        compile_time=False,
        profile=True,
        log=lambda msg: None,
    )
    _check_schema(data)
    (w,) = data["workloads"]
    if w["engines"]["graphc"]["status"] == "ok":  # the per-kernel profile of graphc's plan
        prof = w["profile"]
        assert prof["n_kernels"] == len(prof["kernels"]) >= 1
        assert all(k["ms"] >= 0 and k["op"] for k in prof["kernels"])
    assert w["name"] == "mlp_small_train"
    assert set(w["engines"]) == {"graphc", "onnxruntime"}
    assert w["engines"]["onnxruntime"]["status"] == "skipped"
    assert "inference only" in w["engines"]["onnxruntime"]["note"]
    path = tmp_path / "bench.json"
    bench.write_json(data, str(path))
    again = json.loads(path.read_text())
    _check_schema(again)
    table = bench.format_table(data)
    assert "mlp_small_train" in table and "onnxruntime" in table and "skipped" in table


def test_json_writer_is_strict_json(tmp_path):
    data = {"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float32(2.0), "d": np.arange(2)}
    path = tmp_path / "x.json"
    bench.write_json(data, str(path))
    assert json.loads(path.read_text()) == {"a": None, "b": [None, 1.5], "c": 2.0, "d": [0, 1]}


def _fake_workload(name: str, engines: dict) -> dict:
    return {"name": name, "kind": "infer", "what": "", "batch": 1, "engines": engines}


def test_targets_read_the_ratios():
    ok = {"status": "ok", "median_ms": 1.0, "min_ms": 1.0, "max_ms": 1.0}
    results = [
        _fake_workload(
            "fusion_chain_infer",
            {"graphc": {**ok, "vs_torch": 0.25, "vs_bound": 1.5}, "torch": {**ok, "vs_torch": 1.0}},
        ),
        _fake_workload(
            "transformer_infer",
            {"graphc": {**ok, "median_ms": 2.0}, "onnxruntime": {**ok, "median_ms": 4.0}},
        ),
        _fake_workload("cnn_train", {"graphc": {"status": "skipped", "note": "x"}}),
    ]
    got = {(t["workload"], t["what"]): (t["value"], t["met"]) for t in bench.evaluate_targets(results)}
    assert got[("fusion_chain_infer", "time / bandwidth bound")] == (1.5, False)
    assert got[("fusion_chain_infer", "speedup over torch eager")] == (4.0, True)
    assert got[("transformer_infer", "time / onnxruntime")] == (0.5, True)
    assert got[("cnn_train", "time / torch eager")] == (None, None)


def test_round_by_round_ratio_is_given_beside_the_median_ratio():
    # Rounds 1 and 3 ran in a slow phase of the machine: each median mixes the phases, the
    # round-by-round ratio does not. The target is still decided by the ratio of the medians.
    g = {"status": "ok", "median_ms": 11.0, "per_round_ms": [10.0, 11.0, 20.0]}
    o = {"status": "ok", "median_ms": 10.0, "per_round_ms": [12.5, 10.0, 25.0]}
    assert bench.paired_ratio(g, o) == pytest.approx(0.8)
    assert bench.paired_ratio(g, {"status": "ok"}) is None
    (t,) = bench.evaluate_targets([_fake_workload("transformer_infer", {"graphc": g, "onnxruntime": o})])
    assert t["value"] == pytest.approx(1.1) and t["paired"] == pytest.approx(0.8) and t["met"] is False
    text = "\n".join(bench.format_targets([t]))
    assert "1.10 (target <= 1, by round 0.80): MISSED" in text


def test_plot_without_matplotlib_is_a_note(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    data = {"workloads": [], "settings": {"engines": ["graphc"]}}
    assert "matplotlib" in bench.plot(data, str(tmp_path / "p.png"))


def test_probe_reports_a_skip_as_json(capsys):
    assert bench._main(["_probe", "mlp_small_train", "onnxruntime", "cpu", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "inference only" in out["skipped"]


def test_set_threads_keeps_the_backends_threading_layer():
    # numba.set_num_threads starts numba's pool; the CPU backend's layer must be chosen first.
    import os
    import subprocess
    import sys

    from graphc.kernels.cpu.threads import tbb_library_path

    if tbb_library_path() is None:
        pytest.skip("the tbb wheel is not installed here")
    code = (
        "import numba, graphc.bench as b; b.set_threads(numba.config.NUMBA_NUM_THREADS); "
        "numba.njit(parallel=True)(lambda a: a.sum())(__import__('numpy').ones(10)); "
        "print(numba.threading_layer())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "tbb"


def test_workload_nodes_name_their_line_in_bench_py():
    # A model defined in graphc/bench.py is the benchmark's own code: its nodes name those lines,
    # not the console script that started the run.
    import graphc

    w = bench.WORKLOADS["fusion_chain_infer"]
    inputs = w.make_inputs(np.random.default_rng(0))
    graph = graphc.trace(w.function(bench.graphc_lib()), *inputs)
    sources = {n.source for n in graph.nodes if n.op != "const"}
    assert sources and all(s and s.split(":")[0].endswith("graphc/bench.py") for s in sources), sources
