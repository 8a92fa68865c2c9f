"""grid_sample, affine_grid, lp_pool1d/2d, max_unpool2d against PyTorch (values of compiled plans and
eager float64 gradients vs autograd), and the ONNX converters of graphc/onnx/ops/sampling.py and
signal.py (GridSample, AffineGrid, LpPool, Col2Im, CenterCropPad, ReverseSequence, MaxUnpool, Det, the
window ops) against ONNX Runtime and NumPy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import graphc  # noqa: E402
import graphc.onnx  # noqa: E402
from graphc import nn  # noqa: E402
from graphc.ir import GraphcError  # noqa: E402
from graphc.nn import functional as F  # noqa: E402

RNG = np.random.default_rng(18)
TF = torch.nn.functional


def _torch_vs_graphc(fn_torch, fn_graphc, arrays, grads=(0,), rtol=1e-5, atol=1e-5):
    """Values (float32 plan, reference backend) and float64 eager gradients of ``sum(fn * w)`` w.r.t.
    the arrays at ``grads``, against PyTorch's autograd."""
    f32 = [a.astype(np.float32) if a.dtype.kind == "f" else a for a in arrays]
    got = graphc.compile(fn_graphc, *f32, backend="reference")(*f32)
    tins = [torch.tensor(a, requires_grad=(i in grads)) for i, a in enumerate(arrays)]
    expect = fn_torch(*tins)
    np.testing.assert_allclose(got, expect.detach().numpy(), rtol=rtol, atol=atol)
    w = RNG.standard_normal(tuple(expect.shape))
    (expect * torch.tensor(w)).sum().backward()
    params = [nn.Parameter(a, dtype=np.float64) if i in grads else a for i, a in enumerate(arrays)]
    (fn_graphc(*params) * w).sum().backward()
    for i in grads:
        ours = params[i].grad if params[i].grad is not None else np.zeros_like(arrays[i])
        np.testing.assert_allclose(ours, tins[i].grad.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(
    "mode,padding,align",
    list(
        itertools.product(
            ("bilinear", "nearest", "bicubic"), ("zeros", "border", "reflection"), (False, True)
        )
    ),
)
def test_grid_sample_as_torch(mode, padding, align):
    x = RNG.standard_normal((2, 3, 5, 4))
    grid = RNG.uniform(-1.6, 1.6, (2, 4, 3, 2))  # points outside [-1, 1] exercise the padding
    kw = dict(mode=mode, padding_mode=padding, align_corners=align)
    _torch_vs_graphc(
        lambda a, g: TF.grid_sample(a, g, **kw), lambda a, g: F.grid_sample(a, g, **kw), [x, grid], (0, 1)
    )


@pytest.mark.parametrize(
    "mode,padding", [("bilinear", "zeros"), ("bilinear", "reflection"), ("nearest", "border")]
)
def test_grid_sample_5d_as_torch(mode, padding):
    x = RNG.standard_normal((1, 2, 3, 4, 5))
    grid = RNG.uniform(-1.4, 1.4, (1, 2, 3, 2, 3))
    kw = dict(mode=mode, padding_mode=padding, align_corners=False)
    _torch_vs_graphc(
        lambda a, g: TF.grid_sample(a, g, **kw), lambda a, g: F.grid_sample(a, g, **kw), [x, grid], (0, 1)
    )


@pytest.mark.filterwarnings("ignore:Since version 1.3.0, affine_grid")
@pytest.mark.parametrize(
    "size,align", [((2, 3, 4, 5), False), ((2, 3, 4, 1), True), ((1, 2, 3, 2, 4), False)]
)
def test_affine_grid_as_torch(size, align):
    d = len(size) - 2
    theta = RNG.standard_normal((size[0], d, d + 1))
    _torch_vs_graphc(
        lambda t: TF.affine_grid(t, list(size), align_corners=align),
        lambda t: F.affine_grid(t, size, align_corners=align),
        [theta],
    )


def test_spatial_transformer_gradient_as_torch():
    """affine_grid then grid_sample: the gradient reaches theta through the grid."""
    x = RNG.standard_normal((2, 2, 5, 6))
    theta = np.array([[[0.9, 0.2, 0.1], [-0.1, 1.1, 0.05]], [[1.2, -0.3, 0.0], [0.25, 0.8, -0.2]]])

    def ours(a, t):
        return F.grid_sample(a, F.affine_grid(t, (2, 2, 4, 3), align_corners=False), align_corners=False)

    def theirs(a, t):
        return TF.grid_sample(a, TF.affine_grid(t, [2, 2, 4, 3], align_corners=False), align_corners=False)

    _torch_vs_graphc(theirs, ours, [x, theta], (0, 1))


@pytest.mark.parametrize(
    "p,kernel,stride,ceil",
    [(2, 3, 2, False), (2, (2, 3), None, True), (3, 2, 1, False), (1.5, (3, 2), (2, 1), True)],
)
def test_lp_pool2d_as_torch(p, kernel, stride, ceil):
    x = RNG.uniform(0.1, 2.0, (2, 3, 7, 6)) * (1 if p != 2 else RNG.choice([-1, 1], (2, 3, 7, 6)))
    _torch_vs_graphc(
        lambda a: TF.lp_pool2d(a, p, kernel, stride, ceil),
        lambda a: F.lp_pool2d(a, p, kernel, stride, ceil),
        [x],
    )


@pytest.mark.parametrize("p,kernel,stride,ceil", [(2, 3, 2, False), (3, 2, None, True)])
def test_lp_pool1d_as_torch(p, kernel, stride, ceil):
    x = RNG.uniform(0.1, 2.0, (2, 3, 9))
    _torch_vs_graphc(
        lambda a: TF.lp_pool1d(a, p, kernel, stride, ceil),
        lambda a: F.lp_pool1d(a, p, kernel, stride, ceil),
        [x],
    )


@pytest.mark.parametrize(
    "kernel,stride,padding,output_size", [(2, 2, 0, None), (3, 2, 1, (8, 6)), (2, 1, 0, None)]
)
def test_max_unpool2d_as_torch(kernel, stride, padding, output_size):
    x = RNG.standard_normal((2, 3, 8, 6))
    pooled, idx = TF.max_pool2d(torch.tensor(x), kernel, stride, padding, return_indices=True)
    values, indices = pooled.numpy(), idx.numpy()
    _torch_vs_graphc(
        lambda v, i: TF.max_unpool2d(v, i, kernel, stride, padding, output_size),
        lambda v, i: F.max_unpool2d(v, i, kernel, stride, padding, output_size),
        [values, indices],
    )


def test_grid_sample_nan_points_stay_in_bounds():
    """A NaN grid point gives NaN there (bilinear) and 0 (nearest, zeros padding): no stray read."""
    x = RNG.standard_normal((1, 2, 4, 4)).astype(np.float32)
    grid = RNG.uniform(-1, 1, (1, 2, 3, 2)).astype(np.float32)
    grid[0, 1, 2] = np.nan
    for mode in ("bilinear", "nearest"):
        plan = graphc.compile(lambda a, g, m=mode: F.grid_sample(a, g, mode=m), x, grid, backend="cpu")
        got = plan(x, grid)
        expect = TF.grid_sample(torch.tensor(x), torch.tensor(grid), mode=mode, align_corners=False).numpy()
        ok = np.ones(got.shape, dtype=bool)
        ok[:, :, 1, 2] = False
        np.testing.assert_allclose(got[ok], expect[ok], rtol=1e-5, atol=1e-6)
        assert np.all(np.isnan(got[:, :, 1, 2])) if mode == "bilinear" else np.all(got[:, :, 1, 2] == 0)


def test_functions_refuse_bad_arguments():
    x = np.zeros((1, 1, 2, 2, 2), dtype=np.float32)
    g = np.zeros((1, 1, 1, 1, 3), dtype=np.float32)
    with pytest.raises(GraphcError, match="grid_sample: mode 'bicubic' needs a 4-D input"):
        graphc.trace(lambda a, b: F.grid_sample(a, b, mode="bicubic"), x, g)
    with pytest.raises(GraphcError, match="grid_sample: mode must be"):
        graphc.trace(lambda a, b: F.grid_sample(a, b, mode="area"), x, g)
    with pytest.raises(GraphcError, match=r"affine_grid: needs theta \[N, 2, 3\]"):
        graphc.trace(lambda t: F.affine_grid(t, (1, 1, 4, 4)), np.zeros((1, 3, 3), dtype=np.float32))


# ------------------------------------------------------------------------------------------- ONNX
def _model(op, inputs, n_out=1, opset=22, consts=None, extra_nodes=(), out_type=TensorProto.FLOAT, **attrs):
    """One ``op`` node over graph inputs ``inputs`` (name -> array) and initializers ``consts``."""
    consts = consts or {}
    names = list(inputs) + list(consts)
    outs = [f"y{i}" for i in range(n_out)]
    nodes = [*extra_nodes, helper.make_node(op, attrs.pop("node_inputs", names), outs, name="node0", **attrs)]
    graph = helper.make_graph(
        nodes,
        "t",
        [
            helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
            for k, v in inputs.items()
        ],
        [helper.make_tensor_value_info(o, out_type, None) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _run_graphc(model, inputs, backend="reference"):
    arrays = list(inputs.values())
    out = graphc.compile(graphc.onnx.load(model), *arrays, backend=backend)(*arrays)
    return [np.asarray(o) for o in (out if isinstance(out, tuple) else (out,))]


def _check_ort(model, inputs, backend="reference", rtol=1e-5, atol=1e-5):
    got = _run_graphc(model, inputs, backend)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expect = sess.run(None, inputs)
    for g, e in zip(got, expect):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    "opset,mode,padding,align",
    [
        (16, "bilinear", "zeros", 0),
        (16, "bicubic", "reflection", 1),
        (16, "nearest", "border", 0),
        (20, "cubic", "border", 0),  # ONNX Runtime (and PyTorch) clamp each tap, not the coordinate
        (20, "cubic", "zeros", 1),
        (20, "linear", "reflection", 0),
    ],
)
def test_onnx_grid_sample_as_onnxruntime(opset, mode, padding, align):
    x = RNG.standard_normal((2, 3, 5, 4)).astype(np.float32)
    grid = RNG.uniform(-1.5, 1.5, (2, 4, 3, 2)).astype(np.float32)
    model = _model(
        "GridSample", {"x": x, "g": grid}, opset=opset, mode=mode, padding_mode=padding, align_corners=align
    )
    _check_ort(
        model, {"x": x, "g": grid}, backend="cpu" if (mode, padding) == ("cubic", "border") else "reference"
    )


def test_onnx_affine_grid_as_onnxruntime():
    theta = RNG.standard_normal((2, 2, 3)).astype(np.float32)
    model = _model(
        "AffineGrid", {"theta": theta}, opset=20, consts={"size": np.array([2, 3, 4, 5])}, align_corners=1
    )
    _check_ort(model, {"theta": theta})


@pytest.mark.parametrize(
    "shape,attrs",
    [
        ((1, 2, 9), dict(kernel_shape=[3], p=3, strides=[2], pads=[1, 2])),
        ((2, 2, 7, 6), dict(kernel_shape=[3, 2], p=2, strides=[2, 1], dilations=[1, 2], ceil_mode=1)),
        ((1, 2, 6, 5), dict(kernel_shape=[2, 3], p=1, auto_pad="SAME_LOWER", strides=[2, 2])),
        ((1, 1, 4, 5, 3), dict(kernel_shape=[2, 2, 2], p=3, pads=[1, 0, 1, 0, 1, 1])),
    ],
)
def test_onnx_lp_pool_as_onnxruntime(shape, attrs):
    x = RNG.standard_normal(shape).astype(np.float32)
    _check_ort(_model("LpPool", {"x": x}, opset=22, **attrs), {"x": x}, rtol=1e-4)


@pytest.mark.parametrize(
    "image,block,attrs",
    [([5, 6], [2, 3], dict(strides=[1, 2], pads=[1, 0, 2, 1], dilations=[2, 1])), ([4, 3, 5], [2, 1, 2], {})],
)
def test_onnx_col2im_against_numpy(image, block, attrs):
    n = len(image)
    strides = attrs.get("strides", [1] * n)
    dil = attrs.get("dilations", [1] * n)
    pads = attrs.get("pads", [0] * 2 * n)
    padded = [image[i] + pads[i] + pads[i + n] for i in range(n)]
    blocks = [(p - d * (k - 1) - 1) // s + 1 for p, d, k, s in zip(padded, dil, block, strides)]
    x = RNG.standard_normal((2, 3 * int(np.prod(block)), int(np.prod(blocks)))).astype(np.float32)
    consts = {"image_shape": np.array(image), "block_shape": np.array(block)}
    (got,) = _run_graphc(_model("Col2Im", {"x": x}, opset=18, consts=consts, **attrs), {"x": x})
    expect = np.zeros((2, 3, *padded), dtype=np.float64)  # brute force: add every column element
    cols = x.reshape(2, 3, *block, *blocks)
    for kpos in itertools.product(*map(range, block)):
        for bpos in itertools.product(*map(range, blocks)):
            where = tuple(b * s + k * d for b, s, k, d in zip(bpos, strides, kpos, dil))
            expect[(slice(None), slice(None), *where)] += cols[(slice(None), slice(None), *kpos, *bpos)]
    crop = tuple(slice(pads[i], pads[i] + image[i]) for i in range(n))
    np.testing.assert_allclose(got, expect[(slice(None), slice(None), *crop)], rtol=1e-5, atol=1e-5)


def test_onnx_center_crop_pad_as_onnxruntime():
    x = RNG.standard_normal((3, 7, 4)).astype(np.float32)
    model = _model("CenterCropPad", {"x": x}, opset=18, consts={"shape": np.array([4, 7])}, axes=[-2, 2])
    _check_ort(model, {"x": x})


@pytest.mark.parametrize("batch_axis,time_axis", [(0, 1), (1, 0)])
def test_onnx_reverse_sequence_run_time_lengths(batch_axis, time_axis):
    x = RNG.standard_normal((4, 5, 3) if batch_axis == 0 else (5, 4, 3)).astype(np.float32)
    lens = np.array([5, 0, 2, 1], dtype=np.int64)
    model = _model(
        "ReverseSequence", {"x": x, "lens": lens}, opset=10, batch_axis=batch_axis, time_axis=time_axis
    )
    _check_ort(model, {"x": x, "lens": lens}, backend="cpu" if batch_axis == 0 else "reference")


def test_onnx_max_unpool_of_max_pool_as_onnxruntime():
    x = RNG.standard_normal((2, 3, 6, 5)).astype(np.float32)
    pool = helper.make_node("MaxPool", ["x"], ["v", "i"], kernel_shape=[2, 2], strides=[2, 2])
    model = _model(
        "MaxUnpool",
        {"x": x},
        opset=11,
        consts={"shape": np.array([2, 3, 6, 5])},  # odd sizes: the pooled input's shape
        extra_nodes=[pool],
        node_inputs=["v", "i", "shape"],
        kernel_shape=[2, 2],
        strides=[2, 2],
    )
    _check_ort(model, {"x": x})


@pytest.mark.parametrize("m", [2, 3, 4, 6])
def test_onnx_det_against_numpy(m):
    x = RNG.standard_normal((3, 2, m, m))
    x[0, 0] = 0.0
    x[0, 0, :, 0] = np.arange(1, m + 1)  # a zero diagonal: needs pivoting
    x[0, 0, 0, 1:] = 1.0
    x[1, 1, -1] = x[1, 1, 0] * 2.0  # singular
    x = x.astype(np.float32)
    (got,) = _run_graphc(_model("Det", {"x": x}), {"x": x}, backend="cpu" if m == 4 else "reference")
    np.testing.assert_allclose(got, np.linalg.det(x.astype(np.float64)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic,dtype", [(1, TensorProto.FLOAT), (0, TensorProto.DOUBLE)])
def test_onnx_windows_as_onnxruntime(op, periodic, dtype):
    model = _model(
        op,
        {},
        opset=17,
        consts={"n": np.array(10, dtype=np.int64)},
        out_type=dtype,
        periodic=periodic,
        output_datatype=dtype,
    )
    _check_ort(model, {})


@pytest.mark.parametrize(
    "op,inputs,opset,attrs,message",
    [
        (
            "GridSample",
            {"x": (1, 1, 2, 2), "g": (1, 1, 1, 2)},
            20,
            dict(mode="bilinear"),
            "attribute 'mode' must be",
        ),
        (
            "GridSample",
            {"x": (1, 1, 2, 2, 2), "g": (1, 1, 1, 1, 3)},
            16,
            {},
            "X must have rank 4 at opset 16",
        ),
        ("GridSample", {"x": (1, 1, 2, 2), "g": (1, 1, 1, 3)}, 20, {}, r"Grid must be \[1, \.\.\., 2\]"),
        ("Det", {"x": (33, 33)}, 22, {}, "up to 32x32"),
        ("LpPool", {"x": (1, 1, 4, 4)}, 22, {}, "missing attribute 'kernel_shape'"),
    ],
)
def test_onnx_errors_name_the_node(op, inputs, opset, attrs, message):
    arrays = {k: np.zeros(s, dtype=np.float32) for k, s in inputs.items()}
    with pytest.raises(GraphcError, match=rf"ONNX node 'node0' \({op}\): .*{message}"):
        _run_graphc(_model(op, arrays, opset=opset, **attrs), arrays)
