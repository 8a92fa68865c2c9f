"""cross_entropy's fused eager kernel (graphc/eager_xent.py): logits [N, C] at integer labels run
as a dozen NumPy calls and ONE tape entry whose gradient is softmax - onehot. The loss is the
composite's bit for bit (NaN, signed zeros, ignore_index, every reduction); the gradients match
PyTorch's (float64) and the composite's within float rounding; errors are the composite's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphc.functional as F
from graphc import GraphcError, eager, eager_backward, eager_xent, nn

CASES = [
    # (N, C, reduction, ignore_index, dtype)
    (6, 4, "mean", -100, np.float32),
    (6, 4, "sum", -100, np.float32),
    (6, 4, "none", -100, np.float32),
    (6, 4, "mean", 2, np.float32),
    (6, 4, "none", 1, np.float32),
    (7, 3, "mean", -1, np.float64),
    (5, 1, "sum", -100, np.float64),
]


def _run(n, c, reduction, ignore_index, dtype, *, fused, special=True, seed=0):
    """(loss, the logits' gradient, the logits, labels)."""
    eager_xent.ENABLED = fused
    try:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, c)).astype(dtype)
        if special and c > 1:  # a NaN row and signed zeros
            x.reshape(-1)[1] = np.nan
            x.reshape(-1)[c + 1] = -0.0
            x.reshape(-1)[c + 2] = 0.0
        labels = rng.integers(0, c, n).astype(np.int64)
        if ignore_index != -100:
            labels[:2] = ignore_index
        p = nn.Parameter(x)  # a float32 parameter; float64 logits are its cast

        def logits(p):
            return (p if dtype == np.float32 else p.to("f64")) * 1.0

        loss = F.cross_entropy(
            eager.call(logits, (p,)), labels, reduction=reduction, ignore_index=ignore_index
        )
        out = np.asarray(loss).copy()
        (loss.sum() if reduction == "none" else loss).backward()
        return out, p.grad.copy(), x.astype(np.float32), labels
    finally:
        eager_xent.ENABLED = True


@pytest.mark.parametrize("case", CASES)
def test_loss_is_the_composites_bit_for_bit_and_gradients_close(case, monkeypatch):
    taken = []
    real = eager_xent.cross_entropy
    monkeypatch.setattr(eager_xent, "cross_entropy", lambda *a: taken.append(r := real(*a)) or r)
    fused = _run(*case, fused=True)
    assert taken and taken[0] is not None, "the fused kernel was not taken"
    composite = _run(*case, fused=False)
    assert fused[0].dtype == composite[0].dtype and fused[0].shape == composite[0].shape
    assert fused[0].tobytes() == composite[0].tobytes()
    tol = 1e-5
    assert fused[0].dtype == case[4]
    np.testing.assert_allclose(fused[1], composite[1], rtol=tol, atol=tol)


@pytest.mark.parametrize("case", CASES)
def test_matches_torch(case):
    n, c, reduction, ignore_index, dtype = case
    loss, grad, logits, labels = _run(*case, fused=True, special=False, seed=3)
    xt = torch.tensor(logits.astype(np.float64), requires_grad=True)
    tl = torch.nn.functional.cross_entropy(
        xt, torch.tensor(labels), reduction=reduction, ignore_index=ignore_index
    )
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, tl.detach().numpy(), rtol=tol, atol=tol)
    tol = 1e-5  # the gradient reaches a float32 parameter
    tl.sum().backward()
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=tol, atol=tol)


def test_one_tape_entry_with_a_two_step_backward(monkeypatch):
    monkeypatch.setattr(eager_backward, "_PROGRAMS", {})
    lin = nn.Linear(4, 3)
    x, y = np.ones((2, 4), np.float32), np.array([0, 2])
    loss = F.cross_entropy(lin(x), y)
    v = loss.value
    assert v.op == "composite" and isinstance(v.attrs["composite"], eager_xent._Linear)
    assert [x.op for x in v.inputs] == ["add"]  # the linear layer's output, nothing between
    loss.backward()
    (program,) = eager_backward._PROGRAMS.values()
    # the loss's own backward is a broadcast and a multiply (the composite's: ~22 kernels)
    assert len(program.steps) <= 12


