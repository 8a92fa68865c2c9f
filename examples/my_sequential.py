"""A hand-written Sequential: a Module that keeps its children in order and applies them in turn."""

import numpy as np

from graphc import nn


class MySequential(nn.Module):
    """Children registered in ``_modules`` under "0", "1", ... like nn.Sequential."""

    def __init__(self, *args):
        super().__init__()
        for idx, module in enumerate(args):
            self._modules[str(idx)] = module

    def forward(self, x):
        for block in self._modules.values():
            x = block(x)
        return x


def model():
    """MySequential(Linear(20, 256), ReLU(), Linear(256, 10))."""
    return MySequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10))


def example_inputs():
    """x [2, 20] float32."""
    return (np.random.default_rng(0).random((2, 20), dtype=np.float32),)
