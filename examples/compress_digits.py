"""Compress a CNN trained on scikit-learn's digits: distillation, pruning and int8 quantization.

    python examples/compress_digits.py [--quick] [--validate]

1. trains a teacher CNN (two 3x3 convs, a max-pool, two linear layers) with compile_train;
2. distillation: for each of 3 seeds, a small student (64-24-10) from the same initial weights
   and the same batches, Adam and number of steps, trained on labels alone and distilled from the
   frozen teacher (``F.distillation_loss``; the teacher runs inside the student's compiled train
   step); every epoch both students see fresh noisy views of the images (``student_batches``),
   and the teacher scores the same views the student sees; prints both means (protocol A: both
   students train on the same labeled images);
3. protocol B, scarce labels (Hinton et al. 2015's transfer set, semi-supervised distillation):
   only the first 10% of the training split keep their labels (L); the rest (U) are inputs only,
   their labels dropped before training (``labeled_split``). A second teacher CNN trains on L
   alone; per seed the student alone trains on L's labels and the distilled student on L (with
   ``F.distillation_loss``) and on U (the teacher's soft targets only, ``alpha=1`` for U's
   batches, in the same compiled train step), same initial weights and Adam (``semi_supervised``);
4. compresses the (protocol A) teacher and prints one row per variant (test accuracy, plan file size, time of
   one inference call on the test set): the float plan, static int8 (``quantize_static``,
   min-max and entropy calibration), QAT int8 (``prepare_qat`` on the conv and linear layers, a
   short fine-tune, then ``convert_qat`` with the ranges observed in training), dynamic int8,
   unstructured pruning (``pruning.magnitude``, 70% of weights,
   global, masks kept through a short fine-tune) and structured pruning (``pruning.structured``,
   half of each conv's channels and of the hidden units, then a short fine-tune).

Test accuracies use a held-out fifth of the 1797 images. ``--quick`` trains for a few epochs
only (for the tests). ``--validate`` trains the teacher and the students on four fifths of the
training split and scores the students on its last fifth (288 images), the split every setting
below was chosen on; it neither compresses nor touches the test split. Needs scikit-learn.

On the distillation setting (protocol A). The student is an MLP with one hidden layer of 24 units (1810
parameters, 84x fewer than the teacher). Temperature, alpha, epochs, student size and the
augmentation were chosen on the validation split only; figures are validation accuracy, mean of
3 seeds, "labels only / distilled", T=4, alpha=0.7, 100 epochs, 24 units unless said. An earlier
round (T, alpha, 30 and 100 epochs, no augmentation) had chosen T=4, alpha=0.7: 96.4 / 97.0.
Augmentation, following Beyer et al. 2022 (the teacher and the student see the same view, drawn
fresh each epoch, and the student trains long):

- shifts of up to one pixel (zero fill) of every image: 88.2 / 95.9 (an MLP this small cannot
  learn the shifted views from labels; the teacher, 53% on shifted views, still guides it), alpha
  0.9: 88.9 / 95.5; a teacher also trained on shifted views (96.5% on them): 88.2 / 86.9;
  shifting 30% of the images: 96.1 / 96.9; 64 units, 50% shifted, noise 0.1: 97.8 / 97.2;
- Gaussian noise (std 0.1) on every pixel: 96.5 / 97.3; std 0.2: 97.0 / 97.1; with noise 0.1:
  alpha 0.9 96.5 / 97.1, T=2 96.5 / 96.3, 150 epochs 97.2 / 97.6;
- no augmentation, 200 epochs: 97.1 / 97.2;
- student size (noise 0.1): 12 units 96.2 / 95.4, 16 units 96.3 / 96.1 (16 units without noise
  96.0 / 95.7), 32 units 97.1 / 96.8 (alpha 0.9: 97.1 / 96.9; without noise 96.5 / 97.1), 64
  units 97.9 / 97.8.

The teacher's own validation accuracy moved from 98.6% to 98.3% between rounds (the code under it
changed); noise 0.1 with the second teacher gives 96.5 / 97.0, the figures from 16 units on and
150 epochs are with the second teacher, the rest with the first. Distillation helped only at 24
units (a smaller student did not benefit more here), most with noise; the best distilled student
was noise 0.1, T=4, alpha=0.7, 150 epochs (97.2 / 97.6 on validation: 96.5 / 97.6, 97.2 / 97.6,
97.9 / 97.6 per seed), the setting used here. Its test result, measured once: labels only 98.9%,
distilled 98.5% (seeds 0, 1, 2: 98.9 / 98.3, 98.6 / 98.9, 99.2 / 98.3), so on the test split
distillation does not beat the student alone: the test split is easier than the validation split
(the student alone makes 4 mistakes in 360), one image is 0.28 points, and the validation gains
(0.3 to 0.8 points, 1 to 2 images of 288) are within that noise. With alpha=0 the distilled
student's weights equal the student's alone bit for bit (same start, batches and steps), so the
comparison is fair.

Protocol B, scarce labels (the way distillation is used in practice). Protocol A gives both
students the same labeled images, and the student alone is already within 2 test images of the
teacher, so distillation has no room to show. Here labels are scarce and inputs are not: of the
1437 training images only the first 10% (144) keep their labels (L); the other 1293 (U) are
inputs only, their labels dropped before any training. A separate teacher CNN trains on L alone
(200 epochs of 32-image batches of fresh views: noise 0.1, half the images shifted by up to a
pixel). Per seed, from the same initial weights and with Adam (lr 2e-3), 32 images a batch, views
with noise 0.1 (the short last batch of L and of U dropped each epoch): the student alone trains
200 epochs on L with its labels (4 batches an epoch, 800 steps); the distilled student 150 epochs
in one compiled step with the frozen teacher inside, L's batches with ``F.distillation_loss``
(T=4, alpha=0.9) and U's (40 an epoch) with the teacher's soft targets only (alpha=1), 6600 steps.
With alpha=0 and no U the distilled student is the student alone bit for bit.

Chosen on validation only (the training split's last fifth, 288 images; L and U cut from its other
1149 images, 10%: 115 + 1034; mean of 3 seeds, "alone / distilled", 24 units, noise 0.1). Teacher
trained on L without augmentation, 100 epochs: 10% labeled: teacher 91.3%, both students 60 epochs
88.8 / 90.9; with an earlier order of the batches, 20%: 92.9 / 94.1, 30%: 94.4 / 95.0, and 20%
with 200 epochs each: 94.8 / 94.3, so the student alone needs longer: at 10%, alone 200 epochs
90.5, 400 epochs 89.7 (200 kept); distilled 60 epochs 91.0 (with a teacher trained on another
batch order, 93.4%). Teacher with views (noise 0.1, half shifted, 200 epochs): 95.5%, distilled 60
epochs 93.1 (all shifted: teacher 95.5%, 92.6; T=2: 93.4; alpha 0.9: 93.3; 64 units: 89.7 / 94.4,
24 units kept as in protocol A); 150 epochs: 94.4 (T=2: 94.3, alpha 0.9: 94.6, chosen; 300 epochs:
94.8, not kept, it doubles the run time). Labeled share at 150 epochs, alpha 0.7: 10%: 90.5 /
94.4, 20% (teacher 98.6%): 94.7 / 96.6, 30% (teacher 97.6%): 95.1 / 97.0; 10% chosen, where the
labels are scarcest and the gain largest. The chosen setting on validation: 90.5 / 94.6 (seeds 0,
1, 2: 91.3 / 94.8, 89.2 / 94.4, 91.0 / 94.4).
Its test result, measured once (the full run, 124 s on 2 shared cores): teacher 97.2%; labels only
94.2%, distilled 95.3% (seeds 0, 1, 2: 94.2 / 94.7, 93.9 / 96.4, 94.4 / 94.7): the distilled
student is ahead on every seed, by 2, 9 and 1 of the 360 test images (4 on average, 1.1 points),
and stays below the teacher. What separates the two students is U seen through the teacher's soft
targets: the student alone never sees U, and both see the same 144 labels.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from collections.abc import Iterator

import numpy as np

import graphc
import graphc.functional as F
import graphc.nn as nn
from graphc import optim, pruning, quantization
from graphc.data import DataLoader
from graphc.training import fit

BATCH = 64
SEEDS = (0, 1, 2)
HIDDEN = 24
TEMPERATURE, ALPHA = 4.0, 0.7  # chosen on a validation split, see the module docstring
NOISE, SHIFT_P = 0.1, 0.0  # the students' augmentation (noise std, share of shifted images), likewise
STUDENT_EPOCHS = 150


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


def augment(
    x: np.ndarray, rng: np.random.Generator, noise: float = NOISE, shift_p: float = SHIFT_P
) -> np.ndarray:
    """A fresh view of each (N, 64) image: with probability ``shift_p`` shifted by up to one pixel
    along each axis (zero fill), then Gaussian noise of standard deviation ``noise`` on every pixel."""
    n = len(x)
    padded = np.zeros((n, 10, 10), np.float32)
    padded[:, 1:9, 1:9] = x.reshape(n, 8, 8)
    dy, dx = rng.integers(0, 3, n), rng.integers(0, 3, n)  # the 8x8 window's corner in the padded image
    still = rng.random(n) >= shift_p
    dy[still], dx[still] = 1, 1
    rows = (dy[:, None] + np.arange(8))[:, :, None]
    cols = (dx[:, None] + np.arange(8))[:, None, :]
    views = padded[np.arange(n)[:, None, None], rows, cols].reshape(n, 64)
    return views + rng.normal(0.0, noise, views.shape).astype(np.float32)


def student_batches(
    x: np.ndarray, y: np.ndarray, seed: int, epochs: int, **views: float
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The students' batches, ``epochs`` epochs of them: each epoch draws fresh views of every image
    (``augment(x, rng, **views)``) and a fresh order from the generator seeded by ``(seed, epoch)``;
    ``BATCH`` images per batch, the last short one dropped. The same arguments give the same batches."""
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch])
        views_e = augment(x, rng, **views)
        order = rng.permutation(len(y))
        for start in range(0, len(y) - BATCH + 1, BATCH):
            index = order[start : start + BATCH]
            yield views_e[index], y[index]


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


