"""Composite ops in eager mode (graphc/eager_composite.py): ``F.cross_entropy`` traced once per
signature, run as one step and recorded as ONE tape entry whose backward splices the traced ops
back in. Values, gradients and errors must be the op-by-op path's bit for bit (NaN, signed
zeros, ignore_index, smoothing, class weights, N-D logits, soft targets) and match PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphc.functional as F
from graphc import GraphcError, eager_composite, eager_xent, nn

CASES = [
    # (logits shape, reduction, ignore_index, label_smoothing, class weights, soft targets)
    ((6, 4), "mean", -100, 0.0, False, False),
    ((6, 4), "sum", -100, 0.0, False, False),
    ((6, 4), "none", -100, 0.0, False, False),
    ((6, 4), "mean", 2, 0.0, False, False),
    ((6, 4), "mean", -1, 0.1, False, False),
    ((6, 4), "sum", 1, 0.2, True, False),
    ((6, 4), "mean", -100, 0.1, True, False),
    ((3, 4, 5), "mean", -100, 0.0, False, False),
    ((3, 4, 5), "none", 0, 0.1, True, False),
    ((4,), "mean", -100, 0.0, False, False),
    ((4,), "none", -100, 0.0, False, False),
    ((6, 4), "mean", -100, 0.1, False, True),
    ((3, 4, 5), "sum", -100, 0.0, True, True),
]


@pytest.fixture(autouse=True)
def _composite_not_fused(monkeypatch):
    # these tests are the composite's: cross_entropy's fused kernel (test_eager_xent.py) stays off
    monkeypatch.setattr(eager_xent, "ENABLED", False)


def _ops_path(monkeypatch):
    monkeypatch.setattr(eager_composite, "run", lambda *a, **k: None)


def _run(shape, reduction, ignore_index, smoothing, weighted, soft, seed=0, special=True):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape).astype(np.float32)
    if special:  # a NaN logit (its row is NaN both ways) and signed zeros
        logits.reshape(-1)[1] = np.nan
        logits.reshape(-1)[2] = -0.0
        logits.reshape(-1)[3] = 0.0
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    if soft:
        target = rng.random(shape).astype(np.float32)
    else:
        tshape = () if len(shape) == 1 else (shape[0], *shape[2:])
        target = rng.integers(0, n_classes, tshape).astype(np.int64)
        if ignore_index >= 0 or ignore_index == -1:
            target.reshape(-1)[:1] = ignore_index  # some targets ignored
    lin = nn.Linear(shape[-1], shape[-1])
    lin.weight[...] = np.eye(shape[-1], dtype=np.float32) * 1.5 + 0.1
    lin.bias[...] = 0.0
    weight = nn.Parameter(np.linspace(0.5, 2.0, n_classes).astype(np.float32)) if weighted else None
    loss = F.cross_entropy(
        lin(logits),
        target,
        weight=weight,
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=smoothing,
    )
    out = np.asarray(loss).copy()
    if reduction == "none":
        loss = loss.sum()
    loss.backward()
    grads = [lin.weight.grad.copy(), lin.bias.grad.copy()]
    if weighted:
        grads.append(weight.grad.copy())
    return out, grads, logits @ np.asarray(lin.weight).T, target, weight


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("case", CASES)
def test_composite_is_the_op_by_op_path_bit_for_bit(case, monkeypatch):
    seen = []
    real = eager_composite.run
    monkeypatch.setattr(eager_composite, "run", lambda *a, **k: seen.append(r := real(*a, **k)) or r)
    fused = _run(*case)
    assert seen and seen[0] is not None, "the composite was not taken"
    _ops_path(monkeypatch)
    ops = _run(*case)
    _same(fused[0], ops[0])
    assert len(fused[1]) == len(ops[1])
    for a, b in zip(fused[1], ops[1]):
        _same(a, b)


@pytest.mark.parametrize("case", [c for c in CASES if len(c[0]) > 1])
def test_composite_matches_torch(case):
    shape, reduction, ignore_index, smoothing, weighted, soft = case
    loss, grads, logits_in, target, weight = _run(*case, seed=3, special=False)
    xt = torch.tensor(logits_in.astype(np.float64), requires_grad=True)
    wt = None if weight is None else torch.tensor(np.asarray(weight), dtype=torch.float64)
    tl = torch.nn.functional.cross_entropy(
        xt,
        torch.tensor(target.astype(np.float64) if soft else target),
        weight=wt,
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=smoothing,
    )
    np.testing.assert_allclose(loss, tl.detach().numpy(), rtol=1e-5, atol=1e-6)
    tl.sum().backward()
    # d loss / d bias = the logits' gradient summed over every axis but the class one
    axes = tuple(i for i in range(xt.ndim) if i != 1)
    gb = xt.grad.numpy().sum(axis=axes) if len(shape) == 2 else None
    if gb is not None:
        np.testing.assert_allclose(grads[1], gb, rtol=1e-4, atol=1e-6)


def test_one_tape_entry_and_one_trace_per_signature(monkeypatch):
    lin = nn.Linear(4, 3)
    x, y = np.ones((2, 4), np.float32), np.array([0, 2])
    traced = []
    real = eager_composite._trace
    monkeypatch.setattr(eager_composite, "_trace", lambda *a: traced.append(1) or real(*a))
    monkeypatch.setattr(eager_composite, "_ENTRIES", {})
    losses = [F.cross_entropy(lin(x), y) for _ in range(3)]
    assert len(traced) == 1
    v = losses[0].value
    assert v.op == eager_composite.COMPOSITE
    assert len(v.inputs) == 1 and v.inputs[0].op is not None  # only the logits: the labels need no gradient
    F.cross_entropy(lin(x), y, reduction="sum")  # another signature: traced again
    assert len(traced) == 2
    plain = F.cross_entropy(x, y)  # nothing needs a gradient: no tape
    assert plain.value.op is None and not plain.value.requires_grad


def test_downstream_ops_and_a_second_backward(monkeypatch):
    def step():
        lin = nn.Linear(4, 3)
        lin.weight[...] = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
        lin.bias[...] = 0.5
        x, y = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4), np.array([1, 2])
        out = lin(x)
        loss = F.cross_entropy(out, y) * 2.0 + (out * out).sum()
        loss.backward(retain_graph=True)
        loss.backward()
        with pytest.raises(GraphcError, match="freed"):
            loss.backward()
        return lin.weight.grad.copy(), lin.bias.grad.copy()

    fused = step()
    _ops_path(monkeypatch)
    for a, b in zip(fused, step()):
        _same(a, b)


@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_out_of_range_label_is_the_gathers_error_at_the_users_line(ignore_index, monkeypatch):
    lin = nn.Linear(4, 4)
    x, target = np.zeros((3, 4), np.float32), np.array([0, 7, 1])
    with pytest.raises(GraphcError) as fused:
        F.cross_entropy(lin(x), target, ignore_index=ignore_index)  # the line the error names
    _ops_path(monkeypatch)
    with pytest.raises(GraphcError) as ops:
        F.cross_entropy(lin(x), target, ignore_index=ignore_index)
    assert "index 7 out of range [0, 4)" in str(fused.value)
    assert "test_eager_composite.py" in str(fused.value)
    assert str(fused.value).split(":", 2)[2] == str(ops.value).split(":", 2)[2]


def test_bad_arguments_report_as_before(monkeypatch):
    lin = nn.Linear(4, 4)
    x = np.zeros((3, 4), np.float32)
    bad = [
        ({"target": np.array([0, 1])}, "needs targets of shape"),
        ({"target": np.array([0, 1, 2]), "reduction": "avg"}, "reduction must be"),
        ({"target": np.array([0, 1, 2]), "weight": np.ones(3, np.float32)}, "weight must have shape"),
    ]
    for kwargs, match in bad:
        with pytest.raises(GraphcError, match=match) as fused:
            F.cross_entropy(lin(x), **kwargs)
        assert "test_eager_composite.py" in str(fused.value)
    _ops_path(monkeypatch)
    for kwargs, match in bad:
        with pytest.raises(GraphcError, match=match):
            F.cross_entropy(lin(x), **kwargs)


@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 2), (4,)])
@pytest.mark.parametrize("case", [("mean", -100, False), ("sum", 1, True), ("none", -100, True)])
def test_log_softmax_and_nll_loss_composites_are_the_ops_bit_for_bit(shape, case, monkeypatch):
    reduction, ignore_index, weighted = case

    def step():
        rng = np.random.default_rng(1)
        logits = rng.standard_normal(shape).astype(np.float32)
        logits.reshape(-1)[0] = np.nan
        logits.reshape(-1)[1] = -0.0
        n_classes = shape[0] if len(shape) == 1 else shape[1]
        tshape = () if len(shape) == 1 else (shape[0], *shape[2:])
        target = rng.integers(0, n_classes, tshape).astype(np.int64)
        if ignore_index >= 0:
            target.reshape(-1)[:1] = ignore_index
        lin = nn.Linear(shape[-1], shape[-1])
        lin.weight[...] = np.eye(shape[-1], dtype=np.float32) - 0.2
        lin.bias[...] = 0.25
        weight = np.linspace(0.5, 2.0, n_classes).astype(np.float32) if weighted else None
        logp = F.log_softmax(lin(logits), 0 if len(shape) == 1 else 1)
        loss = F.nll_loss(logp, target, weight=weight, reduction=reduction, ignore_index=ignore_index)
        plain = F.log_softmax(logits, -1)  # no gradient
        out = (np.asarray(logp).copy(), np.asarray(loss).copy(), np.asarray(plain).copy())
        ops = (logp.value.op, loss.value.op)
        (loss.sum() if reduction == "none" else loss).backward()
        return (*out, lin.weight.grad.copy(), lin.bias.grad.copy()), ops

    fused, taken = step()
    assert taken == (eager_composite.COMPOSITE, eager_composite.COMPOSITE)
    _ops_path(monkeypatch)
    ops, taken = step()
    assert eager_composite.COMPOSITE not in taken
    for a, b in zip(fused, ops):
        _same(a, b)


def test_backward_program_is_cached_per_structure(monkeypatch):
    from graphc import eager_backward

    monkeypatch.setattr(eager_backward, "_PROGRAMS", {})
    built = []
    real = eager_backward._records
    monkeypatch.setattr(eager_backward, "_records", lambda *a: built.append(1) or real(*a))
    lin = nn.Linear(4, 3)
    x = np.ones((2, 4), np.float32)
    for y in ([0, 2], [1, 1], [2, 0]):  # other labels, the same structure
        F.cross_entropy(lin(x), np.array(y)).backward()
    assert len(built) == 1 and len(eager_backward._PROGRAMS) == 1


def _layer_norm_step(shape, affine):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[0] = -0.0
    lin = nn.Linear(shape[-1], shape[-1])
    lin.weight[...] = np.eye(shape[-1], dtype=np.float32) * 0.9 + 0.05
    lin.bias[...] = 0.1
    ln = nn.LayerNorm(shape[-1], elementwise_affine=affine)
    if affine:
        ln.weight[...] = np.linspace(0.5, 1.5, shape[-1]).astype(np.float32)
        ln.bias[...] = np.linspace(-0.2, 0.3, shape[-1]).astype(np.float32)
    y = ln(lin(x))
    out, op = np.asarray(y).copy(), y.value.op  # before backward() frees the tape
    (y * y).sum().backward()
    grads = [lin.weight.grad.copy(), lin.bias.grad.copy()]
    if affine:
        grads += [ln.weight.grad.copy(), ln.bias.grad.copy()]
    return (out, *grads), op, x, lin


def _softmax_gelu_step(shape, which, approximate="none"):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[1] = np.nan
    lin = nn.Linear(shape[-1], shape[-1])
    lin.weight[...] = np.eye(shape[-1], dtype=np.float32) - 0.1
    lin.bias[...] = -0.05
    h = lin(x)
    y = F.softmax(h, dim=-1) if which == "softmax" else F.gelu(h, approximate=approximate)
    out, op = np.asarray(y).copy(), y.value.op
    (y * np.linspace(-1, 1, shape[-1]).astype(np.float32)).sum().backward()
    return (out, lin.weight.grad.copy(), lin.bias.grad.copy()), op


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 5)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_composite_is_the_ops_bit_for_bit_and_matches_torch(shape, affine, monkeypatch):
    fused, op, x, lin = _layer_norm_step(shape, affine)
    assert op == eager_composite.COMPOSITE
    _ops_path(monkeypatch)
    ops, op, _, _ = _layer_norm_step(shape, affine)
    assert op != eager_composite.COMPOSITE
    for a, b in zip(fused, ops):
        _same(a, b)
    xt = torch.tensor(x, dtype=torch.float64)
    wt = torch.tensor(np.asarray(lin.weight), dtype=torch.float64, requires_grad=True)
    h = xt @ wt.T + torch.tensor(np.asarray(lin.bias), dtype=torch.float64)
    ln = torch.nn.LayerNorm(shape[-1], elementwise_affine=affine).double()
    if affine:
        with torch.no_grad():
            ln.weight.copy_(torch.linspace(0.5, 1.5, shape[-1]))
            ln.bias.copy_(torch.linspace(-0.2, 0.3, shape[-1]))
    yt = ln(h)
    (yt * yt).sum().backward()
    np.testing.assert_allclose(fused[0], yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fused[1], wt.grad.numpy(), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("which", ["softmax", "gelu", "gelu_tanh"])
def test_softmax_and_gelu_composites_are_the_ops_bit_for_bit(which, monkeypatch):
    name, approx = ("gelu", "tanh") if which == "gelu_tanh" else (which, "none")
    fused, op = _softmax_gelu_step((3, 5), name, approx)
    assert op == eager_composite.COMPOSITE
    _ops_path(monkeypatch)
    ops, op = _softmax_gelu_step((3, 5), name, approx)
    assert op != eager_composite.COMPOSITE
    for a, b in zip(fused, ops):
        _same(a, b)
    assert np.isnan(fused[0][0]).all() and not np.isnan(fused[0][1:]).any()
