"""Eager ``optimizer.step()`` runs its update graph as a compiled step list
(``graphc.optim.eager_step._run_steps``): the results must be ``kernels.reference.execute``'s,
bit for bit, for every optimizer and option, and follow torch's optimizers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphc import GraphcError, nn, optim
from graphc.kernels.reference import execute
from graphc.optim import eager_step

OPTIMIZERS = [
    (optim.SGD, torch.optim.SGD, {"lr": 0.1}),
    (optim.SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    (optim.SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    (optim.Adam, torch.optim.Adam, {"lr": 0.01}),
    (optim.Adam, torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    (optim.AdamW, torch.optim.AdamW, {"lr": 0.01}),
]


def _train(make, kwargs, steps=3):
    rng = np.random.default_rng(0)
    params = [nn.Parameter(rng.standard_normal(s).astype(np.float32)) for s in [(3, 4), (4,)]]
    opt = make(params, **kwargs)
    grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in params] for _ in range(steps)]
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.copy()
        opt.step()
    return [np.array(p) for p in params], grads


@pytest.mark.parametrize("make,_t,kwargs", OPTIMIZERS)
def test_compiled_step_is_executes_bit_for_bit(make, _t, kwargs, monkeypatch):
    used = []
    real = eager_step._run_steps
    monkeypatch.setattr(eager_step, "_run_steps", lambda *a: used.append(1) or real(*a))
    fast, _ = _train(make, kwargs)
    assert used, "the compiled steps did not run"
    monkeypatch.setattr(eager_step, "_run_steps", lambda graph, steps, feeds: execute(graph, feeds))
    slow, _ = _train(make, kwargs)
    for a, b in zip(fast, slow):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("make,torch_make,kwargs", OPTIMIZERS)
def test_compiled_step_follows_torch(make, torch_make, kwargs):
    ours, grads = _train(make, kwargs)
    rng = np.random.default_rng(0)
    tparams = [
        torch.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True) for s in [(3, 4), (4,)]
    ]
    topt = torch_make(tparams, **kwargs)
    for gs in grads:
        for p, g in zip(tparams, gs):
            p.grad = torch.tensor(g)
        topt.step()
    for a, t in zip(ours, tparams):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_a_grad_of_the_wrong_shape_is_named():
    p = nn.Parameter(np.zeros((2, 2), np.float32))
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.zeros((3,), np.float32)
    with pytest.raises(GraphcError, match="parameter 0 has shape"):
        opt.step()
