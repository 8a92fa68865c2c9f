"""In-place ops while tracing follow PyTorch's aliasing: every name bound to the tensor sees the update.

Each case is written once against a library (``graphc.functional``/``graphc.nn`` or
``torch.nn.functional``/``torch.nn``), traced by graphc and run eagerly by PyTorch; outputs, and
gradients through the in-place ops, must agree. In-place ops graphc cannot give PyTorch's meaning
to (a view of a live tensor, a parameter, a graph input) raise a GraphcError at the user's line.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import functional as F
from graphc import nn
from graphc.compiler import compile_graph
from graphc.ir import GraphcError
from graphc.kernels.reference import execute
from graphc.passes.autodiff import value_and_grad
from graphc.tracing import run_eager, trace

torch = pytest.importorskip("torch")

HERE = "test_inplace.py"
X = np.random.default_rng(11).uniform(-1.0, 1.0, (4, 6)).astype(np.float32)


def line_of(fn, offset):
    """The line ``offset`` lines below ``fn``'s def."""
    return f"{HERE}:{fn.__code__.co_firstlineno + offset}"


# ---------------------------------------------------------------------------- cases (F, nn given)
def alias_iadd(x, F, nn):
    y = x * 2
    z = y
    y += 1
    return z, y


def augmented_assignments(x, F, nn):
    y = x + 1
    y -= 0.5
    y *= 3
    y /= 2
    y **= 2
    return y


def methods(x, F, nn):
    y = x * 1.5
    w = y
    y.add_(1).sub_(0.25, alpha=2).mul_(2).div_(3)
    return w


def relu_functional(x, F, nn):
    y = x - 0.25
    F.relu(y, inplace=True)
    return y


def relu_method(x, F, nn):
    y = x - 0.25
    z = y.relu_()
    return y, z


def relu_module_as_statement(x, F, nn):
    act = nn.ReLU(inplace=True)
    y = x * 3
    act(y)
    return y


def leaky_relu_and_silu(x, F, nn):
    y = x * 2
    F.leaky_relu(y, 0.2, inplace=True)
    z = x * 2
    nn.SiLU(inplace=True)(z)
    return y, z


def clamp_and_masked_fill(x, F, nn):
    y = x * 3
    y.clamp_(-1, 1)
    z = x * 1
    z.masked_fill_(x > 0.5, 0.25)
    return y, z


def zero_fill_copy(x, F, nn):
    a, b, c = x * 1, x * 2, x * 3
    a.zero_()
    b.fill_(3.5)
    c.copy_(x[0])  # a row of the input, broadcast over c
    return a, b, c


def clone_and_pow_one_do_not_alias(x, F, nn):
    y = x * 2
    z = y.clone()
    z.add_(1)
    p = y**1
    p.mul_(3)
    return y, z, p


def view_of_a_temporary(x, F, nn):
    y = (x * 2).view(-1)  # its base is gone: nothing else can see the update
    y.add_(1)
    return y


def exp_sigmoid_tanh_neg_abs(x, F, nn):
    a, b, c, d = x * 1, x * 1, x * 1, x * 1
    a.exp_().neg_().abs_()
    b.sigmoid_()
    c.tanh_()
    d.pow_(2)
    return a, b, c, d


def residual_block(x, F, nn):
    identity = x
    out = x * 0.5 - 0.25
    out += identity
    F.relu(out, inplace=True)
    return out


CASES = [
    alias_iadd,
    augmented_assignments,
    methods,
    relu_functional,
    relu_method,
    relu_module_as_statement,
    leaky_relu_and_silu,
    clamp_and_masked_fill,
    zero_fill_copy,
    clone_and_pow_one_do_not_alias,
    view_of_a_temporary,
    exp_sigmoid_tanh_neg_abs,
    residual_block,
]


def _torch(case, x: np.ndarray, w: list[np.ndarray] | None = None):
    xt = torch.tensor(x, requires_grad=w is not None)
    outs = case(xt, torch.nn.functional, torch.nn)
    outs = outs if isinstance(outs, tuple) else (outs,)
    if w is None:
        return [o.detach().numpy() for o in outs]
    loss = sum((o * torch.tensor(wi)).sum() for o, wi in zip(outs, w))
    loss.backward()
    return xt.grad.numpy()


def _weights(case) -> list[np.ndarray]:
    outs = _torch(case, X)
    r = np.random.default_rng(3)
    return [r.uniform(0.5, 1.5, o.shape).astype(np.float32) for o in outs]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_values_match_torch(case):
    out = run_eager(lambda x: case(x, F, nn), X)
    out = out if isinstance(out, tuple) else (out,)
    ref = _torch(case, X)
    assert len(out) == len(ref)
    for got, want in zip(out, ref):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize(
    "case",
    [methods, relu_module_as_statement, clamp_and_masked_fill, residual_block],
    ids=lambda c: c.__name__,
)
def test_gradients_through_inplace_ops_match_torch(case, backend):
    w = _weights(case)

    def loss(x):
        outs = case(x, F, nn)
        outs = outs if isinstance(outs, tuple) else (outs,)
        total = (outs[0] * w[0]).sum()
        for o, wi in zip(outs[1:], w[1:]):
            total = total + (o * wi).sum()
        return total

    joint = value_and_grad(trace(loss, X), wrt=["x"])
    if backend == "reference":
        _, dx = execute(joint, {"x": X})
    else:
        _, dx = compile_graph(joint, backend="cpu")(X)
    np.testing.assert_allclose(dx, _torch(case, X, w), rtol=1e-5, atol=1e-6)


