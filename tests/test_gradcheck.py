"""Finite-difference checks (float64, central differences) of every differentiable primitive's VJP."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.ir import Graph, TensorType, verify
from graphc.kernels.reference import execute
from graphc.passes.autodiff import grad

EPS = 1e-6
RTOL = 1e-5
ATOL = 1e-7


def _graph_for(op: str, arrays: dict[str, np.ndarray], attrs: dict, seed: int = 0):
    """loss = sum(op(*inputs) * W) with random W, so every output element matters."""
    g = Graph(f"check_{op}")
    ins = [g.add_input(name, TensorType.of(a)) for name, a in arrays.items()]
    y = g.op(op, *ins, **attrs)
    w = np.random.default_rng(seed).standard_normal(y.shape)
    wv = g.add_input("W", TensorType(y.shape, y.dtype), "const", w.astype(y.type.np_dtype))
    prod = g.op("mul", y, wv)
    loss = g.op("sum", prod, axes=tuple(range(len(y.shape))))
    g.add_output(loss)
    return g


def numeric_grad(g: Graph, feeds: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Central differences of output 0 with respect to the float64 input ``name``."""
    base = feeds[name]
    out = np.zeros_like(base)
    flat = out.reshape(-1)
    for i in range(base.size):
        for sign in (1.0, -1.0):
            x = base.copy().reshape(-1)
            x[i] += sign * EPS
            f = dict(feeds, **{name: x.reshape(base.shape)})
            flat[i] += sign * float(execute(g, f)[0])
    return out / (2 * EPS)


def check_gradients(g: Graph, feeds: dict[str, np.ndarray], wrt: list[str]) -> None:
    """The joint graph's gradients equal finite differences for every input in ``wrt``."""
    joint, index = grad(g, 0, wrt)
    verify(joint)
    results = execute(joint, feeds)
    np.testing.assert_allclose(results[0], execute(g, feeds)[0], rtol=1e-12)
    for name in wrt:
        analytic = results[index[name]]
        assert analytic.shape == feeds[name].shape and analytic.dtype == feeds[name].dtype
        np.testing.assert_allclose(
            analytic, numeric_grad(g, feeds, name), rtol=RTOL, atol=ATOL, err_msg=f"d loss / d {name}"
        )


def check_op(op: str, arrays: dict[str, np.ndarray], attrs: dict | None = None, wrt=None) -> None:
    """Gradient check of one op applied to ``arrays`` (all float ones by default)."""
    g = _graph_for(op, arrays, attrs or {})
    if wrt is None:
        wrt = [k for k, a in arrays.items() if a.dtype == np.float64]
    check_gradients(g, arrays, wrt)


RNG = np.random.default_rng(1234)


def normal(*shape):
    return RNG.standard_normal(shape)


def positive(*shape):
    return RNG.uniform(0.5, 2.0, shape)


def away_from_zero(*shape):
    return RNG.uniform(0.3, 1.5, shape) * RNG.choice([-1.0, 1.0], shape)


UNARY = {
    "neg": normal,
    "exp": normal,
    "log": positive,
    "sqrt": positive,
    "rsqrt": positive,
    "tanh": normal,
    "erf": normal,
    "abs": away_from_zero,
    "sin": normal,
    "cos": normal,
    "reciprocal": away_from_zero,
}


@pytest.mark.parametrize("op", sorted(UNARY))
@pytest.mark.parametrize("shape", [(), (3, 4)])
def test_unary(op, shape):
    check_op(op, {"x": UNARY[op](*shape)})


BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (2, 3)), ((1, 3), (2, 1))]


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "maximum", "minimum"])
@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
def test_binary_broadcasting(op, shapes):
    a = normal(*shapes[0])
    b = away_from_zero(*shapes[1]) if op == "div" else normal(*shapes[1])
    check_op(op, {"a": a, "b": b})


@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
def test_pow(shapes):
    check_op("pow", {"a": positive(*shapes[0]), "b": normal(*shapes[1])})


def test_pow_negative_base_integer_exponent():
    # Exponent held fixed (it is data, not differentiated): the base gradient works for a < 0.
    a = away_from_zero(3, 4)
    b = np.full((4,), 3.0)
    check_op("pow", {"a": a, "b": b}, wrt=["a"])


def test_where():
    cond = RNG.random((3, 1)) > 0.5
    cond[0, 0], cond[1, 0] = True, False
    check_op("where", {"c": cond, "a": normal(4), "b": normal(3, 4)})


def test_broadcast_to():
    check_op("broadcast_to", {"x": normal(3, 1)}, {"shape": (2, 3, 4)})


