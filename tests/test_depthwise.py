"""Depthwise convolution (conv2d with groups == channels): the ``depthwise_conv2d`` op against PyTorch.

Forward on the CPU backend and the NumPy reference for strides, dilations, paddings and kernels
that leave no interior (every output on the border), gradients against torch autograd and
central differences, the traced graph (one op, no im2col), 1x1 convolutions simplified to a
reshape, and the errors a bad node raises.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphc
from graphc import functional as F
from graphc import passes
from graphc.compiler import compile_graph
from graphc.ir import Graph, GraphcError, TensorType
from graphc.kernels.cpu import compile_node
from graphc.kernels.cpu.depthwise import interior
from graphc.kernels.reference import execute, run_node
from graphc.passes.autodiff import grad
from graphc.tracing import trace

# (channels, h, w, kernel (kh, kw), stride, padding, dilation)
CASES = [
    (4, 9, 11, (3, 3), 1, 1, 1),
    (5, 10, 7, (3, 3), 2, 1, 1),
    (3, 12, 12, (3, 3), 1, 2, 2),
    (2, 8, 9, (5, 5), 2, 0, 1),
    (3, 7, 6, (2, 3), (2, 1), (1, 0), (1, 2)),
    (2, 3, 4, (5, 5), 1, 2, 1),  # the window is larger than the image: no interior at all
    (2, 5, 5, (3, 3), 1, 3, 1),  # outputs whose window lies wholly in the padding are 0
    (6, 14, 14, (3, 3), 2, 1, 1),
    (2, 9, 8, (7, 7), 1, 3, 1),  # 49 taps, three border positions on each side
    (2, 4, 5, (1, 3), 1, (0, 9), 1),  # 18 border columns: the bounds-tested loop
    (2, 3, 60, (1, 51), 1, (0, 25), 1),  # 51 taps: the bounds-tested loop
]
IDS = [f"c{c}-{h}x{w}-k{k}-s{s}-p{p}-d{d}" for c, h, w, k, s, p, d in CASES]


def _arrays(c, h, w, k, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c, h, w)).astype(dtype)
    wt = rng.standard_normal((c, 1, *k)).astype(dtype)
    return x, wt


def _torch_conv(x, wt, s, p, d):
    return torch.nn.functional.conv2d(
        torch.tensor(x), torch.tensor(wt), stride=s, padding=p, dilation=d, groups=x.shape[1]
    )


def _conv(s, p, d):
    return lambda x, w: F.conv2d(x, w, None, s, p, d, x.shape[1])


@pytest.mark.parametrize(
    "case, dtype",
    [(c, np.float32) for c in CASES] + [(c, np.float64) for c in CASES[:3]],
    ids=[f"f32-{i}" for i in IDS] + [f"f64-{i}" for i in IDS[:3]],
)
def test_forward_matches_torch(case, dtype):
    c, h, w, k, s, p, d = case
    x, wt = _arrays(c, h, w, k, dtype)
    want = _torch_conv(x, wt, s, p, d).numpy()
    plan = graphc.compile(_conv(s, p, d), x, wt)
    assert [n.op for n in plan.graph.nodes] == ["depthwise_conv2d"]
    got = plan(x, wt)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    graph = trace(_conv(s, p, d), x, wt)
    np.testing.assert_allclose(execute(graph, {"x": x, "w": wt})[0], want, rtol=tol, atol=tol)


def test_module_with_bias_and_string_padding():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 6, 9, 8)).astype(np.float32)
    conv = graphc.nn.Conv2d(6, 6, 3, padding="same", groups=6, dilation=2)
    ref = torch.nn.Conv2d(6, 6, 3, padding="same", groups=6, dilation=2)
    ref.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in conv.state_dict().items()})
    plan = graphc.compile(conv, x)
    assert "im2col" not in [n.op for n in plan.graph.nodes]
    with torch.no_grad():
        want = ref(torch.tensor(x)).numpy()
    np.testing.assert_allclose(plan(x), want, rtol=1e-5, atol=1e-5)


def test_channel_multiplier_and_int_inputs_keep_the_im2col_path():
    """groups == C but O = 2C is not depthwise in this op's sense; it stays a grouped matmul."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    wt = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    graph = trace(lambda x, w: F.conv2d(x, w, None, 1, 1, 1, 3), x, wt)
    assert "depthwise_conv2d" not in [n.op for n in graph.nodes]
    want = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(wt), padding=1, groups=3).numpy()
    np.testing.assert_allclose(execute(graph, {"x": x, "w": wt})[0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES[:5], ids=IDS[:5])
def test_gradients_match_torch_and_finite_differences(case):
    c, h, w, k, s, p, d = case
    x, wt = _arrays(c, h, w, k, np.float64, seed=3)
    graph = trace(lambda x, w: (_conv(s, p, d)(x, w) * _conv(s, p, d)(x, w)).sum(), x, wt)
    joint, index = grad(graph, 0, ["x", "w"])
    feeds = {"x": x, "w": wt}
    results = execute(joint, feeds)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(wt, requires_grad=True)
    y = torch.nn.functional.conv2d(tx, tw, stride=s, padding=p, dilation=d, groups=c)
    (y * y).sum().backward()
    np.testing.assert_allclose(results[index["x"]], tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(results[index["w"]], tw.grad.numpy(), rtol=1e-10, atol=1e-10)
    # central differences on a few entries of each operand
    rng = np.random.default_rng(4)
    for name, analytic in (("x", results[index["x"]]), ("w", results[index["w"]])):
        for flat in rng.choice(feeds[name].size, size=4, replace=False):
            at = np.unravel_index(flat, feeds[name].shape)
            moved = []
            for sign in (1.0, -1.0):
                arr = feeds[name].copy()
                arr[at] += sign * 1e-6
                moved.append(float(execute(graph, {**feeds, name: arr})[0]))
            np.testing.assert_allclose(analytic[at], (moved[0] - moved[1]) / 2e-6, rtol=1e-5, atol=1e-6)
    # the joint graph compiled for the CPU backend gives the same gradients
    cpu = compile_graph(joint)(x, wt)
    np.testing.assert_allclose(cpu[index["x"]], results[index["x"]], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cpu[index["w"]], results[index["w"]], rtol=1e-10, atol=1e-10)


def test_cpu_kernel_matches_reference_on_a_node():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 8, 7), "f32"))
    w = g.add_input("w", TensorType((3, 1, 3, 3), "f32"))
    node = g.add_node("depthwise_conv2d", [x, w], {"stride": (2, 1), "padding": (1, 1), "dilation": (1, 2)})
    xs, ws = _arrays(3, 8, 7, (3, 3), np.float32, seed=5)
    out = np.full(node.outputs[0].shape, 7.0, np.float32)  # garbage the kernel must overwrite
    compile_node(node)(xs, ws, out)
    np.testing.assert_allclose(out, run_node(node, [xs, ws])[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "args, want",
    [
        ((10, 3, 1, 1, 1, 10), (1, 9)),
        ((10, 3, 2, 1, 1, 5), (1, 5)),
        ((3, 5, 1, 2, 1, 3), (2, 2)),
        ((5, 3, 1, 3, 1, 9), (3, 6)),
    ],
)
def test_interior_bounds(args, want):
    assert interior(*args) == want
    size, k, s, p, d, out = args
    inside = [o for o in range(out) if 0 <= o * s - p and o * s - p + (k - 1) * d < size]
    assert list(range(*want)) == inside


def test_one_by_one_conv_needs_no_im2col():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5, 4, 6)).astype(np.float32)
    wt = rng.standard_normal((7, 5, 1, 1)).astype(np.float32)
    plan = graphc.compile(lambda x, w: F.conv2d(x, w), x, wt)
    assert "im2col" not in [n.op for n in plan.graph.nodes]
    want = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(wt)).numpy()
    np.testing.assert_allclose(plan(x, wt), want, rtol=1e-5, atol=1e-5)
    graph = passes.optimize(trace(lambda x: F.conv2d(x, wt, stride=2), x))
    assert "im2col" in [n.op for n in graph.nodes]  # stride 2 really picks pixels


