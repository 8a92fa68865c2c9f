"""Tracing and the symbolic Tensor: naming, sharing, sources, and every Tensor op against NumPy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from graphc import functional as F
from graphc import ir, nn
from graphc.ir import GraphcError
from graphc.kernels.reference import execute
from graphc.tracing import trace


def run_graph(graph, *arrays):
    """Execute a traced graph on data arrays (in data-input order) with the reference kernels."""
    outs = execute(graph, {v.name: np.asarray(a) for v, a in zip(graph.data_inputs, arrays)})
    return outs[0] if len(outs) == 1 else outs


HSETTINGS = settings(max_examples=40, deadline=None)


def fn_result(fn, *arrays):
    """Trace ``fn`` on ``arrays`` and run it with the reference kernels."""
    return run_graph(trace(fn, *arrays), *arrays)


def close(a, b, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------- graph structure
class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(5, 7)
        self.out = nn.Linear(7, 3)

    def forward(self, x, scale):
        return self.out(F.relu(self.hidden(x))) * scale


def test_inputs_named_after_arguments_and_parameters(rng):
    m = TwoLayer()
    x, s = rng.random((4, 5), dtype=np.float32), rng.random((4, 3), dtype=np.float32)
    g = trace(m, x, s)
    assert [v.name for v in g.data_inputs] == ["x", "scale"]
    assert [v.name for v in g.inputs_of_kind("param")] == [n for n, _ in m.named_parameters()]
    assert [v.name for v in g.inputs_of_kind("param")] == [
        "hidden.weight",
        "hidden.bias",
        "out.weight",
        "out.bias",
    ]
    # initializers are the module's own memory, so a plan sees in-place updates
    assert np.shares_memory(g.initializers["hidden.weight"], m.hidden.weight)
    assert g.name == "twolayer"
    ref = (np.maximum(x @ m.hidden.weight.T + m.hidden.bias, 0) @ m.out.weight.T + m.out.bias) * s
    close(run_graph(g, x, s), ref)


def test_shared_instance_is_one_parameter_set(rng):
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    x = rng.random((2, 4), dtype=np.float32)
    g = trace(model, x)
    assert [v.name for v in g.inputs_of_kind("param")] == ["0.weight", "0.bias"]
    assert g.op_counts()["matmul"] == 2
    w, b = shared.weight, shared.bias
    close(run_graph(g, x), np.maximum(x @ w.T + b, 0) @ w.T + b)


def test_numpy_attribute_is_const_input_and_buffer_too(rng):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fixed = rng.random((3, 3), dtype=np.float32)
            self.register_buffer("shift", np.ones(3, dtype=np.float32))
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(x) @ self.fixed + self.shift

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = M()

        def forward(self, x):
            return self.inner(x)

    m = Outer()
    x = rng.random((2, 3), dtype=np.float32)
    g = trace(m, x)
    assert g.kinds["inner.fixed"] == "const"
    assert g.kinds["inner.shift"] == "const"
    assert "inner.fixed" not in dict(m.named_parameters())
    lin = m.inner.lin
    close(run_graph(g, x), (x @ lin.weight.T + lin.bias) @ m.inner.fixed + 1)


def test_trace_plain_function_and_closure_module(rng):
    a, b = rng.random((3, 4), dtype=np.float32), rng.random((4,), dtype=np.float32)

    def f(left, right):
        return (left * right).sum(dim=1)

    g = trace(f, a, b)
    assert [v.name for v in g.data_inputs] == ["left", "right"]
    assert g.name == "f"
    close(run_graph(g, a, b), (a * b).sum(axis=1))

    lin = nn.Linear(4, 2)
    g2 = trace(lambda x: lin(x) * 2.0, a)
    assert [v.name for v in g2.inputs_of_kind("param")] == ["weight", "bias"]
    close(run_graph(g2, a), (a @ lin.weight.T + lin.bias) * 2)

    g3 = trace(lambda x: lin(x), a, module=lin)
    assert [v.name for v in g3.inputs_of_kind("param")] == ["weight", "bias"]


def test_tuple_outputs_and_varargs(rng):
    a = rng.random((2, 3), dtype=np.float32)

    def f(*xs):
        return xs[0] + 1, (xs[1] * 2, xs[0].sum())

    g = trace(f, a, a)
    assert [v.name for v in g.data_inputs] == ["xs0", "xs1"]
    o1, o2, o3 = run_graph(g, a, a)
    close(o1, a + 1)
    close(o2, a * 2)
    close(o3, a.sum())


def test_sources_point_at_user_lines(rng):
    def f(x):
        y = x * 2  # line +1
        return F.softmax(y, dim=-1)  # line +2

    g = trace(f, rng.random((2, 3), dtype=np.float32))
    first = f.__code__.co_firstlineno
    srcs = {n.source for n in g.nodes}
    assert srcs == {f"tests/test_tracing.py:{first + 1}", f"tests/test_tracing.py:{first + 2}"} or all(
        s.endswith((f"test_tracing.py:{first + 1}", f"test_tracing.py:{first + 2}")) for s in srcs
    )


def test_text_form_round_trips(rng):
    g = trace(TwoLayer(), rng.random((4, 5), dtype=np.float32), rng.random((4, 3), dtype=np.float32))
    text = ir.print_graph(g)
    assert ir.print_graph(ir.parse_graph(text)) == text


def test_eager_module_call_matches_trace(rng):
    m = TwoLayer()
    x, s = rng.random((4, 5), dtype=np.float32), rng.random((4, 3), dtype=np.float32)
    close(m(x, s), run_graph(trace(m, x, s), x, s))


# ---------------------------------------------------------------------------- Tensor ops
def test_arithmetic_with_scalars_and_reflections(rng):
    a = rng.random((3, 4), dtype=np.float32) + 0.5
    out = fn_result(lambda x: (x + 1, 2 - x, x * 3, 1 / x, x / 4, x**2, 2**x, x**0.5, -x, abs(-x)), a)
    refs = (a + 1, 2 - a, a * 3, 1 / a, a / 4, a**2, 2**a, a**0.5, -a, a)
    for o, r in zip(out, refs):
        assert o.dtype == np.float32
        close(o, r)


def test_comparisons_and_where(rng):
    a, b = rng.random((3, 4), dtype=np.float32), rng.random((4,), dtype=np.float32)
    outs = fn_result(
        lambda x, y: (x < y, x <= 0.5, x > y, x >= y, x == y, x != y, F.where(x > y, x, y)), a, b
    )
    refs = (a < b, a <= 0.5, a > b, a >= b, a == b, a != b, np.where(a > b, a, b))
    for o, r in zip(outs, refs):
        np.testing.assert_array_equal(o, r)


def test_numpy_operands_and_ufuncs(rng):
    a = rng.random((2, 3), dtype=np.float32)
    c = rng.random((2, 3), dtype=np.float32)
    outs = fn_result(lambda x: (c + x, x * c, np.exp(x), np.maximum(x, 0.5), c @ x.T), a)
    for o, r in zip(outs, (c + a, a * c, np.exp(a), np.maximum(a, 0.5), c @ a.T)):
        close(o, r)


def test_int_tensors_promote_like_torch(rng):
    i = rng.integers(0, 5, size=(3,)).astype(np.int64)
    f = rng.random(3, dtype=np.float32)
    outs = fn_result(lambda a, b: (a + 1, a * 0.5, a / 2, a + b), i, f)
    assert outs[0].dtype == np.int64
    for o, r in zip(outs[1:], (i * 0.5, i / 2, i + f)):
        assert o.dtype == np.float32
        close(o, r)


@pytest.mark.parametrize(
    "sa,sb",
    [
        ((3, 4), (4, 5)),
        ((2, 3, 4), (4, 5)),
        ((2, 3, 4), (2, 4, 5)),
        ((4,), (4, 5)),
        ((3, 4), (4,)),
        ((4,), (4,)),
    ],
)
def test_matmul_shapes(rng, sa, sb):
    a, b = rng.random(sa, dtype=np.float32), rng.random(sb, dtype=np.float32)
    out = fn_result(lambda x, y: x @ y, a, b)
    assert out.shape == np.matmul(a, b).shape
    close(out, np.matmul(a, b))


def test_pointwise_methods(rng):
    a = rng.random((3, 4), dtype=np.float32) + 0.1
    outs = fn_result(
        lambda x: (
            x.exp(),
            x.log(),
            x.sqrt(),
            x.rsqrt(),
            x.tanh(),
            x.sigmoid(),
            (x - 0.5).relu(),
            x.abs(),
            x.clamp(0.3, 0.6),
            x.square(),
            x.reciprocal(),
            (x - 0.5).sign(),
        ),
        a,
    )
    refs = (
        np.exp(a),
        np.log(a),
        np.sqrt(a),
        1 / np.sqrt(a),
        np.tanh(a),
        1 / (1 + np.exp(-a)),
        np.maximum(a - 0.5, 0),
        a,
        np.clip(a, 0.3, 0.6),
        a * a,
        1 / a,
        np.sign(a - 0.5),
    )
    for o, r in zip(outs, refs):
        close(o, r)


def test_reductions_torch_and_numpy_spelling(rng):
    a = rng.random((2, 3, 4), dtype=np.float32)
    outs = fn_result(
        lambda x: (
            x.sum(),
            x.sum(1),
            x.sum(dim=(0, 2), keepdim=True),
            x.mean(axis=-1, keepdims=True),
            x.max(),
            x.min(axis=0),
            x.max(dim=1).values,
            x.var(1),
            x.std(dim=2, unbiased=False),
            x.argmax(dim=2),
            x.argmax(),
            x.amax((1, 2)),
        ),
        a,
    )
    refs = (
        a.sum(),
        a.sum(1),
        a.sum((0, 2), keepdims=True),
        a.mean(-1, keepdims=True),
        a.max(),
        a.min(0),
        a.max(1),
        a.var(1, ddof=1),
        a.std(2),
        a.argmax(2),
        a.argmax(),
        a.max((1, 2)),
    )
    for o, r in zip(outs, refs):
        assert o.shape == np.shape(r)
        close(o, r)


def test_max_with_dim_unpacks_values_and_indices(rng):
    a = rng.random((3, 5), dtype=np.float32)

    def f(x):
        values, indices = x.max(dim=1)
        low = x.min(dim=0, keepdim=True)
        return values, indices, low.values, low.indices

    v, i, lv, li = fn_result(f, a)
    close(v, a.max(1))
    np.testing.assert_array_equal(i, a.argmax(1))
    close(lv, a.min(0, keepdims=True))
    np.testing.assert_array_equal(li, a.argmin(0)[None])


def test_movement_ops(rng):
    a = rng.random((2, 3, 4), dtype=np.float32)
    outs = fn_result(
        lambda x: (
            x.reshape(4, -1),
            x.reshape((-1,)),
            x.transpose(0, 2),
            x.permute(2, 0, 1),
            x.T,
            x.flatten(),
            x.flatten(1),
            x.unsqueeze(1),
            x[:, :1].squeeze(1),
            x.view(6, 4).mT,
            x.expand(5, 2, 3, 4),
            x.transpose(),
        ),
        a,
    )
    refs = (
        a.reshape(4, -1),
        a.reshape(-1),
        a.transpose(2, 1, 0),
        a.transpose(2, 0, 1),
        a.transpose(2, 1, 0),
        a.reshape(-1),
        a.reshape(2, 12),
        a[:, None],
        a[:, 0],
        a.reshape(6, 4).T,
        np.broadcast_to(a, (5, 2, 3, 4)),
        a.T,
    )
    for o, r in zip(outs, refs):
        assert o.shape == r.shape
        close(o, r)


def test_metadata(rng):
    a = rng.random((2, 3, 4), dtype=np.float32)
    seen = {}

    def f(x):
        seen.update(
            shape=x.shape, dtype=x.dtype, ndim=x.ndim, size=x.size(), size1=x.size(-2), numel=x.numel()
        )
        return x

    trace(f, a)
    assert seen == dict(shape=(2, 3, 4), dtype=np.float32, ndim=3, size=(2, 3, 4), size1=3, numel=24)


@pytest.mark.parametrize(
    "key",
    [
        0,
        -1,
        (slice(None), slice(1, 3)),
        (slice(None, None, 2), -2),
        (Ellipsis, 1),
        (None, 1, Ellipsis, None),
        (slice(-3, None), slice(None, None, 3), slice(1, 2)),
        (1, 2, 3),
        (slice(5, 1),),
        (slice(None), np.array([2, 0, 2])),
        ([1, 0],),
    ],
)
def test_indexing(rng, key):
    a = rng.random((4, 5, 6), dtype=np.float32)
    out = fn_result(lambda x: x[key], a)
    assert out.shape == a[key].shape
    close(out, a[key])


def test_index_with_traced_integer_tensor(rng):
    a = rng.random((5, 3), dtype=np.float32)
    idx = np.array([[4, 0], [1, 1]], dtype=np.int64)
    close(fn_result(lambda x, i: x[i], a, idx), a[idx])


def test_split_chunk_and_cat(rng):
    a = rng.random((6, 4), dtype=np.float32)
    outs = fn_result(lambda x: (*x.chunk(3, 0), F.cat(x.split(1, 1)[::-1], 1), F.stack([x, x], 1)), a)
    for o, r in zip(outs, (a[:2], a[2:4], a[4:], a[:, ::-1], np.stack([a, a], 1))):
        close(o, r)


# ---------------------------------------------------------------------------- properties
@HSETTINGS
@given(
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4),
    op=st.sampled_from(["add", "sub", "mul", "div", "maximum", "lt", "eq"]),
    seed=st.integers(0, 100),
)
def test_binary_broadcasting_matches_numpy(shapes, op, seed):
    r = np.random.default_rng(seed)
    a = r.random(shapes.input_shapes[0], dtype=np.float32) + 0.5
    b = r.random(shapes.input_shapes[1], dtype=np.float32) + 0.5
    fns = {
        "add": (lambda x, y: x + y, np.add),
        "sub": (lambda x, y: x - y, np.subtract),
        "mul": (lambda x, y: x * y, np.multiply),
        "div": (lambda x, y: x / y, np.divide),
        "maximum": (lambda x, y: x.maximum(y), np.maximum),
        "lt": (lambda x, y: x < y, np.less),
        "eq": (lambda x, y: x == y, np.equal),
    }
    traced, ref = fns[op]
    expect = ref(a, b)
    out = fn_result(traced, a, b)
    assert out.shape == expect.shape == shapes.result_shape
    assert out.dtype == expect.dtype
    close(out, expect)


@HSETTINGS
@given(
    sa=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4),
    sb=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4),
)
def test_broadcast_errors_agree_with_numpy(sa, sb):
    a, b = np.ones(sa, np.float32), np.ones(sb, np.float32)
    try:
        expect = np.add(a, b).shape
    except ValueError:
        with pytest.raises(GraphcError, match="add"):
            trace(lambda x, y: x + y, a, b)
    else:
        assert trace(lambda x, y: x + y, a, b).outputs[0].shape == expect


@HSETTINGS
@given(
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4),
    data=st.data(),
    op=st.sampled_from(["sum", "mean", "max", "min"]),
    keep=st.booleans(),
)
def test_reductions_match_numpy(shape, data, op, keep):
    axes = data.draw(st.lists(st.integers(-len(shape), len(shape) - 1), unique_by=lambda d: d % len(shape)))
    a = np.random.default_rng(0).random(shape, dtype=np.float32)
    dim = tuple(axes) if axes else None
    expect = getattr(np, op)(a, axis=dim, keepdims=keep)
    out = fn_result(lambda x: getattr(x, op)(axis=dim, keepdims=keep), a)
    assert out.shape == expect.shape
    close(out, expect)


@HSETTINGS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4), data=st.data())
def test_reshape_and_permute_match_numpy(shape, data):
    a = np.random.default_rng(0).random(shape, dtype=np.float32)
    perm = data.draw(st.permutations(range(len(shape))))
    flat = a.size
    divisors = [d for d in range(1, flat + 1) if flat % d == 0]
    d0 = data.draw(st.sampled_from(divisors))
    out_p, out_r, out_t = fn_result(lambda x: (x.permute(*perm), x.reshape(d0, -1), x.transpose(0, -1)), a)
    close(out_p, a.transpose(perm))
    close(out_r, a.reshape(d0, -1))
    close(out_t, np.swapaxes(a, 0, -1))


@HSETTINGS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5), data=st.data())
def test_basic_slicing_matches_numpy(shape, data):
    a = np.random.default_rng(0).random(shape, dtype=np.float32)
    key = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))

    def positive_steps(k):
        items = k if isinstance(k, tuple) else (k,)
        return all(not isinstance(i, slice) or i.step is None or i.step > 0 for i in items)

    if not positive_steps(key):
        with pytest.raises(GraphcError, match="positive step"):
            trace(lambda x: x[key], a)
        return
    expect = a[key]
    out = fn_result(lambda x: x[key], a)
    assert out.shape == expect.shape
    close(out, expect)