def train_pair(
    teacher: CNN,
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    epochs: int,
    hidden: int = HIDDEN,
    temperature: float = TEMPERATURE,
    alpha: float = ALPHA,
    **views: float,
) -> tuple[MLP, MLP]:
    """The student trained alone (cross-entropy on the labels) and the student distilled from the
    frozen ``teacher`` (``F.distillation_loss``, the teacher inside the compiled train step): same
    initial weights (seed ``100 + seed``), the same batches (``student_batches``), Adam and number of
    steps; only the loss differs."""
    nn.init.manual_seed(100 + seed)
    alone, student = MLP(hidden), MLP(hidden)
    student.load_state_dict(alone.state_dict())

    def kd_loss(logits, target):
        return F.distillation_loss(logits[0], logits[1], target, temperature=temperature, alpha=alpha)

    example = (x[:BATCH], y[:BATCH])
    teacher.requires_grad_(False)
    try:
        alone_step = graphc.compile_train(alone, F.cross_entropy, optim.Adam(lr=2e-3), *example)
        kd_step = graphc.compile_train(Distill(student, teacher), kd_loss, optim.Adam(lr=2e-3), *example)
        for xb, yb in student_batches(x, y, seed, epochs, **views):
            alone_step(xb, yb)
            kd_step(xb, yb)
    finally:
        teacher.requires_grad_(True)
    return alone, student


