"""mlp_train: examples/mlp.py's MLP at 784-512-512-10, ReLU, cross-entropy, Adam lr 1e-3, batch 128."""

from pathlib import Path

import numpy as np

from graphc import functional as F
from graphc import nn
from graphc.modelfile import import_file

mlp = import_file(Path(__file__).resolve().parents[1] / "examples" / "mlp.py")

WHAT = "MLP 784-512-512-10, ReLU (examples/mlp.py), cross-entropy, Adam lr 1e-3"
BATCH = 128
SIZES = (784, 512, 512, 10)
LOSS = "cross_entropy"
OPTIMIZER = ("Adam", {"lr": 1e-3})
TARGETS = [("time / torch eager", "<= 1")]


def model():
    """The graphc MLP."""
    return mlp.build(nn, F, SIZES)


def torch_model():
    """The same MLP in PyTorch."""
    import torch

    return mlp.build(torch.nn, torch.nn.functional, SIZES)


def example_inputs():
    """x [128, 784] float32, standard normal."""
    return (np.random.default_rng(0).standard_normal((BATCH, SIZES[0]), dtype=np.float32),)


def example_labels():
    """Class labels [128] int64."""
    return np.random.default_rng(1).integers(0, SIZES[-1], size=BATCH).astype(np.int64)
