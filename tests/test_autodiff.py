"""passes.autodiff: API, rule coverage, accumulation, zeros, errors, sources, ties, torch parity."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.ir import REGISTRY, Graph, GraphcError, TensorType, verify
from graphc.kernels.reference import execute
from graphc.passes.autodiff import NON_DIFFERENTIABLE, VJP_RULES, grad, value_and_grad

F64 = "f64"


def numeric_grad(g: Graph, feeds: dict, name: str, eps: float = 1e-6) -> np.ndarray:
    """Central differences of output 0 with respect to the float64 input ``name``."""
    base = feeds[name]
    out = np.zeros(base.size)
    for i in range(base.size):
        for sign in (1.0, -1.0):
            x = base.copy().reshape(-1)
            x[i] += sign * eps
            out[i] += sign * float(execute(g, dict(feeds, **{name: x.reshape(base.shape)}))[0])
    return out.reshape(base.shape) / (2 * eps)


def check_gradients(g: Graph, feeds: dict, wrt: list[str]) -> None:
    """The joint graph's gradients equal finite differences for every input in ``wrt``."""
    joint, index = grad(g, 0, wrt)
    verify(joint)
    out = execute(joint, feeds)
    for name in wrt:
        np.testing.assert_allclose(out[index[name]], numeric_grad(g, feeds, name), rtol=1e-5, atol=1e-7)


def _sum_all(g: Graph, v):
    return g.op("sum", v, axes=tuple(range(len(v.shape))))


def test_every_registry_op_has_a_rule_or_is_non_differentiable():
    # "fused" is the one documented exception: autodiff runs before fusion and raises on it.
    missing = sorted(op for op in REGISTRY if op not in VJP_RULES and op not in NON_DIFFERENTIABLE)
    assert missing == ["fused"], f"ops with no VJP rule and not marked non-differentiable: {missing}"
    assert not set(VJP_RULES) & set(NON_DIFFERENTIABLE)
    assert set(VJP_RULES) | set(NON_DIFFERENTIABLE) <= set(REGISTRY)


def _linear_graph():
    g = Graph("lin")
    x = g.add_input("x", TensorType((4, 3), F64))
    w = g.add_input("w", TensorType((3, 2), F64), "param", np.ones((3, 2)))
    b = g.add_input("b", TensorType((2,), F64), "param", np.zeros(2))
    unused = g.add_input("unused", TensorType((5, 1), F64), "param", np.ones((5, 1)))
    y = g.op("add", g.op("matmul", x, w, source="model.py:3"), b, source="model.py:4")
    g.add_output(_sum_all(g, g.op("mul", y, y, source="model.py:5")))
    g.add_output(y)
    return g, unused


def test_api_layout_defaults_to_params_in_order():
    g, _ = _linear_graph()
    before = str(g)
    joint, index = grad(g)
    verify(joint)
    assert str(g) == before, "grad must not modify its argument"
    assert list(index) == ["w", "b", "unused"]
    assert list(index.values()) == [2, 3, 4]
    assert len(joint.outputs) == 5
    assert [v.name for v in joint.outputs[:2]] == [v.name for v in g.outputs]
    for name, i in index.items():
        assert joint.outputs[i].type == g.value(name).type


def test_unused_param_gets_zeros():
    g, _ = _linear_graph()
    joint, index = grad(g)
    x = np.random.default_rng(0).standard_normal((4, 3))
    out = execute(joint, {"x": x})
    np.testing.assert_array_equal(out[index["unused"]], np.zeros((5, 1)))
    # and the others are right
    feeds = {"x": x, "w": g.initializers["w"], "b": g.initializers["b"]}
    np.testing.assert_allclose(out[index["w"]], numeric_grad(g, feeds, "w"), rtol=1e-5, atol=1e-7)


def test_explicit_wrt_by_name_and_value_including_data_inputs():
    g, _ = _linear_graph()
    joint, index = grad(g, wrt=["b", g.inputs[0]])
    assert list(index) == ["b", "x"]
    assert joint.outputs[index["x"]].shape == (4, 3)


