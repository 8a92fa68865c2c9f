"""Eager mode's fast path as Tensor's own methods (graphc/eager_fast.py ``install``) and its cheaper
checks: the operators still trace, results keep the general path's dtype, layout and bits, relu's
one-call form holds only where NumPy's maximum allows it, and the permutation cache and eager.call
change nothing a user can see."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphc
import graphc.eager as eager
import graphc.eager_fast as eager_fast
from graphc import GraphcError, nn
from graphc.ir import TensorType
from graphc.tensor import _STACK, Tensor


def _general(monkeypatch):
    """Switch the fast path off: the context's shortcuts and the methods install() replaced."""
    for name in ("binary", "unary", "matmul", "relu", "permute", "fast_op"):
        monkeypatch.setattr(eager.EagerContext, name, lambda self, *a: None)
    for name, method in eager_fast.GENERAL.items():
        monkeypatch.setattr(Tensor, name, method)


def _bits(a):
    a = np.asarray(a)
    return a.dtype, a.shape, a.flags.c_contiguous, a.tobytes()


def test_the_operators_are_the_fast_methods_and_still_trace():
    for name in ("__add__", "__rsub__", "__truediv__", "__lt__", "__matmul__", "relu", "_unary"):
        assert name in eager_fast.GENERAL and Tensor.__dict__[name] is not eager_fast.GENERAL[name]

    def fn(x, w):
        h = (x @ w + 1.0).relu()
        return (2.0 - h) * h / 3.0 + (h > 0.5) * 1.0 + h.exp()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    w = rng.standard_normal((4, 2)).astype(np.float32)
    compiled = graphc.compile(fn, x, w)
    h = np.maximum(x.astype(np.float64) @ w + 1.0, 0.0)
    want = (2.0 - h) * h / 3.0 + (h > 0.5) + np.exp(h)
    np.testing.assert_allclose(np.asarray(compiled(x, w)), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(eager.call(fn, (x, w))), want, rtol=1e-5, atol=1e-6)


def test_layouts_and_dtypes_of_trusted_ufunc_results(monkeypatch):
    """A ufunc entry checks only its result's layout: operands in Fortran order, transposed,
    broadcast and 0-d give the general path's arrays bit for bit."""
    arr = eager.EAGER.array
    f = np.asfortranarray(np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4))
    row = np.linspace(-1, 1, 4, dtype=np.float32)
    s = np.array(-0.0, np.float32)
    cases = [
        lambda: arr(f) + arr(f),
        lambda: arr(f) - arr(row),
        lambda: arr(row) * arr(f),
        lambda: arr(f) / 2.0,
        lambda: 1.0 - arr(f),
        lambda: arr(f) < arr(row),
        lambda: arr(f).T @ arr(f),
        lambda: arr(f) @ arr(f.T.copy()),
        lambda: arr(f).exp(),
        lambda: arr(f).relu(),
        lambda: arr(s) + arr(s),
        lambda: arr(s) * 2.0,
    ]
    fast = [_bits(fn()) for fn in cases]
    with monkeypatch.context() as m:
        _general(m)
        slow = [_bits(fn()) for fn in cases]
    assert fast == slow
    assert all(c for _, _, c, _ in fast)


def test_exact_is_true_only_for_the_output_dtype_and_shape():
    f32 = TensorType((2, 3), "f32")
    assert eager_fast._exact(np.add, [f32, TensorType((3,), "f32")], np.dtype(np.float32), (2, 3))
    assert not eager_fast._exact(np.add, [f32, f32], np.dtype(np.float64), (2, 3))
    assert not eager_fast._exact(np.add, [f32, f32], np.dtype(np.float32), (3, 2))
    scalar = TensorType((), "f32")  # a 0-d operand pair gives a NumPy scalar, not an array
    assert not eager_fast._exact(np.add, [scalar, scalar], np.dtype(np.float32), ())
    assert not eager_fast._exact(np.sqrt, [TensorType((2,), "i32")], np.dtype(np.int32), (2,))
    big = TensorType((300, 300), "f32")  # not tried (no large temporaries): checked at every call
    assert not eager_fast._exact(np.add, [big, big], np.dtype(np.float32), (300, 300))
    x = np.asfortranarray(np.linspace(-1, 1, 90000, dtype=np.float32).reshape(300, 300))
    out = eager.EAGER.array(x) + eager.EAGER.array(x)
    assert _bits(out) == _bits(np.ascontiguousarray(x + x))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_relu_one_call_form_only_where_maximum_is_relu(dtype, monkeypatch):
    """maximum(x, 0) alone stands for relu only where the probe found it gives maximum(x, 0) + 0
    bit for bit; forcing the two-call form changes no bit, and -0.0 becomes +0.0 either way."""
    x = np.resize(np.array([np.nan, -0.0, 0.0, -1.5, 2.0, np.inf, -np.inf, -np.nan], dtype), 37)
    got = _bits(eager.EAGER.array(x).relu())
    eager_fast._ENTRIES.clear()
    monkeypatch.setitem(eager_fast._MAX_IS_RELU, np.dtype(dtype), False)
    assert _bits(eager.EAGER.array(x).relu()) == got
    out = np.frombuffer(got[3], dtype)
    assert not np.signbit(out[~np.isnan(out)]).any()
    np.testing.assert_array_equal(out, torch.relu(torch.tensor(x.astype(np.float32))).numpy().astype(dtype))


