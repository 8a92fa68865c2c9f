"""F.pad in its four modes and the conv modules' ``padding_mode``, against PyTorch (values and gradients),
and ConvTranspose1d/2d's ``output_size`` (PyTorch's output_padding choice and its error)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import graphc
from graphc import nn
from graphc.functional import conv_transpose1d, pad
from graphc.ir import GraphcError

RNG = np.random.default_rng(8)
MODES = ["constant", "reflect", "replicate", "circular"]
HERE = re.escape("test_padding_modes.py") + r":\d+: "


def normal(*shape: int, dtype=np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


def run(fn, *arrays):
    return graphc.compile(fn, *arrays, backend="reference")(*arrays)


def copy_weights(ours: nn.Module, theirs: torch.nn.Module) -> None:
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


PADS = [
    ((2, 3, 5), (2, 3)),  # 1-D
    ((2, 3, 5), (4, 4)),  # reflect's largest; replicate and circular copy an element twice
    ((2, 3, 4, 5), (1, 2, 3, 0)),  # 2-D
    ((3, 4, 5), (0, 2, 1, 1)),  # 2-D, unbatched
    ((1, 2, 3, 4, 5), (1, 1, 2, 0, 1, 2)),  # 3-D
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape,amounts", PADS)
def test_pad_values_and_gradients_as_torch(mode, shape, amounts):
    """Eager float64 values and backward() gradients equal torch.nn.functional.pad's."""
    x = normal(*shape, dtype=np.float64)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.pad(tx, amounts, mode=mode)
    w = RNG.standard_normal(ty.shape)
    (ty * torch.tensor(w)).sum().backward()
    p = nn.Parameter(x.copy(), dtype=np.float64)
    y = pad(p, amounts, mode=mode)
    (y * w).sum().backward()
    np.testing.assert_allclose(np.asarray(y), ty.detach().numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(p.grad, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_pad_compiled_as_torch(mode):
    x = normal(2, 3, 4, 5)
    got = run(lambda v: pad(v, (2, 1, 3, 1), mode=mode), x)
    np.testing.assert_array_equal(got, torch.nn.functional.pad(torch.tensor(x), (2, 1, 3, 1), mode=mode))


def test_pad_negative_amounts_crop_as_torch():
    x = normal(2, 3, 4, 5)
    cases = [("constant", (-1, 2, 0, -2)), ("constant", (-2, -1)), ("circular", (-1, 2, 1, -1))]
    cases += [("reflect", (-1, 2, 3, -2)), ("replicate", (2, -1, -2, -1))]
    for mode, amounts in cases:
        got = run(lambda v, m=mode, a=amounts: pad(v, a, mode=m, value=None), x)
        np.testing.assert_array_equal(got, torch.nn.functional.pad(torch.tensor(x), amounts, mode=mode))


@pytest.mark.parametrize(
    "amounts,mode,message",
    [
        ((5, 0), "reflect", r"padding \(5, 0\) of dim 2 must be below its size 5"),
        ((6, 0), "circular", r"wraps around more than once"),
        ((1, 1), "wrap", r"mode must be one of"),
        ((1, 1, 1, 1, 1, 1), "replicate", r"padding 3 dims needs a 4-D or 5-D input"),
        ((-4, -3), "replicate", r"crops more than dim 2's size 5"),
    ],
)
def test_pad_errors_name_the_line(amounts, mode, message):
    x = normal(2, 3, 5)
    with pytest.raises(RuntimeError if mode != "wrap" else NotImplementedError):
        torch.nn.functional.pad(torch.tensor(x), amounts, mode=mode)
    with pytest.raises(GraphcError, match=HERE + r"pad.*" + message):
        graphc.trace(lambda v: pad(v, amounts, mode=mode), x)


def test_pad_value_is_only_for_constant_mode():
    x = normal(1, 2, 5)
    with pytest.raises(RuntimeError, match="doesn't take in value"):
        torch.nn.functional.pad(torch.tensor(x), (1, 1), mode="reflect", value=1.0)
    with pytest.raises(GraphcError, match=HERE + r"pad: mode='reflect' takes no value"):
        graphc.trace(lambda v: pad(v, (1, 1), mode="reflect", value=1.0), x)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding,kernel", [(1, 3), ((2, 1), (3, 2)), ("same", (4, 3)), ("valid", 3)])
def test_conv2d_padding_mode_as_torch(mode, padding, kernel):
    torch.manual_seed(0)
    theirs = torch.nn.Conv2d(2, 4, kernel, padding=padding, padding_mode=mode, groups=2)
    ours = nn.Conv2d(2, 4, kernel, padding=padding, padding_mode=mode, groups=2)
    copy_weights(ours, theirs)
    x = normal(2, 2, 5, 6)
    with torch.no_grad():
        expect = theirs(torch.tensor(x)).numpy()
    np.testing.assert_allclose(run(ours, x), expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv1d_padding_mode_trains_as_torch(mode):
    """Two SGD steps of Conv1d(padding_mode=mode): losses and weights as PyTorch's."""
    torch.manual_seed(1)
    theirs = torch.nn.Conv1d(3, 2, 3, padding=2, dilation=2, padding_mode=mode)
    ours = nn.Conv1d(3, 2, 3, padding=2, dilation=2, padding_mode=mode)
    copy_weights(ours, theirs)
    x, y = normal(2, 3, 7), normal(2, 2, 7)
    step = graphc.compile_train(
        ours, graphc.functional.mse_loss, graphc.optim.SGD(lr=0.5), x, y, backend="reference"
    )
    opt = torch.optim.SGD(theirs.parameters(), lr=0.5)
    for _ in range(2):
        loss = step(x, y)
        opt.zero_grad()
        tloss = torch.nn.functional.mse_loss(theirs(torch.tensor(x)), torch.tensor(y))
        tloss.backward()
        opt.step()
        np.testing.assert_allclose(loss, tloss.item(), rtol=1e-5)
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[key], value.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_conv_padding_mode_errors():
    with pytest.raises(GraphcError, match="padding_mode must be one of"):
        nn.Conv2d(2, 2, 3, padding_mode="mirror")
    with pytest.raises(GraphcError, match='ConvTranspose2d: only "zeros" padding mode'):
        nn.ConvTranspose2d(2, 2, 3, padding_mode="reflect")


@pytest.mark.parametrize("output_size", [(7, 9), (8, 10), [1, 3, 8, 9], torch.Size([7, 10])])
def test_conv_transpose2d_output_size_as_torch(output_size):
    torch.manual_seed(2)
    theirs = torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
    ours = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
    copy_weights(ours, theirs)
    x = normal(1, 2, 4, 5)
    with torch.no_grad():
        expect = theirs(torch.tensor(x), output_size=output_size).numpy()
    got = run(lambda v: ours(v, output_size=output_size), x)
    assert got.shape == expect.shape
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


def test_conv_transpose_unreachable_output_size_is_torchs_error():
    ours = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
    x = normal(1, 2, 4, 5)
    message = r"valid sizes range from \[7, 9\] to \[8, 10\] \(for an input of "
    with pytest.raises(ValueError, match=message):
        torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)(torch.tensor(x), output_size=(9, 9))
    with pytest.raises(GraphcError, match=HERE + r"ConvTranspose2d: requested an output size of \[9, 9\], "):
        graphc.trace(lambda v: ours(v, output_size=(9, 9)), x)
    with pytest.raises(GraphcError, match=message):
        graphc.trace(lambda v: ours(v, output_size=(6, 9)), x)
    with pytest.raises(
        GraphcError, match=HERE + r"ConvTranspose2d: for 4D input, output_size must have 2 or 4"
    ):
        graphc.trace(lambda v: ours(v, output_size=(8,)), x)


@pytest.mark.parametrize("output_size", [None, (16,), [2, 4, 17]])
def test_conv_transpose1d_as_torch(output_size):
    torch.manual_seed(3)
    theirs = torch.nn.ConvTranspose1d(2, 4, 3, stride=3, padding=1, groups=2, dilation=2)
    ours = nn.ConvTranspose1d(2, 4, 3, stride=3, padding=1, groups=2, dilation=2)
    copy_weights(ours, theirs)
    x = normal(2, 2, 5)
    with torch.no_grad():
        expect = theirs(torch.tensor(x), output_size=output_size).numpy()
    np.testing.assert_allclose(
        run(lambda v: ours(v, output_size=output_size), x), expect, rtol=1e-5, atol=1e-6
    )
    w = theirs.weight.detach().numpy()
    functional = torch.nn.functional.conv_transpose1d(torch.tensor(x[0]), theirs.weight, None, 2, 1, 1, 2)
    np.testing.assert_allclose(
        conv_transpose1d(x[0], w, None, 2, 1, 1, 2), functional.detach().numpy(), rtol=1e-5, atol=1e-6
    )


PAD_LAYERS = [
    ("ZeroPad2d", (1,), 4),
    ("ConstantPad2d", ((1, 2, 0, 1), 3.5), 4),
    ("ReflectionPad2d", (2,), 4),
    ("ReplicationPad2d", ((1, 0, 2, 3),), 3),
    ("CircularPad2d", (1,), 4),
    ("ReflectionPad1d", ((2, 1),), 3),
    ("ConstantPad1d", (2, -1.0), 2),
    ("ZeroPad1d", ((0, 3),), 3),
    ("ReplicationPad3d", (1,), 5),
]


@pytest.mark.parametrize("name,args,rank", PAD_LAYERS, ids=[p[0] for p in PAD_LAYERS])
def test_padding_layers_as_torch(name, args, rank):
    x = normal(*(2, 3, 4, 5, 6)[:rank])
    ours, theirs = getattr(nn, name)(*args), getattr(torch.nn, name)(*args)
    np.testing.assert_array_equal(run(ours, x), theirs(torch.tensor(x)).numpy())
    assert repr(ours) == repr(theirs)
