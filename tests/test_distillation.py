"""F.distillation_loss against PyTorch (value and gradient), and one compiled training step of a
student with its teacher frozen inside the same graph."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import functional as F
from graphc import nn
from graphc.ir import GraphcError
from graphc.passes.autodiff import grad

torch = pytest.importorskip("torch")
tF = torch.nn.functional


def _torch_loss(s, t, y, temperature, alpha):
    kl = tF.kl_div(
        tF.log_softmax(s / temperature, -1),
        tF.log_softmax(t / temperature, -1),
        log_target=True,
        reduction="batchmean",
    )
    return alpha * temperature**2 * kl + (1 - alpha) * tF.cross_entropy(s, y)


@pytest.mark.parametrize("temperature,alpha", [(4.0, 0.9), (1.0, 0.5), (2.5, 0.0), (7.0, 1.0)])
def test_distillation_loss_and_gradient_match_torch(temperature, alpha):
    rng = np.random.default_rng(int(temperature * 10))
    s = (rng.standard_normal((6, 5)) * 3).astype(np.float32)
    t = (rng.standard_normal((6, 5)) * 3).astype(np.float32)
    y = rng.integers(0, 5, 6)
    g = graphc.trace(
        lambda s, t, y: F.distillation_loss(s, t, y, temperature=temperature, alpha=alpha), s, t, y
    )
    joint, index = grad(g, 0, ["s", "t"])
    # The CPU backend once; the NumPy reference for the other cases (no numba compile).
    out = graphc.compile_graph(joint, backend="cpu" if temperature == 4.0 else "reference")(s, t, y)
    ts, tt = torch.tensor(s, requires_grad=True), torch.tensor(t, requires_grad=True)
    want = _torch_loss(ts, tt, torch.tensor(y), temperature, alpha)
    want.backward()
    np.testing.assert_allclose(out[0], want.item(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[index["s"]], ts.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out[index["t"]], tt.grad.numpy(), rtol=1e-4, atol=1e-6)
    # Eager (NumPy arrays outside a trace) gives the same value.
    np.testing.assert_allclose(F.distillation_loss(s, t, y, temperature, alpha), want.item(), rtol=1e-5)


class Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.student = nn.Linear(6, 4)
        self.teacher = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x):
        return self.student(x), self.teacher(x)


def test_one_training_step_with_a_frozen_teacher_matches_torch():
    graphc.manual_seed(3)
    model = Pair()
    model.teacher.requires_grad_(False)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 6)).astype(np.float32)
    y = rng.integers(0, 4, 8)
    before = {n: np.array(p) for n, p in model.named_parameters()}

    def loss_fn(out, target):
        return F.distillation_loss(out[0], out[1], target, temperature=3.0, alpha=0.7)

    step = graphc.compile_train(model, loss_fn, graphc.optim.SGD(lr=0.5), x, y)
    loss = step(x, y)

    ws = torch.tensor(before["student.weight"], requires_grad=True)
    bs = torch.tensor(before["student.bias"], requires_grad=True)
    tx = torch.tensor(x)
    t_hidden = torch.relu(
        tx @ torch.tensor(before["teacher.0.weight"]).T + torch.tensor(before["teacher.0.bias"])
    )
    t_logits = t_hidden @ torch.tensor(before["teacher.2.weight"]).T + torch.tensor(before["teacher.2.bias"])
    want = _torch_loss(tx @ ws.T + bs, t_logits, torch.tensor(y), 3.0, 0.7)
    want.backward()
    np.testing.assert_allclose(loss, want.item(), rtol=1e-5)
    after = dict(model.named_parameters())
    np.testing.assert_allclose(
        after["student.weight"], (ws - 0.5 * ws.grad).detach().numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        after["student.bias"], (bs - 0.5 * bs.grad).detach().numpy(), rtol=1e-5, atol=1e-6
    )
    for name in before:
        if name.startswith("teacher."):
            np.testing.assert_array_equal(after[name], before[name])  # frozen
    assert not np.array_equal(after["student.weight"], before["student.weight"])


def test_bad_arguments_are_graphc_errors():
    s = np.zeros((2, 3), np.float32)
    y = np.zeros(2, np.int64)
    with pytest.raises(GraphcError, match="temperature must be > 0"):
        F.distillation_loss(s, s, y, temperature=0.0)
    with pytest.raises(GraphcError, match=r"alpha must lie in \[0, 1\]"):
        F.distillation_loss(s, s, y, alpha=1.5)
    with pytest.raises(GraphcError, match="must both be"):
        F.distillation_loss(s, np.zeros((2, 4), np.float32), y)


@pytest.fixture(scope="module")
def example():
    """examples/compress_digits.py as a module."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "compress_digits.py"
    spec = importlib.util.spec_from_file_location("example_compress_digits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shifted(image, dy, dx):
    """An 8x8 image moved by (dy, dx) pixels, zeros shifted in (np.roll, then the wrapped edge cleared)."""
    out = np.roll(image, (dy, dx), axis=(0, 1))
    if dy:
        out[0 if dy > 0 else -1, :] = 0
    if dx:
        out[:, 0 if dx > 0 else -1] = 0
    return out


def test_augment_shifts_by_at_most_one_pixel_with_zero_fill_then_adds_noise(example):
    rng = np.random.default_rng(0)
    x = rng.random((300, 64)).astype(np.float32) + 0.5  # no zero pixels: a zero is a filled one
    views = example.augment(x, np.random.default_rng(1), noise=0.0, shift_p=1.0)
    assert views.shape == x.shape and views.dtype == np.float32
    seen = set()
    for image, view in zip(x.reshape(-1, 8, 8), views.reshape(-1, 8, 8)):
        moves = [
            (dy, dx)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if np.array_equal(view, _shifted(image, dy, dx))
        ]
        assert len(moves) == 1, moves
        seen.add(moves[0])
    assert len(seen) == 9  # every shift of up to one pixel occurs
    # shift_p=0: the images themselves; the noise is N(0, noise) on every pixel, fresh per call.
    np.testing.assert_array_equal(example.augment(x, rng, noise=0.0, shift_p=0.0), x)
    a, b = (example.augment(x, rng, noise=0.1, shift_p=0.0) - x for _ in range(2))
    assert abs(a.std() - 0.1) < 0.005 and abs(a.mean()) < 0.005 and not np.array_equal(a, b)


def test_student_batches_are_reproducible_and_fresh_each_epoch(example):
    rng = np.random.default_rng(0)
    n = 3 * example.BATCH + 5
    x = rng.random((n, 64)).astype(np.float32)
    y = np.arange(n)  # a label per image, to find where each view came from
    first = list(example.student_batches(x, y, 7, 2))
    assert len(first) == 6 and all(xb.shape == (example.BATCH, 64) for xb, _ in first)
    for got, again in zip(first, example.student_batches(x, y, 7, 2)):
        np.testing.assert_array_equal(got[0], again[0])
        np.testing.assert_array_equal(got[1], again[1])
    for epoch in (first[:3], first[3:]):
        labels = np.concatenate([yb for _, yb in epoch])
        assert len(set(labels)) == len(labels)  # each image at most once an epoch
    # Fresh noise each epoch: the same image's two views differ.
    view = {}
    for xb, yb in first:
        for image, label in zip(xb, yb):
            view.setdefault(label, []).append(image)
    twice = [v for v in view.values() if len(v) == 2]
    assert twice and all(not np.array_equal(a, b) for a, b in twice)
    assert all(np.abs(v[0] - x[k]).max() < 1.0 for k, v in view.items())  # noisy views of image k


def test_distilled_student_with_alpha_zero_is_the_student_alone(example):
    """Same initial weights, batches, optimizer and steps: with alpha=0 the distillation loss is the
    cross-entropy, so both students end bit for bit equal; with alpha > 0 they differ."""
    graphc.manual_seed(0)
    teacher = example.CNN()
    frozen = {k: np.array(v) for k, v in teacher.state_dict().items()}
    rng = np.random.default_rng(0)
    x = rng.random((2 * example.BATCH, 64)).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    alone, student = example.train_pair(teacher, x, y, seed=0, epochs=2, hidden=8, alpha=0.0)
    nn.init.manual_seed(100)  # train_pair's initial weights for seed 0
    start = example.MLP(8).state_dict()
    for name, value in alone.state_dict().items():
        np.testing.assert_array_equal(student.state_dict()[name], value)
    assert all(not np.array_equal(v, start[k]) for k, v in alone.state_dict().items())  # they trained
    alone, student = example.train_pair(teacher, x, y, seed=0, epochs=2, hidden=8, alpha=0.5)
    assert any(not np.array_equal(v, alone.state_dict()[k]) for k, v in student.state_dict().items())
    for name, value in teacher.state_dict().items():
        np.testing.assert_array_equal(value, frozen[name])  # the teacher stays frozen
    assert all(p.requires_grad for p in teacher.parameters())  # and is given back trainable


def test_compress_digits_example_quick(example):
    """examples/compress_digits.py --quick: 3 seeds of both students, every compression row."""
    pytest.importorskip("sklearn")
    out = example.run(quick=True)
    assert [len(v) for v in out["students"].values()] == [3, 3]
    assert out["means"]["alone"] == pytest.approx(np.mean(out["students"]["alone"]))
    transfer = out["transfer"]  # protocol B: scarce labels, the rest a transfer set
    assert [len(transfer[k]) for k in ("alone", "distilled")] == [3, 3]
    assert transfer["steps"]["distilled"] > transfer["steps"]["alone"] > 0
    rows = out["rows"]
    assert len(rows) == 7 and {"float", "QAT int8", "static int8 (entropy)"} <= set(rows)
    float_acc, float_bytes, _ = rows["float"]
    for name, (acc, size, seconds) in rows.items():
        assert acc > 0.75 and seconds > 0, (name, acc)
        if "int8" in name:
            assert size < 0.4 * float_bytes, (name, size, float_bytes)
    assert rows["QAT int8"][0] > float_acc - 0.05


def _toy_split(n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 64)).astype(np.float32), rng.integers(0, 10, n)


