"""graphc.functional against NumPy formulas written here and against torch.nn.functional."""

import math

import numpy as np
import pytest
import scipy.special

from graphc import functional as F
from graphc.ir import GraphcError
from graphc.kernels.reference import execute
from graphc.tracing import trace


def run_graph(graph, *arrays):
    """Execute a traced graph on data arrays (in data-input order) with the reference kernels."""
    outs = execute(graph, {v.name: np.asarray(a) for v, a in zip(graph.data_inputs, arrays)})
    return outs[0] if len(outs) == 1 else outs


def close(a, b, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def traced(fn, *arrays):
    return run_graph(trace(fn, *arrays), *arrays)


def np_log_softmax(x, axis):
    x = x.astype(np.float64)
    m = x.max(axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis, keepdims=True))


@pytest.fixture
def logits(rng):
    return (rng.standard_normal((6, 5)) * 3).astype(np.float32)


@pytest.fixture
def labels(rng):
    return rng.integers(0, 5, size=6).astype(np.int64)


# ---------------------------------------------------------------------------- activations
def test_activations(rng):
    x = rng.standard_normal((4, 7)).astype(np.float32) * 3
    outs = traced(
        lambda a: (
            F.relu(a),
            F.gelu(a),
            F.gelu(a, approximate="tanh"),
            F.sigmoid(a),
            F.tanh(a),
            F.silu(a),
            F.leaky_relu(a, 0.2),
        ),
        x,
    )
    xd = x.astype(np.float64)
    refs = (
        np.maximum(xd, 0),
        0.5 * xd * (1 + scipy.special.erf(xd / math.sqrt(2))),
        0.5 * xd * (1 + np.tanh(math.sqrt(2 / math.pi) * (xd + 0.044715 * xd**3))),
        1 / (1 + np.exp(-xd)),
        np.tanh(xd),
        xd / (1 + np.exp(-xd)),
        np.where(xd >= 0, xd, 0.2 * xd),
    )
    for o, r in zip(outs, refs):
        assert o.dtype == np.float32
        close(o, r)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_and_log_softmax(rng, dim):
    x = (rng.standard_normal((3, 4, 5)) * 5).astype(np.float32)
    sm, lsm = traced(lambda a: (F.softmax(a, dim), F.log_softmax(a, dim=dim)), x)
    ref = np_log_softmax(x, dim)
    close(lsm, ref)
    close(sm, np.exp(ref))


def test_softmax_is_stable_for_large_values():
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1001.0]], dtype=np.float32)
    sm, lsm = traced(lambda a: (F.softmax(a, 1), F.log_softmax(a, 1)), x)
    assert np.all(np.isfinite(sm)) and np.all(np.isfinite(lsm))
    close(lsm, np_log_softmax(x, 1))


def test_softmax_uses_trailing_keepdims_reductions(rng):
    g = trace(lambda a: F.softmax(a, -1), rng.random((2, 3), dtype=np.float32))
    reds = [n for n in g.nodes if n.op in ("sum", "max")]
    assert reds and all(n.attrs["keepdims"] and n.attrs["axes"] == (1,) for n in reds)


# ---------------------------------------------------------------------------- losses
def np_cross_entropy(x, y, weight=None, ignore_index=-100, reduction="mean", smoothing=0.0):
    logp = np_log_softmax(x, 1)
    n, c = x.shape
    w = np.ones(c) if weight is None else weight.astype(np.float64)
    valid = y != ignore_index
    safe = np.where(valid, y, 0)
    nll = -logp[np.arange(n), safe] * w[safe] * valid
    smooth = -(logp * w).sum(1) * valid / c
    wsum = (w[safe] * valid).sum()
    if reduction == "mean":
        return (1 - smoothing) * nll.sum() / wsum + smoothing * smooth.sum() / wsum
    loss = (1 - smoothing) * nll + smoothing * smooth
    return loss.sum() if reduction == "sum" else loss


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(logits, labels, reduction):
    out = traced(lambda x, y: F.cross_entropy(x, y, reduction=reduction), logits, labels)
    close(out, np_cross_entropy(logits, labels, reduction=reduction))


