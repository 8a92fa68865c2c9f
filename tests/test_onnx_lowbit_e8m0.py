"""float8e8m0 in ONNX quantization (graphc/onnx/lowbit_ops.py, graphc/onnx/ops/quantize.py): a scale
type only. DequantizeLinear with a float8e8m0 x_scale (2**(e - 127), opset 24+) and with
``output_dtype``, and QuantizeLinear with a float8e8m0 y_scale, against onnx's reference evaluator;
float8e8m0 as the quantized type (x, zero point, output_dtype) refused with a GraphcError naming it."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ml_dtypes = pytest.importorskip("ml_dtypes")

from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import graphc  # noqa: E402
import graphc.onnx  # noqa: E402
from graphc.ir import GraphcError  # noqa: E402
from graphc.tracing import trace  # noqa: E402

E8M0 = np.dtype(ml_dtypes.float8_e8m0fnu)
_ELEM = {
    np.dtype(np.int8): TensorProto.INT8,
    np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(ml_dtypes.bfloat16): TensorProto.BFLOAT16,
    np.dtype(ml_dtypes.float8_e4m3fn): TensorProto.FLOAT8E4M3FN,
    np.dtype(ml_dtypes.int4): TensorProto.INT4,
    E8M0: TensorProto.FLOAT8E8M0,
}
RNG = np.random.default_rng(5)


def _model(op: str, arrays: list, opset: int = 25, **attrs):
    names = [f"in{i}" for i in range(len(arrays))]
    graph = helper.make_graph(
        [helper.make_node(op, names, ["y"], **attrs)],
        "q",
        [helper.make_tensor_value_info(n, _ELEM[a.dtype], a.shape) for n, a in zip(names, arrays)],
        [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 11
    return model


def _check(model, arrays: list) -> None:
    (expected,) = ReferenceEvaluator(model).run(None, {f"in{i}": a for i, a in enumerate(arrays)})
    got = np.asarray(graphc.compile(graphc.onnx.load(model), *arrays, backend="cpu")(*arrays))
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got.astype(np.float32), expected.astype(np.float32))


def _e8m0(*exponents: int) -> np.ndarray:
    """float8e8m0 values from their biased exponent bytes (255: NaN)."""
    return np.array(exponents, dtype=np.uint8).view(E8M0)


# (x, x_scale exponent bytes, zero point or None, attributes)
DEQUANTIZE_CASES = [
    # per tensor; the smallest scale (2**-127, a float32 subnormal) and 2**127
    (RNG.integers(-128, 128, (2, 3)).astype(np.int8), [0], None, dict(output_dtype=TensorProto.FLOAT)),
    (RNG.integers(-1, 2, (2, 3)).astype(np.int8), [254], None, dict(output_dtype=TensorProto.FLOAT)),
    # per axis with a zero point, NaN scale (0xFF); float16 and bfloat16 outputs
    (
        RNG.integers(0, 256, (3, 4)).astype(np.uint8),
        [120, 127, 130, 255],
        np.array([0, 3, 255, 128], dtype=np.uint8),
        dict(axis=1, output_dtype=TensorProto.FLOAT16),
    ),
    (
        RNG.integers(-128, 128, (4, 2)).astype(np.int8),
        [126, 131, 100, 140],
        None,
        dict(axis=0, output_dtype=16),
    ),
    # blocked, on float8 and int4 values
    (
        RNG.standard_normal((2, 6)).astype(ml_dtypes.float8_e4m3fn),
        [[125, 129, 127], [110, 127, 135]],
        None,
        dict(axis=1, block_size=2, output_dtype=TensorProto.FLOAT),
    ),
    (
        RNG.integers(-8, 8, (4, 3)).astype(ml_dtypes.int4),
        [[120, 127, 133], [128, 126, 127]],
        None,
        dict(axis=0, block_size=2, output_dtype=TensorProto.FLOAT),
    ),
]


@pytest.mark.parametrize("x, exponents, zero, attrs", DEQUANTIZE_CASES)
def test_dequantize_with_a_float8e8m0_scale_as_the_reference(x, exponents, zero, attrs):
    arrays = [x, _e8m0(*np.ravel(exponents)).reshape(np.shape(exponents))]
    if zero is not None:
        arrays.append(zero)
    _check(_model("DequantizeLinear", arrays, **attrs), arrays)


def test_dequantize_output_dtype_with_a_float_scale():
    """output_dtype other than the scale's: the product in float32, cast once (as the reference)."""
    x = RNG.integers(-128, 128, (3, 5)).astype(np.int8)
    for scale, out in ((np.float32(0.0123), TensorProto.FLOAT16), (np.float16(0.37), TensorProto.FLOAT)):
        arrays = [x, np.array(scale)]
        _check(_model("DequantizeLinear", arrays, output_dtype=out), arrays)


def test_quantize_with_a_float8e8m0_scale_as_the_reference():
    x = (RNG.standard_normal((2, 4)) * 40).astype(np.float32)
    arrays = [x, _e8m0(125, 127, 129, 131), np.zeros(4, np.int8)]
    _check(_model("QuantizeLinear", arrays, axis=1), arrays)


def test_float8e8m0_is_no_quantized_type():
    x8 = np.zeros((2, 2), np.int8)
    e = _e8m0(127)
    f, one = np.ones(2, np.float32), np.float32(1.0).reshape(())
    cases = [
        # x of DequantizeLinear, the zero point and the output_dtype of QuantizeLinear
        ("DequantizeLinear", [e, one], {}, "x must be one of .*got f8e8m0"),
        ("QuantizeLinear", [f, one, e.reshape(())], {}, "zero point must be one of .*got f8e8m0"),
        ("QuantizeLinear", [f, one], {"output_dtype": 24}, "output_dtype float8e8m0 is not supported"),
        # a float8e8m0 scale needs output_dtype (the output would be float8e8m0); output types are floats
        ("DequantizeLinear", [x8, e.reshape(())], {}, "float8e8m0 x_scale needs the output_dtype"),
        (
            "DequantizeLinear",
            [x8, one],
            {"output_dtype": TensorProto.INT8},
            "output_dtype must be float.*int8",
        ),
    ]
    for op, arrays, attrs, message in cases:
        with pytest.raises(GraphcError, match=message) as err:
            trace(graphc.onnx.load(_model(op, arrays, **attrs)), *arrays)
        assert f"({op})" in str(err.value)
