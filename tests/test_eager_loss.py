"""Eager mode's losses: ``F.cross_entropy``/``F.nll_loss`` compute their targets' side (class mask,
valid mask, per-target weights) directly in NumPy (``graphc.functional_losses._eager_targets``). The
values, the gradients and the errors must be the ops' own, bit for bit (NaN included), and match
PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphc.functional as F
from graphc import GraphcError, eager_composite, functional_losses, nn

CASES = [
    # (logits shape, reduction, ignore_index, label_smoothing)
    ((6, 4), "mean", -100, 0.0),
    ((6, 4), "sum", -100, 0.0),
    ((6, 4), "none", -100, 0.0),
    ((6, 4), "mean", 2, 0.0),
    ((6, 4), "mean", -1, 0.1),
    ((6, 4), "sum", 1, 0.2),
    ((3, 4, 5), "mean", -100, 0.0),
    ((3, 4, 5), "none", 0, 0.1),
    ((4,), "mean", -100, 0.0),
    ((4,), "none", -100, 0.0),
]


def _run(shape, reduction, ignore_index, smoothing, loss_fn=F.cross_entropy, seed=0, nan=True):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape).astype(np.float32)
    if nan:  # a NaN logit: its row's loss and gradients are NaN both ways
        logits.reshape(-1)[1] = np.nan
    tshape = () if len(shape) == 1 else (shape[0], *shape[2:])
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    target = rng.integers(0, n_classes, tshape).astype(np.int64)
    if ignore_index >= 0 or ignore_index == -1:
        target.reshape(-1)[:1] = ignore_index  # some targets ignored
    w = nn.Parameter(np.eye(shape[-1], dtype=np.float32) * 1.5)
    kwargs = {"reduction": reduction, "ignore_index": ignore_index}
    if loss_fn is F.cross_entropy:
        kwargs["label_smoothing"] = smoothing
    logits_in = logits @ np.asarray(w)
    x = nn.Linear(shape[-1], shape[-1])
    x.weight[...] = np.asarray(w)
    x.bias[...] = 0.0
    inp = x(logits)
    if loss_fn is F.nll_loss:
        inp = F.log_softmax(inp, 0 if len(shape) == 1 else 1)
    loss = loss_fn(inp, target, **kwargs)
    if reduction == "none":
        loss = loss.sum()
    loss.backward()
    return np.asarray(loss), x.weight.grad.copy(), x.bias.grad.copy(), logits_in, target


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("loss_fn", [F.cross_entropy, F.nll_loss])
def test_target_shortcut_is_the_ops_bit_for_bit(case, loss_fn, monkeypatch):
    if loss_fn is F.nll_loss and case[3]:
        pytest.skip("nll_loss has no label smoothing")
    # cross_entropy runs as one composite step (test_eager_composite.py); op by op here
    monkeypatch.setattr(eager_composite, "run", lambda *a, **k: None)
    calls = []
    real = functional_losses._eager_targets
    monkeypatch.setattr(functional_losses, "_eager_targets", lambda *a: calls.append(1) or real(*a))
    fast = _run(*case, loss_fn=loss_fn)
    assert calls, "the shortcut was not taken"
    monkeypatch.setattr(functional_losses, "_eager_targets", lambda *a: None)
    ops = _run(*case, loss_fn=loss_fn)
    for a, b in zip(fast[:3], ops[:3]):
        _same(a, b)


@pytest.mark.parametrize("case", [c for c in CASES if len(c[0]) > 1])
def test_cross_entropy_matches_torch(case):
    shape, reduction, ignore_index, smoothing = case
    loss, gw, gb, logits_in, target = _run(shape, reduction, ignore_index, smoothing, seed=3, nan=False)
    tl = torch.nn.functional.cross_entropy(
        torch.tensor(logits_in.astype(np.float64)),
        torch.tensor(target),
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=smoothing,
    )
    np.testing.assert_allclose(loss, tl.sum().item(), rtol=1e-5, equal_nan=True)


@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_out_of_range_labels_raise_the_gathers_error_at_the_users_line(ignore_index, monkeypatch):
    logits = np.zeros((3, 4), np.float32)
    target = np.array([0, 7, 1])
    with pytest.raises(GraphcError) as fast:
        F.cross_entropy(logits, target, ignore_index=ignore_index)  # the line the error names
    monkeypatch.setattr(functional_losses, "_eager_targets", lambda *a: None)
    with pytest.raises(GraphcError) as ops:
        F.cross_entropy(logits, target, ignore_index=ignore_index)
    assert "index 7 out of range [0, 4)" in str(fast.value)
    assert "test_eager_loss.py" in str(fast.value)
    assert str(fast.value).split(":", 2)[2] == str(ops.value).split(":", 2)[2]
