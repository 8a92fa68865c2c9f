"""F.interpolate / nn.Upsample and pixel_shuffle / pixel_unshuffle against PyTorch: values of compiled
plans and eager float64 gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphc
from graphc import nn
from graphc.ir import GraphcError
from graphc.nn import functional as F

RNG = np.random.default_rng(21)

CASES = [
    ((1, 2, 5, 7), dict(scale_factor=2)),
    ((1, 2, 5, 7), dict(size=(8, 3))),
    ((1, 2, 5, 7), dict(scale_factor=1.7)),
    ((1, 2, 5, 7), dict(size=(3, 11), mode="nearest-exact")),
    ((1, 2, 5, 7), dict(scale_factor=2, mode="bilinear")),
    ((1, 2, 5, 7), dict(size=(9, 4), mode="bilinear", align_corners=True)),
    ((1, 2, 5, 7), dict(scale_factor=(1.5, 0.5), mode="bilinear")),
    ((1, 2, 5, 7), dict(scale_factor=1.7, mode="bilinear", recompute_scale_factor=True)),
    ((1, 2, 5), dict(scale_factor=2.5, mode="linear")),
    ((1, 1, 3, 4, 5), dict(size=(4, 6, 3), mode="trilinear")),
    ((1, 2, 5, 7), dict(size=(2, 3), mode="area")),
]


@pytest.mark.parametrize("shape,kwargs", CASES, ids=[str(k) for _, k in CASES])
def test_interpolate_as_torch(shape, kwargs):
    x = RNG.standard_normal(shape)
    got = graphc.compile(lambda v: F.interpolate(v, **kwargs), x.astype(np.float32), backend="reference")(
        x.astype(np.float32)
    )
    tx = torch.tensor(x, requires_grad=True)
    expect = torch.nn.functional.interpolate(tx, **kwargs)
    np.testing.assert_allclose(got, expect.detach().numpy(), rtol=1e-5, atol=1e-5)
    w = RNG.standard_normal(expect.shape)
    (expect * torch.tensor(w)).sum().backward()
    p = nn.Parameter(x, dtype=np.float64)
    (F.interpolate(p, **kwargs) * w).sum().backward()
    np.testing.assert_allclose(p.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_upsample_and_pixel_shuffle_modules_as_torch():
    x = RNG.standard_normal((2, 8, 3, 3)).astype(np.float32)
    theirs = torch.nn.Sequential(
        torch.nn.PixelShuffle(2),
        torch.nn.Upsample(scale_factor=2, mode="bilinear"),
        torch.nn.PixelUnshuffle(4),
    )
    ours = nn.Sequential(
        nn.PixelShuffle(2), nn.Upsample(scale_factor=2, mode="bilinear"), nn.PixelUnshuffle(4)
    )
    got = graphc.compile(ours, x, backend="reference")(x)
    np.testing.assert_allclose(got, theirs(torch.tensor(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_interpolate_errors():
    x = np.zeros((1, 2, 4, 4), dtype=np.float32)
    for kwargs, message in [
        (dict(), "give exactly one of size and scale_factor"),
        (dict(size=4, mode="linear"), "mode='linear' needs 3-D input"),
        (dict(size=4, mode="bicubic", antialias=True), "mode='bicubic' with antialias is not supported"),
        (dict(size=4, align_corners=True), "align_corners only goes with the linear modes"),
    ]:
        with pytest.raises(GraphcError, match=r"test_resize\.py:\d+: interpolate: " + message):
            graphc.trace(lambda v, k=kwargs: F.interpolate(v, **k), x)
