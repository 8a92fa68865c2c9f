"""Eager mode's fast path (graphc/eager_fast.py) and per-op savings (graphc/eager.py).

The fast path must be invisible: every result (dtype, shape, bits, NaN and signed zeros), every
recorded gradient and every error is the general path's (``EagerContext.multi_op``, forced here by
switching the fast path off), and values and gradients match NumPy in float64 and PyTorch.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

import graphc
import graphc.eager as eager
import graphc.eager_fast as eager_fast
from graphc import GraphcError, nn

BINARY = ["add", "sub", "mul", "div", "pow", "maximum", "minimum", "lt", "le", "eq", "ne", "gt", "ge"]
SYMBOL = {
    "add": "__add__",
    "sub": "__sub__",
    "mul": "__mul__",
    "div": "__truediv__",
    "pow": "__pow__",
    "lt": "__lt__",
    "le": "__le__",
    "eq": "__eq__",
    "ne": "__ne__",
    "gt": "__gt__",
    "ge": "__ge__",
}
DTYPES = [np.float32, np.float64, np.int32, np.int64, np.bool_]
SPECIAL = np.array([np.nan, -0.0, 0.0, 1.5, -2.0, np.inf, -np.inf, 3.0])


@pytest.fixture
def general(monkeypatch):
    """A function that runs ``fn`` with the fast path switched off (the general path)."""

    def run(fn):
        with monkeypatch.context() as m:
            for name in ("binary", "unary", "matmul", "relu", "permute", "fast_op"):
                m.setattr(eager.EagerContext, name, lambda self, *a: None)
            for name, method in eager_fast.GENERAL.items():  # the methods the fast path replaced
                m.setattr(graphc.Tensor, name, method)
            return fn()

    return run


def _data(dtype, shape=(2, 4), seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-3, 4, shape).astype(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    x.reshape(-1)[: SPECIAL.size] = SPECIAL[: x.size]
    return x


def _same(a, b):
    """Identical arrays: dtype, shape and bits (so NaN and -0.0 too)."""
    assert type(a) is np.ndarray and type(b) is np.ndarray
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.flags.c_contiguous and b.flags.c_contiguous
    assert a.tobytes() == b.tobytes(), (a, b)


def _apply(op, x, y):
    if op in SYMBOL:
        return getattr(x, SYMBOL[op])(y)
    return getattr(x, op)(y)


def _outcome(fn):
    """The array ``fn`` gives, or the GraphcError it raises (its text without the source line)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return fn().value.data  # the array itself, as the op made it
    except GraphcError as err:
        return ("error", str(err).split(": ", 1)[-1])


REFLECTED = {
    "add": "__radd__",
    "sub": "__rsub__",
    "mul": "__rmul__",
    "div": "__rtruediv__",
    "pow": "__rpow__",
}


def _check(fn, general):
    fast, slow = _outcome(fn), general(lambda: _outcome(fn))
    if isinstance(slow, tuple):
        assert fast == slow
    else:
        _same(fast, slow)


@pytest.mark.parametrize("op", BINARY)
def test_binary_fast_path_is_the_general_path(op, general):
    arr = eager.EAGER.array
    for da in DTYPES:
        x = _data(da)
        for other in DTYPES + [2, 2.5, -0.0, 0]:
            if isinstance(other, type):
                y = _data(other, (4,), seed=1)  # broadcasting too
                _check(lambda x=x, y=y: _apply(op, arr(x), arr(y)), general)
                _check(lambda x=x, y=y: _apply(op, arr(y), arr(x)), general)
            else:
                _check(lambda x=x, y=other: _apply(op, arr(x), y), general)
                if op in REFLECTED:
                    _check(lambda x=x, y=other: getattr(arr(x), REFLECTED[op])(y), general)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_path_values_match_numpy_float64(dtype):
    x, y = _data(dtype), _data(dtype, seed=1)
    gx, gy = eager.EAGER.array(x), eager.EAGER.array(y)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    with np.errstate(all="ignore"):
        for got, want in [
            (gx + gy, x64 + y64),
            (gx * 2.5, x64 * 2.5),
            (3.0 - gx, 3.0 - x64),
            (gx / gy, x64 / y64),
            (gx.exp(), np.exp(x64)),
            (gx.tanh(), np.tanh(x64)),
            (gx.relu(), np.where(x64 <= 0, 0.0, x64)),
            (gx @ gy.T, x64 @ y64.T),
        ]:
            np.testing.assert_allclose(np.asarray(got), want.astype(dtype), rtol=1e-6, atol=1e-6)
            assert np.asarray(got).dtype == dtype