def test_cross_entropy_options(rng, logits, labels):
    w = rng.random(5).astype(np.float32) + 0.5
    y = labels.copy()
    y[1] = -100
    close(F.cross_entropy(logits, y, weight=w), np_cross_entropy(logits, y, weight=w))
    close(F.cross_entropy(logits, y, label_smoothing=0.1), np_cross_entropy(logits, y, smoothing=0.1))
    close(
        F.cross_entropy(logits, y, weight=w, label_smoothing=0.2, reduction="none"),
        np_cross_entropy(logits, y, weight=w, smoothing=0.2, reduction="none"),
    )
    probs = np.exp(np_log_softmax(rng.standard_normal((6, 5)), 1)).astype(np.float32)
    close(F.cross_entropy(logits, probs), -(probs * np_log_softmax(logits, 1)).sum(1).mean())
    logp = np_log_softmax(logits, 1).astype(np.float32)
    close(F.nll_loss(logp, labels), -logp[np.arange(6), labels].mean())


def test_cross_entropy_spatial(rng):
    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    y = rng.integers(0, 4, size=(2, 3, 3)).astype(np.int64)
    logp = np_log_softmax(x, 1)
    ref = -np.take_along_axis(logp, y[:, None], 1).mean()
    close(F.cross_entropy(x, y), ref)


def test_mse_and_l1_and_bce(rng):
    a, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    close(traced(F.mse_loss, a, b), ((a - b) ** 2).mean())
    close(F.mse_loss(a, b, reduction="sum"), ((a - b) ** 2).sum())
    close(F.l1_loss(a, b, reduction="none"), np.abs(a - b))
    y = (b > 0).astype(np.float32)
    p = 1 / (1 + np.exp(-a.astype(np.float64)))
    close(F.binary_cross_entropy_with_logits(a, y), -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


# ---------------------------------------------------------------------------- layers
def test_linear_and_matmul(rng):
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 4), (5, 4), (5,)))
    close(traced(lambda x_, w_, b_: F.linear(x_, w_, b_), x, w, b), x @ w.T + b)
    close(F.linear(x, w), x @ w.T)
    close(F.matmul(x, w.T), x @ w.T)


def test_conv2d_against_direct_sum(rng):
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    out = traced(lambda x_, w_, b_: F.conv2d(x_, w_, b_, stride=(2, 1), padding=1), x, w, b)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    oh, ow = (6 + 2 - 3) // 2 + 1, (5 + 2 - 2) // 1 + 1
    ref = np.zeros((2, 4, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, 2 * i : 2 * i + 3, j : j + 2]
            ref[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w) + b
    close(out, ref, atol=1e-4)
    close(F.conv2d(x[0], w), F.conv2d(x[:1], w)[0], atol=1e-5)  # unbatched input
    with pytest.raises(GraphcError, match="groups"):
        F.conv2d(x, w, groups=3)


def test_pooling(rng):
    x = rng.standard_normal((1, 2, 4, 6)).astype(np.float32)
    mx, av = traced(lambda a: (F.max_pool2d(a, 2), F.avg_pool2d(a, (2, 3))), x)
    close(mx, x.reshape(1, 2, 2, 2, 3, 2).max((3, 5)))
    close(av, x.reshape(1, 2, 2, 2, 2, 3).mean((3, 5)))


def test_layer_norm_and_batch_norm(rng):
    x = rng.standard_normal((4, 3, 5)).astype(np.float32) * 2 + 1
    w, b = rng.standard_normal(5).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b
    close(traced(lambda a, w_, b_: F.layer_norm(a, (5,), w_, b_), x, w, b), ref, atol=1e-4)
    close(
        F.layer_norm(x, 5, eps=0.1), (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 0.1)
    )

    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    out = F.batch_norm(x, rm, rv, training=True, momentum=0.2)  # eager: updates rm, rv in place
    mean, var = x.mean((0, 2)), x.var((0, 2))
    close(out, (x - mean[:, None]) / np.sqrt(var[:, None] + 1e-5), atol=1e-4)
    close(rm, 0.2 * mean)
    close(rv, 0.8 + 0.2 * var * 20 / 19)
    close(F.batch_norm(x, rm, rv), (x - rm[:, None]) / np.sqrt(rv[:, None] + 1e-5), atol=1e-5)


def test_dropout_and_embedding(rng):
    x = np.ones((100, 100), np.float32)
    out = F.dropout(x, 0.5)
    assert set(np.unique(out)) <= {0.0, 2.0} and 0.4 < (out == 0).mean() < 0.6
    close(F.dropout(x, 0.5, training=False), x)
    close(F.dropout(x, 0.0), x)
    close(F.dropout(x, 1.0), 0 * x)
    table = rng.standard_normal((6, 3)).astype(np.float32)
    idx = np.array([5, 0, 5], dtype=np.int64)
    close(traced(lambda i, t: F.embedding(i, t), idx, table), table[idx])


def test_tensor_helpers(rng):
    a, b = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32)
    c, s = traced(lambda x, y: (F.cat([x, y], 1), F.stack([x, y], -1)), a, b)
    close(c, np.concatenate([a, b], 1))
    close(s, np.stack([a, b], -1))
    close(F.pad(a, (1, 2)), np.pad(a, ((0, 0), (1, 2))))
    close(F.where(a > 0, a, b), np.where(a > 0, a, b))
    np.testing.assert_array_equal(F.one_hot(np.array([2, 0]), 3), np.eye(3, dtype=np.int64)[[2, 0]])


