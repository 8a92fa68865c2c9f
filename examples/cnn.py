"""The benchmark CNN (cnn_train): conv3x3(3->32, pad 1)-ReLU-maxpool2-conv3x3(32->64, pad 1)-ReLU-
maxpool2-Flatten-Linear(4096->10) on 3x32x32 images, batch 32.

``build(nn)`` is the one definition: an nn.Sequential, so the same code with ``torch.nn`` builds a
twin whose state_dict loads unchanged: keys 0.weight, 0.bias (conv1), 3.weight, 3.bias (conv2),
7.weight, 7.bias (fc).
"""

import numpy as np

from graphc import nn


def build(nn):
    """The CNN in the library whose ``nn`` is given (graphc.nn or torch.nn)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 10),
    )


def model():
    """The CNN."""
    return build(nn)


def example_inputs():
    """Images [32, 3, 32, 32] float32."""
    return (np.random.default_rng(0).random((32, 3, 32, 32), dtype=np.float32),)


def example_labels():
    """Class labels [32] int64 for training examples."""
    return np.random.default_rng(1).integers(0, 10, size=32).astype(np.int64)


def torch_model():
    """The same network in PyTorch (same state_dict keys)."""
    import torch

    return build(torch.nn)
