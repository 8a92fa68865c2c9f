"""Fuzzing plan-file loads: a mutated plan file is refused with a GraphcError, or it loads and
computes exactly what its (mutated) graph means.

Hypothesis mutates one small saved plan (a fused matmul and a fused softmax-with-relu, made once
per module): JSON fields replaced by values of other types and ranges (code-like strings, huge
ints, NaN, deep nesting), deleted or added; arrays.npz members of another dtype or shape; bytes
of the zip flipped; the file truncated. For a load that succeeds, the plan's output must equal
the NumPy reference executor's on the loaded graph (so a mutation that changes nothing must
give the original output). Any other exception, a crash, or the marker file that the injected
strings would create fails the test. ``-s`` prints how many mutated files were tried.
"""

from __future__ import annotations

import collections
import copy
import io
import json
import zipfile

import file_mutations
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc
from graphc import functional as F
from graphc import nn
from graphc.ir import GraphcError
from graphc.kernels.reference import execute

STATS: collections.Counter = collections.Counter()


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 4)

    def forward(self, x):
        return F.softmax(F.relu(self.lin(x)), dim=-1)


class Saved:
    """The saved plan, its parts, its input and its output."""

    def __init__(self, folder):
        graphc.manual_seed(0)
        self.x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
        plan = graphc.compile(Small(), self.x)
        self.y = plan(self.x)
        saved = folder / "saved.gcp"
        plan.save(str(saved))
        self.bytes = saved.read_bytes()
        with zipfile.ZipFile(saved) as zf:
            self.meta = json.loads(zf.read("plan.json"))
            self.npz = zf.read("arrays.npz")
        with np.load(io.BytesIO(self.npz)) as npz:
            self.arrays = {k: npz[k] for k in npz.files}
        self.path = folder / "mutated.gcp"
        self.marker = folder / "MARKER"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return Saved(tmp_path_factory.mktemp("plan_fuzz"))