@pytest.mark.parametrize("op", ["exp", "log", "sqrt", "rsqrt", "tanh", "abs", "sign", "neg", "reciprocal"])
def test_unary_fast_path_is_the_general_path(op, general):
    for dtype in DTYPES:
        x = eager.EAGER.array(_data(dtype))
        _check((lambda x=x: -x) if op == "neg" else (lambda x=x: getattr(x, op)()), general)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_and_matmul_fast_paths_are_the_general_path(dtype, general):
    x = eager.EAGER.array(_data(dtype, (4, 4)))
    y = eager.EAGER.array(_data(dtype, (3, 4, 2), seed=2))
    for fn in (
        lambda: x.relu(),
        lambda: x @ x,
        lambda: x @ y,
        lambda: x[0] @ x,
        lambda: x.T,
        lambda: y.permute(2, 0, 1),
    ):
        _check(fn, general)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reduction_and_where_fast_paths_are_the_general_path(dtype, general):
    x = eager.EAGER.array(_data(dtype, (3, 4)))
    c = eager.EAGER.array(_data(np.bool_, (3, 4), seed=3))
    y = eager.EAGER.array(_data(dtype, (4,), seed=2))
    for fn in (
        lambda: x.sum(),
        lambda: x.sum(1),
        lambda: x.sum(0, keepdim=True),
        lambda: x.amax(1, keepdim=True),
        lambda: x.amin(0),
        lambda: x.mean(1),
        lambda: graphc.where(c, x, y),
        lambda: graphc.where(c, x, 0.0),
        lambda: graphc.where(c, -0.0, x),
    ):
        _check(fn, general)


def test_results_are_c_contiguous_arrays_of_the_output_type(general):
    arr = eager.EAGER.array
    f = np.asfortranarray(np.arange(-6, 6, dtype=np.float32).reshape(3, 4))  # kernels keep its order
    s = np.array(1.5, np.float32)  # 0-d: NumPy gives scalars, not arrays
    for fn in (
        lambda: arr(f) + arr(f),
        lambda: arr(f) * 2.0,
        lambda: arr(f).exp(),
        lambda: arr(f).relu(),
        lambda: arr(f).T @ arr(f),
        lambda: arr(s) * 2.0,
        lambda: arr(s) + arr(s),
        lambda: arr(s).exp(),
        lambda: arr(s).relu(),
    ):
        _check(fn, general)


def test_relu_keeps_torch_semantics():
    x = np.array([np.nan, -0.0, 0.0, -1.0, 2.0, np.inf, -np.inf], np.float32)
    eager.call(lambda: eager.EAGER.array(x) + -0.0, ())  # a -0.0 constant made first changes nothing
    got = np.asarray(eager.EAGER.array(x).relu())
    np.testing.assert_array_equal(got, torch.relu(torch.tensor(x)).numpy())  # NaN stays NaN
    assert got.dtype == np.float32 and not np.signbit(got[1:3]).any()  # zeros are +0.0 (where(x <= 0, 0, x))


def _grads(general, use_general):
    """Gradients of a small computation through every fast path (scalars, reflected, relu, matmul)."""
    nn.init.manual_seed(0)
    w = nn.Parameter(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4))
    b = nn.Parameter(np.array([0.0, -0.5, 0.5, 1.0], np.float32))
    x = np.array([[1.0, -2.0, 0.0], [0.5, 0.25, -1.0]], np.float32)

    def step():
        def fn(x, w, b):
            h = (x @ w + b).relu()
            h = 2.0 - h * 3.0 + h / 4.0 + graphc.where(h > 1.0, h.amax(1, keepdim=True), 0.5)
            return (h.tanh().exp() * h.maximum(0.1) + 1.0).sum() + (h @ w.T).sum()

        loss = eager.call(fn, (x, w, b))
        loss.backward()
        return np.array(loss), w.grad.copy(), b.grad.copy()

    return general(step) if use_general else step()