def distill(teacher: CNN, data, epochs: int) -> dict[str, list[float]]:
    """Accuracies on ``data``'s second split of the student trained alone and distilled
    (``train_pair`` on its first split), one per seed."""
    (x_train, y_train), (x_eval, y_eval) = data
    out: dict[str, list[float]] = {"alone": [], "distilled": []}
    for seed in SEEDS:
        alone, student = train_pair(teacher, x_train, y_train, seed, epochs)
        out["alone"].append(accuracy(alone, x_eval, y_eval))
        out["distilled"].append(accuracy(student, x_eval, y_eval))
        print(
            f"  seed {seed}: labels only {out['alone'][-1]:.2%}, distilled {out['distilled'][-1]:.2%}",
            flush=True,
        )
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
    plans["QAT int8"] = graphc.convert_qat(qat, x_test)  # every conv and linear layer trained with fake-quant
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


# -- Protocol B: scarce labels, a transfer set (Hinton et al. 2015; semi-supervised distillation) --

LABELED = 0.1  # share of the training split whose labels are used; chosen on validation, see the docstring
B_BATCH = 32
B_TEACHER_EPOCHS = 200  # the teacher on the labeled part only
B_EPOCHS = 150  # the distilled student: epochs over L and U
B_ALONE_EPOCHS = 200  # the student alone: epochs over L (its own best on validation)
B_TEACHER_NOISE, B_TEACHER_SHIFT = 0.1, 0.5  # the teacher's augmentation (see ``augment``)
B_TEMPERATURE, B_ALPHA = 4.0, 0.9


