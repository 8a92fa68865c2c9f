"""Nested blocks, a shared layer and a constant (non-trainable) weight: the "chimera".

``Sequential(NestMLP(), Linear(16, 20), FixedHiddenMLP())``. FixedHiddenMLP holds a constant
random 20x20 weight as a plain NumPy attribute (traced as a const input, not a parameter) and
applies its one Linear twice (one parameter set).
"""

import numpy as np

from graphc import functional as F
from graphc import nn


class FixedHiddenMLP(nn.Module):
    """Linear(20, 20), then relu(x @ rand_weight + 1), then the same Linear again, then sum."""

    def __init__(self):
        super().__init__()
        # A plain array attribute: a constant of the graph, not trained.
        self.rand_weight = np.random.default_rng(2).random((20, 20), dtype=np.float32)
        self.linear = nn.Linear(20, 20)

    def forward(self, x):
        x = self.linear(x)
        x = F.relu(x @ self.rand_weight + 1)
        x = self.linear(x)  # the same layer again: shared parameters
        # The original halves x while x.abs().sum() > 1; that data-dependent while loop needs
        # graphc's control-flow ops (while_loop, to come), so it is left out here.
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
    return nn.Sequential(NestMLP(), nn.Linear(16, 20), FixedHiddenMLP())


def example_inputs():
    """x [2, 20] float32."""
    return (np.random.default_rng(0).random((2, 20), dtype=np.float32),)
