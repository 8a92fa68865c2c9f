"""backward()'s cached program (graphc/eager_backward.py): flattened once per recorded structure,
its constants computed once; every later backward() through it gives the gradients a fresh
program gives, bit for bit, and PyTorch's."""

from __future__ import annotations

import numpy as np
import torch

import graphc.functional as F
from graphc import eager_backward, eager_fast, nn


def _grads(fresh: bool, steps: int = 3):
    nn.init.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    rng = np.random.default_rng(0)
    out = []
    for _ in range(steps):
        x = rng.standard_normal((6, 5)).astype(np.float32)
        y = rng.integers(0, 3, 6)
        if fresh:
            eager_backward._PROGRAMS.clear()
        for p in model.parameters():
            p.grad = None
        F.cross_entropy(model(x), y).backward()
        out.append([p.grad.copy() for p in model.parameters()])
    return out, model


def test_a_reused_program_gives_a_fresh_programs_gradients():
    eager_backward._PROGRAMS.clear()
    reused, _ = _grads(False)
    assert len(eager_backward._PROGRAMS) == 1
    (program,) = eager_backward._PROGRAMS.values()
    assert program.plan is not None and program.consts  # flattened, its constants made once
    assert all(not arr.flags.writeable for _, arr in program.consts)
    fresh, _ = _grads(True)
    for a_step, b_step in zip(reused, fresh):
        for a, b in zip(a_step, b_step):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_reused_program_matches_torch():
    reused, model = _grads(False, steps=1)
    nn.init.manual_seed(0)
    fresh = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    twin.load_state_dict({k: torch.tensor(np.array(v)) for k, v in fresh.state_dict().items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(y)).backward()
    for ours, p in zip(reused[0], twin.parameters()):
        np.testing.assert_allclose(ours, p.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_direct_numpy_calls_give_the_kernels_gradients(monkeypatch):
    """The plan calls a binary/unary op's NumPy function (a reduction's ufunc) directly where its
    reference kernel is that function's wrapper: the gradients are the kernels' own, bit for bit."""
    eager_backward._PROGRAMS.clear()
    direct, _ = _grads(False)
    (program,) = eager_backward._PROGRAMS.values()
    modes = {step[3] for step in program.plan}
    assert eager_backward._UFUNC2 in modes and eager_backward._UFUNC1 in modes
    eager_backward._PROGRAMS.clear()
    monkeypatch.setattr(eager_backward, "_wraps", lambda *a: False)
    monkeypatch.setattr(eager_fast, "direct_reduce", lambda *a: None)  # the reductions' kernels too
    kernels, _ = _grads(False)
    (program,) = eager_backward._PROGRAMS.values()
    assert not {eager_backward._UFUNC1, eager_backward._UFUNC2} & {step[3] for step in program.plan}
    for a_step, b_step in zip(direct, kernels):
        for a, b in zip(a_step, b_step):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
