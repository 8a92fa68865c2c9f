"""max_pool2d's padding attribute (top, left, bottom, right cells of -inf) through every stage.

Oracles: PyTorch (``F.max_pool2d`` with padding/stride/dilation/ceil_mode, and ``F.pad(-inf)`` then an
unpadded pool for asymmetric pads, forward and autograd), finite differences in float64 (the
reference backend), ONNX Runtime (MaxPool with pads, and graphc's exported MaxPool).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_cpu_kernels import node_of, run_cpu
from test_gradcheck import check_op

import graphc
import graphc.onnx
from graphc import functional as F
from graphc.compiler import compile_graph
from graphc.ir import Graph, GraphcError, TensorType
from graphc.kernels.cpu import window
from graphc.kernels.reference import execute, run_node
from graphc.passes import optimize
from graphc.passes.autodiff import value_and_grad
from graphc.passes.simplify import simplify
from graphc.tracing import trace

torch = pytest.importorskip("torch")
TF = torch.nn.functional
NP = {"f32": np.float32, "f64": np.float64}

# (input shape, kernel, stride, dilation, (top, left, bottom, right)); the CPU kernel each reaches
OP_POOLS = [
    ((2, 3, 9, 40), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), "separable"),
    ((2, 3, 9, 40), (2, 3), (1, 2), (2, 1), (1, 0, 1, 1), "separable"),
    ((2, 3, 7, 9), (3, 3), (2, 2), (1, 1), (1, 1, 2, 2), "flat"),
    ((2, 3, 7, 9), (2, 2), (1, 1), (2, 2), (1, 1, 1, 1), "flat"),
    ((1, 2, 8, 30), (2, 2), (3, 3), (1, 1), (1, 1, 1, 1), "one-pass"),
]


def _attrs(kernel, stride, dilation, padding) -> dict:
    return {"kernel": kernel, "stride": stride, "dilation": dilation, "padding": padding}


def _torch_pad_pool(x: np.ndarray, dy: np.ndarray | None, kernel, stride, dilation, padding):
    """PyTorch's pad(-inf) then unpadded max pool: (y, dx for the cotangent dy)."""
    top, left, bottom, right = padding
    tx = torch.tensor(x, requires_grad=True)
    ty = TF.max_pool2d(TF.pad(tx, (left, right, top, bottom), value=-np.inf), kernel, stride, 0, dilation)
    if dy is None:
        return ty.detach().numpy(), None
    ty.backward(torch.tensor(dy))
    return ty.detach().numpy(), tx.grad.numpy()


