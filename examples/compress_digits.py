"""Compress a CNN trained on scikit-learn's digits: distillation, pruning and int8 quantization.

    python examples/compress_digits.py [--quick]

1. trains a teacher CNN (two 3x3 convs, a max-pool, two linear layers) with compile_train;
2. distillation: for each of 3 seeds, a small student (64-24-10) from the same initial weights
   and the same batches, Adam and number of steps, trained on labels alone and distilled from the
   frozen teacher (``F.distillation_loss``; the teacher runs inside the student's compiled train
   step); prints both means;
3. compresses the teacher and prints one row per variant (test accuracy, plan file size, time of
   one inference call on the test set): the float plan, static int8 (``quantize_static``,
   min-max and entropy calibration), QAT int8 (``prepare_qat`` on the linear layers, a short
   fine-tune, then
   ``convert_qat``), dynamic int8, unstructured pruning (``pruning.magnitude``, 70% of weights,
   global, masks kept through a short fine-tune) and structured pruning (``pruning.structured``,
   half of each conv's channels and of the hidden units, then a short fine-tune).

Test accuracies use a held-out fifth of the 1797 images. ``--quick`` trains for a few epochs
only (for the tests). Needs scikit-learn.

On the distillation setting: the teacher is a small CNN (99.4% on the test set); the student an
MLP with one hidden layer of 24 units. Temperature, alpha and the student's epochs were chosen on
a validation split (the last fifth of the training set, never the test set), mean of 3 seeds,
against the student trained alone for as many epochs: at 30 epochs every setting tried was below
the student alone (alone 95.0%; (T, alpha) = (2, .5) 93.8%, (4, .5) 92.9%, (4, .9) 92.9%, (8, .5)
93.1%, (8, .9) 92.7%, (16, .9) 92.4%: soft targets train more slowly), at 100 epochs alone 96.4%,
(2, .5) 95.7%, (4, .7) 97.0%, (4, .9) 96.8%. So T=4, alpha=0.7, 100 epochs. With alpha=0 the
distilled student's weights equal the student's alone bit for bit (same start, batches and steps),
so the comparison is fair.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time

import numpy as np

import graphc
import graphc.functional as F
import graphc.nn as nn
from graphc import optim, pruning, quantization
from graphc.data import DataLoader
from graphc.training import fit

BATCH = 64
SEEDS = (0, 1, 2)
TEMPERATURE, ALPHA = 4.0, 0.7  # the best on a validation split, see the module docstring


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


class CNN(nn.Module):
    """The teacher: the 8x8 image through two 3x3 convs (32, 64 channels), a 2x2 max-pool and a
    128-unit hidden layer, ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        h = F.relu(self.conv1(x.reshape(-1, 1, 8, 8)))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return self.fc2(F.relu(self.fc1(h.flatten(1))))


class Distill(nn.Module):
    """The student's and the (frozen) teacher's logits, for one compiled train step."""

    def __init__(self, student: MLP, teacher: CNN) -> None:
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


def train(model, loader, epochs: int, loss=F.cross_entropy, lr: float = 2e-3, after_step=None) -> None:
    """Adam on ``loss(model(x), y)`` for ``epochs`` epochs (``after_step()`` after each step)."""
    step = graphc.compile_train(model, loss, optim.Adam(lr=lr), *loader.example_batch())
    if after_step is None:
        fit(step, loader, epochs=epochs, verbose=False)
        return
    for _ in range(epochs):
        for x, y in loader:
            step(x, y)
            after_step()


def n_params(model) -> int:
    """Number of parameter elements."""
    return sum(int(np.size(p)) for p in model.parameters())


def call_time(plan, x: np.ndarray, repeats: int = 20) -> float:
    """The best of ``repeats`` wall times of one ``plan(x)`` call, in seconds."""
    plan(x)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        plan(x)
        best = min(best, time.perf_counter() - start)
    return best


def plan_bytes(plan, tmp: str, name: str) -> int:
    """The size of the plan's file."""
    path = os.path.join(tmp, f"{name}.gcp")
    plan.save(path)
    return os.path.getsize(path)