def test_transfer_batches_flag_unlabeled_batches_and_keep_labeled_ones_independent_of_u(example):
    """Protocol B's batches: L's batches (and their order among themselves) are the same with or
    without U; U's batches are flagged and carry a zero placeholder instead of labels."""
    b = example.B_BATCH
    x, y = _toy_split(2 * b + 3)
    x_u = _toy_split(3 * b + 1, seed=1)[0] + 10.0  # U's pixels are >= 10: a view tells where it came from
    both = list(example.transfer_batches(x, y, x_u, 5, 2))
    only_l = list(example.transfer_batches(x, y, x_u[:0], 5, 2))
    assert len(both) == 2 * (2 + 3) and len(only_l) == 2 * 2
    assert all(flag == (xb.min() > 5.0) for xb, _, flag in both)  # U's views are the flagged ones
    assert all(not yb.any() for _, yb, flag in both if flag)
    labeled = [(xb, yb) for xb, yb, flag in both if not flag]
    assert len(labeled) == len(only_l)
    for (xb, yb), (xl, yl, flag) in zip(labeled, only_l):
        assert not flag
        np.testing.assert_array_equal(xb, xl)
        np.testing.assert_array_equal(yb, yl)
    orders = [[flag for _, _, flag in both[:5]], [flag for _, _, flag in both[5:]]]
    assert orders[0] != [False, False, True, True, True] or orders[1] != orders[0]  # interleaved


