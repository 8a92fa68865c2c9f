"""Cubic, antialiased and crop-and-resize resampling (graphc/resize_taps.py): the weight tables against
onnx's reference Resize, F.interpolate(mode="bicubic") against PyTorch (values and float64 gradients)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc
from graphc import nn
from graphc.ir import GraphcError
from graphc.nn import functional as F
from graphc.resize_taps import kernel_weights, taps, tf_crop_coords

onnx = pytest.importorskip("onnx")
from onnx.reference.ops.op_resize import (  # noqa: E402  # noqa: E402
    _cubic_coeffs,
    _cubic_coeffs_antialias,
    _interpolate_1d_along_axis,
    _interpolate_nd,
    _linear_coeffs,
    _linear_coeffs_antialias,
)

RNG = np.random.default_rng(5)


def _apply(x: np.ndarray, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (x[idx] * w).sum(axis=1)


def _coeffs(mode: str, antialias: bool, a: float):
    if mode == "linear":
        return _linear_coeffs_antialias if antialias else _linear_coeffs
    fn = _cubic_coeffs_antialias if antialias else _cubic_coeffs
    return lambda r, s: fn(r, s, A=a)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 9),
    out=st.integers(1, 13),
    mode=st.sampled_from(["linear", "cubic"]),
    antialias=st.booleans(),
    exclude=st.booleans(),
    a=st.sampled_from([-0.75, -0.5]),
    coord=st.sampled_from(["half_pixel", "align_corners", "asymmetric"]),
)
def test_taps_match_onnx_reference(size, out, mode, antialias, exclude, a, coord):
    x = RNG.standard_normal(size)
    scale = out / size
    y = np.arange(out, dtype=np.float64)
    if coord == "half_pixel":
        src = (y + 0.5) / scale - 0.5
    elif coord == "asymmetric":
        src = y / scale
    else:
        src = y * (size - 1) / (out - 1) if out > 1 else np.zeros(out)
    idx, w = taps(mode, src, size, scale, cubic_a=a, antialias=antialias, exclude_outside=exclude)
    expect = _interpolate_1d_along_axis(
        x,
        0,
        scale,
        out,
        _coeffs(mode, antialias, a),
        coordinate_transformation_mode=coord,
        exclude_outside=exclude,
    )
    np.testing.assert_allclose(_apply(x, idx, w), expect, rtol=1e-12, atol=1e-12)


def test_tf_crop_coords_match_onnx_reference():
    x = RNG.standard_normal((5, 7))
    roi = np.array([0.2, -0.3, 0.9, 1.4])
    expect = _interpolate_nd(
        x,
        _linear_coeffs,
        output_size=[4, 6],
        roi=roi,
        coordinate_transformation_mode="tf_crop_and_resize",
        extrapolation_value=7.0,
    )
    y = x
    for axis, (out, lo, hi) in enumerate([(4, roi[0], roi[2]), (6, roi[1], roi[3])]):
        src, outside = tf_crop_coords(lo, hi, y.shape[axis], out, out / y.shape[axis])
        idx, w = taps("linear", src, y.shape[axis])
        moved = _apply(np.moveaxis(y, axis, 0), idx, w.reshape(*w.shape, *([1] * (y.ndim - 1))))
        moved[outside] = 7.0
        y = np.moveaxis(moved, 0, axis)
    assert (y == 7.0).any()
    np.testing.assert_allclose(y, expect, rtol=1e-12)


def test_kernel_weights():
    t = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
    np.testing.assert_allclose(kernel_weights("linear", t), [1, 0.5, 0, 0, 0, 0])
    cubic = kernel_weights("cubic", t, -0.5)
    np.testing.assert_allclose(cubic[[0, 2, 4, 5]], [1, 0, 0, 0], atol=1e-15)
    np.testing.assert_allclose(cubic[[1, 3]], [0.5625, -0.0625])
    with pytest.raises(GraphcError, match="unknown interpolation kernel 'area'"):
        taps("area", np.zeros(2), 3)


BICUBIC = [
    ((1, 2, 5, 7), dict(scale_factor=2)),
    ((2, 1, 6, 4), dict(size=(3, 9))),
    ((1, 2, 5, 7), dict(size=(9, 4), align_corners=True)),
    ((1, 1, 5, 7), dict(scale_factor=(1.5, 0.5))),
    ((1, 1, 5, 7), dict(scale_factor=1.7, recompute_scale_factor=True)),
    ((1, 1, 4, 4), dict(size=(1, 1), align_corners=True)),
]


@pytest.mark.parametrize("shape,kwargs", BICUBIC, ids=[str(k) for _, k in BICUBIC])
def test_bicubic_as_torch(shape, kwargs):
    x = RNG.standard_normal(shape)
    kwargs = dict(kwargs, mode="bicubic")
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


def test_bicubic_upsample_module_on_cpu_kernels():
    x = RNG.standard_normal((1, 3, 4, 5)).astype(np.float32)
    got = graphc.compile(nn.Upsample(scale_factor=2, mode="bicubic"), x, backend="cpu")(x)
    expect = torch.nn.Upsample(scale_factor=2, mode="bicubic")(torch.tensor(x)).numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)


def test_bicubic_errors():
    x = np.zeros((1, 2, 4), dtype=np.float32)
    with pytest.raises(
        GraphcError, match=r"test_resize_cubic\.py:\d+: interpolate: mode='bicubic' needs 4-D"
    ):
        graphc.trace(lambda v: F.interpolate(v, size=3, mode="bicubic"), x)
    xi = np.zeros((1, 2, 4, 4), dtype=np.int64)
    with pytest.raises(GraphcError, match="mode='bicubic' needs a float input"):
        graphc.trace(lambda v: F.interpolate(v, size=3, mode="bicubic"), xi)


def _resize_model(mode: str, **attrs):
    from onnx import TensorProto, helper

    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode=mode, **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            helper.make_tensor("roi", TensorProto.FLOAT, [0], []),
            helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 0.5, 0.5]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_onnx_resize_errors():
    from graphc.onnx.backend import GraphcBackend

    x = np.zeros((1, 1, 4, 4), np.float32)
    for model, message in [
        (_resize_model("nearest", antialias=1), "antialias=1 needs mode 'linear' or 'cubic'"),
        (_resize_model("linear", coordinate_transformation_mode="tf_crop_and_resize"), "roi needs 8 entries"),
    ]:
        with pytest.raises(GraphcError, match=r"\(Resize\): " + message):
            GraphcBackend.run_model(model, [x], backend="reference")
