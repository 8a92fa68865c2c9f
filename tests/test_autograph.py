"""graphc.compile converts if/while on traced Tensors into cond/while_loop (graphc/autograph.py)."""

import numpy as np
import pytest

import graphc
from graphc import GraphcError, nn
from graphc.autograph import convert, converted


class Halve(nn.Module):
    def forward(self, X):
        while X.abs().sum() > 1:
            X /= 2
        return X


def _halve(x):
    x = x.copy()
    while np.abs(x).sum() > 1:
        x /= 2
    return x


def test_while_on_a_tensor_compiles_unchanged():
    x = np.array([3.0, -2.0, 5.0], np.float32)
    plan = graphc.compile(Halve(), x)
    np.testing.assert_allclose(plan(x), _halve(x))
    y = np.array([0.25, 0.5, -8.0], np.float32)
    np.testing.assert_allclose(plan(y), _halve(y))  # the trip count is decided at run time
    with converted(Halve()) as m:
        assert "while_loop" in graphc.trace(m, x).op_counts()


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        scale = 0
        for _ in range(3):  # a Python loop over numbers still unrolls
            scale += 1
        if x.sum() > 0:
            y = self.lin(x) * scale
            only_here = y  # noqa: F841 - a temporary of one branch
        else:
            y = x - scale
        if self.training:  # a Python condition stays Python
            y = y + 0
        n = x.sum() * 0
        while n < 4:
            n = n + 1
            y = y * 1.5
        return y + n


def _branchy(m, x):
    y = (x @ m.lin.weight.T + m.lin.bias) * 3 if x.sum() > 0 else x - 3
    return y * 1.5**4 + 4


def test_if_and_while_with_parameters_and_python_values():
    m = Branchy()
    x = np.array([1.0, 2.0, -0.5], np.float32)
    plan = graphc.compile(m, x)
    for v in (x, -x):
        np.testing.assert_allclose(plan(v), _branchy(m, v), rtol=1e-5)
    with converted(m) as mm:
        counts = graphc.trace(mm, x).op_counts()
    assert counts.get("cond") == 1 and counts.get("while_loop") == 1
    assert "forward" not in m.__dict__  # the instance is left as it was


def test_functions_convert_too_and_keep_their_argument_names():
    def f(a, b):
        if (a * b).sum() > 0:
            out = a + b
        else:
            out = a - b
        return out

    a, b, c = np.ones(2, np.float32), np.full(2, -3, np.float32), np.full(2, 0.5, np.float32)
    plan = graphc.compile(f, a, b)
    np.testing.assert_allclose(plan(a, b), a - b)
    np.testing.assert_allclose(plan(a, c), a + c)
    g = graphc.trace(convert(f), a, b)
    assert [v.name for v in g.data_inputs] == ["a", "b"]


def test_a_variable_defined_in_one_branch_only_is_named_when_used():
    def f(x):
        if x.sum() > 0:
            y = x * 2
        return y  # noqa: F821 - undefined when the branch is not taken

    with pytest.raises(GraphcError, match=r"variable 'y' is not defined on every path"):
        graphc.compile(f, np.ones(2, np.float32))


def test_unconvertible_constructs_name_the_construct_and_the_line():
    def early_return(x):
        if x.sum() > 0:
            return x
        return -x

    def breaks(x):
        while x.sum() > 0:
            x = x - 1
            if x.max() < 3:
                break
        return x

    for fn, construct, offset in ((early_return, "a return statement", 1), (breaks, "a break statement", 1)):
        line = fn.__code__.co_firstlineno + offset
        with pytest.raises(GraphcError, match=rf"test_autograph.py:{line}: {construct} inside this"):
            graphc.compile(fn, np.ones(2, np.float32))


def test_python_semantics_when_nothing_is_traced():
    def f(n):
        total = 0
        while n > 0:
            if n % 2:
                total += n
            n -= 1
        return total

    assert convert(f)(5) == f(5) == 9
    assert convert(lambda x: x) is None  # no statements to convert


def test_plain_trace_still_refuses_python_control_flow():
    with pytest.raises(GraphcError, match="control flow"):
        graphc.trace(Halve(), np.ones(3, np.float32))