@pytest.mark.parametrize("op", ["sum", "max", "min"])
@pytest.mark.parametrize("axes", [(), (0,), (1,), (0, 2), (0, 1, 2)], ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(op, axes, keepdims):
    # Distinct values (a permutation) so max/min have no ties.
    x = RNG.permutation(24).reshape(2, 3, 4) * 0.37 + 0.1
    check_op(op, {"x": x}, {"axes": axes, "keepdims": keepdims})


@pytest.mark.parametrize(
    "shapes",
    [((2, 3), (3, 4)), ((2, 1, 3, 4), (3, 4, 5)), ((5, 2, 3), (3, 2)), ((2, 3), (4, 3, 2))],
    ids=str,
)
def test_matmul(shapes):
    check_op("matmul", {"a": normal(*shapes[0]), "b": normal(*shapes[1])})


def test_reshape():
    check_op("reshape", {"x": normal(2, 3, 4)}, {"shape": (4, 6)})


def test_transpose():
    check_op("transpose", {"x": normal(2, 3, 4)}, {"perm": (2, 0, 1)})


@pytest.mark.parametrize(
    "starts,stops,steps",
    [
        ((1, 0), (7, 8), (1, 1)),
        ((1, 0), (7, 8), (2, 3)),
        ((0, 2), (6, 7), (3, 2)),  # stops that are not start + multiple of step
        ((2, 5), (7, 6), (4, 2)),  # a single element on a strided axis
        ((6, 1), (7, 8), (5, 7)),
    ],
    ids=str,
)
def test_slice(starts, stops, steps):
    check_op("slice", {"x": normal(7, 8)}, {"starts": starts, "stops": stops, "steps": steps})


def test_slice_empty():
    check_op("slice", {"x": normal(3, 4)}, {"starts": (1, 2), "stops": (1, 4), "steps": (1, 1)})


def test_pad():
    check_op("pad", {"x": normal(2, 3)}, {"pads": ((1, 2), (0, 3)), "value": 0.5})


@pytest.mark.parametrize("axis", [0, 1])
def test_concat(axis):
    shapes = [(2, 3), (2, 1), (2, 2)] if axis == 1 else [(1, 3), (2, 3), (3, 3)]
    check_op("concat", {f"x{i}": normal(*s) for i, s in enumerate(shapes)}, {"axis": axis})


@pytest.mark.parametrize("axis", [0, 1])
def test_gather_repeated_indices(axis):
    idx = np.array([[0, 2, 2], [3, 0, 0]], dtype=np.int64)
    check_op("gather", {"x": normal(4, 5), "idx": idx}, {"axis": axis})


def test_scatter_add():
    idx = np.array([1, 3, 1, 0], dtype=np.int64)
    check_op("scatter_add", {"idx": idx, "u": normal(2, 4)}, {"axis": 1, "shape": (2, 5)})


WINDOWS = [
    {"kernel": (2, 2)},
    {"kernel": (3, 2), "stride": (2, 1), "padding": (1, 2), "dilation": (2, 1)},
    {"kernel": (2, 3), "stride": (2, 2), "padding": (1, 0), "dilation": (1, 2)},
]


@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_im2col(window):
    check_op("im2col", {"x": normal(2, 2, 5, 6)}, window)


@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_col2im(window):
    from graphc.ir.ops import infer_types, normalize_attrs

    attrs = normalize_attrs("im2col", window)
    (cols,) = infer_types("im2col", [TensorType((2, 2, 5, 6), "f64")], attrs)
    check_op("col2im", {"cols": normal(*cols.shape)}, {**window, "image_shape": (2, 2, 5, 6)})


POOLS = [
    {"kernel": (2, 2), "stride": (2, 2)},
    {"kernel": (3, 2), "stride": (1, 2), "dilation": (1, 2)},
]


@pytest.mark.parametrize("pool", POOLS, ids=str)
def test_max_pool2d(pool):
    check_op("max_pool2d", {"x": normal(2, 2, 5, 6)}, pool)


@pytest.mark.parametrize("pool", POOLS, ids=str)
def test_max_pool2d_grad(pool):
    # Linear in dy (its gradient picks g at each window's argmax), piecewise constant in x.
    from graphc.ir.ops import infer_types, normalize_attrs

    (y,) = infer_types("max_pool2d", [TensorType((2, 2, 5, 6), "f64")], normalize_attrs("max_pool2d", pool))
    check_op("max_pool2d_grad", {"x": normal(2, 2, 5, 6), "dy": normal(*y.shape)}, pool)


def test_cast_float_to_float_roundtrip():
    # f64 -> f32 -> f64: the gradient is cast back to f64 at each step, so it equals W exactly.
    g = Graph("cast")
    x = g.add_input("x", TensorType((3,), "f64"))
    y = g.op("cast", g.op("cast", x, dtype="f32"), dtype="f64")
    w = np.array([0.5, -2.0, 3.0])
    wv = g.add_input("W", TensorType((3,), "f64"), "const", w)
    g.add_output(g.op("sum", g.op("mul", y, wv), axes=(0,)))
    joint, index = grad(g, wrt=["x"])
    np.testing.assert_array_equal(execute(joint, {"x": normal(3)})[index["x"]], w)


def test_composite_softmax_cross_entropy():
    # A chain of primitives: log_softmax, then gather (np.take: every row picks every label's
    # column, so columns are picked repeatedly) and a mean.
    g = Graph("xent")
    x = g.add_input("logits", TensorType((4, 5), "f64"))
    labels = g.add_input("labels", TensorType((4, 1), "i64"))
    m = g.op("max", x, axes=(1,), keepdims=True)
    z = g.op("sub", x, m)
    lse = g.op("log", g.op("sum", g.op("exp", z), axes=(1,), keepdims=True))
    logp = g.op("sub", z, lse)
    picked = g.op("gather", logp, labels, axis=1)  # [4, 4, 1]
    total = g.op("sum", picked, axes=(0, 1, 2))
    g.add_output(g.op("div", g.op("neg", total), g.op("const", value=4.0, dtype="f64")))
    feeds = {"logits": normal(4, 5), "labels": np.array([[0], [4], [2], [2]], dtype=np.int64)}
    check_gradients(g, feeds, ["logits"])
