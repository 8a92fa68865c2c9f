"""ONNX pooling in 3-D (separable), integer max pools, training-mode BatchNormalization and Dropout.

Oracles: a brute-force NumPy 3-D pool and ONNX Runtime (pools), onnx's reference BatchNormalization
training formula in float64, NumPy (integer pools).
"""

import itertools

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import graphc  # noqa: E402
import graphc.onnx  # noqa: E402
from graphc.ir import GraphcError  # noqa: E402

F32 = TensorProto.FLOAT


def _model(node, x, out_types, inits=(), opset=19):
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    graph = helper.make_graph(
        [node],
        "t",
        [helper.make_tensor_value_info("x", elem, list(x.shape))],
        [helper.make_tensor_value_info(n, t, None) for n, t in out_types],
        [numpy_helper.from_array(a, n) for n, a in inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def _graphc(model, x, backend="reference"):
    plan = graphc.compile(graphc.onnx.load(model), x, backend=backend)
    out = plan(x)
    return [np.asarray(o) for o in (out if isinstance(out, tuple) else (out,))]


def _ort(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


@st.composite
def _pool_case(draw):
    """A 3-D pool: input shape and kernel/strides/pads/dilations/ceil_mode that give a non-empty output."""
    kernel, strides, dilations, lo, hi, sizes = [], [], [], [], [], []
    for _ in range(3):
        k = draw(st.integers(1, 3))
        d = draw(st.integers(1, 2))
        kernel.append(k)
        dilations.append(d)
        strides.append(draw(st.integers(1, 3)))
        lo.append(draw(st.integers(0, k - 1)))
        hi.append(draw(st.integers(0, k - 1)))
        span = (k - 1) * d + 1
        sizes.append(draw(st.integers(max(1, span - lo[-1] - hi[-1]), span + 3)))
    attrs = {"kernel_shape": kernel, "strides": strides, "pads": lo + hi, "dilations": dilations}
    attrs["ceil_mode"] = draw(st.integers(0, 1))
    return (1, 2, *sizes), attrs, draw(st.integers(0, 1)), draw(st.integers(0, 2**31))


def _out_len(size, k, s, d, lo, hi, ceil):
    """ONNX's pooled length (PyTorch's rule: a ceil_mode window must start inside the input or left pad)."""
    numer = size + lo + hi - ((k - 1) * d + 1)
    out = (-(-numer // s) if ceil else numer // s) + 1
    return out - 1 if ceil and (out - 1) * s >= size + lo else out


def _brute_pool3d(x, attrs, op, include):
    """Each output as its own 3-D box, in float64, straight from the ONNX definition (None: a box
    holds no input element)."""
    k, s, d, p = attrs["kernel_shape"], attrs["strides"], attrs["dilations"], attrs["pads"]
    sizes = x.shape[2:]
    outs = [_out_len(sizes[i], k[i], s[i], d[i], p[i], p[i + 3], attrs["ceil_mode"]) for i in range(3)]
    y = np.zeros((*x.shape[:2], *outs))
    for o in itertools.product(*(range(n) for n in outs)):
        axes = [[o[i] * s[i] - p[i] + j * d[i] for j in range(k[i])] for i in range(3)]
        vals, count = [], 0
        for pos in itertools.product(*axes):
            inside = all(0 <= pos[i] < sizes[i] for i in range(3))
            in_pad = all(-p[i] <= pos[i] < sizes[i] + p[i + 3] for i in range(3))
            if inside:
                vals.append(x[:, :, pos[0], pos[1], pos[2]].astype(np.float64))
            count += inside if (op == "MaxPool" or not include) else in_pad
        if not vals:
            return None  # a window wholly in the padding: ONNX Runtime and onnx's reference disagree
        total = np.stack(vals, -1)
        y[(slice(None), slice(None), *o)] = total.max(-1) if op == "MaxPool" else total.sum(-1) / count
    return y


@settings(max_examples=40, deadline=None)
@given(case=_pool_case(), op=st.sampled_from(["MaxPool", "AveragePool"]))
def test_pool3d_matches_brute_force_and_onnxruntime(case, op):
    shape, attrs, include, seed = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    node_attrs = {**attrs, "count_include_pad": include} if op == "AveragePool" else attrs
    model = _model(helper.make_node(op, ["x"], ["y"], **node_attrs), x, [("y", F32)])
    expected = _brute_pool3d(x, attrs, op, include)
    assume(expected is not None)
    (got,) = _graphc(model, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    (from_ort,) = _ort(model, x)
    np.testing.assert_allclose(got, from_ort, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool3d_cpu_matches_onnxruntime(rng, op, include):
    x = rng.standard_normal((2, 3, 5, 6, 7)).astype(np.float32)
    attrs = {"kernel_shape": [2, 3, 2], "strides": [2, 1, 2], "pads": [1, 1, 0, 0, 1, 1], "ceil_mode": 1}
    if op == "AveragePool":
        attrs["count_include_pad"] = include
    model = _model(helper.make_node(op, ["x"], ["y"], **attrs), x, [("y", F32)])
    (expected,) = _ort(model, x)
    (got,) = _graphc(model, x, backend="cpu")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_pool4d_is_refused():
    x = np.zeros((1, 1, 2, 2, 2, 2), np.float32)
    model = _model(helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[1, 1, 1, 1]), x, [("y", F32)])
    with pytest.raises(GraphcError, match="MaxPool"):
        _graphc(model, x)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32])
def test_integer_max_pool_pads_with_dtype_minimum(dtype):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(7)
    x = rng.integers(info.min, info.min + 3, size=(1, 2, 4, 5), endpoint=True).astype(dtype)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 2], pads=[1, 1, 1, 1], strides=[1, 2])
    model = _model(node, x, [("y", helper.np_dtype_to_tensor_dtype(x.dtype))])
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=info.min)
    expected = np.stack(
        [
            np.stack([padded[:, :, i : i + 3, j : j + 2].max(axis=(2, 3)) for j in range(0, 6, 2)], -1)
            for i in range(4)
        ],
        -2,
    )
    (got,) = _graphc(model, x, backend="cpu")
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected)