def _kind(source: str) -> str:
    return "separable" if "(separable)" in source else "flat" if "(flat)" in source else "one-pass"


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("shape,kernel,stride,dilation,padding,kind", OP_POOLS)
def test_op_matches_torch_on_reference_and_cpu(shape, kernel, stride, dilation, padding, kind, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(NP[dtype])
    attrs = _attrs(kernel, stride, dilation, padding)
    node = node_of("max_pool2d", [(shape, dtype)], attrs)
    assert _kind(window.max_pool_source(node)) == kind
    want, _ = _torch_pad_pool(x, None, kernel, stride, dilation, padding)
    assert node.outputs[0].shape == want.shape
    np.testing.assert_array_equal(run_node(node, [x])[0], want)
    np.testing.assert_array_equal(run_cpu(node, [x])[0], want)
    dy = rng.standard_normal(want.shape).astype(NP[dtype])
    _, dx = _torch_pad_pool(x, dy, kernel, stride, dilation, padding)
    grad = node_of("max_pool2d_grad", [(shape, dtype), (want.shape, dtype)], attrs)
    np.testing.assert_allclose(run_node(grad, [x, dy])[0], dx, rtol=1e-6)
    np.testing.assert_allclose(run_cpu(grad, [x, dy])[0], dx, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["f32", "i32"])
@pytest.mark.parametrize("shape,kernel,stride,dilation,padding,kind", OP_POOLS)
def test_cpu_matches_reference_with_ties_nan_and_minus_inf(
    shape, kernel, stride, dilation, padding, kind, dtype
):
    """Bit for bit (the sign of a zero too): windows of -inf beside the padding, NaN, many ties."""
    rng = np.random.default_rng(1)
    x = rng.integers(-3, 4, size=shape).astype(np.float32 if dtype == "f32" else np.int32)
    if dtype == "f32":
        x[0, 0, :2, :3] = -np.inf
        x[0, 1, 2:5, 1:4] = -0.0
        x[0, 1, 3, 2] = 0.0
        x[-1, -1, -1, -1] = np.nan
    node = node_of("max_pool2d", [(shape, dtype)], _attrs(kernel, stride, dilation, padding))
    got, want = run_cpu(node, [x])[0], run_node(node, [x])[0]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    if dtype == "f32":
        dy = rng.standard_normal(want.shape).astype(np.float32)
        grad = node_of("max_pool2d_grad", [(shape, dtype), (want.shape, dtype)], node.attrs)
        np.testing.assert_array_equal(run_cpu(grad, [x, dy])[0], run_node(grad, [x, dy])[0])


@pytest.mark.parametrize("shape,kind", [((2, 300, 13, 15), "flat"), ((1, 64, 30, 40), "separable")])
def test_parallel_padded_kernels_match_reference(shape, kind):
    """Many planes: the blocks of planes run in prange, each with its own scratch."""
    node = node_of("max_pool2d", [(shape, "f32")], _attrs((3, 3), (1, 1), (1, 1), (1, 1, 1, 1)))
    source = window.max_pool_source(node)
    assert _kind(source) == kind and "prange" in source
    x = np.random.default_rng(10).integers(-3, 4, size=shape).astype(np.float32)
    x.reshape(-1)[-1] = np.nan
    np.testing.assert_array_equal(run_cpu(node, [x])[0], run_node(node, [x])[0])


def test_window_of_padding_only_is_minus_inf_and_drops_its_gradient():
    # Dilation 3 over 2 rows with one row of padding each side: every window's rows are padding.
    x = np.arange(10, dtype=np.float32).reshape(1, 1, 2, 5)
    attrs = _attrs((2, 2), (1, 1), (3, 3), (1, 1, 1, 1))
    node = node_of("max_pool2d", [((1, 1, 2, 5), "f32")], attrs)
    want, _ = _torch_pad_pool(x, None, (2, 2), (1, 1), (3, 3), (1, 1, 1, 1))
    assert np.all(want == -np.inf)
    np.testing.assert_array_equal(run_node(node, [x])[0], want)
    np.testing.assert_array_equal(run_cpu(node, [x])[0], want)
    grad = node_of("max_pool2d_grad", [((1, 1, 2, 5), "f32"), (want.shape, "f32")], attrs)
    dy = np.ones(want.shape, np.float32)
    np.testing.assert_array_equal(run_cpu(grad, [x, dy])[0], np.zeros_like(x))
    np.testing.assert_array_equal(run_node(grad, [x, dy])[0], np.zeros_like(x))


@pytest.mark.parametrize(
    "padding,match",
    [
        ((2, 0, 0, 0), "top padding 2"),  # more than half the kernel
        ((0, 0, 0, 3), "right padding 3"),  # more than half the kernel plus stride - 1
        ((1, 1), "must have 4 entries"),
        ((0, -1, 0, 0), "must lie in"),
    ],
)
def test_padding_is_validated(padding, match):
    with pytest.raises(GraphcError, match=match):
        node_of("max_pool2d", [((1, 1, 6, 6), "f32")], _attrs((3, 3), (2, 2), (1, 1), padding))


def test_default_padding_keeps_old_graphs_and_kernels():
    node = node_of("max_pool2d", [((1, 2, 6, 40), "f32")], {"kernel": (3, 3), "stride": (2, 2)})
    assert node.attrs["padding"] == (0, 0, 0, 0)
    source = window.max_pool_source(node)
    assert "padding" not in source and "x[p, r, ox * 2]" in source  # the unpadded kernel's text


@pytest.mark.parametrize(
    "pool", [_attrs((3, 3), (2, 2), (1, 1), (1, 1, 1, 1)), _attrs((2, 3), (1, 2), (2, 1), (1, 0, 1, 1))]
)
def test_gradients_match_finite_differences(pool):
    x = np.random.default_rng(2).standard_normal((1, 2, 5, 6))
    check_op("max_pool2d", {"x": x}, pool)
    from graphc.ir.ops import infer_types, normalize_attrs

    (y,) = infer_types("max_pool2d", [TensorType(x.shape, "f64")], normalize_attrs("max_pool2d", pool))
    dy = np.random.default_rng(3).standard_normal(y.shape)
    check_op("max_pool2d_grad", {"x": x, "dy": dy}, pool)  # second order: dy's gradient


# F.max_pool2d: (kernel, stride, padding, dilation, ceil_mode) on a 7 x 9 input
FUNCTIONAL_POOLS = [
    (3, 2, 1, 1, False),
    (3, 2, 1, 1, True),
    ((3, 2), (2, 1), (1, 1), (2, 1), True),
    (3, 2, 0, 1, True),  # ceil_mode's end padding only
]


@pytest.mark.parametrize("dtype,backend", [("f32", "cpu"), ("f64", "reference")])  # the op level: f64 on CPU
@pytest.mark.parametrize("k,s,p,d,ceil", FUNCTIONAL_POOLS)
def test_functional_max_pool2d_matches_torch(k, s, p, d, ceil, dtype, backend):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7, 9)).astype(NP[dtype])

    def fn(t):
        return F.max_pool2d(t, k, s, p, d, ceil)

    tx = torch.tensor(x, requires_grad=True)
    ty = TF.max_pool2d(tx, k, s, p, d, ceil)
    w = rng.uniform(0.5, 1.5, ty.shape).astype(NP[dtype])
    (ty * torch.tensor(w)).sum().backward()
    forward = trace(lambda x: fn(x), x)
    assert [n.op for n in forward.nodes] == ["max_pool2d"]  # no pad node
    joint = value_and_grad(trace(lambda x: (fn(x) * w).sum(), x), wrt=["x"])
    if backend == "reference":
        (y,) = execute(forward, {"x": x})
        _, dx = execute(joint, {"x": x})
    else:
        y = compile_graph(forward, backend="cpu")(x)
        _, dx = compile_graph(joint, backend="cpu")(x)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-6)


