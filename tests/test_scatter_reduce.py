"""The scatter_reduce primitive (mul/max/min folded into the reduction's identity): the reference kernel
against a plain loop, the CPU kernel against the reference, its VJP against finite differences, and
ONNX ScatterElements/ScatterND with those reductions against onnx's ReferenceEvaluator."""

from __future__ import annotations

import numpy as np
import pytest
from test_cpu_kernels import node_of, run_cpu
from test_gradcheck import check_op

from graphc.ir import Graph, GraphcError, TensorType
from graphc.kernels.reference import run_node
from graphc.passes.autodiff import grad

RNG = np.random.default_rng(11)
NP = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "bool": np.bool_}
COMBINE = {"mul": lambda o, u: o * u, "max": max, "min": min}
START = {"mul": 1.0, "max": -np.inf, "min": np.inf}


def _loop_oracle(idx, upd, axis, shape, reduction):
    """out = identity; out[pre, idx[j], post] = combine(out[...], upd[pre, j, post]), element by element."""
    out = np.full(shape, START[reduction], dtype=np.float64)
    pre, post = int(np.prod(shape[:axis])), int(np.prod(shape[axis + 1 :]))
    o = out.reshape(pre, shape[axis], post)
    u = upd.reshape(pre, idx.size, post).astype(np.float64)
    for a in range(pre):
        for j, i in enumerate(idx.reshape(-1)):
            for b in range(post):
                o[a, i, b] = COMBINE[reduction](o[a, i, b], u[a, j, b])
    return out


def _node(reduction, idx_shape, upd_shape, dtype, axis, shape):
    attrs = {"axis": axis, "shape": shape, "reduction": reduction}
    return node_of("scatter_reduce", [(idx_shape, "i64"), (upd_shape, dtype)], attrs)


@pytest.mark.parametrize("reduction", ["mul", "max", "min"])
@pytest.mark.parametrize("axis", [0, 1])
def test_reference_and_cpu_kernels(reduction, axis):
    shape = (4, 5)
    idx = np.array([[1, 0, 1], [3, 1, -4]], np.int64)  # repeats fold together; -4 is 1 on axis 0
    if axis == 1:
        idx = np.where(idx < 0, idx - 1, idx)  # -5: 0 on axis 1
    upd_shape = (*shape[:axis], *idx.shape, *shape[axis + 1 :])
    upd = RNG.standard_normal(upd_shape).astype(np.float32)
    node = _node(reduction, idx.shape, upd_shape, "f32", axis, shape)
    (want,) = run_node(node, [idx, upd])
    wrapped = np.where(idx < 0, idx + shape[axis], idx)
    expect = _loop_oracle(wrapped, upd, axis, shape, reduction)
    assert want.dtype == np.float32
    np.testing.assert_allclose(want, expect, rtol=1e-6)
    assert np.isinf(want).any() or reduction == "mul"  # untouched positions keep the identity
    (got,) = run_cpu(node, [idx, upd])
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["i32", "bool"])
@pytest.mark.parametrize("reduction", ["mul", "max", "min"])
def test_integer_and_bool_identities(dtype, reduction):
    idx = np.array([2, 0, 2], np.int64)
    upd = (RNG.integers(-3, 4, size=(3, 2)) if dtype == "i32" else RNG.random((3, 2)) < 0.5).astype(NP[dtype])
    node = _node(reduction, idx.shape, upd.shape, dtype, 0, (4, 2))
    (want,) = run_node(node, [idx, upd])
    if dtype == "i32":
        ends = {"mul": 1, "max": np.iinfo(np.int32).min, "min": np.iinfo(np.int32).max}
        assert (want[[1, 3]] == ends[reduction]).all()
        loop = _loop_oracle(idx, upd, 0, (4, 2), reduction)
        np.testing.assert_array_equal(want[[0, 2]], loop[[0, 2]])
    else:
        assert (want[[1, 3]] == (reduction != "max")).all()
        ufunc = {"mul": np.logical_and, "max": np.logical_or, "min": np.logical_and}[reduction]
        np.testing.assert_array_equal(want[2], ufunc(upd[0], upd[2]))
    (got,) = run_cpu(node, [idx, upd])
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_nan_update_wins_and_out_of_range_raises():
    idx = np.array([0, 0, 1], np.int64)
    upd = np.array([1.0, np.nan, 2.0], np.float32)
    for reduction in ("max", "min"):
        node = _node(reduction, idx.shape, upd.shape, "f32", 0, (3,))
        for out in (run_node(node, [idx, upd])[0], run_cpu(node, [idx, upd])[0]):
            assert np.isnan(out[0]) and out[1] == 2.0
    node = _node("max", (2,), (2, 3), "f32", 0, (4, 3))
    for run in (run_node, run_cpu):
        with pytest.raises(GraphcError, match="scatter_reduce: index 4 out of range"):
            run(node, [np.array([0, 4]), np.zeros((2, 3), np.float32)])