def test_relu_probe_rejects_a_maximum_that_keeps_negative_zero(monkeypatch):
    real = np.maximum
    eager_fast._MAX_IS_RELU.pop(np.dtype(np.float64), None)

    def keeps_sign(a, b, *args, **kwargs):  # as if NumPy's maximum returned its first operand on ties
        out = real(a, b, *args, **kwargs)
        return np.where((np.asarray(a) == 0) & (np.asarray(b) == 0), a, out)

    monkeypatch.setattr(np, "maximum", keeps_sign)
    try:
        assert eager_fast._max_is_relu(np.zeros((), np.float64)) is False
    finally:
        eager_fast._MAX_IS_RELU.pop(np.dtype(np.float64), None)
    monkeypatch.undo()
    assert eager_fast._max_is_relu(np.zeros((), np.float64)) in (True, False)


@pytest.mark.parametrize("shape", [(4, 5), (100, 60)])  # zeros of x's shape, and the 0-d zero
def test_relu_zero_operand_forms_are_the_general_path(shape, monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[:6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, -np.nan]
    got = [_bits(eager.EAGER.array(a).relu()) for a in (x, np.asfortranarray(x), x[:, ::-1])]
    _general(monkeypatch)
    want = [_bits(eager.EAGER.array(a).relu()) for a in (x, np.asfortranarray(x), x[:, ::-1])]
    assert got == want


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_as_dot_keeps_matmuls_bits(dtype, monkeypatch):
    """Matrix products run as ndarray.dot on C-contiguous operands: np.matmul's bits, whatever the
    layout (a Fortran-order or strided leaf takes np.matmul) and for vector-shaped products."""
    rng = np.random.default_rng(4)
    a = rng.standard_normal((5, 7)).astype(dtype)
    a[0, :3] = [np.inf, np.nan, -0.0]
    b = rng.standard_normal((7, 3)).astype(dtype)
    cases = [(a, b), (np.asfortranarray(a), b), (a, b[:, ::-1]), (a[:1], b), (a, b[:, :1]), (a, a.T.copy())]
    with np.errstate(all="raise"):  # the fast path is quiet, as the general path is
        got = [_bits(eager.EAGER.array(x) @ eager.EAGER.array(y)) for x, y in cases]
    with np.errstate(all="ignore"):
        assert got == [_bits(np.matmul(x, y)) for x, y in cases]
    assert eager_fast._dot_is_matmul(np.dtype(dtype)) in (True, False)


def test_dot_probe_rejects_a_dot_that_differs(monkeypatch):
    eager_fast._DOT_IS_MATMUL.pop(np.dtype(np.float64), None)
    real = np.matmul
    # as if matmul and dot took different routes for 16-row products
    monkeypatch.setattr(np, "matmul", lambda x, y: real(x, y) + (x.shape[0] == 16))
    try:
        assert eager_fast._dot_is_matmul(np.dtype(np.float64)) is False
    finally:
        eager_fast._DOT_IS_MATMUL.pop(np.dtype(np.float64), None)
    monkeypatch.undo()
    assert eager_fast._dot_is_matmul(np.dtype(np.float64)) is True


def test_permute_cache_keeps_the_checks():
    x = eager.EAGER.array(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    want = np.transpose(np.asarray(x), (2, 0, 1))
    for dims in [(2, 0, 1), ((2, 0, 1),), ([2, 0, 1],), (np.int64(2), 0, 1), (-1, 0, 1)]:
        np.testing.assert_array_equal(np.asarray(x.permute(*dims)), want)
    assert x.permute(0, 1, 2) is x and x.permute(-3, -2, -1) is x
    for _ in range(2):  # an error is raised every time, not remembered as an answer
        with pytest.raises(GraphcError, match="not a permutation"):
            x.permute(0, 0, 1)
        with pytest.raises(GraphcError, match="out of range"):
            x.permute(0, 1, 3)
    np.testing.assert_array_equal(np.asarray(x.reshape(6, 4).T), np.arange(24).reshape(6, 4).T)


def test_backend_switch_clears_the_fast_entries():
    x = eager.EAGER.array(np.ones((2, 2), np.float32))
    x + x
    assert eager_fast._ENTRIES
    eager.set_backend("cpu")
    try:
        assert not eager_fast._ENTRIES
        assert eager_fast.binary(eager.EAGER, "add", x, x, False, False) is None
    finally:
        eager.set_backend("reference")
    assert not eager_fast._ENTRIES
    np.testing.assert_array_equal(np.asarray(x + x), np.full((2, 2), 2.0, np.float32))


def test_eager_call_restores_the_context_stack():
    depth = len(_STACK)

    def boom(x):
        assert _STACK[-1] is eager.EAGER
        raise GraphcError("boom")

    with pytest.raises(GraphcError, match="boom"):
        eager.call(boom, (np.ones(2, np.float32),))
    assert len(_STACK) == depth
    out = eager.call(lambda x, scale=None: x * scale, (np.ones(2, np.float32),), {"scale": np.full(2, 3.0)})
    np.testing.assert_array_equal(np.asarray(out), [3.0, 3.0])
    assert len(_STACK) == depth


def test_recorded_operator_results_match_torch_gradients():
    w = nn.Parameter(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3))
    x = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
    loss = eager.call(lambda x, w: ((x @ w).relu() * 2.0 - w / 3.0 + (1.0 - w)).sum(), (x, w))
    loss.backward()
    tw = torch.tensor(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    ((torch.tensor(x) @ tw).relu() * 2.0 - tw / 3.0 + (1.0 - tw)).sum().backward()
    np.testing.assert_allclose(w.grad, tw.grad.numpy(), rtol=1e-6, atol=1e-6)


def _mlp_grads():
    nn.init.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    out = []
    for _ in range(2):  # the program made at the first step, reused at the second
        loss = graphc.functional.cross_entropy(model(x), y)
        loss.backward()
        out.append([np.asarray(loss)] + [p.grad.copy() for p in model.parameters()])
        for p in model.parameters():
            p.grad = None
    return out


def test_structural_numpy_calls_give_the_kernels_values(monkeypatch):
    """The backward plan calls transpose/broadcast_to/reshape/cast/matmul's NumPy functions
    directly where the reference kernel is the known one: the same bits as the kernels."""
    from graphc import eager_backward, eager_composite

    eager_backward._PROGRAMS.clear()
    eager_composite._ENTRIES.clear()
    direct = _mlp_grads()
    (program,) = eager_backward._PROGRAMS.values()
    modes = {step[3] for step in program.plan}
    assert {eager_backward._CALL1, eager_backward._CALL2} <= modes
    eager_backward._PROGRAMS.clear()
    eager_composite._ENTRIES.clear()
    monkeypatch.setattr(eager_backward, "_structural", lambda *a: None)
    kernels = _mlp_grads()
    (program,) = eager_backward._PROGRAMS.values()
    assert not {eager_backward._CALL1, eager_backward._CALL2} & {step[3] for step in program.plan}
    for a_step, b_step in zip(direct, kernels):
        for a, b in zip(a_step, b_step):
            assert _bits(a) == _bits(b)
    eager_backward._PROGRAMS.clear()
    eager_composite._ENTRIES.clear()


def test_broadcast_copy_is_the_kernels():
    from graphc.eager_backward import _broadcast_copy
    from graphc.kernels.reference import KERNELS

    for x, shape in [
        (np.arange(3, dtype=np.float32), (2, 3)),
        (np.array(1.5), (2, 2)),
        (np.ones((2, 1)), (2, 4)),
    ]:
        want = KERNELS["broadcast_to"]([x], {"shape": shape})[0]
        assert _bits(_broadcast_copy(x, shape)) == _bits(want)