def _zip(meta: dict | str, npz: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("plan.json", meta if isinstance(meta, str) else json.dumps(meta))
        z.writestr("arrays.npz", npz)
    return out.getvalue()


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def _paths(tree, prefix=()):
    """Every (container path, key) in a JSON tree but the kernel sources (for reading only)."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        if prefix == ("kernel_sources",):
            continue
        yield prefix, key
        yield from _paths(value, prefix + (key,))


def _code(marker) -> list[str]:
    return [
        f"pointwise\nimport os; open({str(marker)!r}, 'w')",
        f"f32')\nopen({str(marker)!r}, 'w')#",
        f"__import__('os').system('touch {marker}')",
    ]


def _json_values(marker):
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.sampled_from([0, 1, -1, 2, 3, 4, 6, 64, 2**31, 2**40, 2**63, 10**400]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=6),
        st.sampled_from(["f64", "i32", "i64", "bool", "exp", "neg", "reshape", "fused", "pointwise"]),
        st.sampled_from(["matmul", "attention", "x", "1", "10", "lin.weight", "param", "data", "state"]),
        st.sampled_from(_code(marker)),
        st.lists(st.integers(-3, 8), max_size=4),
        st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
        st.integers(3, 400).map(lambda n: json.loads("[" * n + "]" * n)),
    )


def mutate_json(saved: Saved, data) -> bytes:
    meta = copy.deepcopy(saved.meta)
    where, key = data.draw(st.sampled_from(sorted(_paths(meta), key=repr)), label="field")
    parent = meta
    for k in where:
        parent = parent[k]
    op = data.draw(st.sampled_from(["replace", "replace", "delete", "add"]), label="op")
    if op == "delete":
        del parent[key]
    elif op == "replace":
        parent[key] = data.draw(_json_values(saved.marker), label="value")
    elif isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=4), label="new key")] = data.draw(
            _json_values(saved.marker)
        )
    else:
        parent.append(data.draw(_json_values(saved.marker), label="new item"))
    return _zip(meta, saved.npz)


def deep_json(saved: Saved, data) -> bytes:
    """plan.json with one field nested thousands deep (RecursionError territory)."""
    depth = data.draw(st.integers(500, 200_000), label="depth")
    field = data.draw(st.sampled_from(["graph", "memory_plan", "backend", "version"]), label="field")
    meta = {k: v for k, v in saved.meta.items() if k != field}
    text = json.dumps(meta)[:-1] + f', "{field}": ' + "[" * depth + "]" * depth + "}"
    return _zip(text, saved.npz)


DTYPES = ["f2", "f4", "f8", ">f4", "i4", "i8", "u1", "?", "c8"]


def mutate_arrays(saved: Saved, data) -> bytes:
    arrays = dict(saved.arrays)
    key = data.draw(st.sampled_from(sorted(arrays)), label="array")
    arr = arrays[key]
    op = data.draw(st.sampled_from(["dtype", "shape", "value", "delete", "add"]), label="op")
    with np.errstate(all="ignore"):
        if op == "dtype":
            arrays[key] = arr.astype(data.draw(st.sampled_from(DTYPES), label="dtype"))
        elif op == "shape":
            shapes = [arr.reshape(-1), arr[None], arr.reshape(-1)[:-1], np.concatenate([arr.reshape(-1)] * 2)]
            arrays[key] = shapes[data.draw(st.integers(0, len(shapes) - 1), label="shape")]
        elif op == "value":
            arr = arr.copy()
            arr.reshape(-1)[data.draw(st.integers(0, arr.size - 1), label="index")] = data.draw(
                st.sampled_from([np.nan, np.inf, -np.inf, 3e38, 0.0]), label="value"
            )
            arrays[key] = arr
        elif op == "delete":
            del arrays[key]
        else:
            arrays[data.draw(st.text("ab.", min_size=1, max_size=3), label="name")] = np.zeros(2, np.float32)
    return _zip(saved.meta, _npz(arrays))


def flip_bytes(saved: Saved, data) -> bytes:
    return file_mutations.flip_bytes(saved.bytes, data)


def truncate(saved: Saved, data) -> bytes:
    return file_mutations.truncate(saved.bytes, data)


MUTATIONS = {
    "json": mutate_json,
    "deep": deep_json,
    "arrays": mutate_arrays,
    "bytes": flip_bytes,
    "truncate": truncate,
}

# Mutated files per kind: most edit plan.json, which has by far the most ways to go wrong.
BUDGET = {"json": 160, "arrays": 40, "bytes": 50, "deep": 20, "truncate": 30}


def _check(saved: Saved, kind: str, data) -> None:
    saved.path.write_bytes(MUTATIONS[kind](saved, data))
    STATS["tried"] += 1
    try:
        with np.errstate(all="ignore"):  # a mutated array may hold NaN or inf
            plan = graphc.load_plan(str(saved.path))
            y = plan(saved.x)
    except GraphcError:
        STATS[f"{kind} refused"] += 1
    else:
        with np.errstate(all="ignore"):
            (expected,) = execute(plan.graph, {v.name: saved.x for v in plan.graph.data_inputs})
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6, equal_nan=True)
        STATS[f"{kind} ran"] += 1
        STATS["same output as saved"] += int(np.array_equal(y, saved.y))
    assert not saved.marker.exists()


def _fuzz(saved: Saved, kind: str, budget: int) -> None:
    @settings(
        max_examples=budget,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def check(data):
        _check(saved, kind, data)

    check()


def test_mutated_plan_files_are_refused_or_run_correctly(saved):
    STATS.clear()
    for kind, budget in BUDGET.items():
        _fuzz(saved, kind, budget)
    print(f"\nplan fuzz: {dict(sorted(STATS.items()))}")
    assert STATS["tried"] >= sum(BUDGET.values()) // 2
    assert STATS["same output as saved"] > 0 and STATS["json ran"] > 0
    for kind in MUTATIONS:
        assert STATS[f"{kind} refused"] > 0, kind


def test_the_unmutated_file_runs(saved):
    """The harness itself: the saved file loads and gives the saved output."""
    saved.path.write_bytes(saved.bytes)
    np.testing.assert_array_equal(graphc.load_plan(str(saved.path))(saved.x), saved.y)