def _weights(model) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in model.state_dict().items()}


def test_transfer_students_start_equal_and_the_teacher_stays_frozen(example):
    graphc.manual_seed(0)
    teacher = example.CNN()
    frozen = _weights(teacher)
    labeled = _toy_split(2 * example.B_BATCH)
    x_u = _toy_split(2 * example.B_BATCH, seed=1)[0]
    alone, student = example.train_transfer(teacher, labeled, x_u, seed=2, epochs=0, hidden=8)
    nn.init.manual_seed(102)  # train_transfer's initial weights for seed 2
    start = _weights(example.MLP(8))
    for name, value in start.items():
        np.testing.assert_array_equal(_weights(alone)[name], value)
        np.testing.assert_array_equal(_weights(student)[name], value)
    alone, student = example.train_transfer(teacher, labeled, x_u, seed=2, epochs=1, hidden=8)
    assert all(not np.array_equal(v, start[k]) for k, v in _weights(student).items())  # it trained
    for name, value in _weights(teacher).items():
        np.testing.assert_array_equal(value, frozen[name])  # the teacher stays frozen
    assert all(p.requires_grad for p in teacher.parameters())  # and is given back trainable


def test_transfer_with_alpha_zero_and_no_unlabeled_images_is_the_student_alone(example):
    """alpha=0 on L-only batches: the distilled student's loss is the cross-entropy, so it ends bit for
    bit equal to the student alone; U's batches (soft targets only) or alpha > 0 make them differ."""
    graphc.manual_seed(0)
    teacher = example.CNN()
    labeled = _toy_split(2 * example.B_BATCH)
    x_u = _toy_split(2 * example.B_BATCH, seed=1)[0]
    alone, student = example.train_transfer(teacher, labeled, x_u[:0], seed=0, epochs=2, hidden=8, alpha=0.0)
    for name, value in _weights(alone).items():
        np.testing.assert_array_equal(_weights(student)[name], value)
    for x_u_, alpha in ((x_u, 0.0), (x_u[:0], 0.5)):
        alone2, student = example.train_transfer(teacher, labeled, x_u_, 0, epochs=2, hidden=8, alpha=alpha)
        for name, value in _weights(alone).items():
            np.testing.assert_array_equal(_weights(alone2)[name], value)  # U does not touch the alone one
        assert any(not np.array_equal(v, _weights(alone)[k]) for k, v in _weights(student).items())