def test_param_used_twice_gets_summed_gradient():
    g = Graph("twice")
    x = g.add_input("x", TensorType((3, 4), F64))
    w = g.add_input("w", TensorType((4,), F64), "param")
    h = g.op("tanh", g.op("mul", x, w))
    # w used again, broadcast differently, and through a second path
    h2 = g.op("add", h, g.op("reshape", w, shape=(1, 4)))
    g.add_output(_sum_all(g, g.op("mul", h2, g.op("exp", w))))
    rng = np.random.default_rng(3)
    check_gradients(g, {"x": rng.standard_normal((3, 4)), "w": rng.standard_normal(4)}, ["w", "x"])


def test_value_used_twice_in_one_node():
    g = Graph("square")
    x = g.add_input("x", TensorType((3,), F64), "param")
    g.add_output(_sum_all(g, g.op("mul", x, x)))
    joint, index = grad(g)
    xv = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(execute(joint, {"x": xv})[index["x"]], 2 * xv)


def test_backward_nodes_carry_forward_sources():
    g, _ = _linear_graph()
    joint, _ = grad(g)
    backward = joint.nodes[len(g.nodes) :]
    sources = {n.source for n in backward}
    assert {"model.py:3", "model.py:4", "model.py:5"} <= sources
    matmuls = [n for n in backward if n.op == "matmul"]
    assert matmuls and all(n.source == "model.py:3" for n in matmuls)


def test_updates_are_kept():
    g = Graph("bn")
    x = g.add_input("x", TensorType((4,), F64))
    w = g.add_input("w", TensorType((4,), F64), "param")
    s = g.add_input("running", TensorType((4,), F64), "state")
    g.add_output(_sum_all(g, g.op("mul", x, w)))
    g.add_output(g.op("add", s, x), updates="running")
    joint, index = grad(g)
    verify(joint)
    assert joint.updates == {"running": 1}
    assert index == {"w": 2}


def test_value_and_grad():
    g = Graph("vg")
    w = g.add_input("w", TensorType((2, 2), F64), "param")
    g.add_output(g.op("mul", w, w))  # an extra non-loss output, dropped
    g.add_output(_sum_all(g, g.op("exp", w)))
    vg = value_and_grad(g, loss_index=1)
    verify(vg)
    wv = np.array([[0.0, 1.0], [2.0, -1.0]])
    loss, gw = execute(vg, {"w": wv})
    np.testing.assert_allclose(loss, np.exp(wv).sum())
    np.testing.assert_allclose(gw, np.exp(wv))


def test_loss_must_be_scalar_float():
    g = Graph("bad")
    w = g.add_input("w", TensorType((3,), F64), "param")
    g.add_output(g.op("exp", w))
    with pytest.raises(GraphcError, match="scalar float"):
        grad(g)
    with pytest.raises(GraphcError, match="loss_index"):
        grad(g, loss_index=3)


def test_bad_wrt():
    g, _ = _linear_graph()
    with pytest.raises(GraphcError, match="not an input"):
        grad(g, wrt=["nope"])
    g2 = Graph("int")
    i = g2.add_input("i", TensorType((3,), "i64"))
    w = g2.add_input("w", TensorType((3,), F64), "param")
    g2.add_output(_sum_all(g2, g2.op("mul", g2.op("cast", i, dtype=F64), w)))
    with pytest.raises(GraphcError, match="i64"):
        grad(g2, wrt=["i"])
    joint, index = grad(g2)  # the int input is simply not differentiated
    out = execute(joint, {"i": np.array([1, 2, 3]), "w": np.ones(3)})
    np.testing.assert_array_equal(out[index["w"]], [1.0, 2.0, 3.0])


def test_fused_node_on_the_path_raises():
    body = Graph("body")
    bx = body.add_input("x", TensorType((3,), F64))
    body.add_output(body.op("exp", bx))
    g = Graph("f")
    w = g.add_input("w", TensorType((3,), F64), "param")
    f = g.add_fused([w], body, {"kind": "pointwise"}, source="m.py:9")
    g.add_output(_sum_all(g, f.outputs[0]))
    with pytest.raises(GraphcError, match="fused node.*m.py:9.*before fusion"):
        grad(g)


def test_non_differentiable_ops_contribute_zero():
    g = Graph("nd")
    x = g.add_input("x", TensorType((5,), F64), "param")
    zero = g.op("const", value=0.0, dtype=F64)
    relu = g.op("where", g.op("gt", x, zero), x, zero)  # comparison: no gradient through it
    signed = g.op("mul", g.op("sign", x), x)  # |x| as sign(x) * x: sign is constant a.e.
    g.add_output(_sum_all(g, g.op("add", relu, signed)))
    joint, index = grad(g)
    xv = np.array([-2.0, -0.5, 0.3, 1.0, 4.0])
    np.testing.assert_allclose(execute(joint, {"x": xv})[index["x"]], (xv > 0) + np.sign(xv))


