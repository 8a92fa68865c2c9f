"""A perceptron with ReLU between Linear layers: 20 -> 256 -> 10, batch 64 (the benchmark's
mlp_small_train; benchmarks/mlp_train.py builds the 784-512-512-10 one from the same code).

``build(nn, F, sizes)`` is the one definition: with graphc's ``nn``/``functional`` it makes the
graphc model, with ``torch.nn``/``torch.nn.functional`` its PyTorch twin, whose state_dict has the
same keys (hidden.weight/bias, hidden2.*, ..., out.weight/bias).
"""

import numpy as np

from graphc import functional as F
from graphc import nn

SIZES = (20, 256, 10)


def build(nn, F, sizes=SIZES):
    """The MLP in the library whose ``nn`` and functional ``F`` are given."""
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least an input and an output size, got {sizes}")
    names = ["hidden", *(f"hidden{i}" for i in range(2, len(sizes) - 1))][: len(sizes) - 2] + ["out"]

    class MLP(nn.Module):
        """Linear layers named hidden, hidden2, ..., out; ReLU between them."""

        def __init__(self):
            super().__init__()
            for name, n_in, n_out in zip(names, sizes[:-1], sizes[1:]):
                setattr(self, name, nn.Linear(n_in, n_out))

        def forward(self, x):
            for name in names[:-1]:
                x = F.relu(getattr(self, name)(x))
            return getattr(self, names[-1])(x)

    return MLP()


def model():
    """The model to compile."""
    return build(nn, F)


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

    return build(torch.nn, torch.nn.functional)
