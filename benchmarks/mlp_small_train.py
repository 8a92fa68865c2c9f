"""mlp_small_train: examples/mlp.py's MLP 20-256-10, ReLU, cross-entropy, SGD lr 0.01, batch 64."""

from pathlib import Path

import numpy as np

from graphc import functional as F
from graphc import nn
from graphc.modelfile import import_file

mlp = import_file(Path(__file__).resolve().parents[1] / "examples" / "mlp.py")

WHAT = "MLP 20-256-10, ReLU (examples/mlp.py), cross-entropy, SGD lr 0.01"
BATCH = 64
SIZES = (20, 256, 10)
LOSS = "cross_entropy"
OPTIMIZER = ("SGD", {"lr": 0.01})
TARGETS = [("time / torch eager", "<= 0.333")]


def model():
    """The graphc MLP."""
    return mlp.build(nn, F, SIZES)


def torch_model():
    """The same MLP in PyTorch."""
    import torch

    return mlp.build(torch.nn, torch.nn.functional, SIZES)


def example_inputs():
    """x [64, 20] float32, standard normal."""
    return (np.random.default_rng(0).standard_normal((BATCH, SIZES[0]), dtype=np.float32),)


def example_labels():
    """Class labels [64] int64."""
    return np.random.default_rng(1).integers(0, SIZES[-1], size=BATCH).astype(np.int64)