class Transfer(nn.Module):
    """The student's and the frozen teacher's logits and the batch's flag (1: an unlabeled batch), for
    one compiled train step that serves labeled and unlabeled batches alike."""

    def __init__(self, student: MLP, teacher: CNN) -> None:
        super().__init__()
        self.student, self.teacher = student, teacher

    def forward(self, x, unlabeled):
        return self.student(x), self.teacher(x), unlabeled.sum()


def labeled_split(
    x: np.ndarray, y: np.ndarray, fraction: float
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """The labeled part L, ``(x, y)`` of the first ``round(fraction * len(y))`` images, and the
    unlabeled part U, the other images' pixels only: U's labels are dropped here and never read."""
    cut = int(round(fraction * len(y)))
    if not 0 < cut <= len(y):
        raise graphc.GraphcError(f"compress_digits: labeled fraction {fraction} leaves no labeled images")
    return (x[:cut], y[:cut]), x[cut:]


def transfer_batches(
    x_l: np.ndarray, y_l: np.ndarray, x_u: np.ndarray, seed: int, epochs: int, **views: float
) -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
    """``(x, y, unlabeled)`` batches of ``B_BATCH`` images, ``epochs`` epochs: each epoch the batches of
    fresh views of L (generator ``(seed, epoch, 0)``) and of U (``(seed, epoch, 1)``; ``y`` is a zero
    placeholder) in an order drawn by ``(seed, epoch, 2)``; short last batches dropped. L's batches and
    their order among themselves do not depend on U."""
    placeholder = np.zeros(B_BATCH, np.int64)
    for epoch in range(epochs):
        parts: list[list] = [[], []]
        for k, (x, y) in enumerate(((x_l, y_l), (x_u, None))):
            rng = np.random.default_rng([seed, epoch, k])
            views_k, order = augment(x, rng, **views), rng.permutation(len(x))
            for start in range(0, len(x) - B_BATCH + 1, B_BATCH):
                index = order[start : start + B_BATCH]
                parts[k].append((views_k[index], placeholder if y is None else y[index], y is None))
        # Which slots hold U's batches; L's and U's batches each keep their own order.
        n = len(parts[0]) + len(parts[1])
        is_u = np.zeros(n, bool)
        is_u[np.random.default_rng([seed, epoch, 2]).choice(n, len(parts[1]), replace=False)] = True
        batches = [iter(parts[0]), iter(parts[1])]
        yield from (next(batches[int(u)]) for u in is_u)


def train_transfer(
    teacher: CNN,
    labeled: tuple[np.ndarray, np.ndarray],
    x_u: np.ndarray,
    seed: int,
    epochs: int,
    alone_epochs: int | None = None,
    hidden: int = HIDDEN,
    temperature: float = B_TEMPERATURE,
    alpha: float = B_ALPHA,
    **views: float,
) -> tuple[MLP, MLP]:
    """Protocol B's two students, from the same initial weights (seed ``100 + seed``) with Adam: the
    student alone on L's batches of ``transfer_batches`` for ``alone_epochs`` (default ``epochs``)
    epochs (cross-entropy on the labels), and the distilled student for ``epochs`` epochs on the same
    L batches (``F.distillation_loss``) and on U's batches in between (the teacher's soft targets
    only: ``alpha=1``), one compiled step with the frozen teacher inside. U's labels are never given
    to this function."""
    x_l, y_l = labeled
    nn.init.manual_seed(100 + seed)
    alone, student = MLP(hidden), MLP(hidden)
    student.load_state_dict(alone.state_dict())

    def kd_loss(out, target):
        s, t, unlabeled = out
        with_labels = F.distillation_loss(s, t, target, temperature=temperature, alpha=alpha)
        soft_only = F.distillation_loss(s, t, target, temperature=temperature, alpha=1.0)
        return with_labels * (1.0 - unlabeled) + soft_only * unlabeled

    flag = {False: np.zeros(1, np.float32), True: np.ones(1, np.float32)}
    example = (x_l[:B_BATCH], y_l[:B_BATCH])
    teacher.requires_grad_(False)
    try:
        alone_step = graphc.compile_train(alone, F.cross_entropy, optim.Adam(lr=2e-3), *example)
        kd_step = graphc.compile_train(
            Transfer(student, teacher), kd_loss, optim.Adam(lr=2e-3), example[0], flag[True], example[1]
        )
        for xb, yb, _ in transfer_batches(
            x_l, y_l, x_u[:0], seed, epochs if alone_epochs is None else alone_epochs, **views
        ):
            alone_step(xb, yb)
        for xb, yb, unlabeled in transfer_batches(x_l, y_l, x_u, seed, epochs, **views):
            kd_step(xb, flag[unlabeled], yb)
    finally:
        teacher.requires_grad_(True)
    return alone, student


def train_labeled_teacher(labeled: tuple[np.ndarray, np.ndarray], epochs: int, **views: float) -> CNN:
    """Protocol B's teacher: a fresh CNN (seed 1) trained with Adam on L only, ``epochs`` epochs of
    ``transfer_batches`` (views drawn by ``augment(..., **views)``)."""
    x_l, y_l = labeled
    nn.init.manual_seed(1)
    teacher = CNN()
    step = graphc.compile_train(teacher, F.cross_entropy, optim.Adam(lr=2e-3), x_l[:B_BATCH], y_l[:B_BATCH])
    for xb, yb, _ in transfer_batches(x_l, y_l, x_l[:0], 1000, epochs, **views):
        step(xb, yb)
    return teacher


def semi_supervised(
    train_split: tuple[np.ndarray, np.ndarray],
    eval_split: tuple[np.ndarray, np.ndarray],
    fraction: float = LABELED,
    epochs: int = B_EPOCHS,
    teacher_epochs: int = B_TEACHER_EPOCHS,
    seeds: tuple[int, ...] = SEEDS,
    alone_epochs: int = B_ALONE_EPOCHS,
    teacher_noise: float = B_TEACHER_NOISE,
    teacher_shift: float = B_TEACHER_SHIFT,
    **settings: float,
) -> dict:
    """Protocol B on ``train_split``: the first ``fraction`` of it labeled (L), the rest unlabeled (U);
    a teacher trained on L, then per seed the student alone and distilled (``train_transfer``), scored
    on ``eval_split``. Returns the accuracies and the students' weights per seed."""
    labeled, x_u = labeled_split(*train_split, fraction)
    teacher = train_labeled_teacher(labeled, teacher_epochs, noise=teacher_noise, shift_p=teacher_shift)
    out: dict = {"teacher": accuracy(teacher, *eval_split), "alone": [], "distilled": [], "weights": []}
    n_l, n_u = len(labeled[1]) // B_BATCH, len(x_u) // B_BATCH
    out["steps"] = {"alone": alone_epochs * n_l, "distilled": epochs * (n_l + n_u)}
    for seed in seeds:
        alone, student = train_transfer(teacher, labeled, x_u, seed, epochs, alone_epochs, **settings)
        out["alone"].append(accuracy(alone, *eval_split))
        out["distilled"].append(accuracy(student, *eval_split))
        out["weights"].append((alone.state_dict(), student.state_dict()))
    out["sizes"] = (len(labeled[1]), len(x_u))
    return out


def validation_split(train: tuple[np.ndarray, np.ndarray]) -> tuple[tuple, tuple]:
    """The first four fifths of the training split (to train on) and its last fifth (to validate on)."""
    x, y = train
    cut = int(0.8 * len(y))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def report_transfer(data, quick: bool, split: str) -> dict:
    """Protocol B (``semi_supervised``) on ``data``'s first split, scored on its second; prints what
    each model saw and the accuracies per seed and their means."""
    epochs, alone_epochs, teacher_epochs = (
        (3, 3, 3) if quick else (B_EPOCHS, B_ALONE_EPOCHS, B_TEACHER_EPOCHS)
    )
    out = semi_supervised(*data, epochs=epochs, teacher_epochs=teacher_epochs, alone_epochs=alone_epochs)
    (n_l, n_u), steps = out["sizes"], out["steps"]
    print(
        f"protocol B, scarce labels: {n_l} labeled images (L, the first {LABELED:.0%} of the training "
        f"images), {n_u} unlabeled (U, labels never read); teacher CNN trained on L alone for "
        f"{teacher_epochs} epochs (views with noise {B_TEACHER_NOISE}, {B_TEACHER_SHIFT:.0%} shifted by up "
        f"to a pixel): {split} accuracy {out['teacher']:.2%}"
    )
    print(
        f"student MLP 64-{HIDDEN}-10, Adam, {B_BATCH} images a batch, noise {NOISE}: alone on L's labels, "
        f"{alone_epochs} epochs ({steps['alone']} steps); distilled {epochs} epochs of L's batches "
        f"(T={B_TEMPERATURE}, alpha={B_ALPHA}) and U's (the teacher's soft targets only) in between "
        f"({steps['distilled']} steps), {split} accuracy:"
    )
    for seed, a, d in zip(SEEDS, out["alone"], out["distilled"]):
        print(f"  seed {seed}: labels only {a:.2%}, distilled {d:.2%}", flush=True)
    out["means"] = {k: float(np.mean(out[k])) for k in ("alone", "distilled")}
    print(
        f"  mean of {len(SEEDS)} seeds: labels only {out['means']['alone']:.2%}, "
        f"distilled {out['means']['distilled']:.2%}"
    )
    return out


def run(quick: bool = False, validate: bool = False) -> dict:
    """Train, distill and compress; print and return what each stage gives. ``validate``: the teacher
    and the students train on four fifths of the training split and are scored on its last fifth
    (how the settings were chosen); no compression, the test split is not used."""
    epochs = 3 if quick else 30
    student_epochs = 3 if quick else STUDENT_EPOCHS
    tune = 1 if quick else 5
    nn.init.manual_seed(0)
    data = load_digits()
    if validate:
        data = validation_split(data[0])
    (x_train, y_train), (x_test, y_test) = data
    split = "validation" if validate else "test"
    loader = DataLoader((x_train, y_train), batch_size=BATCH, shuffle=True, seed=0, drop_last=True)

    teacher = CNN()
    train(teacher, loader, epochs=epochs)
    print(
        f"teacher CNN conv32-conv64-pool-128-10 ({n_params(teacher)} params): "
        f"{split} accuracy {accuracy(teacher, x_test, y_test):.2%}"
    )
    print(
        f"student MLP 64-{HIDDEN}-10 ({n_params(MLP(HIDDEN))} params), {student_epochs} epochs, Adam, "
        f"inputs with noise {NOISE} (teacher and student see the same views), "
        f"distillation T={TEMPERATURE}, alpha={ALPHA}, {split} accuracy:"
    )
    students = distill(teacher, data, student_epochs)
    means = {k: float(np.mean(v)) for k, v in students.items()}
    print(
        f"  mean of {len(SEEDS)} seeds: labels only {means['alone']:.2%}, distilled {means['distilled']:.2%} "
        f"({'distillation helps' if means['distilled'] > means['alone'] else 'distillation does not help'})"
    )
    transfer = report_transfer(data, quick, split)
    if validate:
        return {"students": students, "means": means, "transfer": transfer}

    rows = compress(teacher, data, loader, tune)
    print(f"{'teacher variant':>34} {'accuracy':>9} {'plan file':>10} {'call':>9}")
    for name, (acc, size, seconds) in rows.items():
        print(f"{name:>34} {acc:>9.2%} {size / 1024:>6.1f} KiB {seconds * 1e3:>6.2f} ms")
    return {"students": students, "means": means, "transfer": transfer, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--quick`` for a few epochs only, ``--validate`` for the validation split."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few epochs only (for the tests)")
    parser.add_argument(
        "--validate",
        action="store_true",
        help="train on 4/5 of the training split, score the students on its last fifth (no test set)",
    )
    args = parser.parse_args(argv)
    run(args.quick, args.validate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
