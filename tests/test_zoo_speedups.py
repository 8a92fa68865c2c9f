"""The model-zoo inference rewrites (issue 18), each checked against ONNX Runtime on small graphs.

- LRN: an odd window's channel sums are one ``depthwise_conv2d`` of a [size, 1] filter of ones
  over the squares viewed as one [N, 1, C, spatial] image (no pad, no slices); the power ``beta``
  of 0.25, 0.5, 0.75 is taken by square roots instead of ``pow``.
- max_pool2d (CPU): row maxima, then column maxima (separable), bit for bit the one-pass kernel's
  first maximal element, the sign of a zero and NaN included.
"""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import graphc  # noqa: E402
import graphc.kernels.cpu as cpu  # noqa: E402
import graphc.onnx  # noqa: E402
from graphc.ir import Graph, TensorType  # noqa: E402
from graphc.kernels.cpu.window import max_pool_source  # noqa: E402
from graphc.kernels.reference import run_node  # noqa: E402


def _model(nodes, inputs, outputs, inits=(), opset=17):
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info(n, f32, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, f32, None) for n in outputs],
        [numpy_helper.from_array(a, n) for n, a in inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _ort(model, *arrays):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), arrays)})


def _plan(model, *arrays, freeze=True):
    return graphc.compile(graphc.onnx.load(model), *arrays, freeze=freeze)


def _ops(plan) -> list[str]:
    """Every op the plan runs, fused bodies' ops included."""
    out = []
    for n in plan.graph.nodes:
        out.append(n.op)
        if n.op == "fused":
            out += [b.op for b in n.subgraph.nodes]
    return out


def _check(model, *arrays, rtol=1e-5, atol=1e-6, freeze=True):
    plan = _plan(model, *arrays, freeze=freeze)
    got = plan(*arrays)
    got = list(got) if isinstance(got, tuple) else [got]
    for g, e in zip(got, _ort(model, *arrays), strict=True):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)
    return plan


# ------------------------------------------------------------------------------------------- LRN
def _lrn_reference(x, size, alpha, beta, bias):
    """ONNX's LRN formula in float64: channels c - floor((size-1)/2) .. c + ceil((size-1)/2)."""
    x = x.astype(np.float64)
    c = x.shape[1]
    total = np.zeros_like(x)
    for k in range(c):
        lo, hi = max(0, k - (size - 1) // 2), min(c - 1, k + -(-(size - 1) // 2))
        total[:, k] = (x[:, lo : hi + 1] ** 2).sum(axis=1)
    return x / (bias + alpha / size * total) ** beta


@pytest.mark.parametrize(
    "shape,size,beta,freeze",
    [
        ((2, 7, 5, 6), 5, 0.75, True),
        ((1, 6, 9), 3, 0.5, False),
        ((2, 3, 4, 4), 7, 0.25, True),
        ((1, 5, 3, 3), 1, 1.0, True),
        ((1, 5, 3, 3), 3, 0.6, True),
    ],
)
def test_lrn_window_as_depthwise_conv_matches_onnxruntime(rng, shape, size, beta, freeze):
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.3, beta=beta, bias=1.5)
    x = rng.standard_normal(shape).astype(np.float32) * 3
    model = _model([node], [("x", list(shape))], ["y"])
    plan = _plan(model, x, freeze=freeze)
    np.testing.assert_allclose(plan(x), _lrn_reference(x, size, 0.3, beta, 1.5), rtol=1e-5, atol=1e-6)
    if x.ndim == 4:  # ONNX Runtime's LRN takes NCHW only
        np.testing.assert_allclose(plan(x), _ort(model, x)[0], rtol=1e-5, atol=1e-6)
    ops = _ops(plan)
    assert "depthwise_conv2d" in ops and "slice" not in ops and "pad" not in ops
    assert ("pow" in ops) == (beta == 0.6)


@pytest.mark.parametrize("size", [2, 6])
def test_lrn_even_window_takes_slices(rng, size):
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.5, beta=0.75, bias=1.0)
    x = rng.standard_normal((2, 8, 3, 5)).astype(np.float32)
    plan = _plan(_model([node], [("x", [2, 8, 3, 5])], ["y"]), x)
    np.testing.assert_allclose(plan(x), _lrn_reference(x, size, 0.5, 0.75, 1.0), rtol=1e-5, atol=1e-6)
    assert "depthwise_conv2d" not in _ops(plan) and "slice" in _ops(plan)


# ------------------------------------------------------------------------------------ max pool
@pytest.mark.parametrize(
    "shape,kernel,stride,dilation,separable",
    [
        ((1, 40, 45, 45), (3, 3), (2, 2), (1, 1), True),  # large enough for the parallel loop
        ((2, 3, 11, 12), (3, 3), (1, 1), (1, 1), True),
        ((1, 2, 13, 9), (2, 3), (2, 1), (2, 1), True),
        ((1, 2, 12, 12), (2, 2), (3, 3), (1, 1), False),  # windows skip rows: the one-pass kernel
    ],
)
def test_max_pool_matches_reference_bit_for_bit(rng, shape, kernel, stride, dilation, separable):
    g = Graph()
    x = g.add_input("x", TensorType(shape, "f32"))
    node = g.add_node("max_pool2d", [x], {"kernel": kernel, "stride": stride, "dilation": dilation})
    src = max_pool_source(node)  # the flat kernel (narrow planes) is separable too: two passes
    assert ("(separable)" in src or "(flat)" in src) == separable
    a = rng.integers(-2, 3, size=shape).astype(np.float32)  # many ties, zeros among them
    a[rng.random(shape) < 0.3] = -0.0  # -0.0 and 0.0 tie: the first in row-major order wins
    a.flat[rng.integers(0, a.size, 5)] = np.nan
    out = np.full(node.output.shape, 7, np.float32)
    cpu.compile_node(node)(a, out)
    (want,) = run_node(node, [a])
    np.testing.assert_array_equal(out, want)
    assert np.array_equal(np.signbit(out), np.signbit(want))
