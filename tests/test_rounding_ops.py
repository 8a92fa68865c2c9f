"""floor/ceil/round/trunc and fmod/remainder/floordiv: the CPU kernels and the reference against
NumPy on edge values (ties, -0.0, huge, inf, NaN, zero divisors), and their gradients."""

import numpy as np
import pytest

import graphc
import graphc.nn  # noqa: F401
from graphc.ir import Graph, TensorType
from graphc.kernels import cpu, reference

EDGES = [0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 0.49999997, 1e20, -1e20, 2.0**52 + 1, 2.0**53, 3.7, -3.7]
EDGES += [1e-30, -1e-30, 7.0, -7.0, np.inf, -np.inf, np.nan, 123456.5, -0.75, 4503599627370495.5]
NUMPY = {
    "floor": np.floor,
    "ceil": np.ceil,
    "round": np.round,
    "trunc": np.trunc,
    "fmod": np.fmod,
    "remainder": np.remainder,
    "floordiv": np.floor_divide,
}
DTYPES = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64}


def _run(op, arrays, backend):
    g = Graph("t")
    ins = [g.add_input(f"x{i}", TensorType(a.shape, d)) for i, (a, d) in enumerate(arrays)]
    node = g.add_node(op, ins, {})
    out = np.empty(node.outputs[0].shape, node.outputs[0].type.np_dtype)
    args = [a.astype(DTYPES[d]) for a, d in arrays]
    if backend == "cpu":
        cpu.compile_node(node)(*args, out)
        return out
    (got,) = reference.KERNELS[op](args, node.attrs)
    return np.asarray(got)


def _same(got, want):
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    # equal values and equal signs of zero (array_equal treats -0.0 == 0.0)
    assert np.array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("op", ["floor", "ceil", "round", "trunc"])
def test_rounding_equals_numpy_on_edges(op, dtype, backend):
    x = np.array(EDGES, DTYPES[dtype])
    with np.errstate(all="ignore"):
        _same(_run(op, [(x, dtype)], backend), NUMPY[op](x))


@pytest.mark.parametrize("op", ["floor", "round"])
def test_rounding_integers_is_identity(op):
    x = np.array([-5, 0, 7, 2**40], np.int64)
    _same(_run(op, [(x, "i64")], "cpu"), x)


def _pairs(dtype):
    if dtype in ("i32", "i64"):
        a = np.array([7, -7, 7, -7, 0, 5, -5, 9, 2**30], DTYPES[dtype])
        b = np.array([3, 3, -3, -3, 4, 0, 0, 9, -7], DTYPES[dtype])
        return a, b
    vals = np.array([7.5, -7.5, 0.0, -0.0, 1e-30, np.inf, np.nan, 5.0, 1e20, 3.0, 0.1], DTYPES[dtype])
    a, b = np.meshgrid(vals, np.array([2.0, -2.0, 0.3, -0.0, 0.0, np.inf, 1e-30, 0.1], DTYPES[dtype]))
    return a.ravel(), b.ravel()


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("dtype", ["f32", "f64", "i32", "i64"])
@pytest.mark.parametrize("op", ["fmod", "remainder", "floordiv"])
def test_remainders_equal_numpy(op, dtype, backend):
    a, b = _pairs(dtype)
    with np.errstate(all="ignore"):
        want = NUMPY[op](a, b)
        got = _run(op, [(a, dtype), (b, dtype)], backend)
    _same(got, want)


def test_torch_operators_and_gradients(rng):
    torch = pytest.importorskip("torch")
    a = (rng.standard_normal((4, 5)) * 5).astype(np.float32)
    b = (rng.standard_normal((4, 5)) * 2 + 0.5).astype(np.float32)

    def f(lib, x, y):
        out = (x % y) * 2 + (x // y) + x.floor() + x.ceil() * 0.5 + x.round() + x.trunc()
        return out + lib.fmod(x, y) + x.div(y, rounding_mode="trunc") + lib.round(x, decimals=1)

    got = graphc.compile(lambda x, y: f(graphc, x, y), a, b)(a, b)
    want = f(torch, torch.tensor(a), torch.tensor(b)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    ints = (rng.integers(-20, 20, (3, 4)), rng.integers(1, 6, (3, 4)) * rng.choice([-1, 1], (3, 4)))
    ia, ib = (v.astype(np.int64) for v in ints)
    got = graphc.compile(lambda x, y: (x // y, x % y, x.div(y, rounding_mode="trunc")), ia, ib)(ia, ib)
    ta, tb = torch.tensor(ia), torch.tensor(ib)
    for g, w in zip(got, (ta // tb, ta % tb, torch.div(ta, tb, rounding_mode="trunc"))):
        np.testing.assert_array_equal(g, w.numpy())

    # gradients (eager mode runs the same VJP rules as compiled training)
    pa, pb = graphc.nn.Parameter(a.copy()), graphc.nn.Parameter(b.copy())
    (graphc.remainder(pa, pb) * pa + graphc.fmod(pa, pb) * pb + graphc.floor(pa) * pb).sum().backward()
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    ((ta % tb) * ta + torch.fmod(ta, tb) * tb + ta.floor() * tb).sum().backward()
    np.testing.assert_allclose(pa.grad, ta.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pb.grad, tb.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_export_to_onnx_matches_onnxruntime(rng):
    ort = pytest.importorskip("onnxruntime")
    import graphc.onnx

    a = (rng.standard_normal((3, 5)) * 6).astype(np.float32)
    b = (rng.standard_normal((3, 5)) * 2).astype(np.float32)
    ia = rng.integers(-30, 30, (3, 5)).astype(np.int64)
    ib = (rng.integers(1, 7, (3, 5)) * rng.choice([-1, 1], (3, 5))).astype(np.int64)

    def f(x, y, i, j):
        floats = (x.floor(), x.ceil(), x.round(), x.trunc(), graphc.fmod(x, y), x % y, x // y)
        return (*floats, i % j, i // j, graphc.fmod(i, j), i.div(j, rounding_mode="trunc"))

    args = (a, b, ia, ib)
    proto = graphc.onnx.export(f, *args)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: v for i, v in zip(sess.get_inputs(), args)})
    want = graphc.compile(f, *args, backend="reference")(*args)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