def test_fast_path_records_the_same_gradients(general):
    fast = _grads(general, False)
    slow = _grads(general, True)
    for a, b in zip(fast, slow):
        _same(a, b)
    # and PyTorch agrees
    w = torch.tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), requires_grad=True)
    b = torch.tensor([0.0, -0.5, 0.5, 1.0], requires_grad=True)
    x = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.25, -1.0]])
    h = (x @ w + b).relu()
    h = 2.0 - h * 3.0 + h / 4.0 + torch.where(h > 1.0, h.amax(1, keepdim=True), 0.5)
    loss = (h.tanh().exp() * torch.maximum(h, torch.tensor(0.1)) + 1.0).sum() + (h @ w.T).sum()
    loss.backward()
    np.testing.assert_allclose(fast[0], loss.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(fast[1], w.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast[2], b.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_relu_gradient_is_zero_at_zero_and_passes_nan():
    p = nn.Parameter(np.array([-1.0, 0.0, 2.0, np.nan], np.float32))
    eager.call(lambda p: (p.relu() * 1.0).sum(), (p,)).backward()
    t = torch.tensor([-1.0, 0.0, 2.0, np.nan], requires_grad=True)
    (torch.relu(t) * 1.0).sum().backward()
    np.testing.assert_array_equal(p.grad, t.grad.numpy())


def test_no_grad_and_non_differentiable_ops_record_nothing():
    p = nn.Parameter(np.ones((2, 2), np.float32))
    out = eager.call(lambda p: (p + 1.0, p < 2.0, p.relu()), (p,))
    assert out[0].requires_grad and out[0].value.op == "add"
    assert not out[1].requires_grad and out[1].value.op is None
    assert out[2].value.op == "where" and out[2].value.inputs[0].op is None
    with graphc.no_grad():
        out = eager.call(lambda p: (p + 1.0, p.relu(), p @ p), (p,))
    assert all(not t.requires_grad and t.value.op is None for t in out)


def test_errors_still_name_the_users_line():
    x = eager.EAGER.array(np.ones((2, 3), np.float32))
    with pytest.raises(GraphcError, match=r"test_eager_fast.py:\d+: .*matmul"):
        x @ x
    with pytest.raises(GraphcError, match=r"test_eager_fast.py:\d+: "):
        x + eager.EAGER.array(np.ones((4,), np.float32))


def test_numpy_error_state_is_untouched_and_nothing_warns():
    before = np.geterr()
    x = eager.EAGER.array(np.array([0.0, 1.0, -1.0], np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = [x / 0.0, x.log(), (x * 1e38) * 1e38, x.sqrt(), x.reciprocal()]
    assert np.isinf(np.asarray(out[0])[1]) and np.isnan(np.asarray(out[0])[0])
    assert np.geterr() == before
    with pytest.raises(GraphcError):
        x @ eager.EAGER.array(np.ones((2, 2), np.float32))  # an error inside leaves the state alone too
    assert np.geterr() == before
    with np.errstate(divide="raise"):  # the user's own setting is back after each op
        x / 0.0
        with pytest.raises(FloatingPointError):
            np.float32(1.0) / np.zeros(1, np.float32)


def test_cpu_backend_takes_the_general_path():
    x = eager.EAGER.array(np.ones(3, np.float32))
    eager.set_backend("cpu")
    try:
        assert eager_fast.binary(eager.EAGER, "add", x, x, False, False) is None
        assert eager_fast.unary(eager.EAGER, "exp", x) is None
        assert eager_fast.relu(eager.EAGER, x) is None
    finally:
        eager.set_backend("reference")
    assert eager_fast.binary(eager.EAGER, "add", x, x, False, False) is not None


def test_a_parameters_leaf_is_made_once_and_follows_changes():
    lin = nn.Linear(3, 2)
    x = np.ones((1, 3), np.float32)
    first = eager.call(lambda m: m.weight, (lin,))
    second = eager.call(lambda m: m.weight, (lin,))
    assert first.value is second.value and first.requires_grad
    lin.weight.requires_grad = False  # frozen: a new leaf that needs no gradient
    frozen = eager.call(lambda m: m.weight, (lin,))
    assert frozen.value is not first.value and not frozen.requires_grad
    lin.weight.requires_grad = True
    lin.weight.shape = (3, 2)  # reshaped in place: a new leaf of the new shape
    assert eager.call(lambda m: m.weight, (lin,)).shape == (3, 2)
    lin.weight.shape = (2, 3)
    # gradients accumulate across calls through the shared leaf, as in torch
    for _ in range(2):
        lin(x).sum().backward()
    t = torch.nn.Linear(3, 2)
    t.load_state_dict({k: torch.tensor(np.array(v)) for k, v in lin.state_dict().items()})
    for _ in range(2):
        t(torch.tensor(x)).sum().backward()
    np.testing.assert_allclose(lin.weight.grad, t.weight.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(lin.bias.grad, t.bias.grad.numpy(), rtol=1e-6)


def test_a_copied_parameter_gets_its_own_leaf():
    import copy

    lin = nn.Linear(3, 2)
    eager.call(lambda m: m.weight, (lin,))
    twin = copy.deepcopy(lin)
    twin.weight.__dict__.update(lin.weight.__dict__)  # even a copied record is not taken over
    leaf = eager.call(lambda m: m.weight, (twin,)).value
    assert leaf.param is twin.weight


def test_signed_zero_constants_stay_apart():
    eager._SIGNATURES.clear()
    eager.EAGER._const_values.clear()
    eager_fast._SCALARS.clear()
    x = eager.EAGER.array(np.array([-0.0], np.float32))
    minus = np.asarray(x + -0.0)  # -0.0 + -0.0 = -0.0
    plus = np.asarray(x + 0.0)  # -0.0 + 0.0 = +0.0: the 0.0 constant is not the cached -0.0 one
    relu = np.asarray(x.relu())
    assert np.signbit(minus[0]) and not np.signbit(plus[0]) and not np.signbit(relu[0])
    assert not np.signbit(np.asarray(eager.EAGER.const(0.0, "f32"))).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_relu_is_the_general_path_at_every_vector_width(dtype, general):
    """relu runs as maximum(x, 0) + 0: NaN, -0.0 and the infinities at every length (NumPy's SIMD
    loops and their scalar tails), with and without a gradient to record."""
    special = np.array([np.nan, -0.0, 0.0, -1.5, 2.0, np.inf, -np.inf, -np.nan])
    for n in (1, 3, 8, 17, 64, 131):
        x = np.resize(special, n) if np.issubdtype(dtype, np.floating) else np.arange(-n, n, 2)
        x = x.astype(dtype)
        _check(lambda x=x: eager.EAGER.array(x).relu(), general)
        if np.issubdtype(dtype, np.floating):
            w = nn.Parameter(x.copy())
            _check(lambda w=w: eager.call(lambda p: p.relu(), (w,)), general)


def test_leaves_of_one_shape_and_dtype_share_their_type():
    """The per-signature caches are keyed by the types' identities: a new batch array each step
    must not miss them (nor fill them with dead entries)."""
    a = eager.EAGER.array(np.ones((3, 2), np.float32))
    b = eager.EAGER.array(np.zeros((3, 2), np.float32))
    assert a.value.type is b.value.type
    assert eager.EAGER.array(np.ones((3, 2), np.float64)).value.type is not a.value.type
    before = len(eager_fast._ENTRIES)
    for _ in range(5):
        eager.EAGER.array(np.ones((3, 2), np.float32)) + eager.EAGER.array(np.ones((3, 2), np.float32))
    assert len(eager_fast._ENTRIES) <= before + 1


def test_cache_entries_keep_the_types_their_keys_name():
    """An entry keyed by ``id(type)`` holds that type, so no other object can take the id while the
    key is stored (a freed type's id reused by another shape would run the wrong entry)."""
    import gc

    eager_fast._ENTRIES.clear()
    eager._SIGNATURE_IDS.clear()
    for n in range(1, 6):  # types that are made, used and dropped
        x = eager.EAGER.array(np.ones(n, np.float32)).reshape(1, n)
        (x + x, x * 2.0, x.exp(), x.relu(), x @ x.T)
    gc.collect()
    for key, entry in eager_fast._ENTRIES.items():
        ids = [k for k in key[1:3] if type(k) is int]
        assert ids and [id(t) for t in entry[-1] if not isinstance(t, type)] == ids
    for key, (_, types) in eager._SIGNATURE_IDS.items():
        assert [id(t) for t in types] == list(key[2])
    y = eager.EAGER.array(np.arange(4, dtype=np.float32)).reshape(2, 2)  # still right afterwards
    np.testing.assert_array_equal(
        np.asarray(y @ y), np.arange(4.0).reshape(2, 2) @ np.arange(4.0).reshape(2, 2)
    )


def test_recorded_values_name_the_users_line_and_get_unique_names():
    w = nn.Parameter(np.ones((2, 2), np.float32))
    out = eager.call(lambda p: (p * 2.0) @ p, (w,))  # recorded: the fast path's and multi_op's
    line = f"test_eager_fast.py:{sys._getframe().f_lineno - 1}"
    assert out.value.source.endswith(line) and out.value.inputs[0].source.endswith(line)
    s = eager.call(lambda p: p.sum(), (w,))  # the general path
    assert "test_eager_fast.py:" in s.value.source
    names = {v.name for v in (out.value, *out.value.inputs, s.value)}
    assert len(names) == 4 and out.value.name == out.value.name


def test_signed_zero_constants_stay_apart_from_a_cold_start():
    """const's value is real-valued (0.0 == -0.0 as a dict key): never cached by the types' ids
    alone, even when const is the first op whose attributes are looked at."""
    for cache in (eager._SIGNATURES, eager._SIGNATURE_IDS, eager._REAL_ATTRS, eager.EAGER._const_values):
        cache.clear()
    eager_fast._SCALARS.clear()
    x = eager.EAGER.array(np.array([-0.0], np.float32))
    minus, plus = np.asarray(x + -0.0), np.asarray(x + 0.0)
    assert np.signbit(minus[0]) and not np.signbit(plus[0])


def test_reductions_call_the_ufuncs_reduce_directly(general):
    """sum/amax/amin run ``ufunc.reduce`` (what the reference kernel's np.sum/np.max/np.min do for
    an ndarray) where the input's dtype is the output's; the values are the kernel's."""
    kernel = eager._kernels()["sum"]
    fn = eager_fast.direct_reduce("sum", kernel, {"axes": (1,), "keepdims": True}, np.float32, np.float32)
    assert fn is not None and fn.func == np.add.reduce
    assert (
        eager_fast.direct_reduce("sum", kernel, {"axes": (1,), "keepdims": True}, np.int32, np.int64) is None
    )
    assert (
        eager_fast.direct_reduce(
            "sum", lambda xs, a: xs, {"axes": (1,), "keepdims": True}, np.float32, np.float32
        )
        is None
    )
    x = eager.EAGER.array(_data(np.float32, (3, 5)))
    for fn in (lambda: x.sum(), lambda: x.amax(0), lambda: x.amin(1, keepdim=True)):
        _check(fn, general)


def test_the_newer_fast_paths_record_the_users_line():
    """permute, the reductions, where and unary minus record the user's file:line on the tape
    (what backward()'s errors name), as the general path does."""
    w = nn.Parameter(np.ones((2, 3), np.float32))
    outs = eager.call(lambda p: (p.T, p.sum(1), graphc.where(p > 0, p, 0.0), -p, p.amax()), (w,))  # here
    line = f"test_eager_fast.py:{sys._getframe().f_lineno - 1}"
    ops = [t.value.op for t in outs]
    assert ops == ["transpose", "sum", "where", "neg", "max"]
    for t in outs:
        assert t.value.source.endswith(line), (t.value.op, t.value.source)