def test_bad_reduction_attribute_is_named():
    with pytest.raises(GraphcError, match="reduction"):
        _node("add", (2,), (2,), "f32", 0, (3,))


@pytest.mark.parametrize("reduction", ["max", "min"])
def test_max_min_gradients(reduction):
    idx = np.array([1, 3, 1, 0, 2, 4, 1], dtype=np.int64)  # every position hit: no infinite identity left
    attrs = dict(axis=1, shape=(2, 5), reduction=reduction)
    check_op("scatter_reduce", {"idx": idx, "u": RNG.standard_normal((2, 7))}, attrs)


def test_max_gradient_splits_ties():
    g = Graph("ties")
    idx = g.add_input("idx", TensorType((3,), "i64"))
    u = g.add_input("u", TensorType((3,), "f64"))
    y = g.op("scatter_reduce", idx, u, axis=0, shape=(2,), reduction="max")
    g.add_output(g.op("sum", y, axes=(0,)))
    joint, index = grad(g, 0, ["u"])
    from graphc.kernels.reference import execute

    out = execute(joint, {"idx": np.array([0, 0, 1]), "u": np.array([2.0, 2.0, 1.0])})
    np.testing.assert_array_equal(out[index["u"]], [0.5, 0.5, 1.0])


def test_mul_gradient_is_refused():
    g = Graph("mul")
    idx = g.add_input("idx", TensorType((2,), "i64"))
    u = g.add_input("u", TensorType((2,), "f64"))
    y = g.op("scatter_reduce", idx, u, axis=0, shape=(3,), reduction="mul")
    g.add_output(g.op("sum", y, axes=(0,)))
    with pytest.raises(GraphcError, match="reduction='mul'.*no gradient rule"):
        grad(g, 0, ["u"])


onnx = pytest.importorskip("onnx")


def _scatter_model(op: str, reduction: str, x, idx, upd, **attrs):
    from onnx import helper, numpy_helper

    node = helper.make_node(op, ["x", "i", "u"], ["y"], reduction=reduction, **attrs)
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", elem, list(x.shape))],
        [helper.make_tensor_value_info("y", elem, None)],
        [numpy_helper.from_array(idx, "i"), numpy_helper.from_array(upd, "u")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("reduction", ["mul", "max", "min"])
def test_onnx_scatters_match_onnx_reference(reduction, backend):
    from onnx.reference import ReferenceEvaluator

    from graphc.onnx.backend import GraphcBackend

    x = RNG.standard_normal((3, 4)).astype(np.float32)
    x[0, 0] = np.nan
    cases = [
        ("ScatterElements", np.array([[0, -1, 2, 1], [2, 0, 0, 1]], np.int64), (2, 4), {"axis": 0}),
        ("ScatterElements", np.array([[3, 3], [-4, 1], [0, 0]], np.int64), (3, 2), {"axis": 1}),
        ("ScatterND", np.array([[2], [0], [2]], np.int64), (3, 4), {}),
        ("ScatterND", np.array([[1, 2], [1, 2], [2, -1]], np.int64), (3,), {}),
    ]
    for op, idx, upd_shape, attrs in cases:
        upd = RNG.standard_normal(upd_shape).astype(np.float32)
        model = _scatter_model(op, reduction, x, idx, upd, **attrs)
        (expect,) = ReferenceEvaluator(model).run(None, {"x": x})
        (got,) = GraphcBackend.run_model(model, [x], backend=backend)
        assert got.dtype == expect.dtype
        np.testing.assert_allclose(got, expect, rtol=1e-6, err_msg=f"{op} {attrs} {idx.tolist()}")
