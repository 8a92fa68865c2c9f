"""The graphc command end to end on examples/mlp.py: dump, compile, then run the plan file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.cli import main
from graphc.ir import parse_graph
from graphc.modelfile import import_file

MLP = str(Path(__file__).resolve().parents[1] / "examples" / "mlp.py")


def test_dump_prints_each_stage(capsys):
    assert main(["dump", MLP, "--stage", "traced"]) == 0
    traced = capsys.readouterr().out
    g = parse_graph(traced)  # the printed IR parses back
    assert [v.name for v in g.inputs_of_kind("param")] == [
        "hidden.weight",
        "hidden.bias",
        "out.weight",
        "out.bias",
    ]
    assert g.op_counts()["matmul"] == 2
    assert main(["dump", MLP, "--stage", "scheduled"]) == 0
    scheduled = capsys.readouterr().out
    assert "fused" in scheduled and "arena" in scheduled  # fused kernels, then the memory plan's table


def test_compile_then_run_gives_the_plans_outputs(tmp_path, capsys):
    plan_path, x_path, out_path = tmp_path / "mlp.gcp", tmp_path / "x.npy", tmp_path / "out.npz"
    assert main(["compile", MLP, "-o", str(plan_path)]) == 0
    assert f"wrote {plan_path}" in capsys.readouterr().out
    (x,) = import_file(MLP).example_inputs()
    x = x[:64] * 2 - 1  # other values than the example's, the same shape
    np.save(x_path, x)
    assert main(["run", str(plan_path), "--input", f"x={x_path}", "-o", str(out_path)]) == 0
    got = np.load(out_path)["output0"]
    plan = graphc.load_plan(str(plan_path))
    np.testing.assert_array_equal(got, plan(x))
    # and the plan computes the MLP: NumPy in float64 on the plan's own weights
    w = {k: v.astype(np.float64) for k, v in plan.graph.initializers.items()}
    ref = np.maximum(x @ w["hidden.weight"].T + w["hidden.bias"], 0) @ w["out.weight"].T + w["out.bias"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_run_names_the_missing_input(tmp_path, capsys):
    plan_path = tmp_path / "mlp.gcp"
    assert main(["compile", MLP, "-o", str(plan_path)]) == 0
    assert main(["run", str(plan_path)]) == 2
    assert "x" in capsys.readouterr().err


def test_a_missing_model_file_is_a_clear_error(tmp_path, capsys):
    assert main(["dump", str(tmp_path / "nope.py")]) == 2
    assert "nope.py" in capsys.readouterr().err


@pytest.mark.parametrize("body", ["import no_such_module_here\n", "x = 1\n"])
def test_a_broken_model_file_is_a_clear_error(tmp_path, capsys, body):
    path = tmp_path / "broken.py"
    path.write_text(body)
    assert main(["compile", str(path), "-o", str(tmp_path / "b.gcp")]) == 2
    err = capsys.readouterr().err
    assert "broken.py" in err and ("no_such_module_here" in err or "model()" in err)
