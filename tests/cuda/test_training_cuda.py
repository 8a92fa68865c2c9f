"""compile_train(device="cuda"): the device train step follows the reference backend's trajectory."""

from __future__ import annotations

import numpy as np
import pytest

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


class _TinyCNN(nn.Module):
    """The shape of examples/cnn.py (conv-relu-pool, flatten, linear) at simulator size."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.pool(F.relu(self.conv(x))).flatten(1))


@pytest.mark.parametrize("make, shape", [(_MLP, (4, 5)), (_TinyCNN, (2, 1, 4, 4))])
def test_cuda_train_step_matches_the_cpu_plan(make, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, 3, shape[0]).astype(np.int64)
    results = {}
    for device, backend in (("cpu", None), ("cuda", None)):
        nn.init.manual_seed(0)
        model = make()
        step = compile_train(
            model, F.cross_entropy, optim.Adam(lr=1e-2), x, y, device=device, backend=backend
        )
        losses = [step(x, y) for _ in range(3)]
        step.sync_to_host()
        results[device] = losses, {k: np.array(v) for k, v in model.state_dict().items()}
    np.testing.assert_allclose(results["cuda"][0], results["cpu"][0], rtol=1e-5)
    for k, v in results["cpu"][1].items():
        np.testing.assert_allclose(results["cuda"][1][k], v, rtol=1e-5, atol=1e-6, err_msg=k)
