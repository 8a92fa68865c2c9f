"""Checkpoints: atomic files, and a resumed run continues bit-identically."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

import graphc.functional as F
import graphc.nn as nn
from graphc import optim
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
