"""Checkpoints: atomic files, and a resumed run continues bit-identically."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import graphc.functional as F
import graphc.nn as nn
from graphc import checkpoint_file, optim
from graphc.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from graphc.data import DataLoader
from graphc.ir import GraphcError
from graphc.optim import lr_scheduler
from graphc.training import compile_train

BACKEND = "reference"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(self.drop(F.relu(self.bn(self.fc1(x)))))


def _dataset():
    rng = np.random.default_rng(0)
    return rng.standard_normal((50, 6)).astype(np.float32), rng.integers(0, 3, 50).astype(np.int64)


def _setup():
    """What a training script does before its loop (same seed: same init and dropout seeds)."""
    nn.init.manual_seed(123)
    model = Net()
    loader = DataLoader(_dataset(), batch_size=8, shuffle=True, seed=7, drop_last=True)
    opt = optim.Adam(lr=1e-2)
    step = compile_train(model, F.cross_entropy, opt, *loader.example_batch(), backend=BACKEND)
    sched = lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    return model, loader, step, sched


def _train(step, loader, sched, n):
    """n steps, crossing epoch boundaries, scheduler stepped per step."""
    losses = []
    while n:
        for batch in loader:
            losses.append(step(*batch))
            sched.step()
            n -= 1
            if n == 0:
                break
    return losses


def test_resume_is_bit_identical(tmp_path):
    n, m = 9, 8  # 6 batches an epoch: the checkpoint falls mid-epoch, the rest crosses epochs
    model, loader, step, sched = _setup()
    _train(step, loader, sched, n)
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, step, scheduler=sched, loader=loader, extra={"note": "mid-run"})
    expected_losses = _train(step, loader, sched, m)
    expected = {k: np.array(v, copy=True) for k, v in model.state_dict().items()}
    expected_opt = {k: v.copy() for k, v in step.optimizer.state.items()}

    model2, loader2, step2, sched2 = _setup()
    extra = load_checkpoint(path, step2, scheduler=sched2, loader=loader2)
    assert extra == {"note": "mid-run"}
    assert step2.num_steps == n
    losses = _train(step2, loader2, sched2, m)
    assert losses == expected_losses
    for k, v in model2.state_dict().items():
        np.testing.assert_array_equal(v, expected[k], err_msg=k)
    for k, v in step2.optimizer.state.items():
        np.testing.assert_array_equal(v, expected_opt[k], err_msg=k)
    assert step2.optimizer.lr == step.optimizer.lr
    assert loader2.state_dict() == loader.state_dict()


def test_load_into_a_bare_module(tmp_path):
    model, loader, step, sched = _setup()
    _train(step, loader, sched, 3)
    save_checkpoint(tmp_path / "c", step)
    nn.init.manual_seed(999)
    fresh = Net()
    load_checkpoint(tmp_path / "c", fresh)
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(v, model.state_dict()[k])


def test_file_is_written_atomically(tmp_path, monkeypatch):
    model, loader, step, sched = _setup()
    path = tmp_path / "c.ckpt"
    save_checkpoint(path, step)
    good = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    _train(step, loader, sched, 1)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, step)
    assert path.read_bytes() == good  # the old checkpoint survives
    assert os.listdir(tmp_path) == ["c.ckpt"]  # no temporary file left behind
    meta, arrays = read_checkpoint(path)
    assert meta["format"] == "graphc-checkpoint" and meta["num_steps"] == 0
    assert any(k.startswith("optim/") for k in arrays) and any(k.startswith("model/") for k in arrays)


def test_bad_files(tmp_path):
    model, loader, step, sched = _setup()
    with pytest.raises(GraphcError, match="does not exist"):
        load_checkpoint(tmp_path / "missing", step)
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a zip")
    with pytest.raises(GraphcError, match="not a graphc checkpoint"):
        load_checkpoint(junk, step)
    foreign = tmp_path / "foreign"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("checkpoint.json", '{"format": "other"}')
        z.writestr("arrays.npz", b"")
    with pytest.raises(GraphcError, match="not a graphc checkpoint"):
        load_checkpoint(foreign, step)
    save_checkpoint(tmp_path / "nosched", step)
    with pytest.raises(GraphcError, match="scheduler"):
        load_checkpoint(tmp_path / "nosched", step, scheduler=sched)


# ---------------------------------------------------------------------------- all or nothing


def _snapshot(step, sched, loader):
    """Copies of everything a load may write, and the identity of the arrays the step holds."""
    arrays = {f"model/{k}": v for k, v in step.model.state_dict().items()}
    arrays.update({f"optim/{k}": v for k, v in step.optimizer.state.items()})
    arrays.update({f"step/{k}": v for k, v in step.state_arrays.items()})
    return {
        "values": {k: np.array(v, copy=True) for k, v in arrays.items()},
        "ids": {k: np.asarray(v).__array_interface__["data"][0] for k, v in arrays.items()},
        "optim_ids": {k: id(v) for k, v in step.optimizer.state.items()},
        "num_steps": step.num_steps,
        "groups": [dict(g) for g in step.optimizer.param_groups],
        "sched": dict(sched.state_dict()),
        "loader": loader.state_dict(),
    }


def _assert_unchanged(before, after):
    assert after["values"].keys() == before["values"].keys()
    for k, v in before["values"].items():
        np.testing.assert_array_equal(after["values"][k], v, err_msg=k)
    for key in ("ids", "optim_ids", "num_steps", "groups", "sched", "loader"):
        assert after[key] == before[key], key


def _rewrite(src, dst, edit_meta=None, edit_arrays=None):
    """Write a copy of checkpoint ``src`` to ``dst`` with its JSON and/or arrays edited."""
    meta, arrays = read_checkpoint(src)
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr("checkpoint.json", json.dumps(meta))
        z.writestr("arrays.npz", buffer.getvalue())


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    """A checkpoint 5 steps into a run (tests only read it)."""
    model, loader, step, sched = _setup()
    _train(step, loader, sched, 5)
    path = tmp_path_factory.mktemp("good") / "good.ckpt"
    save_checkpoint(path, step, scheduler=sched, loader=loader)
    return path


@pytest.fixture
def trained_checkpoint(good_checkpoint):
    """The 5-step checkpoint, and a fresh run (different values) to load it into."""
    model, loader, step, sched = _setup()
    return good_checkpoint, step, sched, loader


def _set(path, value):
    def edit(meta):
        *parents, last = path
        for p in parents:
            meta = meta[p]
        meta[last] = value

    return edit


def _delete(path):
    def edit(meta):
        *parents, last = path
        for p in parents:
            meta = meta[p]
        del meta[last]

    return edit


def _array(key, make):
    def edit(arrays):
        arrays[key] = make(arrays[key])

    return edit


BAD_FIELDS = {
    "num_steps is a string": (_set(["num_steps"], "abc"), None, "num_steps"),
    "num_steps negative": (_set(["num_steps"], -1), None, "num_steps"),
    "num_steps a bool": (_set(["num_steps"], True), None, "num_steps"),
    "version is a string": (_set(["version"], "2"), None, "version"),
    "version too new": (_set(["version"], 2), None, "version"),
    "param_groups empty": (_set(["optimizer", "param_groups"], []), None, "param_groups"),
    "param_groups a dict": (_set(["optimizer", "param_groups"], {}), None, "param_groups"),
    "optimizer null": (_set(["optimizer"], None), None, "optimizer"),
    "optimizer a list": (_set(["optimizer"], []), None, "optimizer"),
    "optimizer of another type": (_set(["optimizer", "type"], "SGD"), None, "SGD"),
    "lr a string": (_set(["optimizer", "param_groups", 0, "lr"], "fast"), None, "lr"),
    "lr negative": (_set(["optimizer", "param_groups", 0, "lr"], -1.0), None, "lr"),
    "lr a huge integer": (_set(["optimizer", "param_groups", 0, "lr"], 10**400), None, "lr"),
    "last_epoch a huge integer": (_set(["scheduler", "state", "last_epoch"], 10**400), None, "last_epoch"),
    "betas out of range": (_set(["optimizer", "param_groups", 0, "betas"], [0.9, 1.5]), None, "betas"),
    "betas not as compiled": (_set(["optimizer", "param_groups", 0, "betas"], [0.8, 0.9]), None, "betas"),
    "unknown hyper-parameter": (_set(["optimizer", "param_groups", 0, "foo"], 1), None, "foo"),
    "scheduler state wrong type": (_set(["scheduler", "state", "last_epoch"], "5"), None, "last_epoch"),
    "scheduler step_size zero": (_set(["scheduler", "state", "step_size"], 0), None, "scheduler"),
    "scheduler state extra key": (_set(["scheduler", "state", "optimizer"], 1), None, "optimizer"),
    "scheduler missing": (_delete(["scheduler"]), None, "scheduler"),
    "loader position negative": (_set(["loader", "position"], -3), None, "position"),
    "loader position past the end": (_set(["loader", "position"], 99), None, "position"),
    "loader epoch a float": (_set(["loader", "epoch"], 1.5), None, "epoch"),
    "extra a list": (_set(["extra"], [1]), None, "extra"),
    "model weight wrong shape": (None, _array("model/fc1.weight", lambda a: a[:, :3]), "fc1.weight"),
    "model weight missing": (None, lambda arrays: arrays.pop("model/fc2.bias"), "fc2.bias"),
    "model weight overflows f32": (
        None,
        _array("model/fc2.weight", lambda a: np.full(a.shape, 1e300)),
        "fc2.weight",
    ),
    "model weight complex": (None, _array("model/fc2.bias", lambda a: a.astype(np.complex64)), "fc2.bias"),
    "optimizer moment wrong shape": (
        None,
        _array("optim/optim.exp_avg.fc1.weight", lambda a: a.reshape(-1)),
        "exp_avg.fc1.weight",
    ),
    "optimizer moment complex": (
        None,
        _array("optim/optim.exp_avg_sq.fc2.bias", lambda a: a.astype(np.complex128)),
        "exp_avg_sq.fc2.bias",
    ),
    "optimizer step float": (None, _array("optim/optim.step", lambda a: a.astype(np.float64)), "optim.step"),
    "optimizer state missing": (None, lambda arrays: arrays.pop("optim/optim.exp_avg.fc2.bias"), "exp_avg"),
    "rng offset float": (None, _array("step/rng.offset", lambda a: a.astype(np.float32)), "rng.offset"),
    "unknown array": (None, lambda arrays: arrays.update({"other/x": np.zeros(2)}), "other/x"),
}
BAD_FIELDS["optimizer state unknown"] = (
    None,
    lambda arrays: arrays.update({"optim/optim.exp_avg.fc9.weight": np.zeros(2, np.float32)}),
    "fc9",
)


@pytest.mark.parametrize("case", list(BAD_FIELDS))
def test_a_bad_field_changes_nothing(trained_checkpoint, tmp_path, case):
    good, step, sched, loader = trained_checkpoint
    edit_meta, edit_arrays, named = BAD_FIELDS[case]
    bad = tmp_path / "bad.ckpt"
    _rewrite(good, bad, edit_meta, edit_arrays)
    before = _snapshot(step, sched, loader)
    with pytest.raises(GraphcError) as err:
        load_checkpoint(bad, step, scheduler=sched, loader=loader)
    assert named in str(err.value)
    assert str(bad) in str(err.value)
    _assert_unchanged(before, _snapshot(step, sched, loader))
    load_checkpoint(good, step, scheduler=sched, loader=loader)  # the good file still loads
    assert step.num_steps == 5


def test_same_kind_cast_loads_in_place(trained_checkpoint, tmp_path):
    good, step, sched, loader = trained_checkpoint
    wide = tmp_path / "wide.ckpt"
    as64 = lambda arrays: arrays.update(  # noqa: E731
        {k: v.astype(np.float64) for k, v in arrays.items() if v.dtype == np.float32}
    )
    _rewrite(good, wide, edit_arrays=as64)
    before = _snapshot(step, sched, loader)
    load_checkpoint(wide, step, scheduler=sched, loader=loader)
    after = _snapshot(step, sched, loader)
    assert after["ids"] == before["ids"] and after["optim_ids"] == before["optim_ids"]  # never rebound
    _, saved = read_checkpoint(good)
    assert saved.keys() <= after["values"].keys()
    for key, value in saved.items():
        np.testing.assert_array_equal(after["values"][key], value, err_msg=key)
        assert after["values"][key].dtype == before["values"][key].dtype


def test_load_state_dict_keeps_the_compiled_arrays():
    """The optimizer API itself refuses a mismatched array instead of detaching its state."""
    model, loader, step, sched = _setup()
    opt = step.optimizer
    state = opt.state_dict()
    name = "optim.exp_avg.fc1.weight"
    held = opt.state[name]
    bad = {**state, "state": {**state["state"], name: np.zeros(3, np.float32)}}
    with pytest.raises(GraphcError, match="exp_avg.fc1.weight"):
        opt.load_state_dict(bad)
    assert opt.state[name] is held
    good = {**state, "state": {**state["state"], name: np.ones(held.shape, np.float64)}}
    opt.load_state_dict(good)
    assert opt.state[name] is held and np.all(held == 1.0)


# ---------------------------------------------------------------------------- the file


def _set_encrypted_flag(data: bytes) -> bytes:
    out = bytearray(data)
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = out.find(signature)
        while at >= 0:
            out[at + flag_at] |= 1
            at = out.find(signature, at + 4)
    return bytes(out)


def test_unreadable_members_are_refused(trained_checkpoint, tmp_path):
    good, step, sched, loader = trained_checkpoint
    before = _snapshot(step, sched, loader)
    encrypted = tmp_path / "encrypted.ckpt"
    encrypted.write_bytes(_set_encrypted_flag(good.read_bytes()))
    with pytest.raises(GraphcError, match="encrypted"):
        load_checkpoint(encrypted, step)
    bzip = tmp_path / "bzip.ckpt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bzip, "w", zipfile.ZIP_BZIP2) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    with pytest.raises(GraphcError, match="compression"):
        load_checkpoint(bzip, step)
    deflated = tmp_path / "deflated.ckpt"  # deflate is fine
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    assert read_checkpoint(deflated)[0]["num_steps"] == 5
    bomb = tmp_path / "bomb.ckpt"  # 2 MiB of zeros deflate to about 2 KiB
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        dst.writestr("checkpoint.json", src.read("checkpoint.json"))
        zeros = io.BytesIO()
        np.savez(zeros, **{"model/fc1.weight": np.zeros(1 << 19, np.float32)})
        dst.writestr("arrays.npz", zeros.getvalue())
    with pytest.raises(GraphcError, match="bomb.ckpt.*inflates"):
        load_checkpoint(bomb, step)
    _assert_unchanged(before, _snapshot(step, sched, loader))


def test_corrupt_and_oversized_files_name_the_file(trained_checkpoint, tmp_path, monkeypatch):
    good, step, sched, loader = trained_checkpoint
    data = good.read_bytes()
    before = _snapshot(step, sched, loader)
    cases = {
        "truncated": data[: len(data) // 2],
        "flipped": data[:200] + bytes([data[200] ^ 0xFF]) + data[201:],
        "empty": b"",
    }
    for name, content in cases.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(GraphcError, match=name):
            load_checkpoint(bad, step, scheduler=sched, loader=loader)
    # a pickled (object) array, and a .npy header that lies about its size
    for name, blob in (("pickled", _npz_with_object_array()), ("lying", _npz_with_short_array())):
        bad = tmp_path / name
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
            dst.writestr("checkpoint.json", src.read("checkpoint.json"))
            dst.writestr("arrays.npz", blob)
        with pytest.raises(GraphcError, match=name):
            load_checkpoint(bad, step)
    not_json = tmp_path / "notjson"
    with zipfile.ZipFile(not_json, "w") as z:
        z.writestr("checkpoint.json", b"\xff{")
        z.writestr("arrays.npz", _empty_npz())
    with pytest.raises(GraphcError, match="notjson.*not valid JSON"):
        load_checkpoint(not_json, step)
    monkeypatch.setattr(checkpoint_file, "MAX_META_BYTES", 100)
    with pytest.raises(GraphcError, match="checkpoint.json holds .* more than the limit of 100"):
        load_checkpoint(good, step)
    monkeypatch.setattr(checkpoint_file, "MAX_FILE_BYTES", 1000)
    with pytest.raises(GraphcError, match="more than the (limit of )?1000"):
        load_checkpoint(good, step)
    _assert_unchanged(before, _snapshot(step, sched, loader))


def _empty_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer)
    return buffer.getvalue()


def _npz_with_object_array() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        with z.open("model/fc1.weight.npy", "w") as f:
            np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def _npz_with_short_array() -> bytes:
    npy = io.BytesIO()
    np.save(npy, np.zeros((4, 4), np.float32))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("model/fc1.weight.npy", npy.getvalue()[:-8])
    return buffer.getvalue()


# ---------------------------------------------------------------------------- temporary files


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_next_save_removes_temporaries_of_killed_saves(tmp_path):
    model, loader, step, sched = _setup()
    dead = _dead_pid()
    stale = tmp_path / f"c.ckpt.graphc-{dead}-ab12_xyz.tmp"
    stale.write_bytes(b"x" * 1000)
    keep = [
        tmp_path / "c.ckpt.tmp",  # not graphc's name pattern
        tmp_path / f"c.ckpt.graphc-{os.getpid()}-ab12_xyz.tmp",  # this process: maybe a save under way
        tmp_path / f"other.ckpt.graphc-{dead}-ab12_xyz.tmp",  # another checkpoint's
        tmp_path / f"c.ckpt.graphc-{dead}-ab12_xyz.tmp.keep",
    ]
    for path in keep:
        path.write_bytes(b"not ours")
    save_checkpoint(tmp_path / "c.ckpt", step)
    assert not stale.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(["c.ckpt"] + [p.name for p in keep])


KILLED_SAVE = """
import os, signal, sys
import numpy as np
import graphc.nn as nn
from graphc import optim
from graphc.checkpoint import save_checkpoint

os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # killed just before the rename
save_checkpoint(sys.argv[1], nn.Linear(3, 2), optimizer=optim.SGD(lr=0.1))
"""


def test_a_killed_save_leaves_no_temporary_file_after_the_next(tmp_path):
    path = tmp_path / "run.ckpt"
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(path)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    leftovers = os.listdir(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].startswith("run.ckpt.graphc-"), leftovers
    model, loader, step, sched = _setup()
    save_checkpoint(path, step)
    assert os.listdir(tmp_path) == ["run.ckpt"]
    assert read_checkpoint(path)[0]["num_steps"] == 0