def distill(teacher: CNN, data, epochs: int) -> dict[str, list[float]]:
    """Test accuracies of the student trained alone and distilled, one per seed: same initial
    weights, same batches, same optimizer and steps."""
    (x_train, y_train), (x_test, y_test) = data
    out: dict[str, list[float]] = {"alone": [], "distilled": []}
    teacher.requires_grad_(False)

    def kd_loss(logits, target):
        return F.distillation_loss(logits[0], logits[1], target, temperature=TEMPERATURE, alpha=ALPHA)

    try:
        for seed in SEEDS:
            nn.init.manual_seed(100 + seed)
            alone, student = MLP(24), MLP(24)
            student.load_state_dict(alone.state_dict())

            def batches(seed=seed):
                return DataLoader(
                    (x_train, y_train), batch_size=BATCH, shuffle=True, seed=seed, drop_last=True
                )

            train(alone, batches(), epochs)
            train(Distill(student, teacher), batches(), epochs, loss=kd_loss)
            out["alone"].append(accuracy(alone, x_test, y_test))
            out["distilled"].append(accuracy(student, x_test, y_test))
            print(
                f"  seed {seed}: labels only {out['alone'][-1]:.2%}, distilled {out['distilled'][-1]:.2%}",
                flush=True,
            )
    finally:
        teacher.requires_grad_(True)
    return out


def compress(teacher: CNN, data, loader, epochs: int) -> dict[str, tuple[float, int, float]]:
    """{variant: (test accuracy, plan file bytes, seconds per inference call on the test set)}."""
    (x_train, _), (x_test, y_test) = data
    plans = {"float": graphc.compile(teacher, x_test)}
    calibration = [x_train[i : i + BATCH] for i in range(0, 8 * BATCH, BATCH)]
    for method in ("minmax", "entropy"):
        plans[f"static int8 ({method})"] = quantization.quantize_static(
            teacher, calibration, x_test, per_channel=True, method=method
        )
    qat = graphc.prepare_qat(teacher)
    train(qat, loader, epochs, lr=2e-4)
    # QAT covers the Linear layers; the convolutions' activation ranges come from calibration
    plans["QAT int8 (+ calibrated convs)"] = graphc.convert_qat(qat, x_test, calibration_batches=calibration)
    plans["dynamic int8"] = quantization.quantize_dynamic(teacher, x_test)

    sparse = copy.deepcopy(teacher)
    masks = pruning.magnitude(sparse, 0.7, scope="global")
    train(sparse, loader, epochs, lr=5e-4, after_step=lambda: pruning.apply_masks(sparse, masks))
    plans["pruned 70% (unstructured)"] = graphc.compile(sparse, x_test)
    small = pruning.structured(teacher, 0.5, x_test[:BATCH])
    train(small, loader, epochs, lr=1e-3)
    kept = "-".join(str(small.__getattr__(name).weight.shape[0]) for name in ("conv1", "conv2", "fc1"))
    plans[f"pruned 50% channels/units {kept}"] = graphc.compile(small, x_test)

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, plan) in enumerate(plans.items()):
            rows[name] = (
                accuracy(plan, x_test, y_test),
                plan_bytes(plan, tmp, str(i)),
                call_time(plan, x_test),
            )
    return rows


def run(quick: bool = False) -> dict:
    """Train, distill and compress; print and return what each stage gives."""
    epochs = 3 if quick else 30
    student_epochs = 3 if quick else 100
    tune = 1 if quick else 5
    nn.init.manual_seed(0)
    data = load_digits()
    (x_train, y_train), (x_test, y_test) = data
    loader = DataLoader((x_train, y_train), batch_size=BATCH, shuffle=True, seed=0, drop_last=True)

    teacher = CNN()
    train(teacher, loader, epochs=epochs)
    print(
        f"teacher CNN conv32-conv64-pool-128-10 ({n_params(teacher)} params): "
        f"accuracy {accuracy(teacher, x_test, y_test):.2%}"
    )
    print(
        f"student MLP 64-24-10 ({n_params(MLP(24))} params), {student_epochs} epochs, Adam, "
        f"distillation T={TEMPERATURE}, alpha={ALPHA}:"
    )
    students = distill(teacher, data, student_epochs)
    means = {k: float(np.mean(v)) for k, v in students.items()}
    print(
        f"  mean of {len(SEEDS)} seeds: labels only {means['alone']:.2%}, distilled {means['distilled']:.2%} "
        f"({'distillation helps' if means['distilled'] > means['alone'] else 'distillation does not help'})"
    )

    rows = compress(teacher, data, loader, tune)
    print(f"{'teacher variant':>34} {'accuracy':>9} {'plan file':>10} {'call':>9}")
    for name, (acc, size, seconds) in rows.items():
        print(f"{name:>34} {acc:>9.2%} {size / 1024:>6.1f} KiB {seconds * 1e3:>6.2f} ms")
    return {"students": students, "means": means, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--quick`` for a few epochs only."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few epochs only (for the tests)")
    args = parser.parse_args(argv)
    run(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
