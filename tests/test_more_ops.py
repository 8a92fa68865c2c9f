"""acos/asin/atan/acosh/asinh/atanh, the bitwise ops and shifts, prod and cumprod: values against
NumPy and PyTorch on the reference and CPU backends, gradients against torch autograd (float64,
zeros in products included), eager mode, the ONNX converters' and exporter's round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphc
from graphc.compiler import compile_graph
from graphc.ir import GraphcError, infer_types
from graphc.ir.types import TensorType
from graphc.passes.autodiff import grad

BACKENDS = ("reference", "cpu")
INVERSE_TRIG = ("acos", "asin", "atan", "acosh", "asinh", "atanh")


def _inverse_trig_inputs(dtype: type) -> np.ndarray:
    # in and out of each domain: +-1 (atanh's poles), below 1 (acosh's NaN), beyond 1 (acos's NaN)
    row = [-3.0, -1.0, -0.999, -0.5, -0.0, 0.0, 1e-8, 0.3, 0.999, 1.0, 1.0001, 2.5, 1e10]
    row += [np.inf, -np.inf, np.nan]
    return np.array(row, dtype=dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inverse_trig_values(backend, dtype):
    x = _inverse_trig_inputs(dtype)

    def f(x):
        return tuple(getattr(x, name)() for name in INVERSE_TRIG)

    got = graphc.compile(f, x, backend=backend)(x)
    tol = 2e-7 if dtype == np.float32 else 1e-15
    for name, g in zip(INVERSE_TRIG, got):
        want = getattr(torch, name)(torch.from_numpy(x)).numpy()
        assert g.dtype == want.dtype
        np.testing.assert_allclose(g, want, rtol=tol, atol=0, err_msg=name)


def test_inverse_trig_torch_names_and_int_inputs():
    x = np.array([[0.25, -0.75], [0.5, 0.0]], np.float32)

    def f(x):
        return graphc.arccos(x), graphc.arcsinh(x), graphc.atan(x), x.arctanh()

    got = graphc.compile(f, x, backend="reference")(x)
    for g, fn in zip(got, (np.arccos, np.arcsinh, np.arctan, np.arctanh)):
        np.testing.assert_allclose(g, fn(x), rtol=1e-6)
    ints = np.array([0, 1, -1], np.int64)  # as torch: an integer tensor computes in float32
    out = graphc.compile(lambda x: x.asin(), ints, backend="reference")(ints)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.arcsin(ints.astype(np.float32)))


# ---------------------------------------------------------------- bitwise ops
INT_TYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


def _int_operands(dtype: type, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    a = rng.integers(info.min, info.max, (4, 9), dtype=dtype, endpoint=True)
    a[0, :4] = [info.min, info.max, 0, 1]
    bits = 8 * np.dtype(dtype).itemsize
    counts = [0, 1, bits - 1, bits, bits + 1, 3, 2 * bits, 5, 7]  # at and past the width too
    if info.min < 0:
        counts[-2:] = [-1, info.min]  # negative counts shift everything out
    b = np.array([counts, *rng.integers(0, bits, (3, 9))], dtype=dtype)
    return a, b


def _bitwise_model(a, b):
    return a & b, a | b, a ^ b, ~a, a << b, a >> b, 5 & a, 3 ^ a, a | 1


def _bitwise_numpy(a, b):
    t = a.dtype.type
    return (
        a & b,
        a | b,
        a ^ b,
        ~a,
        np.left_shift(a, b),
        np.right_shift(a, b),
        t(5) & a,
        t(3) ^ a,
        a | t(1),
    )


@pytest.mark.parametrize("dtype", INT_TYPES)
def test_bitwise_ops_every_integer_dtype(dtype):
    """NumPy's values (NumPy and PyTorch agree: a count outside [0, bits) shifts every bit out)."""
    a, b = _int_operands(dtype)
    backends = BACKENDS if dtype in (np.int8, np.uint16, np.int32, np.uint64) else ("reference",)
    for backend in backends:
        got = graphc.compile(_bitwise_model, a, b, backend=backend)(a, b)
        for i, (g, w) in enumerate(zip(got, _bitwise_numpy(a, b))):
            assert g.dtype == dtype, (backend, i)
            np.testing.assert_array_equal(g, w, err_msg=f"{backend} output {i}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_bitwise_matches_torch_and_bool(backend):
    a, b = _int_operands(np.int32, seed=1)

    def f(a, b):
        p, q = a > 0, b > 3
        return (
            graphc.bitwise_and(a, b),
            graphc.bitwise_or(a, b),
            graphc.bitwise_xor(a, b),
            graphc.bitwise_not(a),
            graphc.bitwise_left_shift(a, b),
            graphc.bitwise_right_shift(a, b),
            p & q,
            p | q,
            p ^ q,
            ~p,
            (p & 6) | q,  # bool & int: the int dtype, as torch
        )

    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    tp, tq = ta > 0, tb > 3
    want = [ta & tb, ta | tb, ta ^ tb, ~ta, ta << tb, ta >> tb, tp & tq, tp | tq, tp ^ tq, ~tp, (tp & 6) | tq]
    got = graphc.compile(f, a, b, backend=backend)(a, b)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.numpy().dtype, i
        np.testing.assert_array_equal(g, w.numpy(), err_msg=f"output {i}")


def test_bitwise_errors_name_the_op():
    x = np.ones(3, np.float32)
    with pytest.raises(GraphcError, match=r"\^ \(bitwise_xor\) needs integer or bool tensors, got f32"):
        graphc.compile(lambda x: x ^ 1, x)
    with pytest.raises(GraphcError, match=r"~ \(bitwise_not\) needs an integer or bool tensor, got f32"):
        graphc.compile(lambda x: ~x, x)
    flags = np.ones(3, bool)
    with pytest.raises(GraphcError, match=r"<< \(bitwise_left_shift\) needs integer tensors, got bool"):
        graphc.compile(lambda x: x << x, flags)
    with pytest.raises(GraphcError, match="left_shift: needs integer operands, got f32"):
        infer_types("left_shift", [TensorType((2,), "f32")] * 2, {})
    with pytest.raises(GraphcError, match="prod: prod of bool"):
        infer_types("prod", [TensorType((2,), "bool")], {"axes": (0,), "keepdims": False})


# ---------------------------------------------------------------- prod and cumprod
def _with_zeros(shape, dtype=np.float32, seed=0):
    """Random values of both signs in [0.5, 1.5] with groups of one zero and of two zeros along
    the last, the middle and the first axis."""
    x = np.random.default_rng(seed).uniform(0.5, 1.5, shape) * np.where(np.arange(shape[-1]) % 2, 1, -1)
    x = x.astype(dtype)
    x[0, 0, 1] = 0.0  # one zero along the last axis (and along the others)
    x[1, 0, 0] = x[1, 0, 3] = 0.0  # two along the last axis
    x[2, 0, 2] = x[2, 1, 2] = 0.0  # two along the middle axis
    x[3, 0, 0] = 0.0  # with x[1, 0, 0]: two along the first axis
    return x


@pytest.mark.parametrize("backend", BACKENDS)
def test_prod_and_cumprod_values(backend):
    x = _with_zeros((4, 5, 4))
    x[2, 2, 2] = np.nan

    def f(x):
        return (
            x.prod(),
            x.prod(2),
            x.prod(1, keepdim=True),  # over a middle axis
            x.prod(dim=(0, 2)),
            graphc.prod(x, 0),
            x.cumprod(2),
            graphc.cumprod(x, 1),
            x.cumprod(-3),
        )

    t = torch.from_numpy(x)
    want = [t.prod(), t.prod(2), t.prod(1, keepdim=True), t.prod(2).prod(0), t.prod(0)]
    want += [t.cumprod(2), t.cumprod(1), t.cumprod(0)]
    got = graphc.compile(f, x, backend=backend)(x)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == np.float32, i
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-6, atol=1e-7, err_msg=f"output {i}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_prod_and_cumprod_integers_wrap_like_torch(backend):
    a = np.random.default_rng(2).integers(-1000, 1000, (3, 11)).astype(np.int32)

    def f(a):
        return (
            a.prod(1),
            a.cumprod(1),
            a.prod(0, dtype=graphc.int32),
            (a > 0).prod(1),
            a.cumprod(0, dtype="i32"),
        )

    t = torch.from_numpy(a)
    want = [
        t.prod(1),
        t.cumprod(1),
        t.prod(0, dtype=torch.int32),
        (t > 0).prod(1),
        t.cumprod(0, dtype=torch.int32),
    ]
    got = graphc.compile(f, a, backend=backend)(a)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.numpy().dtype, i  # integers multiply in int64 unless a dtype is given
        np.testing.assert_array_equal(g, w.numpy(), err_msg=f"output {i}")


def _gradients(fn, x: np.ndarray, backend: str) -> tuple[np.ndarray, np.ndarray]:
    """d/dx of sum(fn(x) * w) for a fixed random w, through graphc's VJPs on ``backend``."""
    w = np.random.default_rng(7).standard_normal(np.shape(fn(torch.from_numpy(x)))).astype(x.dtype)
    graph = graphc.trace(lambda x, w: (fn(x) * w).sum(), x, w)
    joint, index = grad(graph, 0, ["x"])
    outs = compile_graph(joint, backend=backend)(x, w)
    tx = torch.from_numpy(x).requires_grad_()
    (fn(tx) * torch.from_numpy(w)).sum().backward()
    return outs[index["x"]], tx.grad.numpy()


@pytest.mark.parametrize("backend", BACKENDS)
def test_inverse_trig_gradients(backend):
    x = np.array([[-0.9, -0.3, 0.0, 0.4, 0.95]], np.float64)
    for name in INVERSE_TRIG:
        inputs = np.abs(x) * 3 + 1.05 if name == "acosh" else x * 1.7 if name in ("atan", "asinh") else x
        got, want = _gradients(lambda t, name=name: getattr(t, name)(), inputs, backend)
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=name)