def test_max_reduction_splits_ties_evenly():
    g = Graph("ties")
    x = g.add_input("x", TensorType((2, 3), F64), "param")
    g.add_output(_sum_all(g, g.op("max", x, axes=(1,))))
    joint, index = grad(g)
    xv = np.array([[1.0, 3.0, 3.0], [5.0, 5.0, 5.0]])
    expect = [[0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]]
    np.testing.assert_allclose(execute(joint, {"x": xv})[index["x"]], expect)


@pytest.mark.parametrize(
    "op,ga,gb", [("maximum", [1, 0.5, 0], [0, 0.5, 1]), ("minimum", [0, 0.5, 1], [1, 0.5, 0])]
)
def test_maximum_minimum_split_ties_like_torch(op, ga, gb):
    g = Graph("tie2")
    a = g.add_input("a", TensorType((3,), F64), "param")
    b = g.add_input("b", TensorType((3,), F64), "param")
    g.add_output(_sum_all(g, g.op(op, a, b)))
    joint, index = grad(g)
    out = execute(joint, {"a": np.array([2.0, 1.0, 0.0]), "b": np.array([1.0, 1.0, 1.0])})
    np.testing.assert_allclose(out[index["a"]], ga)
    np.testing.assert_allclose(out[index["b"]], gb)


def test_second_order_by_differentiating_the_joint_graph():
    g = Graph("cube")
    x = g.add_input("x", TensorType((3,), F64), "param")
    g.add_output(_sum_all(g, g.op("mul", x, g.op("mul", x, x))))
    joint, index = grad(g)  # d/dx = 3x^2
    joint.outputs = [_sum_all(joint, joint.outputs[index["x"]])]
    hess, index2 = grad(joint)  # d/dx sum(3x^2) = 6x
    xv = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(execute(hess, {"x": xv})[index2["x"]], 6 * xv)


def test_float32_graph_keeps_float32_gradients():
    g = Graph("f32")
    x = g.add_input("x", TensorType((2, 3)))
    w = g.add_input("w", TensorType((3, 4)), "param")
    g.add_output(_sum_all(g, g.op("tanh", g.op("matmul", x, w))))
    joint, index = grad(g)
    verify(joint)
    assert joint.outputs[index["w"]].type == TensorType((3, 4), "f32")


def _mlp_graph(batch=6, d_in=5, hidden=7, classes=3):
    """linear -> relu (maximum with 0) -> linear -> mean cross-entropy, out of primitives."""
    g = Graph("mlp")
    x = g.add_input("x", TensorType((batch, d_in), F64))
    labels = g.add_input("labels", TensorType((batch,), "i64"))
    w1 = g.add_input("hidden.weight", TensorType((hidden, d_in), F64), "param")
    b1 = g.add_input("hidden.bias", TensorType((hidden,), F64), "param")
    w2 = g.add_input("out.weight", TensorType((classes, hidden), F64), "param")
    b2 = g.add_input("out.bias", TensorType((classes,), F64), "param")
    rows = g.add_input("rows", TensorType((batch,), "i64"), "const", np.arange(batch) * classes)
    h = g.op("add", g.op("matmul", x, g.op("transpose", w1, perm=(1, 0))), b1)
    h = g.op("maximum", h, g.op("const", value=0.0, dtype=F64))
    logits = g.op("add", g.op("matmul", h, g.op("transpose", w2, perm=(1, 0))), b2)
    m = g.op("max", logits, axes=(1,), keepdims=True)
    z = g.op("sub", logits, m)
    logp = g.op("sub", z, g.op("log", g.op("sum", g.op("exp", z), axes=(1,), keepdims=True)))
    # gather is np.take: pick logp[i, labels[i]] from the flattened rows.
    flat = g.op("reshape", logp, shape=(batch * classes,))
    picked = g.op("gather", flat, g.op("add", rows, labels), axis=0)
    batch_size = g.op("const", value=float(batch), dtype=F64)
    g.add_output(g.op("div", g.op("neg", g.op("sum", picked, axes=(0,))), batch_size))
    g.add_output(logits)
    return g


