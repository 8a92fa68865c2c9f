"""quantize / dequantize / fake_quantize / qmatmul: ONNX Runtime's QuantizeLinear/DequantizeLinear
bit for bit (ties, saturation, NaN/inf, per tensor and per channel), PyTorch's fake-quantize
gradient, and the int8 GEMM against an int64 NumPy product."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import compress_functional as C
from graphc.ir import Graph, GraphcError, TensorType
from graphc.kernels.reference import execute
from graphc.passes.autodiff import grad

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

_ONNX_INT = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8}


def _ort(op: str, x: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int | None) -> np.ndarray:
    """Run one QuantizeLinear/DequantizeLinear node (opset 13) in ONNX Runtime."""
    attrs = {} if axis is None else {"axis": axis}
    node = helper.make_node(op, ["x", "s", "z"], ["y"], **attrs)
    in_t = TensorProto.FLOAT if x.dtype == np.float32 else _ONNX_INT[x.dtype]
    out_t = _ONNX_INT[zero.dtype] if op == "QuantizeLinear" else TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "q",
        [helper.make_tensor_value_info("x", in_t, x.shape)],
        [helper.make_tensor_value_info("y", out_t, x.shape)],
        [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zero, "z")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _inputs(
    rng: np.random.Generator, shape: tuple[int, ...], scale: np.ndarray, axis: int | None
) -> np.ndarray:
    """Random values, with exact ties (x / scale = k + 1/2), saturating values and NaN/inf mixed in."""
    x = (rng.standard_normal(shape) * 40).astype(np.float32)
    s = scale if axis is None else scale.reshape((-1,) + (1,) * (len(shape) - 1 - axis))
    ties = ((rng.integers(-300, 300, shape) + 0.5) * np.broadcast_to(s, shape)).astype(np.float32)
    pick = rng.random(shape)
    x = np.where(pick < 0.4, ties, x)
    x = np.where(pick > 0.95, np.float32(1e6) * np.sign(x), x)
    flat = x.reshape(-1)
    flat[:4] = [np.nan, np.inf, -np.inf, -0.0]
    return x


CASES = [  # (shape, axis, dtype)
    ((6, 33), None, np.int8),
    ((6, 33), None, np.uint8),
    ((4, 5, 7), 1, np.int8),
    ((5, 9), 0, np.uint8),
    ((3, 4, 8), 2, np.int8),
]


def _params(rng, shape, axis, dtype):
    n = 1 if axis is None else shape[axis]
    # Powers of two make the ties exact; the others are arbitrary.
    scale = np.where(rng.random(n) < 0.5, 2.0 ** rng.integers(-3, 2, n), rng.uniform(0.01, 2.0, n))
    info = np.iinfo(dtype)
    zero = rng.integers(info.min // 2, info.max // 2 + 1, n).astype(dtype)
    if axis is None:
        return scale.astype(np.float32).reshape(()), zero.reshape(())
    return scale.astype(np.float32), zero


@pytest.mark.parametrize("shape,axis,dtype", CASES)
def test_quantize_matches_onnxruntime_bit_for_bit(shape, axis, dtype):
    rng = np.random.default_rng(len(shape) * 10 + (axis or 0))
    scale, zero = _params(rng, shape, axis, dtype)
    x = _inputs(rng, shape, scale, axis)
    want = _ort("QuantizeLinear", x, scale, zero, axis)
    plan = graphc.compile(lambda x: C.quantize_linear(x, scale, zero, axis=axis), x)
    got = plan(x)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(C.quantize_linear(x, scale, zero, axis=axis), want)  # reference kernels
    # The cases did exercise ties and saturation.
    info = np.iinfo(dtype)
    assert (want == info.min).any() and (want == info.max).any()


@pytest.mark.parametrize("shape,axis,dtype", CASES)
def test_dequantize_matches_onnxruntime_bit_for_bit(shape, axis, dtype):
    rng = np.random.default_rng(7 + len(shape) + (axis or 0))
    scale, zero = _params(rng, shape, axis, dtype)
    info = np.iinfo(dtype)
    q = rng.integers(info.min, info.max + 1, shape).astype(dtype)
    want = _ort("DequantizeLinear", q, scale, zero, axis)
    got = graphc.compile(lambda q: C.dequantize_linear(q, scale, zero, axis=axis), q)(q)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(C.dequantize_linear(q, scale, zero, axis=axis), want)


def test_fake_quantize_is_dequantize_of_quantize_in_a_compiled_plan():
    rng = np.random.default_rng(3)
    scale, zero = np.float32(0.25), np.int8(-5)
    x = _inputs(rng, (8, 16), scale, None)

    def both(x):
        q = C.quantize_linear(x, scale, zero)
        return C.dequantize_linear(q, scale, zero), C.fake_quantize(x * 1.0, scale, zero)

    a, b = graphc.compile(both, x)(x)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("per_channel", [False, True])
def test_fake_quantize_gradient_is_torchs_straight_through_estimator(per_channel):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((4, 6)) * 30).astype(np.float32)
    if per_channel:
        scale = rng.uniform(0.1, 0.5, 6).astype(np.float32)
        zero = rng.integers(-20, 20, 6).astype(np.int8)
        want_fn = lambda t: torch.fake_quantize_per_channel_affine(  # noqa: E731
            t, torch.tensor(scale), torch.tensor(zero, dtype=torch.int32), 1, -128, 127
        )
    else:
        scale, zero = np.float32(0.2), np.int8(10)
        want_fn = lambda t: torch.fake_quantize_per_tensor_affine(t, float(scale), int(zero), -128, 127)  # noqa: E731
    weights = rng.standard_normal((4, 6)).astype(np.float32)
    g = graphc.trace(
        lambda x: (C.fake_quantize(x, scale, zero, axis=1 if per_channel else None) * weights).sum(), x
    )
    joint, index = grad(g, 0, ["x"])
    out = execute(joint, {"x": x})
    t = torch.tensor(x, requires_grad=True)
    (want_fn(t) * torch.tensor(weights)).sum().backward()
    np.testing.assert_array_equal(out[index["x"]], t.grad.numpy())
    assert (t.grad.numpy() == 0).any() and (t.grad.numpy() != 0).any()


def test_dequantize_gradient_reaches_the_scale():
    q = np.array([[-3, 0, 5], [127, -128, 1]], np.int8)
    g = Graph("dq")
    qv = g.add_input("q", TensorType((2, 3), "i8"))
    s = g.add_input("s", TensorType((3,), "f32"))
    z = g.add_input("z", TensorType((), "i8"))
    y = g.add_node("dequantize", [qv, s, z]).output
    g.add_output(g.add_node("sum", [y], {"axes": (0, 1)}).output)
    joint, index = grad(g, 0, ["s"])
    out = execute(joint, {"q": q, "s": np.ones(3, np.float32), "z": np.array(2, np.int8)})
    np.testing.assert_array_equal(out[index["s"]], (q.astype(np.float32) - 2).sum(axis=0))


@pytest.mark.parametrize("m,k,n,a_dtype", [(1, 1, 1, np.int8), (7, 33, 19, np.int8), (13, 64, 70, np.uint8)])
def test_qmatmul_cpu_kernel_is_exact(m, k, n, a_dtype):
    rng = np.random.default_rng(m + k + n)
    info = np.iinfo(a_dtype)
    a = rng.integers(info.min, info.max + 1, (m, k)).astype(a_dtype)
    b = rng.integers(-128, 128, (n, k)).astype(np.int8)  # qmatmul(a, b) = a @ b.T
    a.reshape(-1)[0] = info.min  # -128 * -128 and 255 * -128: the extremes
    b.reshape(-1)[0] = -128
    g = Graph("qmm")
    av, bv = g.add_input("a", TensorType.of(a)), g.add_input("b", TensorType.of(b))
    g.add_output(g.add_node("qmatmul", [av, bv]).output)
    want = a.astype(np.int64) @ b.astype(np.int64).T
    (ref,) = execute(g, {"a": a, "b": b})
    from graphc.kernels import cpu

    out = np.empty((m, n), np.int32)
    cpu.compile_node(g.nodes[0])(a, b, out)
    np.testing.assert_array_equal(ref, want)
    np.testing.assert_array_equal(out, want)


def test_bad_operands_are_graphc_errors():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(GraphcError, match=r"per-channel scale must have shape \(4,\)"):
        C.quantize_linear(x, np.ones(3, np.float32), np.zeros(3, np.int8), axis=1)
    with pytest.raises(GraphcError, match="per-tensor scale must be a scalar"):
        C.quantize_linear(x, np.ones(4, np.float32), np.int8(0))
    with pytest.raises(GraphcError, match="zero point must be one of i8, u8, i16, u16, got i32"):
        C.quantize_linear(x, np.float32(1), np.int32(0))
    with pytest.raises(GraphcError, match="axis 2 out of range"):
        C.dequantize_linear(np.zeros((3, 4), np.int8), np.ones(4, np.float32), np.zeros(4, np.int8), axis=2)
    g = Graph("bad")
    a = g.add_input("a", TensorType((2, 3), "f32"))
    with pytest.raises(GraphcError, match="qmatmul needs i8/u8 operands"):
        g.add_node("qmatmul", [a, a])