def test_semi_supervised_never_reads_the_labels_of_u(example):
    """Poisoning U's labels (-1, out of range) leaves every weight unchanged; changing one of L's
    labels does not."""
    x, y = _toy_split(4 * example.B_BATCH)
    evaluation = _toy_split(20, seed=3)
    n_l = example.B_BATCH * 2

    def weights(labels):
        out = example.semi_supervised(
            (x, labels), evaluation, fraction=0.5, epochs=1, teacher_epochs=1, seeds=(0,), hidden=8
        )
        assert out["sizes"] == (n_l, len(y) - n_l) and len(out["alone"]) == 1
        return [w for pair in out["weights"] for w in pair]

    clean = weights(y)
    for poison in (-1, 10**6):
        poisoned = y.copy()
        poisoned[n_l:] = poison
        for a, b in zip(clean, weights(poisoned)):
            for name in a:
                np.testing.assert_array_equal(a[name], b[name])
    changed = y.copy()
    changed[0] = (y[0] + 1) % 10
    assert any(not np.array_equal(a[k], b[k]) for a, b in zip(clean, weights(changed)) for k in a)


def test_labeled_split_needs_labeled_images(example):
    x, y = _toy_split(10)
    (x_l, y_l), x_u = example.labeled_split(x, y, 0.3)
    assert len(y_l) == 3 and len(x_u) == 7 and np.array_equal(x_u, x[3:])
    with pytest.raises(GraphcError, match="labeled fraction 0.01 leaves no labeled images"):
        example.labeled_split(x, y, 0.01)


def test_transfer_unlabeled_batches_read_no_target(example, monkeypatch):
    """U's batches train on the teacher's soft targets only: whatever stands in their label slot,
    the distilled student ends the same (and a changed label in an L batch does change it)."""
    graphc.manual_seed(0)
    teacher = example.CNN()
    labeled = _toy_split(example.B_BATCH)
    x_u = _toy_split(2 * example.B_BATCH, seed=1)[0]
    original = example.transfer_batches

    def relabeled(which):
        def batches(*args, **kwargs):
            rng = np.random.default_rng(9)
            for xb, yb, unlabeled in original(*args, **kwargs):
                yield xb, (rng.integers(0, 10, len(yb)) if unlabeled == which else yb), unlabeled

        return batches

    def distilled():
        return _weights(example.train_transfer(teacher, labeled, x_u, seed=0, epochs=2, hidden=8)[1])

    clean = distilled()
    monkeypatch.setattr(example, "transfer_batches", relabeled(True))
    for name, value in distilled().items():
        np.testing.assert_array_equal(value, clean[name])
    monkeypatch.setattr(example, "transfer_batches", relabeled(False))
    assert any(not np.array_equal(v, clean[k]) for k, v in distilled().items())
