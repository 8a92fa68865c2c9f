"""Losses, distances and block functions added for ported code (graphc/functional_extras.py and
graphc/nn/losses.py) against PyTorch: compiled values and eager float64 gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphc
from graphc import nn
from graphc.ir import GraphcError
from graphc.nn import functional as F

RNG = np.random.default_rng(5)


def _probs(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


CASES = {
    "smooth_l1": lambda F, a, b: F.smooth_l1_loss(a, b) + F.smooth_l1_loss(a, b, beta=0.3, reduction="sum"),
    "smooth_l1_beta0": lambda F, a, b: F.smooth_l1_loss(a, b, beta=0.0, reduction="none"),
    "huber": lambda F, a, b: F.huber_loss(a, b, delta=0.5) + F.huber_loss(a, b, reduction="sum"),
    "bce": lambda F, a, b: F.binary_cross_entropy(a.sigmoid(), b.sigmoid(), reduction="none"),
    "bce_weight": lambda F, a, b: F.binary_cross_entropy(
        a.sigmoid(), (b > 0).type_as(a), weight=b.abs().detach()
    ),
    "kl_div": lambda F, a, b: (
        F.kl_div(F.log_softmax(a, -1), F.softmax(b, -1), reduction="batchmean")
        + F.kl_div(F.log_softmax(a, -1), F.log_softmax(b, -1), reduction="sum", log_target=True)
        + F.kl_div(a, F.relu(b), reduction="sum")  # zero targets contribute zero
    ),
    "cosine_similarity": lambda F, a, b: F.cosine_similarity(a, b, dim=-1) + F.cosine_similarity(a, b, 0)[0],
    "pairwise_distance": lambda F, a, b: F.pairwise_distance(a, b) + F.pairwise_distance(a, b, p=1.0),
    "glu": lambda F, a, b: F.glu(a[:, :4], dim=-1) + F.glu(a, 0).sum(0)[:2],
    "softmin": lambda F, a, b: F.softmin(a, dim=1),
    "unfold_fold": lambda F, a, b: F.fold(
        F.unfold(a.reshape(1, 1, 4, 5), 2, padding=1) * 2, (4, 5), 2, padding=1
    ),
    "log1p_expm1_isfinite": lambda F, a, b: (
        a.abs().log1p() + a.expm1() + (a / (b > 0).float()).isfinite().float() + (a / 0).isinf().float()
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_extra_functional_as_torch(name):
    fn = CASES[name]
    a, b = RNG.standard_normal((4, 5)), RNG.standard_normal((4, 5))
    got = graphc.compile(
        lambda x, y: fn(F, x, y), a.astype(np.float32), b.astype(np.float32), backend="reference"
    )(a.astype(np.float32), b.astype(np.float32))
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    expect = fn(torch.nn.functional, ta, tb)
    np.testing.assert_allclose(got, expect.detach().numpy(), rtol=1e-5, atol=1e-5)
    if not expect.requires_grad:
        return
    w = RNG.standard_normal(expect.shape)
    (expect * torch.tensor(w)).sum().backward()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(a, dtype=np.float64)
            self.b = nn.Parameter(b, dtype=np.float64)

        def forward(self, weights):
            return (fn(F, self.a, self.b) * weights).sum()

    net = Net()
    net(w).backward()
    np.testing.assert_allclose(net.a.grad, ta.grad.numpy(), rtol=1e-8, atol=1e-10)
    if tb.grad is not None and tb.grad.any():
        np.testing.assert_allclose(net.b.grad, tb.grad.numpy(), rtol=1e-8, atol=1e-10)


LAYERS = [
    ("SmoothL1Loss", dict(beta=0.3), "pair"),
    ("HuberLoss", dict(delta=0.5), "pair"),
    ("BCELoss", dict(), "probs"),
    ("BCEWithLogitsLoss", dict(pos_weight=np.full(5, 2.0, dtype=np.float32)), "logits"),
    ("KLDivLoss", dict(reduction="batchmean"), "log_probs"),
    ("CosineSimilarity", dict(dim=-1), "pair"),
    ("PairwiseDistance", dict(), "pair"),
    ("GLU", dict(dim=0), "one"),
    ("Softmin", dict(dim=1), "one"),
    ("UpsamplingNearest2d", dict(scale_factor=2), "image"),
    ("UpsamplingBilinear2d", dict(size=(7, 9)), "image"),
    ("Unfold", dict(kernel_size=2, padding=1), "image"),
]


@pytest.mark.parametrize("name,kwargs,inputs", LAYERS, ids=[x[0] for x in LAYERS])
def test_extra_layers_as_torch(name, kwargs, inputs):
    a, b = RNG.standard_normal((4, 5)).astype(np.float32), RNG.standard_normal((4, 5)).astype(np.float32)
    arrays = {
        "pair": (a, b),
        "probs": (_probs(a), _probs(b)),
        "logits": (a, _probs(b)),
        "log_probs": (np.log(_probs(a)), _probs(b)),
        "one": (a,),
        "image": (RNG.standard_normal((2, 3, 4, 5)).astype(np.float32),),
    }[inputs]
    ours = getattr(nn, name)(**kwargs)
    theirs = getattr(torch.nn, name)(
        **{k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    )
    got = graphc.compile(ours, *arrays, backend="reference")(*arrays)
    np.testing.assert_allclose(got, theirs(*map(torch.tensor, arrays)).numpy(), rtol=1e-5, atol=1e-5)


def test_extra_functional_errors():
    x = np.zeros((4, 5), dtype=np.float32)
    with pytest.raises(GraphcError, match=r"test_functional_extras\.py:\d+: glu: dim -1 of \(4, 5\)"):
        graphc.trace(lambda v: F.glu(v), x)
    with pytest.raises(GraphcError, match=r"test_functional_extras\.py:\d+: huber_loss: reduction must be"):
        graphc.trace(lambda v: F.huber_loss(v, v, reduction="avg"), x)