def test_mlp_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    g = _mlp_graph()
    rng = np.random.default_rng(7)
    params = {v.name: rng.standard_normal(v.shape) for v in g.inputs_of_kind("param")}
    x = rng.standard_normal((6, 5))
    labels = rng.integers(0, 3, size=6)
    joint, index = grad(g)
    out = execute(joint, {"x": x, "labels": labels, **params})

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    h = torch.relu(torch.tensor(x) @ tp["hidden.weight"].T + tp["hidden.bias"])
    logits = h @ tp["out.weight"].T + tp["out.bias"]
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels))
    loss.backward()
    np.testing.assert_allclose(out[0], loss.item(), rtol=1e-12)
    for name, i in index.items():
        np.testing.assert_allclose(out[i], tp[name].grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_conv_pool_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    # conv2d = im2col + matmul; 2x2 max pool over a strided slice grid via maximum.
    n, c, h, w, k, oc = 2, 2, 6, 6, 3, 4
    g = Graph("conv")
    x = g.add_input("x", TensorType((n, c, h, w), F64))
    wt = g.add_input("weight", TensorType((oc, c, k, k), F64), "param")
    cols = g.op("im2col", x, kernel=(k, k), padding=(1, 1), stride=(1, 1))  # [n, c*k*k, h*w]
    y = g.op("matmul", g.op("reshape", wt, shape=(oc, c * k * k)), cols)  # [n, oc, h*w]
    y = g.op("reshape", y, shape=(n, oc, h, w))
    quads = [
        g.op("slice", y, starts=(0, 0, i, j), stops=(n, oc, h, w), steps=(1, 1, 2, 2))
        for i in (0, 1)
        for j in (0, 1)
    ]
    pooled = g.op("maximum", g.op("maximum", quads[0], quads[1]), g.op("maximum", quads[2], quads[3]))
    g.add_output(_sum_all(g, g.op("mul", pooled, pooled)))
    rng = np.random.default_rng(11)
    xv, wv = rng.standard_normal((n, c, h, w)), rng.standard_normal((oc, c, k, k))
    joint, index = grad(g, wrt=["weight", "x"])
    out = execute(joint, {"x": xv, "weight": wv})

    tx = torch.tensor(xv, requires_grad=True)
    tw = torch.tensor(wv, requires_grad=True)
    ty = torch.nn.functional.max_pool2d(torch.nn.functional.conv2d(tx, tw, padding=1), 2)
    (ty * ty).sum().backward()
    np.testing.assert_allclose(out[index["weight"]], tw.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out[index["x"]], tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_no_work_for_values_that_do_not_depend_on_wrt():
    # x ** 2 with a constant exponent: the exponent's gradient (which needs log) is never built.
    g = Graph("sq")
    x = g.add_input("x", TensorType((3,), F64), "param")
    two = g.op("const", value=2.0, dtype=F64)
    g.add_output(_sum_all(g, g.op("pow", x, two)))
    joint, index = grad(g)
    assert "log" not in joint.op_counts()
    np.testing.assert_allclose(
        execute(joint, {"x": np.array([1.0, 2.0, -3.0])})[index["x"]], [2.0, 4.0, -6.0]
    )


def test_loss_that_is_the_wrt_input_itself():
    g = Graph("id")
    s = g.add_input("s", TensorType((), F64), "param")
    g.add_output(s)
    joint, index = grad(g)
    verify(joint)
    assert execute(joint, {"s": np.array(3.0)})[index["s"]] == 1.0


def test_max_pool_routes_ties_like_torch():
    # nn.MaxPool2d on an image with tied windows and a NaN: graphc's gradient goes where torch's
    # does (each window's first maximal element).
    torch = pytest.importorskip("torch")
    import graphc
    from graphc import nn

    x = np.random.default_rng(5).standard_normal((2, 2, 6, 6))
    x[0, 0, :4, :4] = 1.5
    x[1, 1, 2, 3] = np.nan
    pool = nn.MaxPool2d(3, stride=2, padding=1)
    g = graphc.trace(lambda t: (pool(t) * pool(t)).sum(), x)
    g.kinds[g.inputs[0].name] = "param"
    joint, index = grad(g, wrt=[g.inputs[0].name])
    out = execute(joint, {g.inputs[0].name: x})
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, 3, stride=2, padding=1)
    (ty * ty).sum().backward()
    np.testing.assert_allclose(out[index[g.inputs[0].name]], tx.grad.numpy(), rtol=1e-12)
