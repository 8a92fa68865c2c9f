"""NaN and +-inf through the max/min family, values and gradients, against PyTorch.

Each case traces ``f(x)`` and ``sum(f(x) * W)`` for a fixed finite W, appends the backward pass
(``passes.autodiff.value_and_grad``) and runs it with the NumPy reference executor and with the
compiled CPU plan; PyTorch autograd gives the expected output and ``x.grad`` (NaN compared equal).
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import functional as F
from graphc.compiler import compile_graph
from graphc.kernels.reference import execute
from graphc.passes.autodiff import value_and_grad
from graphc.tracing import run_eager, trace

torch = pytest.importorskip("torch")
TF = torch.nn.functional

NAN, INF = np.nan, np.inf
# Every special value next to ordinary ones, ties (0 and 1 twice) and the kinks of relu/clamp.
SPECIAL = np.array(
    [[NAN, 0.0, -1.0, 2.0, INF, -INF], [1.0, 1.0, 0.0, -0.5, 0.5, 3.0], [-INF, -INF, -INF, 1.0, NAN, 0.0]],
    dtype=np.float32,
)
W = np.random.default_rng(7).uniform(0.5, 1.5, SPECIAL.shape).astype(np.float32)


def run_graphc(fn, x: np.ndarray, w: np.ndarray, backend: str) -> tuple[np.ndarray, np.ndarray]:
    """(f(x), d sum(f(x) * w) / dx) with the given backend ("reference" or "cpu")."""
    forward = trace(lambda x: fn(x), x)
    joint = value_and_grad(trace(lambda x: (fn(x) * w).sum(), x), wrt=["x"])
    if backend == "reference":
        (y,) = execute(forward, {"x": x})
        _, dx = execute(joint, {"x": x})
        return y, dx
    y = compile_graph(forward, backend="cpu")(x)
    _, dx = compile_graph(joint, backend="cpu")(x)
    return y, dx


def run_torch(fn, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xt = torch.tensor(x, requires_grad=True)
    y = fn(xt)
    (y * torch.tensor(w)).sum().backward()
    return y.detach().numpy(), xt.grad.numpy()


def check(fn_graphc, fn_torch, x: np.ndarray, backend: str, w: np.ndarray | None = None) -> None:
    if w is None:
        shape = fn_torch(torch.tensor(x)).shape
        w = np.random.default_rng(7).uniform(0.5, 1.5, shape).astype(np.float32)
    y, dx = run_graphc(fn_graphc, x, w, backend)
    y_ref, dx_ref = run_torch(fn_torch, x, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-6, atol=1e-7)


BACKENDS = ["reference", "cpu"]

POINTWISE = {
    "relu": (F.relu, torch.relu),
    "tensor_relu": (lambda x: x.relu(), lambda x: x.relu()),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), lambda x: TF.leaky_relu(x, 0.1)),
    "clamp": (lambda x: x.clamp(0.0, 1.0), lambda x: x.clamp(0.0, 1.0)),
    "clamp_min": (lambda x: x.clamp(min=0.0), lambda x: x.clamp(min=0.0)),
    "clamp_max": (lambda x: x.clip(max=1.0), lambda x: x.clip(max=1.0)),
    "clamp_empty_range": (lambda x: x.clamp(1.0, 0.0), lambda x: x.clamp(1.0, 0.0)),
    "maximum_values": (lambda x: np.maximum(x, 0.5) * 1.0, lambda x: torch.maximum(x, torch.tensor(0.5))),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(POINTWISE))
def test_pointwise_max_min_family(name, backend):
    fg, ft = POINTWISE[name]
    if name == "maximum_values":
        y, _ = run_graphc(fg, SPECIAL, W, backend)
        np.testing.assert_array_equal(y, ft(torch.tensor(SPECIAL)).numpy())
        return
    check(fg, ft, SPECIAL, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_maximum_gradient_at_nan(backend):
    check(lambda x: np.maximum(x, 0.5), lambda x: torch.maximum(x, torch.tensor(0.5)), SPECIAL, backend)
    check(lambda x: np.minimum(x, 0.5), lambda x: torch.minimum(x, torch.tensor(0.5)), SPECIAL, backend)


def test_clamp_with_tensor_bounds():
    lo = np.array([0.0, NAN, -1.0, 0.0, 0.0, 0.0], np.float32)

    def fg(x):
        return x.clamp(min=lo, max=2.0)

    y, _ = run_graphc(fg, SPECIAL, W, "reference")
    expected = torch.tensor(SPECIAL).clamp(min=torch.tensor(lo), max=torch.tensor(2.0)).numpy()
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["max", "min"])
@pytest.mark.parametrize("dim", [0, 1])
def test_max_min_with_dim_values_indices_and_gradient(op, dim, backend):
    check(lambda x: getattr(x, op)(dim).values, lambda x: getattr(x, op)(dim).values, SPECIAL, backend)

    def both(x):
        values, indices = getattr(x, op)(dim, keepdim=True)
        return values, indices

    out = execute(trace(both, SPECIAL), {"x": SPECIAL})
    ref = getattr(torch.tensor(SPECIAL), op)(dim, keepdim=True)
    np.testing.assert_array_equal(out[0], ref.values.numpy())
    np.testing.assert_array_equal(out[1], ref.indices.numpy())


@pytest.mark.parametrize("backend", BACKENDS)
def test_amax_and_full_max_split_the_gradient_like_torch(backend):
    check(lambda x: x.amax(1), lambda x: x.amax(1), SPECIAL, backend)
    check(lambda x: x.max().reshape(1), lambda x: x.max().reshape(1), SPECIAL[1:2], backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_rows_with_nan_and_inf(fn, backend):
    x = np.array(
        [[NAN, 1.0, 2.0], [INF, 1.0, 2.0], [-INF, -INF, -INF], [-INF, 1.0, 2.0], [1.0, 2.0, 3.0]],
        dtype=np.float32,
    )
    w = np.random.default_rng(3).uniform(0.5, 1.5, x.shape).astype(np.float32)
    check(lambda t: getattr(F, fn)(t, 1), lambda t: getattr(torch, fn)(t, 1), x, backend, w)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("padding", [0, 1])
def test_max_pool2d_with_nan_and_inf(padding, backend):
    x = np.random.default_rng(5).standard_normal((1, 2, 4, 4)).astype(np.float32)
    x[0, 0, 0, 0] = NAN
    # A window of -inf only (inside the input: one that also covers padding gets the right value,
    # -inf, but its gradient goes to a padding element, see graphc.functional.max_pool2d).
    x[0, 0, 2 - padding : 4 - padding, 2 - padding : 4 - padding] = -INF
    x[0, 1, 0, 1] = -INF
    x[0, 1, 1, 1] = INF
    out_shape = TF.max_pool2d(torch.tensor(x), 2, 2, padding).shape
    w = np.random.default_rng(6).uniform(0.5, 1.5, out_shape).astype(np.float32)

    check(
        lambda t: F.max_pool2d(t, 2, 2, padding),
        lambda t: TF.max_pool2d(t, 2, 2, padding),
        x,
        backend,
        w,
    )


def test_max_pool2d_pads_with_minus_inf():
    x = np.full((1, 1, 3, 3), -INF, np.float32)
    y = run_eager(lambda t: F.max_pool2d(t, 3, 1, 1), x)
    np.testing.assert_array_equal(y, TF.max_pool2d(torch.tensor(x), 3, 1, 1).numpy())


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_of_nan_and_inf_is_nan_where_dropped(backend):
    x = np.array([[NAN, INF, -INF, 1.0] * 8], np.float32)

    def fg(t):
        return F.dropout(t, 0.5, training=True)

    y = run_eager(fg, x) if backend == "reference" else compile_graph(trace(fg, x), backend="cpu")(x)
    ones = y[0, 3::4]
    assert set(ones.tolist()) == {0.0, 2.0}  # some kept (scaled by 2), some dropped
    # NaN and +-inf times the 0 or 2 of the mask: NaN or the same inf, never 0 (torch: x * mask)
    special = y[0].reshape(8, 4)[:, :3]
    assert not np.any(special == 0)
    assert np.all(np.isnan(special[:, 0]))
    assert np.all(np.isnan(special[:, 1:]) | (special[:, 1:] == [INF, -INF]))
    assert np.any(np.isnan(special[:, 1:]))


def test_plans_with_nan_constants_and_minus_inf_padding_save_and_load(tmp_path):
    """clamp's NaN constant and max_pool2d's -inf padding survive a plan file."""
    import graphc

    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    x[0, 0, 0, 0] = NAN
    x[0, 1, :2, :2] = -INF

    def f(t):
        return F.max_pool2d(t, 3, 2, 1).clamp(-0.5, 0.5), t.max(1).values

    plan = graphc.compile(f, x)
    plan.save(str(tmp_path / "p.gcp"))
    loaded = graphc.load_plan(str(tmp_path / "p.gcp"))
    tx = torch.tensor(x)
    expected = (TF.max_pool2d(tx, 3, 2, 1).clamp(-0.5, 0.5).numpy(), tx.max(1).values.numpy())
    for got, want in zip(loaded(x), expected):
        np.testing.assert_array_equal(got, want)


def test_signed_zero_constants_stay_apart_while_tracing():
    """0.0 and -0.0 compare equal, but ``x * -0.0`` is -0.0 for positive x (NumPy, torch): the
    trace's constant cache must not hand back the 0.0 made first."""
    x = np.array([1.0, 2.0], np.float32)
    a, b = graphc.compile(lambda t: (t * 0.0, t * -0.0), x, backend="reference")(x)
    assert not np.signbit(a).any() and np.signbit(b).all()
    np.testing.assert_array_equal(np.signbit(b), np.signbit(x * np.float32(-0.0)))