# ---------------------------------------------------------------------------- against torch
def test_functional_matches_torch(rng, logits, labels):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    T = torch.from_numpy
    x4 = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    w4 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w = rng.random(5).astype(np.float32) + 0.5
    y = labels.copy()
    y[0] = -100
    cases = [
        (F.gelu(logits), tf.gelu(T(logits))),
        (F.gelu(logits, approximate="tanh"), tf.gelu(T(logits), approximate="tanh")),
        (F.softmax(x4, 1), tf.softmax(T(x4), 1)),
        (F.log_softmax(x4, -1), tf.log_softmax(T(x4), -1)),
        (F.cross_entropy(logits, labels), tf.cross_entropy(T(logits), T(labels))),
        (
            F.cross_entropy(logits, y, weight=w, label_smoothing=0.1),
            tf.cross_entropy(T(logits), T(y), weight=T(w), label_smoothing=0.1),
        ),
        (F.cross_entropy(logits, y, reduction="none"), tf.cross_entropy(T(logits), T(y), reduction="none")),
        (F.conv2d(x4, w4, None, 2, 1), tf.conv2d(T(x4), T(w4), None, 2, 1)),
        (F.conv2d(x4, w4, padding="same", dilation=2), tf.conv2d(T(x4), T(w4), padding="same", dilation=2)),
        (F.max_pool2d(x4, 3, 2, 1), tf.max_pool2d(T(x4), 3, 2, 1)),
        (F.max_pool2d(x4, 2, ceil_mode=True), tf.max_pool2d(T(x4), 2, ceil_mode=True)),
        (F.avg_pool2d(x4, 3, 2, 1, ceil_mode=True), tf.avg_pool2d(T(x4), 3, 2, 1, ceil_mode=True)),
        (F.layer_norm(x4, (7, 7)), tf.layer_norm(T(x4), (7, 7))),
        (F.mse_loss(logits, logits[::-1].copy()), tf.mse_loss(T(logits), T(logits[::-1].copy()))),
    ]
    for got, ref in cases:
        assert got.shape == tuple(ref.shape)
        close(got, ref.numpy(), atol=1e-4)


# ---------------------------------------------------------------------------- class labels
def _loss_and_grad(fn, x, y, backend):
    """(loss, d loss / dx) of ``fn(x, y)`` with the reference executor or the compiled CPU plan."""
    from graphc.compiler import compile_graph
    from graphc.passes.autodiff import value_and_grad

    joint = value_and_grad(trace(fn, x, y), wrt=["x"])
    if backend == "reference":
        return run_graph(joint, x, y)
    return compile_graph(joint, backend="cpu")(x, y)


