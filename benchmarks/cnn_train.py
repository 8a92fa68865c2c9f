"""cnn_train: examples/cnn.py's CNN on 3x32x32 images, cross-entropy, SGD momentum 0.9, batch 32."""

from pathlib import Path

import numpy as np

from graphc import nn
from graphc.modelfile import import_file

cnn = import_file(Path(__file__).resolve().parents[1] / "examples" / "cnn.py")

WHAT = "conv3x3(3→32)-ReLU-pool-conv3x3(32→64)-ReLU-pool-Linear(4096→10) (examples/cnn.py), SGD momentum 0.9"
BATCH = 32
LOSS = "cross_entropy"
OPTIMIZER = ("SGD", {"lr": 0.01, "momentum": 0.9})
TARGETS = [("time / torch eager", "<= 1")]


def model():
    """The graphc CNN."""
    return cnn.build(nn)


def torch_model():
    """The same CNN in PyTorch."""
    import torch

    return cnn.build(torch.nn)


def example_inputs():
    """Images [32, 3, 32, 32] float32, standard normal."""
    return (np.random.default_rng(0).standard_normal((BATCH, 3, 32, 32), dtype=np.float32),)


def example_labels():
    """Class labels [32] int64."""
    return np.random.default_rng(1).integers(0, 10, size=BATCH).astype(np.int64)
