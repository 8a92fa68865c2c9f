"""Plans: input checks, save/load in a fresh process, and the bad-file cases."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import graphc
from graphc import functional as F
from graphc import nn
from graphc.ir import GraphcError
from graphc.kernels.reference import execute
from graphc.runtime import load_plan


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 4)

    def forward(self, x):
        return F.softmax(F.relu(self.lin(x)), dim=-1)


@pytest.fixture(scope="module")
def model_and_plan():
    graphc.manual_seed(0)
    model = Small()
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    return model, x, graphc.compile(model, x)


def test_plan_matches_the_reference_executor(model_and_plan):
    model, x, plan = model_and_plan
    expected = execute(graphc.trace(model, x), {"x": x})[0]
    np.testing.assert_allclose(plan(x), expected, rtol=1e-5, atol=1e-6)


def test_outputs_are_copies(model_and_plan):
    _, x, plan = model_and_plan
    first = plan(x)
    kept = first.copy()
    plan(x * 2)
    np.testing.assert_array_equal(first, kept)


def test_wrong_inputs_are_named(model_and_plan):
    _, x, plan = model_and_plan
    with pytest.raises(GraphcError, match=r"input 'x': expected shape \[3, 6\], got \[4, 6\]"):
        plan(np.zeros((4, 6), np.float32))
    with pytest.raises(GraphcError, match="input 'x': expected dtype float32, got float64"):
        plan(x.astype(np.float64))
    with pytest.raises(GraphcError, match=r"plan takes 1 input\(s\) \(x\), got 2"):
        plan(x, x)


def test_saved_plan_runs_in_a_fresh_process(model_and_plan, tmp_path):
    _, x, plan = model_and_plan
    path = tmp_path / "small.gcp"
    plan.save(str(path))
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import numpy as np, graphc
        plan = graphc.load_plan({str(path)!r})
        np.save({str(tmp_path / "y.npy")!r}, plan(np.load({str(tmp_path / "x.npy")!r})))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, env=dict(os.environ))
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), plan(x))


def test_plan_file_holds_json_and_npz_only(model_and_plan, tmp_path):
    _, _, plan = model_and_plan
    path = tmp_path / "p.gcp"
    plan.save(str(path))
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["arrays.npz", "plan.json"]
        meta = json.loads(zf.read("plan.json"))
    assert meta["format"] == "graphc-plan" and meta["graph"]["nodes"]


def test_bad_plan_files_say_what_is_wrong(model_and_plan, tmp_path):
    _, _, plan = model_and_plan
    good = tmp_path / "good.gcp"
    plan.save(str(good))
    data = good.read_bytes()

    truncated = tmp_path / "truncated.gcp"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(GraphcError, match="truncated/corrupted"):
        load_plan(str(truncated))

    foreign = tmp_path / "foreign.gcp"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("model.onnx", b"\x08\x07")
    with pytest.raises(GraphcError, match="not a graphc plan file"):
        load_plan(str(foreign))

    other_format = tmp_path / "other.gcp"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(other_format, "w") as dst:
        meta = json.loads(src.read("plan.json"))
        meta["format"] = "something-else"
        dst.writestr("plan.json", json.dumps(meta))
        dst.writestr("arrays.npz", src.read("arrays.npz"))
    with pytest.raises(GraphcError, match="format 'something-else'"):
        load_plan(str(other_format))

    def tampered(edit) -> str:
        path = tmp_path / "tampered.gcp"
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
            meta = json.loads(src.read("plan.json"))
            edit(meta["graph"]["nodes"][0])
            dst.writestr("plan.json", json.dumps(meta))
            dst.writestr("arrays.npz", src.read("arrays.npz"))
        return str(path)

    def rename_inner_op(node):
        node["body"]["nodes"][0]["op"] = "__import__('os').system"

    def rename_fused_op(node):
        node["op"] = "__import__('os').system"

    assert meta["graph"]["nodes"][0]["op"] == "fused"
    with pytest.raises(GraphcError, match="unknown primitive op"):
        load_plan(tampered(rename_inner_op))
    with pytest.raises(GraphcError, match="only fused nodes have a body"):
        load_plan(tampered(rename_fused_op))

    with pytest.raises(GraphcError, match="no such plan file"):
        load_plan(str(tmp_path / "missing.gcp"))

    # Every buffer moved onto the first one's bytes: inside the arena, but overlapping.
    piled = tmp_path / "piled.gcp"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(piled, "w") as dst:
        meta = json.loads(src.read("plan.json"))
        for buf in meta["memory_plan"]["buffers"]:
            buf["offset"] = 0
        dst.writestr("plan.json", json.dumps(meta))
        dst.writestr("arrays.npz", src.read("arrays.npz"))
    with pytest.raises(GraphcError, match="inconsistent memory plan"):
        graphc.load_plan(str(piled))


def test_plan_never_writes_into_the_callers_arrays():
    def chain(x):
        return (x * 2.0).exp() + 1.0  # in-place candidates: x dies at its first reader

    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    kept = x.copy()
    plan = graphc.compile(chain, x)
    y1 = plan(x)
    np.testing.assert_array_equal(x, kept)
    np.testing.assert_allclose(y1, np.exp(kept * 2) + 1, rtol=1e-6)
    y2 = plan(x + 1)
    assert y1 is not y2 and not np.shares_memory(y1, y2)
    np.testing.assert_allclose(y1, np.exp(kept * 2) + 1, rtol=1e-6)


def test_a_value_returned_twice_comes_back_as_two_arrays():
    def twice(x):
        y = x.exp()
        return y, y

    x = np.ones((2, 3), np.float32)
    a, b = graphc.compile(twice, x)(x)
    assert not np.shares_memory(a, b)
    np.testing.assert_array_equal(a, b)


def test_a_result_still_held_is_never_reused():
    def double(x):
        return x * 2.0

    x = np.ones((3, 4), np.float32)
    plan = graphc.compile(double, x)
    held = plan(x)
    again = plan(x * 5)
    assert not np.shares_memory(held, again)
    np.testing.assert_array_equal(held, 2 * x)
    view = again[0]
    del again
    third = plan(x * 7)
    assert not np.shares_memory(view, third)  # a view keeps its base alive, so no reuse
    np.testing.assert_array_equal(view, 10 * x[0])


def test_a_dropped_result_is_reused():
    # The pages of a result the caller let go are written again, not freshly faulted in.
    def chain(x):
        return (x + 1.0).exp() * 3.0

    x = np.ones((64, 32), np.float32)
    plan = graphc.compile(chain, x)
    first = id(plan(x))
    assert id(plan(x + 1)) == first
    np.testing.assert_allclose(plan(x), np.exp(x + 1) * 3, rtol=1e-6)