def _bn_training_oracle(x, scale, bias, mean, var, momentum, eps):
    """onnx's reference training formula, in float64."""
    x, scale, bias, mean, var = (a.astype(np.float64) for a in (x, scale, bias, mean, var))
    axes = tuple(a for a in range(x.ndim) if a != 1)
    view = (1, -1) + (1,) * (x.ndim - 2)
    bm, bv = x.mean(axis=axes), x.var(axis=axes)
    y = scale.reshape(view) * (x - bm.reshape(view)) / np.sqrt(bv.reshape(view) + eps) + bias.reshape(view)
    return [y, mean * momentum + bm * (1 - momentum), var * momentum + bv * (1 - momentum)]


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 5)])
def test_batchnorm_training_mode(rng, shape):
    x = rng.standard_normal(shape).astype(np.float32) * 3 + 1
    c = shape[1]
    scale, bias, mean = (rng.standard_normal(c).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.5, 2.0, c).astype(np.float32)
    node = helper.make_node(
        "BatchNormalization",
        ["x", "s", "b", "m", "v"],
        ["y", "rm", "rv"],
        training_mode=1,
        momentum=0.7,
        epsilon=1e-3,
    )
    inits = [("s", scale), ("b", bias), ("m", mean), ("v", var)]
    model = _model(node, x, [("y", F32), ("rm", F32), ("rv", F32)], inits)
    got = _graphc(model, x)
    expected = _bn_training_oracle(x, scale, bias, mean, var, 0.7, 1e-3)
    assert len(got) == 3
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def _dropout_model(x, ratio):
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y", "mask"])
    inits = [("r", np.array(ratio, np.float32)), ("t", np.array(True))]
    return _model(node, x, [("y", F32), ("mask", TensorProto.BOOL)], inits)


def test_training_dropout_ratio_zero_is_identity(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    y, mask = _graphc(_dropout_model(x, 0.0), x)
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == np.bool_ and mask.shape == x.shape and mask.all()


def test_training_dropout_random_mask_is_refused(rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    with pytest.raises(GraphcError, match="Dropout.*random mask"):
        _graphc(_dropout_model(x, 0.25), x)


@pytest.mark.parametrize(
    "shape,attrs",
    [
        ((2, 3, 5, 6), {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1], "strides": [2, 1], "ceil_mode": 1}),
        ((1, 2, 6, 7), {"kernel_shape": [2, 3], "dilations": [2, 1], "strides": [1, 2], "storage_order": 1}),
        ((2, 2, 9), {"kernel_shape": [3], "pads": [1, 1], "strides": [2]}),
    ],
)
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_max_pool_indices_match_onnxruntime_with_ties(shape, attrs, backend):
    x = np.random.default_rng(3).integers(0, 3, size=shape).astype(np.float32)  # many ties
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], **attrs)
    model = _model(node, x, [("y", F32), ("i", TensorProto.INT64)])
    y, idx = _graphc(model, x, backend=backend)
    ey, eidx = _ort(model, x)
    np.testing.assert_array_equal(y, ey)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, eidx)


def test_max_pool3d_indices_are_refused():
    x = np.zeros((1, 1, 2, 2, 2), np.float32)
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[1, 1, 1])
    model = _model(node, x, [("y", F32), ("i", TensorProto.INT64)])
    with pytest.raises(GraphcError, match="Indices.*3-D"):
        _graphc(model, x)
