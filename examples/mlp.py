"""A two-layer perceptron, 20 -> 256 -> 10 with ReLU, batch 64 (the benchmark's mlp_small_train)."""

import numpy as np

from graphc import functional as F
from graphc import nn


class MLP(nn.Module):
    """Parameter names hidden.weight/bias, out.weight/bias (a torch twin loads its state_dict)."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(20, 256)
        self.out = nn.Linear(256, 10)

    def forward(self, x):
        return self.out(F.relu(self.hidden(x)))


def model():
    """The model to compile."""
    return MLP()


def example_inputs():
    """One batch: x [64, 20] float32."""
    rng = np.random.default_rng(0)
    return (rng.random((64, 20), dtype=np.float32),)


def example_labels():
    """Class labels [64] int64 for training examples."""
    return np.random.default_rng(1).integers(0, 10, size=64).astype(np.int64)


def torch_model():
    """The same network in PyTorch (same state_dict keys), for comparisons."""
    import torch

    class TorchMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = torch.nn.Linear(20, 256)
            self.out = torch.nn.Linear(256, 10)

        def forward(self, x):
            return self.out(torch.relu(self.hidden(x)))

    return TorchMLP()
