"""Fuzzing checkpoint loads: a mutated checkpoint loads in full, or fails with GraphcError and
changes nothing.

Hypothesis mutates a real checkpoint (a compiled Adam step with BatchNorm and dropout, a StepLR
schedule and a shuffling data loader): JSON fields deleted, added or replaced by values of other
types and ranges; arrays with another dtype, shape, NaN/inf/huge values, deleted or added; bytes
of the file flipped (anywhere, or in an array's .npy header behind valid CRCs); the file
truncated. The oracle for a load that succeeds is the mutated file itself, read back with
``read_checkpoint``: every live array equals its saved value, the step count, schedule and loader
position are the saved ones, and no array was rebound. For a load that fails, every array, the
step count, the hyper-parameters, the schedule and the loader position equal what they were
before. Any other exception fails the test. Run with ``-s`` to see how many files were tried.
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

import graphc.functional as F
import graphc.nn as nn
from graphc import optim
from graphc.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from graphc.data import DataLoader
from graphc.ir import GraphcError
from graphc.optim import lr_scheduler
from graphc.training import compile_train

BACKEND = "reference"
BUDGET = 300  # mutated files per run, split evenly over the kinds of mutation (about 5 s)
STATS: collections.Counter = collections.Counter()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.drop(F.relu(self.bn(self.fc1(x)))))


class Run:
    """The live objects a checkpoint loads into, their starting state, and the saved file."""

    def __init__(self, folder):
        nn.init.manual_seed(5)
        rng = np.random.default_rng(1)
        data = rng.standard_normal((24, 4)).astype(np.float32), rng.integers(0, 3, 24).astype(np.int64)
        self.loader = DataLoader(data, batch_size=4, shuffle=True, seed=3, drop_last=True)
        self.opt = optim.Adam(lr=1e-2)
        self.model = Net()
        self.step = compile_train(
            self.model, F.cross_entropy, self.opt, *self.loader.example_batch(), backend=BACKEND
        )
        self.sched = lr_scheduler.StepLR(self.opt, step_size=3, gamma=0.5)
        self.baseline = self.capture()
        for _, batch in zip(range(4), self.loader):
            self.step(*batch)
            self.sched.step()
        self.saved_path = folder / "saved.ckpt"
        save_checkpoint(
            self.saved_path, self.step, scheduler=self.sched, loader=self.loader, extra={"n": [1, 2]}
        )
        self.saved_bytes = self.saved_path.read_bytes()
        self.saved_meta, self.saved_arrays = read_checkpoint(self.saved_path)
        self.path = folder / "mutated.ckpt"
        self.restore(self.baseline)

    def live_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        arrays.update({f"optim/{k}": v for k, v in self.opt.state.items()})
        arrays.update({f"step/{k}": v for k, v in self.step.state_arrays.items()})
        return arrays

    def capture(self) -> dict:
        arrays = self.live_arrays()
        return {
            "values": {k: np.array(v, copy=True) for k, v in arrays.items()},
            "ids": {k: np.asarray(v).__array_interface__["data"][0] for k, v in arrays.items()},
            "num_steps": self.step.num_steps,
            "groups": copy.deepcopy(self.opt.param_groups),
            "sched": copy.deepcopy(self.sched.state_dict()),
            "loader": self.loader.state_dict(),
        }

    def restore(self, state: dict) -> None:
        for key, arr in self.live_arrays().items():
            np.copyto(arr, state["values"][key])
        self.step.num_steps = state["num_steps"]
        self.opt.param_groups = copy.deepcopy(state["groups"])
        self.sched.load_state_dict(copy.deepcopy(state["sched"]))
        self.loader.load_state_dict(state["loader"])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return Run(tmp_path_factory.mktemp("fuzz"))


# ---------------------------------------------------------------------------- mutations


def _zip(meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
    npz = io.BytesIO()
    np.savez(npz, **arrays)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("checkpoint.json", json.dumps(meta))
        z.writestr("arrays.npz", npz.getvalue())
    return out.getvalue()


def _paths(tree, prefix=()):
    """Every (container path, key) in a JSON tree."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        yield prefix, key
        yield from _paths(value, prefix + (key,))


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 2, 99, 2**63, 10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
)


def mutate_json(run: Run, data) -> bytes:
    meta = copy.deepcopy(run.saved_meta)
    where, key = data.draw(st.sampled_from(sorted(_paths(meta), key=repr)), label="field")
    parent = meta
    for k in where:
        parent = parent[k]
    op = data.draw(st.sampled_from(["replace", "delete", "add"]), label="op")
    if op == "delete":
        del parent[key]
    elif op == "replace":
        parent[key] = data.draw(JSON_VALUES, label="value")
    elif isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=4), label="new key")] = data.draw(JSON_VALUES)
    else:
        parent.append(data.draw(JSON_VALUES, label="new item"))
    return _zip(meta, run.saved_arrays)


DTYPES = ["f2", "f4", "f8", "i1", "i4", "i8", "u1", "u8", "?", "c8"]
SPECIAL = [np.nan, np.inf, -np.inf, 1e300, -1e39, 3e38, 2.0**63, -1.0, 0.0]
INT_SPECIAL = [-1, 0, 2**31, 2**62, -(2**63), 2**63 - 1]