def test_nn_max_pool2d_module_pads_in_the_op():
    from graphc import nn

    x = np.random.default_rng(5).standard_normal((1, 2, 6, 6)).astype(np.float32)
    pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    g = trace(pool, x)
    assert [(n.op, n.attrs["padding"]) for n in g.nodes] == [("max_pool2d", (1, 1, 2, 2))]
    want = torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(compile_graph(g, backend="cpu")(x), want)


# ---------------------------------------------------------------- the pad -> pool rewrite
def _pad_pool_graph(dtype: str, pads: tuple, value: float, padding=(0, 0, 0, 0)) -> Graph:
    g = Graph("pad_pool")
    x = g.add_input("x", TensorType((1, 2, 6, 7), dtype))
    p = g.add_node("pad", [x], {"pads": pads, "value": value}).outputs[0]
    y = g.add_node("max_pool2d", [p], _attrs((3, 3), (2, 2), (1, 1), padding)).outputs[0]
    g.outputs = [y]
    return g


@pytest.mark.parametrize(
    "dtype,pads,value,padding,folded",
    [
        ("f32", ((0, 0), (0, 0), (1, 1), (1, 1)), -np.inf, (0, 0, 0, 0), (1, 1, 1, 1)),
        ("f32", ((0, 0), (0, 0), (0, 1), (1, 0)), -np.inf, (1, 0, 0, 0), (1, 1, 1, 0)),
        ("i32", ((0, 0), (0, 0), (1, 1), (0, 1)), float(np.iinfo(np.int32).min), (0, 0, 0, 0), (1, 0, 1, 1)),
        ("f32", ((0, 0), (0, 0), (1, 1), (1, 1)), 0.0, (0, 0, 0, 0), None),  # a zero pad changes the max
        ("f32", ((0, 0), (0, 0), (2, 0), (0, 0)), -np.inf, (0, 0, 0, 0), None),  # beyond the limit
        ("f32", ((0, 0), (1, 0), (1, 1), (1, 1)), -np.inf, (0, 0, 0, 0), None),  # a channel pad
    ],
)
def test_pad_then_max_pool_rewrite_keeps_meaning(dtype, pads, value, padding, folded):
    g = _pad_pool_graph(dtype, pads, value, padding)
    rng = np.random.default_rng(6)
    x = (
        rng.integers(-4, 5, (1, 2, 6, 7)).astype(np.int32)
        if dtype == "i32"
        else rng.standard_normal((1, 2, 6, 7))
    )
    x = x.astype(np.float32) if dtype == "f32" else x
    (before,) = execute(g, {"x": x})
    simplify(g)
    ops = [(n.op, n.attrs.get("padding")) for n in g.nodes]
    assert ops == ([("max_pool2d", folded)] if folded else [("pad", None), ("max_pool2d", padding)])
    (after,) = execute(g, {"x": x})
    np.testing.assert_array_equal(after, before)


