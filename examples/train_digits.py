"""Train an MLP and a small CNN on scikit-learn's bundled digits (8x8 images) with graphc.

    python examples/train_digits.py            # both models
    python examples/train_digits.py --model cnn --epochs 20
    mpiexec -n 2 python examples/train_digits.py --distributed   # data parallel over MPI

Both reach at least 95% accuracy on a held-out fifth of the 1797 images. Each train step is one
compiled graph (forward, backward and the optimizer's update); evaluation runs a compiled
inference plan that shares the model's parameters. As a MODEL for the CLI (``graphc compile
examples/train_digits.py``) the file gives the CNN and a batch of 64 images.

``--distributed`` (under ``mpiexec -n N``; ``pip install graphc[mpi]``): every rank trains on its
own shard of each epoch (``DistributedSampler``) with a batch of 64, gradients averaged over the
ranks (a global batch of 64 N); rank 0 prints, evaluation counts every rank's shard of the test
set. ``--checkpoint PATH`` saves after each epoch (rank 0 writes) and resumes from PATH when it
exists (every rank reads it).

Needs scikit-learn (``pip install graphc[examples]``) for the data set only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np

import graphc.functional as F
import graphc.nn as nn
from graphc import optim
from graphc.data import DataLoader, DistributedSampler
from graphc.training import compile_train, evaluate, fit

BATCH = 64


class MLP(nn.Module):
    """64 pixels -> 128 -> 64 -> 10 classes, ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 128)
        self.fc2 = nn.Linear(128, 64)
        self.out = nn.Linear(64, 10)

    def forward(self, x):
        x = x.reshape(x.shape[0], 64)
        return self.out(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNN(nn.Module):
    """The benchmark's CNN adapted to 1x8x8: conv3x3(1->32)-ReLU-pool2-conv3x3(32->64)-ReLU-pool2-Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(64 * 2 * 2, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))  # 32 x 4 x 4
        x = self.pool(F.relu(self.conv2(x)))  # 64 x 2 x 2
        return self.fc(x.flatten(1))


def model() -> nn.Module:
    """The CNN (for ``graphc compile examples/train_digits.py``)."""
    return CNN()


def example_inputs() -> tuple[np.ndarray]:
    """A batch of 64 images, 1x8x8, float32."""
    return (np.random.default_rng(0).random((BATCH, 1, 8, 8), dtype=np.float32),)


def load_digits(seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train, test) splits of the digits as ((N, 1, 8, 8) float32 in [0, 1], int64 labels), 80/20."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        sys.exit("train_digits needs scikit-learn for the data set: pip install 'graphc[examples]'")
    digits = sk_load_digits()
    x = (digits.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    return (x[train], y[train]), (x[test], y[test])


CONFIGS = {
    # name: (model class, optimizer factory, epochs)
    "mlp": (MLP, lambda: optim.Adam(lr=2e-3), 30),
    "cnn": (CNN, lambda: optim.SGD(lr=0.05, momentum=0.9), 20),
}


def train(
    name: str,
    epochs: int | None = None,
    backend: str | None = None,
    seed: int = 0,
    verbose: bool = True,
    distributed: bool = False,
    checkpoint: str | None = None,
) -> float:
    """Train one model on the digits; return its test accuracy.

    ``distributed``: this process is one rank of an MPI job (see the module docstring);
    ``checkpoint``: save after every epoch, and resume from the file when it exists.
    """
    make_model, make_optimizer, default_epochs = CONFIGS[name]
    ranks = None
    if distributed:
        import graphc.distributed as dist

        dist.init()
        ranks = (dist.rank(), dist.world_size())
    lead = ranks is None or ranks[0] == 0  # the rank that prints
    nn.init.manual_seed(seed)  # the same initial values on every rank
    (x_train, y_train), (x_test, y_test) = load_digits(seed)
    train_sampler = DistributedSampler(drop_last=True) if distributed else None
    test_sampler = DistributedSampler() if distributed else None
    train_loader = DataLoader(
        (x_train, y_train), batch_size=BATCH, shuffle=True, seed=seed, drop_last=True, sampler=train_sampler
    )
    test_loader = DataLoader((x_test, y_test), batch_size=BATCH, sampler=test_sampler)
    net = make_model()
    opt = make_optimizer()
    epochs = epochs or default_epochs
    start = time.perf_counter()
    step = compile_train(
        net, F.cross_entropy, opt, *train_loader.example_batch(), backend=backend, distributed=distributed
    )
    if verbose and lead:
        print(f"{name}: compiled the train step in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    if checkpoint is None:
        fit(step, train_loader, epochs=epochs, eval_loader=test_loader, scheduler=scheduler, verbose=verbose)
    else:
        _fit_with_checkpoints(
            step, train_loader, test_loader, scheduler, epochs, checkpoint, distributed, verbose
        )
    accuracy = evaluate(step, test_loader)["accuracy"]
    if lead:
        on = f" on {ranks[1]} ranks" if ranks else ""
        print(f"{name}: test accuracy {accuracy:.2%} after {epochs} epochs{on}")
    return accuracy


def _fit_with_checkpoints(
    step: Any,
    train_loader: DataLoader,
    test_loader: DataLoader,
    scheduler: Any,
    epochs: int,
    path: str,
    distributed: bool,
    verbose: bool,
) -> None:
    """fit one epoch at a time, saving after each; resume from ``path`` when it exists."""
    if distributed:
        from graphc.distributed import load_checkpoint, save_checkpoint
    else:
        from graphc import load_checkpoint, save_checkpoint
    state = {"scheduler": scheduler, "loader": train_loader}
    if os.path.exists(path):
        load_checkpoint(path, step, **state)
    while train_loader.epoch < epochs:
        fit(step, train_loader, epochs=1, eval_loader=test_loader, scheduler=scheduler, verbose=verbose)
        save_checkpoint(path, step, **state)


def main(argv: list[str] | None = None) -> int:
    """Command line: train the chosen model(s); exit status 1 if one stays below 95%."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=[*CONFIGS, "both"], default="both")
    parser.add_argument("--epochs", type=int, default=None, help="default: 30 (mlp), 20 (cnn)")
    parser.add_argument("--backend", default=None, help="'reference' runs NumPy kernels (no numba)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--distributed", action="store_true", help="data parallel: run under mpiexec -n N")
    parser.add_argument("--checkpoint", default=None, help="save each epoch here; resume from it if present")
    args = parser.parse_args(argv)
    names = list(CONFIGS) if args.model == "both" else [args.model]
    if args.checkpoint and len(names) > 1:
        parser.error("--checkpoint needs one --model")
    results = {
        n: train(n, args.epochs, args.backend, args.seed, not args.quiet, args.distributed, args.checkpoint)
        for n in names
    }
    return 0 if all(acc >= 0.95 for acc in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
