"""ONNX QOperator ops (graphc/onnx/ops/qlinear.py): MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv,
DynamicQuantizeLinear against onnx's reference evaluator (exact: the converters follow its float64
requantization) and ONNX Runtime (exact for the integer ops; the requantized ops within one unit, as ORT
multiplies in float32), through both lowerings: constant weights and zero points (graphc's int8 GEMMs
``qlinear``/``qconv2d``/``qmatmul``) and run-time ones (i32 ops)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import graphc  # noqa: E402
from graphc.ir import GraphcError  # noqa: E402
from graphc.onnx import load  # noqa: E402
from graphc.onnx.backend import GraphcBackend  # noqa: E402

RNG = np.random.default_rng(1234)


_OUT = {
    "MatMulInteger": [np.int32],
    "ConvInteger": [np.int32],
    "DynamicQuantizeLinear": [np.uint8, np.float32, np.uint8],
}


def _model(op: str, inputs: list, const: set[str], opset: int = 21, **attrs) -> onnx.ModelProto:
    """One ``op`` node over ``inputs`` [(name, array)]: names in ``const`` are initializers."""
    names = [n for n, _ in inputs]
    out_types = _OUT.get(op) or [inputs[7][1].dtype]  # QLinear*: y_zero_point's
    outs = ["y"] if len(out_types) == 1 else [f"y{i}" for i in range(len(out_types))]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
            for n, a in inputs
            if n not in const and n
        ],
        [
            helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(np.dtype(t)), None)
            for o, t in zip(outs, out_types)
        ],
        [numpy_helper.from_array(a, n) for n, a in inputs if n in const],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _feeds(inputs: list, const: set[str]) -> dict:
    return {n: a for n, a in inputs if n not in const and n}


def _graphc(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return list(GraphcBackend.prepare(model).run(feeds))


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _reference(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ReferenceEvaluator(model).run(None, feeds)


def _ops(model: onnx.ModelProto, feeds: dict) -> dict:
    """The graphc op counts of the imported model."""
    return graphc.trace(load(model), *feeds.values()).op_counts()


def _within_one(got: np.ndarray, want: np.ndarray) -> None:
    """ORT requantizes in float32: the same values, or one unit off in a few outputs."""
    assert got.dtype == want.dtype and got.shape == want.shape
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    assert diff.max() <= 1, diff.max()
    assert (diff != 0).mean() <= 0.02


def _q(shape, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max + 1, shape).astype(dtype)


def _zp(dtype, shape=()) -> np.ndarray:
    return np.asarray(
        RNG.integers(110, 146, shape) if dtype == np.uint8 else RNG.integers(-20, 20, shape), dtype
    )


# ---------------------------------------------------------------- QLinearMatMul
@pytest.mark.parametrize(
    "a_dt,b_dt,weights_const",
    [
        (np.uint8, np.int8, True),
        (np.uint8, np.int8, False),
        (np.int8, np.int8, True),
        (np.uint8, np.uint8, False),
    ],
)
def test_qlinear_matmul(a_dt, b_dt, weights_const):
    a = _q((2, 5, 70), a_dt)
    b = _q((70, 12), b_dt)
    per_col = b_dt == np.int8  # per-column b scales, symmetric i8 b (zero point 0)
    b_scale = (RNG.uniform(0.002, 0.01, 12) if per_col else np.array(0.004)).astype(np.float32)
    b_zero = np.zeros(12 if per_col else (), b_dt) if b_dt == np.int8 else _zp(b_dt)
    inputs = [
        ("a", a),
        ("a_scale", np.array(0.02, np.float32)),
        ("a_zero_point", _zp(a_dt)),
        ("b", b),
        ("b_scale", b_scale),
        ("b_zero_point", b_zero),
        ("y_scale", np.array(0.1, np.float32)),
        ("y_zero_point", _zp(a_dt)),
    ]
    const = {n for n, _ in inputs if n != "a"} if weights_const else set()
    model = _model("QLinearMatMul", inputs, const)
    feeds = _feeds(inputs, const)
    (got,) = _graphc(model, feeds)
    np.testing.assert_array_equal(got, _reference(model, feeds)[0])
    _within_one(got, _ort(model, feeds)[0])
    if weights_const and b_dt == np.int8:
        assert _ops(model, feeds).get("qlinear") == 1  # the fused int8 GEMM and epilogue
    assert np.unique(got).size > 20  # the scales spread the outputs over the range


def test_qlinear_matmul_batched_b_and_vector():
    a = _q((3, 4, 9), np.uint8)
    b = _q((3, 9, 5), np.uint8)
    s = [np.array(v, np.float32) for v in (0.05, 0.04, 0.5)]
    inputs = [("a", a), ("as", s[0]), ("az", _zp(np.uint8)), ("b", b), ("bs", s[1]), ("bz", _zp(np.uint8))]
    inputs += [("ys", s[2]), ("yz", _zp(np.uint8))]
    model = _model("QLinearMatMul", inputs, set())
    feeds = _feeds(inputs, set())
    (got,) = _graphc(model, feeds)
    np.testing.assert_array_equal(got, _reference(model, feeds)[0])
    _within_one(got, _ort(model, feeds)[0])
    # a 1-D a (numpy.matmul's vector): the reference gives the same as a [1, K] row
    inputs[0] = ("a", a[0, 0])
    model = _model("QLinearMatMul", inputs, {"b"})
    feeds = _feeds(inputs, {"b"})
    (got,) = _graphc(model, feeds)
    assert got.shape == (3, 5)
    np.testing.assert_array_equal(got, _reference(model, feeds)[0])


def test_qlinear_matmul_float16_scales_opset21():
    a, b = _q((4, 8), np.int8), _q((8, 3), np.int8)
    h = [np.array(v, np.float16) for v in (0.03, 0.02, 0.07)]
    inputs = [("a", a), ("as", h[0]), ("az", _zp(np.int8)), ("b", b), ("bs", h[1]), ("bz", _zp(np.int8))]
    inputs += [("ys", h[2]), ("yz", _zp(np.int8))]
    model = _model("QLinearMatMul", inputs, set())
    feeds = _feeds(inputs, set())
    np.testing.assert_array_equal(_graphc(model, feeds)[0], _reference(model, feeds)[0])


# ---------------------------------------------------------------- MatMulInteger
@pytest.mark.parametrize(
    "a_dt,b_dt,weights_const",
    [(np.uint8, np.int8, True), (np.int8, np.uint8, False), (np.uint8, np.uint8, True)],
)
def test_matmul_integer(a_dt, b_dt, weights_const):
    a, b = _q((2, 3, 40), a_dt), _q((40, 6), b_dt)
    inputs = [("A", a), ("B", b), ("az", _zp(a_dt)), ("bz", _zp(b_dt, (6,)))]  # per-column b zero points
    const = {"B", "bz"} if weights_const else set()
    model = _model("MatMulInteger", inputs, const, opset=10)
    feeds = _feeds(inputs, const)
    (got,) = _graphc(model, feeds)
    want = (a.astype(np.int64) - inputs[2][1]) @ (b.astype(np.int64) - inputs[3][1])
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)  # exact int64 NumPy
    np.testing.assert_array_equal(got, _ort(model, feeds)[0])
    if weights_const:
        assert _ops(model, feeds).get("qmatmul") == 1


def test_matmul_integer_large_k_is_exact():
    """Sums past 2**24 (where float32 accumulation loses bits) stay exact."""
    a = np.full((2, 600), 255, np.uint8)
    b = np.full((600, 3), 255, np.uint8)
    b[0, 0] = 254
    inputs = [("A", a), ("B", b)]
    model = _model("MatMulInteger", inputs, set(), opset=10)
    (got,) = _graphc(model, _feeds(inputs, set()))
    want = a.astype(np.int64) @ b.astype(np.int64)
    assert want.max() > 2**25
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- ConvInteger
@pytest.mark.parametrize(
    "attrs,wz_nonzero,weights_const",
    [
        (dict(pads=[1, 1, 1, 1]), False, True),
        (dict(pads=[0, 1, 2, 1], strides=[2, 1]), False, True),  # asymmetric: padded with x's zero point
        (dict(pads=[1, 1, 1, 1], dilations=[2, 2], strides=[1, 2]), True, True),
        (dict(group=2, pads=[1, 0, 1, 0]), False, False),
    ],
)
def test_conv_integer(attrs, wz_nonzero, weights_const):
    x, w = _q((2, 4, 7, 6), np.uint8), _q((6, 4 // attrs.get("group", 1), 3, 3), np.uint8)
    wz = _zp(np.uint8) if wz_nonzero else np.array(0, np.uint8)
    inputs = [("x", x), ("w", w), ("xz", _zp(np.uint8)), ("wz", wz)]
    const = {"w", "xz", "wz"} if weights_const else set()
    model = _model("ConvInteger", inputs, const, opset=10, **attrs)
    feeds = _feeds(inputs, const)
    (got,) = _graphc(model, feeds)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, _reference(model, feeds)[0])
    np.testing.assert_array_equal(got, _ort(model, feeds)[0])
    if weights_const and not wz_nonzero:
        assert _ops(model, feeds).get("qconv2d") == 1


# ---------------------------------------------------------------- QLinearConv
@pytest.mark.parametrize(
    "x_dt,attrs,weights_const",
    [
        (np.uint8, dict(pads=[1, 1, 1, 1]), True),
        (np.int8, dict(pads=[1, 0, 1, 1], strides=[2, 2]), True),
        (np.uint8, dict(pads=[1, 1, 1, 1], group=3), True),  # depthwise-like groups: the i32 path
        (np.uint8, dict(auto_pad="SAME_UPPER", strides=[2, 1]), False),
    ],
)
def test_qlinear_conv(x_dt, attrs, weights_const):
    group = attrs.get("group", 1)
    x, w = _q((2, 6, 8, 7), x_dt), _q((9, 6 // group, 3, 3), np.int8)
    inputs = [
        ("x", x),
        ("xs", np.array(0.03, np.float32)),
        ("xz", _zp(x_dt)),
        ("w", w),
        ("ws", RNG.uniform(0.002, 0.01, 9).astype(np.float32)),  # per output channel
        ("wz", np.zeros(9, np.int8)),
        ("ys", np.array(0.3, np.float32)),
        ("yz", _zp(x_dt)),
        ("B", RNG.integers(-3000, 3000, 9).astype(np.int32)),
    ]
    const = {n for n, _ in inputs if n not in ("x",)} if weights_const else set()
    model = _model("QLinearConv", inputs, const, opset=10, **attrs)
    feeds = _feeds(inputs, const)
    (got,) = _graphc(model, feeds)
    np.testing.assert_array_equal(got, _reference(model, feeds)[0])
    _within_one(got, _ort(model, feeds)[0])
    assert np.unique(got).size > 20
    if weights_const and group == 1:
        assert _ops(model, feeds).get("qconv2d") == 1


def test_qlinear_conv_1d_u8_weights_with_zero_point():
    x, w = _q((1, 3, 11), np.uint8), _q((4, 3, 3), np.uint8)
    inputs = [("x", x), ("xs", np.array(0.05, np.float32)), ("xz", _zp(np.uint8)), ("w", w)]
    inputs += [("ws", np.array(0.01, np.float32)), ("wz", _zp(np.uint8)), ("ys", np.array(2.0, np.float32))]
    inputs += [("yz", _zp(np.uint8))]
    model = _model("QLinearConv", inputs, {"w", "wz"}, opset=10, pads=[1, 1])
    feeds = _feeds(inputs, {"w", "wz"})
    (got,) = _graphc(model, feeds)
    assert got.shape == (1, 4, 11)
    np.testing.assert_array_equal(got, _reference(model, feeds)[0])
    _within_one(got, _ort(model, feeds)[0])


# ---------------------------------------------------------------- DynamicQuantizeLinear
@pytest.mark.parametrize("lo,hi", [(-3.0, 5.0), (0.5, 4.0), (-6.0, -1.0)])
def test_dynamic_quantize_linear(lo, hi):
    x = RNG.uniform(lo, hi, (3, 17)).astype(np.float32)
    model = _model("DynamicQuantizeLinear", [("x", x)], set(), opset=11)
    got = _graphc(model, {"x": x})
    for g, r, o in zip(got, _reference(model, {"x": x}), _ort(model, {"x": x})):
        assert g.dtype == r.dtype and g.shape == np.shape(r)
        np.testing.assert_array_equal(g, r)
        np.testing.assert_array_equal(g, o)


def test_dynamic_quantize_linear_all_zero():
    x = np.zeros((2, 3), np.float32)
    model = _model("DynamicQuantizeLinear", [("x", x)], set(), opset=11)
    y, scale, zero = _graphc(model, {"x": x})
    assert scale == np.float32(1.0 / 255) and zero == 0 and not y.any()


# ---------------------------------------------------------------- a quantized CNN from onnxruntime
def _float_cnn() -> onnx.ModelProto:
    r = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array(r.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(r.normal(0, 0.1, 8).astype(np.float32), "b1"),
        numpy_helper.from_array(r.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(r.normal(0, 0.1, 8).astype(np.float32), "b2"),
        numpy_helper.from_array(np.array([2, 8 * 4 * 4], np.int64), "shape"),
        numpy_helper.from_array(r.normal(0, 0.1, (8 * 4 * 4, 10)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Reshape", ["r2", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def test_quantized_cnn_from_onnxruntime(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    data = [np.random.default_rng(i).normal(0, 1, (2, 3, 8, 8)).astype(np.float32) for i in range(4)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(data)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"x": x}

    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(_float_cnn(), src)
    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QOperator,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Conv", "MatMul"],
    )
    model = onnx.load(str(dst))
    used = {n.op_type for n in model.graph.node}
    assert {"QLinearConv", "QLinearMatMul", "QuantizeLinear", "DequantizeLinear"} <= used, used
    x = np.random.default_rng(99).normal(0, 1, (2, 3, 8, 8)).astype(np.float32)
    (got,) = _graphc(model, {"x": x})
    (want,) = _ort(model, {"x": x})
    (exact,) = _reference(model, {"x": x})
    np.testing.assert_array_equal(got, exact)
    counts = _ops(model, {"x": x})
    assert counts.get("qconv2d") == 2 and counts.get("qlinear") == 1, counts  # all on the int8 GEMMs
    # ORT's float32 requantization can move a value one unit in a layer, which then propagates
    # through the next layers: compare in units of the output's quantization step.
    step = np.abs(np.diff(np.unique(want))).min()
    assert np.abs(got - want).max() <= 3 * step
    assert np.mean(got == want) > 0.8


# ---------------------------------------------------------------- errors
def test_errors_name_the_node():
    a, b = _q((2, 3), np.uint8), _q((3, 4), np.uint8)
    f = np.array(0.1, np.float32)
    bad_zero = [("A", a), ("B", b), ("az", np.array(3, np.int8))]  # the zero point's dtype differs
    with pytest.raises(
        GraphcError, match=r"MatMulInteger.*a_zero_point must have its operand's dtype u8, got i8"
    ):
        _graphc(_model("MatMulInteger", bad_zero, set(), opset=10), _feeds(bad_zero, set()))
    floats = [("A", a.astype(np.float32)), ("B", b)]
    with pytest.raises(GraphcError, match=r"MatMulInteger.*A must be int8 or uint8, got f32"):
        _graphc(_model("MatMulInteger", floats, set(), opset=10), _feeds(floats, set()))
    rows = [("a", a), ("as", np.full(5, 0.1, np.float32)), ("az", _zp(np.uint8)), ("b", b), ("bs", f)]
    rows += [("bz", _zp(np.uint8)), ("ys", f), ("yz", _zp(np.uint8))]
    with pytest.raises(GraphcError, match=r"QLinearMatMul.*a_scale must be a scalar"):
        _graphc(_model("QLinearMatMul", rows, set()), _feeds(rows, set()))
    x, w = _q((1, 4, 5, 5), np.uint8), _q((6, 4, 3, 3), np.int8)
    conv = [("x", x), ("xs", f), ("xz", _zp(np.uint8)), ("w", w), ("ws", np.full(4, 0.1, np.float32))]
    conv += [("wz", np.zeros((), np.int8)), ("ys", f), ("yz", _zp(np.uint8))]
    with pytest.raises(GraphcError, match=r"QLinearConv.*w_scale must be a scalar or have shape \[6\]"):
        _graphc(_model("QLinearConv", conv, set(), opset=10), _feeds(conv, set()))
    conv[4] = ("ws", f)
    with pytest.raises(GraphcError, match=r"QLinearConv.*group=3 does not fit"):
        _graphc(_model("QLinearConv", conv, set(), opset=10, group=3), _feeds(conv, set()))
    bias = [*conv, ("B", np.zeros(6, np.float32))]
    with pytest.raises(GraphcError, match=r"QLinearConv.*B must be int32 \[6\]"):
        _graphc(_model("QLinearConv", bias, set(), opset=10), _feeds(bias, set()))
    x3 = [("x", _q((1, 2, 3, 3, 3), np.uint8)), ("w", _q((2, 2, 1, 1, 1), np.uint8))]
    with pytest.raises(GraphcError, match=r"ConvInteger.*1-D or 2-D convolution"):
        _graphc(_model("ConvInteger", x3, set(), opset=10), _feeds(x3, set()))
    dq = [("x", np.ones((2, 2), np.float64))]
    with pytest.raises(GraphcError, match=r"DynamicQuantizeLinear.*x must be float32"):
        _graphc(_model("DynamicQuantizeLinear", dq, set(), opset=11), _feeds(dq, set()))


def test_float8_refused():
    f8 = helper.make_tensor("a", TensorProto.FLOAT8E4M3FN, [2, 2], [1.0, 2.0, 3.0, 4.0])
    a = numpy_helper.to_array(f8)
    f = np.array(1.0, np.float32)
    z = numpy_helper.to_array(helper.make_tensor("z", TensorProto.FLOAT8E4M3FN, [], [0.0]))
    inputs = [("a", a), ("as", f), ("az", z), ("b", a), ("bs", f), ("bz", z), ("ys", f), ("yz", z)]
    model = _model("QLinearMatMul", inputs, {n for n, _ in inputs})
    with pytest.raises(GraphcError, match=r"QLinearMatMul.*float8 quantized operands are not supported"):
        GraphcBackend.prepare(model).run({})