def test_rewrite_keeps_gradients():
    g = _pad_pool_graph("f64", ((0, 0), (0, 0), (1, 1), (1, 0)), -np.inf)
    y = g.outputs[0]
    g.outputs = [g.add_node("sum", [y], {"axes": (0, 1, 2, 3)}).outputs[0]]
    x = np.random.default_rng(7).standard_normal((1, 2, 6, 7))
    _, want = execute(value_and_grad(g, wrt=["x"]), {"x": x})
    opt = optimize(value_and_grad(g, wrt=["x"]))
    assert "pad" not in {n.op for n in opt.nodes}
    _, got = execute(opt, {"x": x})
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- ONNX
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _maxpool_model(x: np.ndarray, **attrs):
    from onnx import TensorProto, helper

    node = helper.make_node("MaxPool", ["x"], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    return model


def _ort(model, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize(
    "attrs,padded",
    [
        ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 0, 1, 1]}, True),  # Inception v1's
        ({"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}, True),
        ({"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, True),
        ({"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1], "dilations": [2, 1]}, True),
        ({"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, True),
        ({"kernel_shape": [3, 3], "strides": [1, 1], "pads": [2, 2, 2, 2]}, False),  # beyond: a pad node
    ],
)
def test_onnx_max_pool_pads_match_onnxruntime(attrs, padded):
    x = np.random.default_rng(8).standard_normal((1, 3, 9, 10)).astype(np.float32)
    x[0, 0, 3:5, 3:5] = -np.inf  # (ONNX Runtime pads with -FLT_MAX: no window of -inf reaches padding)
    model = _maxpool_model(x, **attrs)
    g = trace(graphc.onnx.load(model), x)
    ops = [n.op for n in g.nodes]
    assert ("pad" not in ops) == padded and "max_pool2d" in ops
    want = _ort(model, x)
    for backend in ("reference", "cpu"):
        np.testing.assert_array_equal(
            np.asarray(graphc.compile(graphc.onnx.load(model), x, backend=backend)(x)), want
        )


def test_export_writes_max_pool_pads():
    x = np.random.default_rng(9).standard_normal((1, 2, 8, 8)).astype(np.float32)  # ceil_mode: 1 more row

    def fn(t):
        return F.max_pool2d(t, 3, 2, 1, ceil_mode=True)

    proto = graphc.onnx.export(fn, x)
    (pool,) = [n for n in proto.graph.node if n.op_type == "MaxPool"]
    assert {a.name: list(a.ints) for a in pool.attribute}["pads"] == [1, 1, 2, 2]
    assert "Pad" not in {n.op_type for n in proto.graph.node}
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_array_equal(got, TF.max_pool2d(torch.tensor(x), 3, 2, 1, ceil_mode=True).numpy())
