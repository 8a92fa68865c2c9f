"""F.linear's eager fast path (graphc/eager_linear.py) and relu's lazily computed mask
(graphc/eager_relu.py): the same values, tape records and gradients as the general path, bit for
bit, and PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphc.functional as F
from graphc import GraphcError, eager, eager_fast, eager_linear, eager_relu, functional_layers, nn
from graphc.tensor import Tensor


def _bits(a):
    a = np.asarray(a)
    return a.dtype, a.shape, a.tobytes()


def _tape(v, seen=None):
    """The recorded ops behind ``v`` as (op, attrs, operand positions, dtype, shape), in order."""
    seen = {} if seen is None else seen
    out = []
    stack, order = [v], []
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen[id(x)] = len(seen)
        order.append(x)
        stack.extend(x.inputs or ())
    for x in sorted(order, key=lambda x: x.seq):
        if x.op is not None:
            out.append((x.op, tuple(sorted(x.attrs.items())), tuple(seen[id(i)] for i in x.inputs), x.type))
    return out


def _step(shape, bias, fast, monkeypatch, grad=True):
    monkeypatch.setattr(eager_linear, "ENABLED", fast)
    nn.init.manual_seed(0)
    model = nn.Sequential(nn.Linear(shape[-1], 5, bias=bias), nn.ReLU(), nn.Linear(5, 3, bias=bias))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[:3] = [np.nan, -0.0, 0.0]
    if not grad:
        from graphc import no_grad

        with no_grad():
            return np.asarray(model(x)).copy(), None, None
    out = model(x)
    tape = _tape(out.value)
    (out * out).sum().backward()
    return np.asarray(out).copy(), tape, [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("shape,bias", [((4, 6), True), ((4, 6), False), ((2, 3, 6), True)])
def test_fast_linear_is_the_general_path_bit_for_bit(shape, bias, monkeypatch):
    taken = []
    real = functional_layers._eager_linear
    monkeypatch.setattr(functional_layers, "_eager_linear", lambda *a: taken.append(r := real(*a)) or r)
    fast = _step(shape, bias, True, monkeypatch)
    assert taken and all(r is not None for r in taken), "the fast path was not taken"
    general = _step(shape, bias, False, monkeypatch)
    assert _bits(fast[0]) == _bits(general[0])
    assert fast[1] == general[1]  # the same records: transpose, matmul, add
    assert [r[0] for r in fast[1]][:3] == ["transpose", "matmul", "add"] if bias else True
    for a, b in zip(fast[2], general[2]):
        assert _bits(a) == _bits(b)
    assert _bits(_step(shape, bias, True, monkeypatch, grad=False)[0]) == _bits(fast[0])


def test_fast_linear_matches_torch():
    lin = nn.Linear(6, 4)
    twin = torch.nn.Linear(6, 4)
    with torch.no_grad():
        twin.weight.copy_(torch.tensor(np.asarray(lin.weight)))
        twin.bias.copy_(torch.tensor(np.asarray(lin.bias)))
    x = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    out = lin(x)
    tout = twin(torch.tensor(x))
    np.testing.assert_allclose(np.asarray(out), tout.detach().numpy(), rtol=1e-5, atol=1e-6)
    (out * out).sum().backward()
    (tout * tout).sum().backward()
    np.testing.assert_allclose(lin.weight.grad, twin.weight.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lin.bias.grad, twin.bias.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_fast_linear_falls_back_with_the_general_paths_errors():
    w, b = nn.Parameter(np.ones((3, 4), np.float32)), nn.Parameter(np.zeros(3, np.float32))
    with pytest.raises(GraphcError, match="linear: input"):
        F.linear(np.ones((2, 5), np.float32), w, b)
    assert eager_linear.linear(None, None, None) is None
    out = F.linear(np.ones(4, np.float32), w, b)  # a 1-D input: the general path
    assert out.shape == (3,) and np.allclose(np.asarray(out), 4.0)


def _relu_where(x):
    """The tape record of a recorded relu of ``x`` (a parameter times 1)."""
    p = nn.Parameter(x)
    y = eager.call(lambda p: (p * 1.0).relu(), (p,))
    assert y.value.op == "where"
    return p, y


def test_relu_mask_is_computed_when_read_and_is_le(monkeypatch):
    vals = np.array([-0.0, 0.0, np.nan, -np.nan, 1.5, -2.0, np.inf, -np.inf, 1e-30, -1e-30], np.float32)
    x = np.resize(vals, (4, 5))
    p, y = _relu_where(x)
    mask = y.value.inputs[0]
    assert type(mask) is eager_relu._LazyMask and mask.op is None and not mask.requires_grad
    assert _bits(mask.data) == _bits(np.ascontiguousarray(x * 1.0 <= 0))
    assert mask.data is mask.data  # computed once
    (y * y).sum().backward()
    fast_grad = p.grad.copy()
    for name in ("relu",):  # the general path's relu: le and where as ops
        monkeypatch.setattr(Tensor, name, eager_fast.GENERAL[name])
    monkeypatch.setattr(eager.EagerContext, "relu", lambda self, *a: None)
    p2, y2 = _relu_where(x)
    assert type(y2.value.inputs[0]) is eager.EagerValue
    assert _bits(y2) == _bits(y)
    (y2 * y2).sum().backward()
    assert _bits(p2.grad) == _bits(fast_grad)
