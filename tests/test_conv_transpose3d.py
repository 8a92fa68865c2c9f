"""Transposed 3-D convolution (graphc/convolution_transpose.py: one matmul and two col2im): F.conv_transpose3d
against PyTorch (values of compiled plans on both backends, float64 eager gradients of input, weight and
bias vs autograd), and ONNX's ConvTranspose on [N, C, D, H, W] against ONNX Runtime and onnx's reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import graphc  # noqa: E402
import graphc.onnx  # noqa: E402
from graphc import nn  # noqa: E402
from graphc.ir import GraphcError  # noqa: E402
from graphc.nn import functional as F  # noqa: E402

RNG = np.random.default_rng(31)
TF = torch.nn.functional

# (input shape, weight shape, torch keyword arguments): strides, padding, output_padding (past the
# padding: zeros beyond the full result), dilation, groups, unbatched input
CASES = [
    ((1, 2, 3, 4, 3), (2, 3, 2, 3, 2), {}),
    ((2, 4, 3, 2, 4), (4, 1, 3, 2, 2), {"stride": 2, "padding": 1, "groups": 2}),
    (
        (1, 2, 2, 3, 3),
        (2, 2, 2, 2, 3),
        {"stride": (2, 1, 3), "padding": (0, 1, 1), "output_padding": (1, 0, 2)},
    ),
    (
        (1, 3, 3, 3, 2),
        (3, 2, 2, 2, 2),
        {"dilation": (2, 1, 3), "stride": (1, 2, 1), "output_padding": (1, 1, 0)},
    ),
    ((2, 3, 2, 2), (2, 2, 1, 2, 2), {"stride": 3, "output_padding": 2}),  # unbatched [C, D, H, W]
]


@pytest.mark.parametrize("xshape,wshape,kw", CASES)
def test_conv_transpose3d_values_and_gradients_as_torch(xshape, wshape, kw):
    groups = kw.get("groups", 1)
    x = RNG.standard_normal(xshape)
    w = RNG.standard_normal(wshape)
    b = RNG.standard_normal(wshape[1] * groups)
    tins = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    expect = TF.conv_transpose3d(*tins, **kw)
    f32 = [a.astype(np.float32) for a in (x, w, b)]
    for backend in ("reference", "cpu"):
        got = graphc.compile(lambda a, c, d: F.conv_transpose3d(a, c, d, **kw), *f32, backend=backend)(*f32)
        np.testing.assert_allclose(got, expect.detach().numpy(), rtol=1e-4, atol=1e-4, err_msg=backend)
    dy = RNG.standard_normal(tuple(expect.shape))
    (expect * torch.tensor(dy)).sum().backward()
    params = [nn.Parameter(a, dtype=np.float64) for a in (x, w, b)]
    out = F.conv_transpose3d(*params, **kw)
    assert tuple(out.shape) == tuple(expect.shape)
    (out * dy).sum().backward()
    for name, p, t in zip(("input", "weight", "bias"), params, tins):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)


def test_conv_transpose3d_refuses_bad_arguments():
    x = np.zeros((1, 2, 2, 2, 2), np.float32)
    with pytest.raises(GraphcError, match="conv_transpose3d: needs input"):
        F.conv_transpose3d(x, np.zeros((2, 1, 2, 2), np.float32))
    with pytest.raises(GraphcError, match="groups"):
        F.conv_transpose3d(x, np.zeros((2, 1, 1, 1, 1), np.float32), groups=3)
    with pytest.raises(GraphcError, match="output_padding"):
        F.conv_transpose3d(x, np.zeros((2, 1, 1, 1, 1), np.float32), output_padding=1)
    with pytest.raises(GraphcError, match="3 ints"):
        F.conv_transpose3d(x, np.zeros((2, 1, 1, 1, 1), np.float32), stride=(1, 2))
    with pytest.raises(GraphcError, match="empty output"):
        F.conv_transpose3d(x, np.zeros((2, 1, 1, 1, 1), np.float32), padding=1)


def _model(attrs: dict, xshape, wshape, bias: bool) -> onnx.ModelProto:
    w = RNG.standard_normal(wshape).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    ins = ["x", "w"]
    if bias:
        inits.append(
            numpy_helper.from_array(
                RNG.standard_normal(wshape[1] * attrs.get("group", 1)).astype(np.float32), "b"
            )
        )
        ins.append("b")
    graph = helper.make_graph(
        [helper.make_node("ConvTranspose", ins, ["y"], **attrs)],
        "ct3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(xshape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize(
    "attrs,xshape,wshape,bias",
    [
        ({"strides": [2, 1, 2], "pads": [1, 0, 0, 0, 1, 1]}, (1, 2, 3, 3, 2), (2, 2, 3, 2, 2), True),
        (
            {"strides": [2, 2, 1], "output_shape": [7, 6, 4], "group": 2},
            (2, 4, 3, 3, 2),
            (4, 1, 2, 2, 3),
            True,
        ),
        (
            {"strides": [1, 2, 2], "auto_pad": "SAME_UPPER", "dilations": [2, 1, 1]},
            (1, 1, 2, 3, 2),
            (1, 2, 2, 3, 2),
            False,
        ),
        (
            {"strides": [3, 2, 2], "auto_pad": "SAME_LOWER", "output_padding": [1, 0, 1]},
            (1, 2, 2, 2, 3),
            (2, 1, 2, 2, 2),
            True,
        ),
        (
            {"kernel_shape": [2, 1, 2], "output_padding": [0, 0, 1], "strides": [1, 1, 2]},
            (1, 1, 2, 2, 2),
            (1, 1, 2, 1, 2),
            False,
        ),
    ],
)
def test_onnx_conv_transpose_3d_matches_onnxruntime_and_onnx_reference(attrs, xshape, wshape, bias):
    """ONNX Runtime always; onnx's reference where group is 1 (its grouped path splits the weight by
    output channels and fails)."""
    ort = pytest.importorskip("onnxruntime")
    model = _model(attrs, xshape, wshape, bias)
    x = RNG.standard_normal(xshape).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {"x": x})
    if attrs.get("group", 1) == 1:
        (ref,) = ReferenceEvaluator(model).run(None, {"x": x})
        np.testing.assert_allclose(ref, want, rtol=1e-4, atol=1e-4)
    for backend in ("reference", "cpu"):
        got = graphc.compile(graphc.onnx.load(model), x, backend=backend)(x)
        assert got.shape == want.shape, backend
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=backend)


def test_onnx_conv_transpose_3d_same_padding_past_a_short_kernel_as_onnx_reference():
    """auto_pad SAME_* where the kernel spans less than the stride asks for more than the full result
    (a negative total padding): the spec's pads, as onnx's reference reads them, add zeros before
    (SAME_UPPER) or after (SAME_LOWER) it. ONNX Runtime gives a smaller output instead."""
    x = RNG.standard_normal((1, 1, 2, 2, 2)).astype(np.float32)
    for auto in ("SAME_UPPER", "SAME_LOWER"):
        model = _model({"strides": [1, 3, 2], "auto_pad": auto}, x.shape, (1, 1, 2, 2, 1), False)
        (want,) = ReferenceEvaluator(model).run(None, {"x": x})
        got = graphc.compile(graphc.onnx.load(model), x, backend="reference")(x)
        assert got.shape == want.shape == (1, 1, 2, 6, 4)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=auto)


def test_onnx_conv_transpose_3d_errors_name_the_problem():
    bad_kernel = _model({"kernel_shape": [2, 2, 2]}, (1, 1, 2, 2, 2), (1, 1, 2, 2, 3), False)
    with pytest.raises(GraphcError, match="kernel_shape"):
        graphc.onnx.load(bad_kernel)(np.zeros((1, 1, 2, 2, 2), np.float32))
    bad_rank = _model({}, (1, 1, 2, 2, 2), (1, 1, 2, 2), False)
    with pytest.raises(GraphcError, match="does not match input rank"):
        graphc.onnx.load(bad_rank)(np.zeros((1, 1, 2, 2, 2), np.float32))
