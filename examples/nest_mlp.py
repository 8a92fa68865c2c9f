"""Nested blocks, a shared layer and a constant (non-trainable) weight: the "chimera".

``Sequential(NestMLP(), Linear(16, 20), FixedHiddenMLP(halve=False))``. FixedHiddenMLP holds a constant
random 20x20 weight as a plain NumPy attribute (traced as a const input, not a parameter) and
applies its one Linear twice (one parameter set).
"""

import numpy as np

from graphc import functional as F
from graphc import nn


class FixedHiddenMLP(nn.Module):
    """Linear(20, 20), relu(x @ rand_weight + 1), the same Linear again, halve while |x|.sum() > 1, sum.

    d2l's model as written there: the ``while`` loop decides on tensor values, so it runs in eager
    mode (``FixedHiddenMLP()(x)`` on NumPy arrays, values and ``backward()`` as in PyTorch). A
    trace cannot decide on values it does not have yet, so the chimera that ``graphc.compile``
    takes is built with ``halve=False`` (the loop left out).
    """

    def __init__(self, halve: bool = True):
        super().__init__()
        # A plain array attribute: a constant of the graph, not trained.
        self.rand_weight = np.random.default_rng(2).random((20, 20), dtype=np.float32)
        self.linear = nn.Linear(20, 20)
        self.halve = halve

    def forward(self, x):
        x = self.linear(x)
        x = F.relu(x @ self.rand_weight + 1)
        x = self.linear(x)  # the same layer again: shared parameters
        while self.halve and x.abs().sum() > 1:  # Python control flow on values: eager mode only
            x /= 2
        return x.sum()


class NestMLP(nn.Module):
    """A Sequential inside a Module: Linear(20, 64)-ReLU-Linear(64, 32)-ReLU, then Linear(32, 16)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
        self.linear = nn.Linear(32, 16)

    def forward(self, x):
        return self.linear(self.net(x))


def model():
    """The chimera."""
    return nn.Sequential(NestMLP(), nn.Linear(16, 20), FixedHiddenMLP(halve=False))


def example_inputs():
    """x [2, 20] float32."""
    return (np.random.default_rng(0).random((2, 20), dtype=np.float32),)
