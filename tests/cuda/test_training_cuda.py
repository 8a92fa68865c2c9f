"""compile_train(device="cuda"): the device train step follows the reference backend's trajectory."""

from __future__ import annotations

import numpy as np

import graphc.functional as F
import graphc.nn as nn
from graphc import optim
from graphc.training import compile_train


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(5, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(F.relu(self.hidden(x)))


def test_cuda_train_step_matches_reference():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    y = rng.integers(0, 3, 4).astype(np.int64)
    results = {}
    for device, backend in (("cpu", "reference"), ("cuda", None)):
        nn.init.manual_seed(0)
        model = _MLP()
        step = compile_train(
            model, F.cross_entropy, optim.Adam(lr=1e-2), x, y, device=device, backend=backend
        )
        losses = [step(x, y) for _ in range(3)]
        step.sync_to_host()
        results[device] = losses, {k: np.array(v) for k, v in model.state_dict().items()}
    np.testing.assert_allclose(results["cuda"][0], results["cpu"][0], rtol=1e-5)
    for k, v in results["cpu"][1].items():
        np.testing.assert_allclose(results["cuda"][1][k], v, rtol=1e-5, atol=1e-6, err_msg=k)