def test_loss_used_further_and_no_grad():
    lin = nn.Linear(3, 3)
    x, y = np.arange(6, dtype=np.float32).reshape(2, 3) / 7, np.array([1, 0])
    loss = F.cross_entropy(lin(x), y, reduction="none")
    (loss * np.array([2.0, -1.0], np.float32)).sum().backward()
    twin = torch.nn.Linear(3, 3)
    with torch.no_grad():
        twin.weight.copy_(torch.tensor(np.asarray(lin.weight)))
        twin.bias.copy_(torch.tensor(np.asarray(lin.bias)))
    tl = torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(y), reduction="none")
    (tl * torch.tensor([2.0, -1.0])).sum().backward()
    np.testing.assert_allclose(lin.weight.grad, twin.weight.grad.numpy(), rtol=1e-5, atol=1e-6)
    from graphc import no_grad

    with no_grad():
        plain = F.cross_entropy(lin(x), y)
    assert plain.value.op is None
    np.testing.assert_allclose(np.asarray(plain), tl.detach().numpy().mean(), rtol=1e-6)


@pytest.mark.parametrize("bad", [4, -3])
def test_out_of_range_label_is_the_composites_error(bad):
    lin = nn.Linear(4, 4)
    x, y = np.ones((3, 4), np.float32), np.array([0, bad, 1])
    messages = []
    for fused in (True, False):
        eager_xent.ENABLED = fused
        try:
            with pytest.raises(GraphcError) as err:
                F.cross_entropy(lin(x), y)
            messages.append(str(err.value))
        finally:
            eager_xent.ENABLED = True
    assert messages[0] == messages[1] and "test_eager_xent.py" in messages[0]


@pytest.mark.parametrize("reduction,ignore_index", [("mean", -100), ("sum", 1), ("none", -1)])
def test_nll_loss_fused_is_the_composites_loss_and_torchs_gradient(reduction, ignore_index, monkeypatch):
    taken = []
    real = eager_xent.cross_entropy
    monkeypatch.setattr(eager_xent, "cross_entropy", lambda *a, **k: taken.append(r := real(*a, **k)) or r)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    x[0, 1] = -0.0
    labels = rng.integers(0, 4, 6)
    labels[:2] = ignore_index if ignore_index != -100 else labels[:2]
    results = []
    for fused in (True, False):
        monkeypatch.setattr(eager_xent, "ENABLED", fused)
        p = nn.Parameter(x)
        loss = F.nll_loss(
            eager.call(lambda p: p * 1.0, (p,)), labels, reduction=reduction, ignore_index=ignore_index
        )
        out = np.asarray(loss).copy()
        (loss.sum() if reduction == "none" else loss).backward()
        results.append((out, p.grad.copy()))
    assert taken and taken[0] is not None, "the fused kernel was not taken"
    assert results[0][0].tobytes() == results[1][0].tobytes()
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    tl = torch.nn.functional.nll_loss(
        xt, torch.tensor(labels), reduction=reduction, ignore_index=ignore_index
    )
    np.testing.assert_allclose(results[0][0], tl.detach().numpy(), rtol=1e-6, atol=1e-6)
    tl.sum().backward()
    np.testing.assert_allclose(results[0][1], xt.grad.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape,dim", [((4, 5), 1), ((3, 4, 5), -1), ((3, 4, 5), 0), ((6,), None)])
def test_log_softmax_fused_is_the_composites_value_and_torchs_gradient(shape, dim, monkeypatch):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[1] = np.nan
    x.reshape(-1)[2] = -0.0
    g = rng.standard_normal(shape).astype(np.float32)
    results = []
    for fused in (True, False):
        monkeypatch.setattr(eager_xent, "ENABLED", fused)
        p = nn.Parameter(x)
        y = eager.call(lambda p: F.log_softmax(p * 1.0, dim), (p,))
        kind = type(y.value.attrs["composite"])
        (y * g).sum().backward()
        results.append((np.asarray(y).copy(), p.grad.copy(), kind))
    assert results[0][2] is eager_xent._LogSoftmax and results[1][2] is not eager_xent._LogSoftmax
    assert results[0][0].tobytes() == results[1][0].tobytes()
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    tl = torch.log_softmax(xt, 0 if dim is None else dim)
    (tl * torch.tensor(g.astype(np.float64))).sum().backward()
    np.testing.assert_allclose(results[0][1], xt.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-6)
