"""What the MPI test scripts and tests/test_distributed_mpi.py share: the model, data and step."""

from __future__ import annotations

import numpy as np

import graphc.functional as F
import graphc.nn as nn
from graphc import optim
from graphc.training import compile_train

BATCH = 8  # per rank
STEPS = 20
N_IN, HIDDEN, N_OUT = 12, 32, 5

OPTIMIZERS = {
    "sgd": lambda: optim.SGD(lr=0.1, momentum=0.9),
    "adam": lambda: optim.Adam(lr=1e-2),
}


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(N_IN, HIDDEN)
        self.out = nn.Linear(HIDDEN, N_OUT)

    def forward(self, x):
        return self.out(F.relu(self.hidden(x)))


def model(seed: int = 0) -> MLP:
    """The MLP with the initial values every rank (and the one-process run) starts from."""
    nn.init.manual_seed(seed)
    return MLP()


def batches(ranks: int, steps: int = STEPS) -> list[tuple[np.ndarray, np.ndarray]]:
    """``steps`` global batches of ``ranks * BATCH`` rows (rank r's rows: r*BATCH .. (r+1)*BATCH)."""
    rng = np.random.default_rng(1)
    n = ranks * BATCH
    return [
        (rng.standard_normal((n, N_IN)).astype(np.float32), rng.integers(0, N_OUT, n).astype(np.int64))
        for _ in range(steps)
    ]


def compile_step(net: MLP, optimizer: str, x: np.ndarray, y: np.ndarray, **options):
    """compile_train of ``net`` with mean cross-entropy and the named optimizer."""
    return compile_train(net, F.cross_entropy, OPTIMIZERS[optimizer](), x, y, **options)
