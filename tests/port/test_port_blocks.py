"""The port suite: real blocks (port_blocks.py, each naming its source) run with torch and with
graphc by swapping the imports only, checked against PyTorch with the same weights.

Inference: eval mode, the state_dict copied from torch (running statistics randomized first so
BatchNorm does something), outputs compared in structure and value. Training: a few SGD steps of
``graphc.compile_train`` against torch's autograd + torch.optim.SGD, comparing losses and the
parameters after the steps. The reference backend keeps the suite fast (no kernel compiles).
"""

from __future__ import annotations

import numpy as np
import port_blocks as blocks
import pytest
import torch

import graphc
from graphc import optim

TORCH = (torch, torch.nn, torch.nn.functional)
GRAPHC = (graphc, graphc.nn, graphc.nn.functional)

INFERENCE = [
    blocks.make_mobilenet_v2_inverted_residual,
    blocks.make_resnet_basic_block,
    blocks.make_resnext_bottleneck,
    blocks.make_squeezenet_fire,
    blocks.make_shufflenet_v2_unit,
    blocks.make_mobilenet_v3_se,
    blocks.make_d2l_lenet,
    blocks.make_d2l_alexnet_small,
    blocks.make_d2l_nin,
    blocks.make_d2l_vgg_block,
    blocks.make_d2l_inception,
    blocks.make_d2l_densenet_block,
    blocks.make_nanogpt,
    blocks.make_llama_block,
    blocks.make_timm_convnext_block,
    blocks.make_timm_efficientnet_ds,
    blocks.make_dcgan_generator,
    blocks.make_torch_transformer_encoder,
]

TRAINING = [
    blocks.make_resnet_basic_block,
    blocks.make_mobilenet_v2_inverted_residual,
    blocks.make_d2l_lenet,
    blocks.make_llama_block,
    blocks.make_timm_convnext_block,
    blocks.make_timm_efficientnet_ds,
]


def _pair(make, seed: int = 0):
    torch.manual_seed(seed)
    tmodel, shape = make(*TORCH)
    gmodel, gshape = make(*GRAPHC)
    assert gshape == shape
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, buf in tmodel.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
    tstate = tmodel.state_dict()
    assert list(gmodel.state_dict()) == list(tstate), "parameter and buffer names differ from PyTorch's"
    result = gmodel.load_state_dict({k: v.detach().numpy() for k, v in tstate.items()}, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for key, value in gmodel.state_dict().items():
        assert value.dtype == tstate[key].detach().numpy().dtype, key
    return tmodel, gmodel, shape


def _input(make, shape, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if make is blocks.make_nanogpt:
        return rng.integers(0, blocks.GPTConfig.vocab_size, size=shape).astype(np.int64)
    return rng.standard_normal(shape).astype(np.float32)


def _compare(ours, theirs, where: str = "output") -> None:
    if theirs is None:
        assert ours is None, where
    elif isinstance(theirs, (tuple, list)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), where
        for i, (o, t) in enumerate(zip(ours, theirs)):
            _compare(o, t, f"{where}[{i}]")
    else:
        expect = theirs.detach().numpy()
        assert isinstance(ours, np.ndarray) and ours.dtype == expect.dtype, (
            where,
            getattr(ours, "dtype", ours),
        )
        np.testing.assert_allclose(ours, expect, rtol=2e-4, atol=2e-5, err_msg=where)


@pytest.mark.parametrize("make", INFERENCE, ids=lambda m: m.__name__[5:])
def test_inference_matches_torch(make):
    tmodel, gmodel, shape = _pair(make)
    tmodel.eval()
    gmodel.eval()
    x = _input(make, shape)
    plan = graphc.compile(gmodel, x, backend="reference")
    with torch.no_grad():
        expect = tmodel(torch.from_numpy(x))
    _compare(plan(x), expect)


def test_inference_on_numba_kernels():
    """Two blocks through the default (numba) backend too: grouped conv and attention kernels."""
    for make in (blocks.make_mobilenet_v2_inverted_residual, blocks.make_nanogpt):
        tmodel, gmodel, shape = _pair(make)
        tmodel.eval()
        gmodel.eval()
        x = _input(make, shape)
        with torch.no_grad():
            expect = tmodel(torch.from_numpy(x))
        _compare(graphc.compile(gmodel, x, freeze=True)(x), expect)


def _mse_target(out_shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(7).standard_normal(out_shape).astype(np.float32)


@pytest.mark.parametrize("make", TRAINING, ids=lambda m: m.__name__[5:])
def test_training_steps_match_torch(make):
    tmodel, gmodel, shape = _pair(make)
    tmodel.train()
    gmodel.train()
    x = _input(make, shape)
    with torch.no_grad():
        out_shape = tuple(tmodel(torch.from_numpy(x)).shape)
    # that forward in train mode moved torch's running stats: start both from the same state again
    with torch.no_grad():
        for value, tvalue in zip(gmodel.state_dict().values(), tmodel.state_dict().values()):
            tvalue.copy_(torch.from_numpy(np.array(value)))
    y = _mse_target(out_shape)
    step = graphc.compile_train(
        gmodel, graphc.nn.functional.mse_loss, optim.SGD(lr=0.05), x, y, backend="reference"
    )
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.05)
    for _ in range(3):
        loss = step(x, y)
        topt.zero_grad()
        tloss = torch.nn.functional.mse_loss(tmodel(torch.from_numpy(x)), torch.from_numpy(y))
        tloss.backward()
        topt.step()
        np.testing.assert_allclose(loss, tloss.item(), rtol=2e-4, atol=1e-6)
    tstate = tmodel.state_dict()
    for key, value in gmodel.state_dict().items():
        np.testing.assert_allclose(value, tstate[key].detach().numpy(), rtol=2e-3, atol=2e-5, err_msg=key)
