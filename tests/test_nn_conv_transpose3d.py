"""nn.ConvTranspose3d (graphc/nn/conv.py) against torch.nn.ConvTranspose3d: the same parameter names,
shapes and default initialization bounds; with torch's weights loaded, the same float64 output and
gradients of input, weight and bias (strides, padding, output_padding, groups, dilation, no bias,
``output_size``, unbatched input); a compiled module; ONNX export and re-import against ONNX Runtime."""

import numpy as np
import pytest
import torch

from graphc import nn
from graphc.ir import GraphcError

RNG = np.random.default_rng(17)

# (in_channels, out_channels, kernel_size, keyword arguments, input shape)
CASES = [
    (2, 3, 2, {}, (1, 2, 2, 3, 2)),
    (4, 2, (2, 3, 1), {"stride": 2, "padding": 1, "groups": 2}, (2, 4, 3, 2, 3)),
    (
        2,
        4,
        2,
        {"stride": (2, 1, 3), "padding": (0, 1, 1), "output_padding": (1, 0, 2), "bias": False},
        (1, 2, 2, 3, 2),
    ),
    (
        3,
        3,
        (2, 2, 3),
        {"dilation": (2, 1, 2), "stride": (1, 2, 1), "output_padding": (1, 1, 0)},
        (3, 2, 3, 2),
    ),
]


def _pair_of_modules(cin, cout, k, kw):
    """graphc's module (float64) with torch's freshly initialized float64 parameters loaded."""
    ref = torch.nn.ConvTranspose3d(cin, cout, k, dtype=torch.float64, **kw)
    mod = nn.ConvTranspose3d(cin, cout, k, dtype=np.float64, **kw)
    ours = {k: np.asarray(v) for k, v in mod.state_dict().items()}
    theirs = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    mod.load_state_dict(theirs)
    return mod, ref


@pytest.mark.parametrize("cin, cout, k, kw, xshape", CASES)
def test_conv_transpose3d_module_as_torch(cin, cout, k, kw, xshape):
    mod, ref = _pair_of_modules(cin, cout, k, kw)
    x = RNG.standard_normal(xshape)
    tx = torch.tensor(x, requires_grad=True)
    expect = ref(tx)
    dy = RNG.standard_normal(tuple(expect.shape))
    (expect * torch.tensor(dy)).sum().backward()

    gx = nn.Parameter(x, dtype=np.float64)
    out = mod(gx)
    assert tuple(out.shape) == tuple(expect.shape)
    np.testing.assert_allclose(np.asarray(out.numpy()), expect.detach().numpy(), rtol=1e-10, atol=1e-12)
    (out * dy).sum().backward()
    np.testing.assert_allclose(gx.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(
            getattr(mod, name).grad, p.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=name
        )


def test_output_size_picks_the_output_padding_as_torch():
    mod, ref = _pair_of_modules(2, 2, 3, {"stride": 2, "padding": 1})
    x = RNG.standard_normal((1, 2, 2, 3, 2))
    for size in ((4, 6, 4), (4, 5, 3), (1, 2, 4, 6, 3)):
        expect = ref(torch.tensor(x), output_size=list(size)).detach().numpy()
        got = mod(nn.Parameter(x, dtype=np.float64), output_size=size)
        np.testing.assert_allclose(np.asarray(got.numpy()), expect, rtol=1e-10, atol=1e-12)
    with pytest.raises(GraphcError, match="ConvTranspose3d"):
        mod(nn.Parameter(x, dtype=np.float64), output_size=(9, 9, 9))


def test_default_initialization_bounds_as_torch():
    """kaiming_uniform(a=sqrt(5)) weight and U(+-1/sqrt(fan_in)) bias, fan_in = out_channels / groups
    * prod(kernel_size) as PyTorch computes it for a transposed convolution's weight."""
    nn.manual_seed(0)
    mod = nn.ConvTranspose3d(6, 8, (3, 2, 2), groups=2)
    w, b = np.asarray(mod.weight.numpy()), np.asarray(mod.bias.numpy())
    assert w.shape == (6, 4, 3, 2, 2) and b.shape == (8,) and w.dtype == np.float32
    bound = 1 / np.sqrt(4 * 3 * 2 * 2)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.3 * bound
    assert "kernel_size=(3, 2, 2)" in repr(mod)


def test_compiled_module_and_onnx_round_trip():
    onnx = pytest.importorskip("onnx")  # noqa: F841
    ort = pytest.importorskip("onnxruntime")
    import graphc.onnx

    cin, cout, k, kw, xshape = CASES[1]
    ref = torch.nn.ConvTranspose3d(cin, cout, k, **kw)
    mod = nn.ConvTranspose3d(cin, cout, k, **kw)
    mod.load_state_dict({name: v.detach().numpy() for name, v in ref.state_dict().items()})
    x = RNG.standard_normal(xshape).astype(np.float32)
    expect = ref(torch.tensor(x)).detach().numpy()
    got = graphc.compile(mod, x, backend="cpu")(x)
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-5)
    proto = graphc.onnx.export(mod, x)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (from_ort,) = sess.run(None, {sess.get_inputs()[0].name: x})
    np.testing.assert_allclose(from_ort, expect, rtol=1e-4, atol=1e-5)
    back = graphc.compile(graphc.onnx.load(proto), x, backend="cpu")(x)
    np.testing.assert_allclose(back, expect, rtol=1e-4, atol=1e-5)


def test_conv_transpose3d_refuses_bad_arguments():
    with pytest.raises(GraphcError, match="ConvTranspose3d.*divisible by groups"):
        nn.ConvTranspose3d(3, 4, 2, groups=2)
    with pytest.raises(GraphcError, match="ConvTranspose3d.*zeros"):
        nn.ConvTranspose3d(2, 2, 2, padding_mode="reflect")