PRODUCTS = {
    "prod last": lambda t: t.prod(-1),
    "prod middle keepdim": lambda t: t.prod(1, keepdim=True),
    "prod all": lambda t: t.prod(),
    "cumprod last": lambda t: t.cumprod(-1),
    "cumprod first": lambda t: t.cumprod(0),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(PRODUCTS))
def test_product_gradients_with_zeros(backend, case):
    """Rows with no zero, one zero and two zeros: the gradient is the product of the others (torch)."""
    x = _with_zeros((4, 3, 6), np.float64, seed=3)
    got, want = _gradients(PRODUCTS[case], x, backend)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    if case == "prod last":  # at a lone zero the gradient is not 0; in a group of two zeros it is
        assert got[0, 0, 1] != 0 and np.all(got[1, 0] == 0)


def test_eager_mode_on_numpy_arrays():
    x = np.array([[0.5, -0.25, 0.0], [2.0, 0.75, -1.5]], np.float32)
    np.testing.assert_allclose(graphc.acos(x[:, :2] * 0.5).numpy(), np.arccos(x[:, :2] * 0.5), rtol=1e-6)
    np.testing.assert_allclose(graphc.asinh(x).numpy(), np.arcsinh(x), rtol=1e-6)
    np.testing.assert_allclose(graphc.prod(x, 1).numpy(), np.prod(x, 1), rtol=1e-6)
    np.testing.assert_allclose(graphc.cumprod(x, 1).numpy(), np.cumprod(x, 1), rtol=1e-6)
    a = np.array([12, -7, 255], np.int64)
    b = np.array([3, 1, 70], np.int64)
    np.testing.assert_array_equal(graphc.bitwise_and(a, b).numpy(), a & b)
    np.testing.assert_array_equal(graphc.bitwise_right_shift(a, b).numpy(), np.right_shift(a, b))
    t = graphc.bitwise_not(a)  # an eager Tensor: its operators run eagerly too
    np.testing.assert_array_equal((t ^ a).numpy(), ~a ^ a)
    np.testing.assert_array_equal((t << 2).numpy(), np.left_shift(~a, 2))