def test_compiled_model_with_inplace_relu_matches_torch():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 5)
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            y = self.fc(x)
            self.act(y)
            return y

    model = Net()
    ref = torch.nn.Linear(6, 5)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(np.asarray(model.fc.weight)))
        ref.bias.copy_(torch.tensor(np.asarray(model.fc.bias)))
        want = torch.relu(ref(torch.tensor(X))).numpy()
    np.testing.assert_allclose(graphc.compile(model, X)(X), want, rtol=1e-5, atol=1e-6)


def test_inplace_on_a_buffer_updates_it_like_torch():
    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("seen", np.zeros(6, np.float32))

        def forward(self, x):
            self.seen.add_(x.sum(0))
            return x * 2

    model = Counter()
    plan = graphc.compile(model, X)
    plan(X)
    plan(X)
    np.testing.assert_allclose(model.seen, 2 * X.sum(0), rtol=1e-6)


# ---------------------------------------------------------------------------- errors
def test_inplace_on_a_graph_input_raises_at_the_line():
    def f(x):
        x.add_(1)
        return x

    def g(x):
        x += 1
        return x

    for fn in (f, g):
        with pytest.raises(GraphcError) as err:
            trace(fn, X)
        assert "graph input %x" in str(err.value) and line_of(fn, 1) in str(err.value)


def test_inplace_on_a_parameter_raises_at_the_line():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 2)

        def forward(self, x):
            self.fc.weight.mul_(2)
            return self.fc(x)

    with pytest.raises(GraphcError) as err:
        trace(Net(), X)
    assert "parameter %fc.weight" in str(err.value) and line_of(Net.forward, 1) in str(err.value)


def test_inplace_relu_module_on_the_input_raises():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.act(x)

    with pytest.raises(GraphcError) as err:
        trace(Net(), X)
    assert "relu(inplace=True)" in str(err.value) and line_of(Net.forward, 1) in str(err.value)


def view_then_write(x):
    y = x * 2
    row = y[0]
    row.add_(1)  # PyTorch would change y too
    return y


def test_inplace_on_an_indexing_view_writes_through_as_in_torch():
    """``row = y[0]; row.add_(1)`` changes y as in PyTorch (a functional update of y)."""
    torch = pytest.importorskip("torch")
    expect = view_then_write(torch.from_numpy(X.copy())).numpy()
    np.testing.assert_allclose(graphc.compile(view_then_write, X, backend="reference")(X), expect)
    np.testing.assert_allclose(run_eager(view_then_write, X), expect)


def transpose_then_write(x):
    y = x * 2
    y.T.relu_()
    return y


def write_base_with_live_view(x):
    y = x * 2
    flat = y.view(-1)
    y.mul_(3)  # PyTorch would change flat too
    return flat


def write_expanded(x):
    y = (x * 2)[0:1]
    big = y.expand(4, 6)
    big.add_(1)
    return y


@pytest.mark.parametrize(
    "fn, words, offset",
    [
        (transpose_then_write, "on a view", 2),
        (write_base_with_live_view, "has live views", 3),
        (write_expanded, "on a view", 3),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_inplace_through_views_raises_at_the_line(fn, words, offset):
    with pytest.raises(GraphcError) as err:
        trace(fn, X)
    msg = str(err.value)
    assert words in msg and line_of(fn, offset) in msg


def test_inplace_dtype_and_shape_errors_like_torch():
    def to_int(x):
        y = (x * 10).to("i64")
        y += 0.5  # torch: result type Float can't be cast to Long
        return y

    def grow(x):
        y = x[0] * 1
        y.add_(x)  # [6] += [4, 6]
        return y

    with pytest.raises(GraphcError, match="cannot be cast") as err:
        trace(to_int, X)
    assert line_of(to_int, 2) in str(err.value)
    with pytest.raises(GraphcError, match="does not fit in place") as err:
        trace(grow, X)
    assert line_of(grow, 2) in str(err.value)


def test_eager_inplace_on_an_argument_raises_like_tracing():
    arr = X.copy()
    with pytest.raises(GraphcError, match="graph input"):
        F.relu(arr, inplace=True)
    with pytest.raises(GraphcError, match="graph input"):
        nn.ReLU(inplace=True)(arr)
    np.testing.assert_array_equal(arr, X)  # nothing written
    np.testing.assert_array_equal(F.relu(arr), np.maximum(X, 0))


def test_inplace_relus_in_a_sequential_cnn_match_torch():
    """Layer outputs that are views of dead temporaries (conv's reshape, Flatten) may be written."""
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, bias=False),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.ReLU(inplace=True),
        nn.Linear(12, 4),
        nn.LeakyReLU(0.1, inplace=True),
    )
    ref = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, bias=False),
        torch.nn.ReLU(inplace=True),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.ReLU(inplace=True),
        torch.nn.Linear(12, 4),
        torch.nn.LeakyReLU(0.1, inplace=True),
    )
    ref.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in model.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((2, 2, 6, 6)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.tensor(x)).numpy()
    np.testing.assert_allclose(run_eager(model, x), want, rtol=1e-5, atol=1e-6)
