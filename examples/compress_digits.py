"""Compress an MLP trained on scikit-learn's digits: distillation, pruning and int8 quantization.

    python examples/compress_digits.py

1. trains a teacher MLP (64-128-64-10) with compile_train;
2. distills it into a small student (64-24-10): the frozen teacher runs inside the student's
   compiled train step, the loss is ``F.distillation_loss`` (a student trained on labels alone is
   printed beside it);
3. prunes the teacher: unstructured (``pruning.magnitude``, 70% of weights, global) and
   structured (``pruning.structured``, half of each hidden layer's units, then a short fine-tune);
4. quantizes the teacher to int8 (``quantization.quantize_static`` calibrated on training batches,
   and ``quantize_dynamic``) and saves the plans, comparing file sizes with the float plan.

Prints test accuracies (a held-out fifth of the 1797 images) and sizes. Needs scikit-learn.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

import graphc
import graphc.functional as F
import graphc.nn as nn
from graphc import optim, pruning, quantization
from graphc.data import DataLoader
from graphc.training import fit

BATCH = 64


class MLP(nn.Module):
    """64 pixels -> hidden layers -> 10 classes, ReLU."""

    def __init__(self, *hidden: int) -> None:
        super().__init__()
        sizes = (64, *hidden, 10)
        self.layers = nn.Sequential(*(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])))

    def forward(self, x):
        layers = list(self.layers.children())
        for layer in layers[:-1]:
            x = F.relu(layer(x))
        return layers[-1](x)


class Distill(nn.Module):
    """The student's and the (frozen) teacher's logits, for one compiled train step."""

    def __init__(self, student: MLP, teacher: MLP) -> None:
        super().__init__()
        self.student, self.teacher = student, teacher

    def forward(self, x):
        return self.student(x), self.teacher(x)


def load_digits(seed: int = 0):
    """(train, test) splits: (N, 64) float32 pixels in [0, 1] and int64 labels, 80/20."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        sys.exit("compress_digits needs scikit-learn for the data set: pip install 'graphc[examples]'")
    digits = sk_load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def accuracy(run, x: np.ndarray, y: np.ndarray) -> float:
    """Test accuracy of a compiled plan (or a model, compiled here) on (x, y)."""
    plan = run if isinstance(run, graphc.Plan) else graphc.compile(run, x)
    return float((np.argmax(plan(x), axis=1) == y).mean())


def train(model, loader, epochs: int, loss=F.cross_entropy, lr: float = 2e-3) -> None:
    """Adam on ``loss(model(x), y)`` for ``epochs`` epochs."""
    step = graphc.compile_train(model, loss, optim.Adam(lr=lr), *loader.example_batch())
    fit(step, loader, epochs=epochs, verbose=False)


def n_params(model) -> int:
    """Number of parameter elements."""
    return sum(int(np.size(p)) for p in model.parameters())


def main() -> int:
    """Run the four stages and print what each gives."""
    nn.init.manual_seed(0)
    (x_train, y_train), (x_test, y_test) = load_digits()
    loader = DataLoader((x_train, y_train), batch_size=BATCH, shuffle=True, seed=0, drop_last=True)

    teacher = MLP(128, 64)
    train(teacher, loader, epochs=30)
    print(
        f"teacher 64-128-64-10 ({n_params(teacher)} params): accuracy {accuracy(teacher, x_test, y_test):.2%}"
    )

    # Distillation: the teacher frozen inside the student's train step.
    alone, student = MLP(24), MLP(24)
    student.load_state_dict(alone.state_dict())
    train(alone, loader, epochs=30)
    teacher.requires_grad_(False)

    def kd_loss(out, target):
        return F.distillation_loss(out[0], out[1], target, temperature=4.0, alpha=0.9)

    train(Distill(student, teacher), loader, epochs=30, loss=kd_loss)
    teacher.requires_grad_(True)
    print(
        f"student 64-24-10 ({n_params(student)} params): labels only {accuracy(alone, x_test, y_test):.2%}, "
        f"distilled {accuracy(student, x_test, y_test):.2%}"
    )

    # Pruning.
    sparse = MLP(128, 64)
    sparse.load_state_dict(teacher.state_dict())
    masks = pruning.magnitude(sparse, 0.7, scope="global")
    kept = sum(int(m.sum()) for m in masks.values()) / sum(m.size for m in masks.values())
    acc = accuracy(sparse, x_test, y_test)
    print(f"magnitude pruning (global, 70%): {kept:.0%} of weights kept, accuracy {acc:.2%}")
    small = pruning.structured(teacher, 0.5, x_test[:BATCH])
    before = accuracy(small, x_test, y_test)
    train(small, loader, epochs=5, lr=1e-3)
    shapes = [tuple(layer.weight.shape) for layer in small.layers.children()]
    print(
        f"structured pruning (50% of hidden units): {shapes}, {n_params(small)} params, accuracy "
        f"{before:.2%} -> {accuracy(small, x_test, y_test):.2%} after a 5-epoch fine-tune"
    )

    # int8 quantization.
    calibration = [x_train[i : i + BATCH] for i in range(0, 8 * BATCH, BATCH)]
    float_plan = graphc.compile(teacher, x_test)
    static = quantization.quantize_static(teacher, calibration, x_test, per_channel=True)
    dynamic = quantization.quantize_dynamic(teacher, x_test)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for name, plan in (("float", float_plan), ("static int8", static), ("dynamic int8", dynamic)):
            path = os.path.join(tmp, f"{name.replace(' ', '_')}.gcp")
            plan.save(path)
            sizes[name] = os.path.getsize(path)
    for name, plan in (("float", float_plan), ("static int8", static), ("dynamic int8", dynamic)):
        agree = float((np.argmax(plan(x_test), 1) == np.argmax(float_plan(x_test), 1)).mean())
        print(
            f"{name:>12} plan: accuracy {accuracy(plan, x_test, y_test):.2%}, same class as float on "
            f"{agree:.1%}, plan file {sizes[name] / 1024:.1f} KiB, kernels {plan.graph.op_counts()}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