def test_eager_backward_through_products_and_asin():
    """Eager mode's tape differentiates with the same rules (zeros in the products)."""
    from graphc import nn

    x = np.array([[0.5, 0.0, 2.0, 0.0], [1.5, -0.5, 0.25, 0.0], [0.3, 0.6, -0.2, 0.0]], np.float32)
    s = np.array([1.0, 2.0, -1.0], np.float32)

    def loss_of(w, s):
        return (w.prod(1) * s).sum() + w.cumprod(1).sum() + (w * 0.25).asin().sum() + w.prod(0).sum()

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(x.copy())

        def forward(self, s):
            return loss_of(self.w, s)

    model = Model()
    model(s).backward()
    t = torch.from_numpy(x.copy()).requires_grad_()
    loss_of(t, torch.from_numpy(s)).backward()
    np.testing.assert_allclose(model.w.grad, t.grad.numpy(), rtol=1e-6)


# ---------------------------------------------------------------- ONNX
def test_onnx_export_round_trip_through_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    from graphc.onnx import export, load

    x = np.random.default_rng(4).uniform(-0.9, 0.9, (3, 4)).astype(np.float32)
    a, b = _int_operands(np.int64, seed=5)
    a = a[:3, :4].copy()
    b = b[:3, :4].copy()

    def f(x, a, b):
        trig = x.acos() + x.asin() * x.atan() + (x * x + 1.5).acosh() - x.asinh() + x.atanh()
        bits = ((a & b) | (a ^ 77)) + (~a >> (b & 7)) + ((a & 255) << (b & 15)) + (a >> b) + (a << b)
        return trig.prod(1), trig.cumprod(0), bits, (b & 3).prod(0), (a > 0) & (b > 5)

    want = graphc.compile(f, x, a, b, backend="reference")(x, a, b)
    model = export(f, x, a, b, opset=18)
    assert {"Acos", "Acosh", "Atanh", "ReduceProd", "BitwiseAnd", "BitShift", "And"} <= {
        n.op_type for n in model.graph.node
    }
    session = ort.InferenceSession(model.SerializeToString())
    feeds = {i.name: v for i, v in zip(session.get_inputs(), (x, a, b))}
    for g, w in zip(session.run(None, feeds), want):
        assert g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # and back: the exported model imported by graphc gives the same values
    got = graphc.compile(load(model), x, a, b, backend="reference")(x, a, b)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    with pytest.raises(GraphcError, match="bitwise_and of integers needs opset 18 or newer, got 17"):
        export(lambda a: a & 3, a, opset=17)
