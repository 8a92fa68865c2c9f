"""Errors while tracing name the op, the shapes and the user's file:line."""

import numpy as np
import pytest

import graphc
from graphc import functional as F
from graphc import nn
from graphc.ir import GraphcError
from graphc.tracing import trace

HERE = "test_trace_errors.py"


def ones(*shape, dtype=np.float32):
    return np.ones(shape, dtype=dtype)


def line_of(fn, offset):
    """The line ``offset`` lines below ``fn``'s def."""
    return f"{HERE}:{fn.__code__.co_firstlineno + offset}"


def test_broadcast_mismatch_names_op_shapes_and_line():
    def f(a, b):
        c = a * 2
        return c + b  # the failing line

    with pytest.raises(GraphcError) as err:
        trace(f, ones(2, 3), ones(4))
    msg = str(err.value)
    assert "add" in msg and "(2, 3)" in msg and "(4,)" in msg
    assert line_of(f, 2) in msg


def test_matmul_mismatch():
    def f(a, b):
        return a @ b

    with pytest.raises(GraphcError) as err:
        trace(f, ones(2, 3), ones(4, 5))
    msg = str(err.value)
    assert "matmul" in msg and "f32[2,3]" in msg and "f32[4,5]" in msg and line_of(f, 1) in msg


def test_error_inside_a_layer_points_at_the_calling_model_line():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            h = F.relu(x)
            return self.fc(h)  # wrong width: 5 features, Linear expects 3

    with pytest.raises(GraphcError) as err:
        trace(Model(), ones(2, 5))
    msg = str(err.value)
    assert "linear" in msg and "(2, 5)" in msg and "(4, 3)" in msg
    assert line_of(Model.forward, 2) in msg


def test_data_dependent_if_raises_at_that_line():
    def f(t):
        y = t * 2
        if y.sum() > 0:  # data-dependent control flow
            return y
        return -y

    with pytest.raises(GraphcError) as err:
        trace(f, ones(3))
    msg = str(err.value)
    assert line_of(f, 2) in msg
    assert "control flow" in msg and "cond" in msg and "while_loop" in msg


def test_while_loop_and_conversions_raise_too():
    def loop(t):
        while t.abs().sum() > 1:
            t = t / 2
        return t

    for fn in (loop, lambda t: float(t.sum()), lambda t: t if t.max() else -t):
        with pytest.raises(GraphcError, match="control flow"):
            trace(fn, ones(3))


def test_reshape_and_index_errors():
    with pytest.raises(GraphcError, match=r"cannot reshape \(6,\)"):
        trace(lambda x: x.reshape(4, -1), ones(6))
    with pytest.raises(GraphcError, match="out of range"):
        trace(lambda x: x[3], ones(3))
    with pytest.raises(GraphcError, match="positive step"):
        trace(lambda x: x[::-1], ones(3))
    with pytest.raises(GraphcError, match="too many indices"):
        trace(lambda x: x[0, 0], ones(3))
    with pytest.raises(
        GraphcError, match=r"item assignment \(t\[\.\.\.\] = v\): in-place operation on graph input"
    ):

        def assign(x):
            x[0] = 1
            return x

        trace(assign, ones(3))


def test_layer_argument_errors():
    with pytest.raises(GraphcError, match="channels"):
        trace(nn.Conv2d(3, 4, 3), ones(1, 2, 5, 5))
    with pytest.raises(GraphcError, match="groups"):
        nn.Conv2d(4, 6, 3, groups=4)
    with pytest.raises(GraphcError, match="normalized_shape"):
        trace(nn.LayerNorm(4), ones(2, 3))
    with pytest.raises(GraphcError, match="targets"):
        trace(F.cross_entropy, ones(4, 3), np.zeros(5, np.int64))
    with pytest.raises(GraphcError, match="integer class indices"):
        trace(F.cross_entropy, ones(4, 3), np.zeros(4, np.float32))


def test_trace_argument_errors():
    with pytest.raises(GraphcError, match="takes 1 positional input"):
        trace(lambda x: x, ones(1), ones(1))
    with pytest.raises(GraphcError, match="not supported"):
        trace(lambda x: x, np.ones(2, dtype=np.complex64))
    with pytest.raises(GraphcError, match="cannot return"):
        trace(lambda x: "text", ones(1))


def test_tensor_used_after_its_trace_ended():
    kept = []

    def f(x):
        kept.append(x)
        return x

    trace(f, ones(2))
    with pytest.raises(GraphcError, match="after its trace ended"):
        kept[0] + 1
    with pytest.raises(GraphcError, match="no NumPy value"):
        np.asarray(kept[0])


def test_concrete_values_are_not_available_while_tracing():
    """item()/numpy()/tolist() name the user's line, say why and what to do instead."""

    def item(t):
        return t.sum().item()

    def numpy(t):
        return t.numpy()

    def tolist(t):
        return t.tolist()

    for fn in (item, numpy, tolist):
        with pytest.raises(GraphcError) as err:
            trace(fn, ones(3))
        msg = str(err.value)
        assert line_of(fn, 1) in msg
        assert f"{fn.__name__}()" in msg and "concrete value" in msg and "compiled graph" in msg
        assert "return the Tensor" in msg


def test_int_and_float_of_a_tensor_name_the_line():
    def as_int(t):
        return t * int(t.sum())

    def as_float(t):
        return t * float(t.max())

    for fn, what in ((as_int, "int()"), (as_float, "float()")):
        with pytest.raises(GraphcError) as err:
            trace(fn, ones(3))
        assert line_of(fn, 1) in str(err.value) and what in str(err.value)


@pytest.mark.parametrize(
    "expr, reference",
    [
        (lambda t: t // 2, lambda a: a // 2),
        (lambda t: 7 // t, lambda a: 7 // a),
        (lambda t: t % 2, lambda a: a % 2),
        (lambda t: 7.0 % t, lambda a: 7.0 % a),
        (lambda t: t // t, lambda a: a // a),
    ],
)
def test_floor_division_and_modulo_follow_numpy(expr, reference):
    """Once errors (graphc had no floor primitive); now Python's and NumPy's semantics."""
    a = np.array([-3.5, -1.0, 0.5, 2.0, 7.25], np.float32)
    got = graphc.compile(expr, a, backend="reference")(a)
    np.testing.assert_array_equal(got, reference(a))


def test_augmented_floor_division_and_modulo_rebind():
    def floordiv(t):
        y = t * 2
        y //= 3
        return y

    def mod(t):
        y = t * 2
        y %= 3
        return y

    a = np.array([-3.5, -1.0, 0.5, 2.0, 7.25], np.float32)
    for fn in (floordiv, mod):
        np.testing.assert_array_equal(graphc.compile(fn, a, backend="reference")(a), fn(a))