def mutate_arrays(run: Run, data) -> bytes:
    arrays = dict(run.saved_arrays)
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
            wide = arr.astype(data.draw(st.sampled_from(["f8", arr.dtype.str]), label="as"))
            if wide.size:
                flat = wide.reshape(-1)
                at = data.draw(st.integers(0, flat.size - 1), label="index")
                values = SPECIAL if wide.dtype.kind == "f" else INT_SPECIAL
                flat[at] = data.draw(st.sampled_from(values), label="value")
            arrays[key] = wide
        elif op == "delete":
            del arrays[key]
        else:
            prefix = data.draw(st.sampled_from(["model/", "optim/", "step/", "x/"]), label="prefix")
            arrays[prefix + data.draw(st.text("ab.", min_size=1, max_size=3))] = np.zeros(2, np.float32)
    return _zip(dict(run.saved_meta), arrays)


def flip_npy_header(run: Run, data) -> bytes:
    """Flip bytes of one array's .npy header (magic, version, dict), re-zipped with valid CRCs."""
    key = data.draw(st.sampled_from(sorted(run.saved_arrays)), label="array")
    members = {}
    for name, arr in run.saved_arrays.items():
        npy = io.BytesIO()
        np.save(npy, arr)
        members[name] = bytearray(npy.getvalue())
    header = members[key]
    for _ in range(data.draw(st.integers(1, 3), label="flips")):
        at = data.draw(st.integers(0, min(len(header), 128) - 1), label="at")
        header[at] ^= data.draw(st.integers(1, 255), label="xor")
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as z:
        for name, blob in members.items():
            z.writestr(name + ".npy", bytes(blob))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("checkpoint.json", json.dumps(run.saved_meta))
        z.writestr("arrays.npz", npz.getvalue())
    return out.getvalue()


def flip_bytes(run: Run, data) -> bytes:
    return file_mutations.flip_bytes(run.saved_bytes, data)


def truncate(run: Run, data) -> bytes:
    return file_mutations.truncate(run.saved_bytes, data)


MUTATIONS = {
    "json": mutate_json,
    "arrays": mutate_arrays,
    "npy": flip_npy_header,
    "bytes": flip_bytes,
    "truncate": truncate,
}


# ---------------------------------------------------------------------------- the property


def _json_round_trip(value):
    return json.loads(json.dumps(value))


def _assert_loaded_as_saved(run: Run, before: dict) -> None:
    meta, arrays = read_checkpoint(run.path)  # the oracle: what the mutated file holds
    after = run.capture()
    assert after["ids"] == before["ids"]  # copied into, never rebound
    for key, saved in arrays.items():
        live = after["values"][key]
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(live, saved.astype(live.dtype), err_msg=key)
    assert run.step.num_steps == meta.get("num_steps", 0)
    for key, value in meta["optimizer"]["param_groups"][0].items():
        if key == "lr":  # loading the schedule sets the rate it gives, as scheduler.load_state_dict does
            value = meta["scheduler"]["state"]["_last_lr"][0]
        assert _json_round_trip(run.opt.param_groups[0][key]) == value, key
    assert _json_round_trip(run.sched.state_dict()) == meta["scheduler"]["state"]
    assert run.loader.state_dict() == meta["loader"]


def _assert_unchanged(before: dict, after: dict) -> None:
    for key, value in before["values"].items():
        np.testing.assert_array_equal(after["values"][key], value, err_msg=key)
    for key in ("ids", "num_steps", "groups", "sched", "loader"):
        assert after[key] == before[key], key


@pytest.mark.parametrize("kind", sorted(MUTATIONS))
def test_mutated_checkpoints_load_fully_or_change_nothing(run, kind):
    stats = collections.Counter()

    @settings(
        max_examples=BUDGET // len(MUTATIONS),
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def check(data):
        run.path.write_bytes(MUTATIONS[kind](run, data))
        before = run.capture()
        try:
            load_checkpoint(run.path, run.step, scheduler=run.sched, loader=run.loader)
        except GraphcError as err:
            assert str(run.path) in str(err)
            _assert_unchanged(before, run.capture())
            stats["refused"] += 1
        else:
            _assert_loaded_as_saved(run, before)
            stats["loaded"] += 1
        finally:
            stats["tried"] += 1
            run.restore(run.baseline)

    check()
    STATS.update({f"{kind} {k}": v for k, v in stats.items()})
    print(f"\ncheckpoint fuzz, {kind}: {dict(stats)}")  # the counts for the report (pytest -s)
    assert stats["tried"] >= BUDGET // len(MUTATIONS) // 2
    assert stats["refused"] > 0
    if kind in ("json", "arrays"):
        assert stats["loaded"] > 0  # some mutations are harmless (a float64 weight that fits, ...)


def test_the_unmutated_file_loads(run):
    """The harness itself: the saved file loads, and equals what was saved."""
    run.path.write_bytes(run.saved_bytes)
    before = run.capture()
    try:
        load_checkpoint(run.path, run.step, scheduler=run.sched, loader=run.loader)
        _assert_loaded_as_saved(run, before)
        assert run.step.num_steps == 4
        assert not np.array_equal(run.model.fc1.weight, before["values"]["model/fc1.weight"])
    finally:
        run.restore(run.baseline)