CE_CASES = {
    "plain": {},
    "ignore_index": {"ignore_index": -100},
    "ignore_index_in_range": {"ignore_index": 2},
    "weight": {"weight": True},
    "smoothing": {"label_smoothing": 0.2},
    "weight_smoothing_sum": {"weight": True, "label_smoothing": 0.1, "reduction": "sum"},
    "none": {"reduction": "none", "weight": True},
}


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("case", sorted(CE_CASES))
@pytest.mark.parametrize("spatial", [False, True])
def test_cross_entropy_values_and_gradients_match_torch(rng, case, spatial, backend):
    torch = pytest.importorskip("torch")
    kwargs = dict(CE_CASES[case])
    shape, yshape = ((3, 4, 2, 3), (3, 2, 3)) if spatial else ((6, 4), (6,))
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, 4, size=yshape).astype(np.int64)
    y.flat[1] = -100
    y.flat[2] = 2
    weight = (rng.random(4) + 0.5).astype(np.float32)
    if kwargs.pop("weight", False):
        kwargs["weight"] = weight
    reduce_none = kwargs.get("reduction") == "none"

    def fn(x, y):
        loss = F.cross_entropy(x, y, **kwargs)
        return loss.sum() if reduce_none else loss

    if kwargs.get("ignore_index", -100) != -100:
        y.flat[1] = 0  # -100 is a bad label unless it is the ignore_index
    loss, dx = _loss_and_grad(fn, x, y, backend)
    xt = torch.tensor(x, requires_grad=True)
    tkw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    ref = torch.nn.functional.cross_entropy(xt, torch.tensor(y), **tkw)
    ref = ref.sum() if reduce_none else ref
    ref.backward()
    close(loss, ref.item())
    close(dx, xt.grad.numpy())


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("bad", [5, -1, -100])
def test_a_label_outside_the_classes_raises_at_run_time(rng, backend, bad):
    """PyTorch raises for a target outside [0, classes) that is not ignore_index; so does graphc."""
    x = rng.standard_normal((6, 5)).astype(np.float32)
    y = rng.integers(0, 5, size=6).astype(np.int64)
    ignore = 0 if bad == -100 else -100

    def fn(x, y):
        return F.cross_entropy(x, y, ignore_index=ignore)

    graph = trace(fn, x, y)
    run = (
        run_graph
        if backend == "reference"
        else __import__("graphc.compiler").compiler.compile_graph(graph, backend="cpu")
    )
    args = (graph, x) if backend == "reference" else (x,)
    close(run(*args, y), torch_free_ce(x, y, ignore))  # good labels run
    y[3] = bad
    with pytest.raises(GraphcError) as err:
        run(*args, y)
    assert "out of range [0, 5)" in str(err.value)
    if backend == "cpu":
        assert f"index {bad} " in str(err.value)  # the bad label's value


def torch_free_ce(x, y, ignore_index):
    """Mean cross-entropy over the labels that are not ``ignore_index`` (float64 NumPy)."""
    logp = np_log_softmax(x, 1)
    keep = y != ignore_index
    return -logp[np.arange(len(y)), np.where(keep, y, 0)][keep].mean()


def test_nll_loss_checks_labels_too(rng):
    logp = np_log_softmax(rng.standard_normal((4, 3)), 1).astype(np.float32)
    y = np.array([0, 1, 3, 2])
    with pytest.raises(GraphcError, match=r"out of range \[0, 3\)"):
        F.nll_loss(logp, y)
    y[2] = -100
    close(F.nll_loss(logp, y), -logp[[0, 1, 3], [0, 1, 2]].mean())


def test_a_bad_label_stops_a_training_step_before_any_update(rng):
    """A compiled train step with a bad label raises and leaves every parameter as it was."""
    import graphc
    from graphc import nn

    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = rng.standard_normal((5, 8)).astype(np.float32)
    y = rng.integers(0, 4, size=5).astype(np.int64)
    step = graphc.compile_train(model, F.cross_entropy, graphc.optim.SGD(lr=0.1, momentum=0.9), x, y)
    step(x, y)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    bad = y.copy()
    bad[2] = 4
    with pytest.raises(GraphcError, match="index 4 out of range"):
        step(x, bad)
    after = model.state_dict()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    step(x, y)  # still usable, and the good step changes the parameters
    assert any(not np.array_equal(model.state_dict()[k], v) for k, v in before.items())