@pytest.mark.parametrize(
    "x_shape, w_shape, dtype, match",
    [
        ((2, 3, 8, 8), (4, 1, 3, 3), "f32", "weight"),
        ((2, 3, 8, 8), (3, 2, 3, 3), "f32", "weight"),
        ((3, 8, 8), (3, 1, 3, 3), "f32", "NCHW"),
        ((2, 3, 8, 8), (3, 1, 3, 3), "i32", "float"),
        ((2, 3, 2, 2), (3, 1, 5, 5), "f32", "does not fit"),
    ],
)
def test_bad_nodes_are_graphc_errors(x_shape, w_shape, dtype, match):
    g = Graph()
    x = g.add_input("x", TensorType(x_shape, dtype))
    w = g.add_input("w", TensorType(w_shape, dtype))
    with pytest.raises(GraphcError, match=match):
        g.add_node("depthwise_conv2d", [x, w], {})


def test_onnx_export_is_a_grouped_conv(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from graphc.onnx import export

    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 4, 9, 8)).astype(np.float32)
    model = graphc.nn.Sequential(
        graphc.nn.Conv2d(4, 4, 3, 2, 1, dilation=(1, 2), groups=4), graphc.nn.ReLU6()
    )
    proto = export(model, x, path=tmp_path / "dw.onnx")
    assert [n.op_type for n in proto.graph.node if n.op_type == "Conv"] == ["Conv"]
    sess = ort.InferenceSession(str(tmp_path / "dw.onnx"))
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, graphc.compile(model, x)(x), rtol=1e-5, atol=1e-5)
