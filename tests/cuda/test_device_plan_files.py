"""A device plan saves like a host plan and loads back onto the device (simulator)."""

import numpy as np

import graphc
from graphc import functional as F
from graphc import nn
from graphc.runtime import load_plan


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)

    def forward(self, x):
        return F.softmax(F.relu(self.lin(x)), dim=-1)


def test_device_plan_round_trips_through_a_file(tmp_path):
    graphc.manual_seed(0)
    model = Tiny()
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    plan = graphc.compile(model, x, device="cuda")
    expected = graphc.compile(model, x, backend="reference")(x)
    np.testing.assert_allclose(plan(x), expected, rtol=1e-5, atol=1e-6)
    path = tmp_path / "tiny.gcp"
    plan.save(str(path))
    loaded = load_plan(str(path))
    assert loaded.backend == "cuda"
    np.testing.assert_allclose(loaded(x), expected, rtol=1e-5, atol=1e-6)
