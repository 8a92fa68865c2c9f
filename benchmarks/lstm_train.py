"""lstm_train: nn.LSTM (input 64, hidden 256, batch_first) + Linear(256 -> 10) on the last step,
cross-entropy, Adam lr 1e-3, batch 32, T=64 (``lstm_train_long``: T=512).

The LSTM is one ``graphc.scan`` per layer, whose body is compiled once: compiling the T=512 step
takes about as long as the T=64 one (graphc's target: within 1.2x; the suite's compile column
also counts the first step, which is 8x longer at T=512). At T=512 the backward's cotangents
decay through the denormal range (graphc's loops flush them to zero; torch eager slows down
there: ~4 s a step here against ~0.7 s for graphc).
"""

import os

import numpy as np

from graphc import functional as F
from graphc import nn

WHAT = "nn.LSTM(64 -> 256) + Linear(256 -> 10) on the last step, cross-entropy, Adam lr 1e-3, T=64"
BATCH = 32
STEPS = int(os.environ.get("GRAPHC_LSTM_STEPS", "64"))  # lstm_train_long.py sets 512
FEATURES, HIDDEN, CLASSES = 64, 256, 10
LOSS = "cross_entropy"
OPTIMIZER = ("Adam", {"lr": 1e-3})
TARGETS = [("time / torch eager", "<= 1")]


def build(nn, F):
    """The model in the library whose ``nn`` and functional ``F`` are given (graphc's or torch's)."""

    class LSTMClassifier(nn.Module):
        """An LSTM over the sequence, then a Linear layer on its last output."""

        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(FEATURES, HIDDEN, batch_first=True)
            self.head = nn.Linear(HIDDEN, CLASSES)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[:, -1])

    return LSTMClassifier()


def model():
    """The graphc model."""
    return build(nn, F)


def torch_model():
    """The same model in PyTorch."""
    import torch

    return build(torch.nn, torch.nn.functional)


def example_inputs():
    """x [32, T, 64] float32, standard normal."""
    return (np.random.default_rng(0).standard_normal((BATCH, STEPS, FEATURES), dtype=np.float32),)


def example_labels():
    """Class labels [32] int64."""
    return np.random.default_rng(1).integers(0, CLASSES, size=BATCH).astype(np.int64)
