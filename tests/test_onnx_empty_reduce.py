"""ONNX reductions over an empty axis give the reduction's identity (graphc/onnx/ops/empty_reduce.py)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx import TensorProto, helper  # noqa: E402

from graphc.onnx.backend import GraphcBackend  # noqa: E402
from graphc.onnx.ops.empty_reduce import identity_of  # noqa: E402

_TYPES = {np.float32: TensorProto.FLOAT, np.int32: TensorProto.INT32, np.bool_: TensorProto.BOOL}


def _run(op: str, x: np.ndarray, axes: list[int], keepdims: int) -> np.ndarray:
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", _TYPES[x.dtype.type], list(x.shape))],
        [helper.make_tensor_value_info("y", _TYPES[x.dtype.type], None)],
        [helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    (y,) = GraphcBackend.run_model(model, [x], backend="reference")
    return y


@pytest.mark.parametrize(
    "op,dtype,expect",
    [
        ("ReduceMax", np.float32, -np.inf),
        ("ReduceMin", np.float32, np.inf),
        ("ReduceMax", np.int32, np.iinfo(np.int32).min),
        ("ReduceMin", np.int32, np.iinfo(np.int32).max),
        ("ReduceMax", np.bool_, False),
        ("ReduceMin", np.bool_, True),
        ("ReduceLogSum", np.float32, -np.inf),
        ("ReduceLogSumExp", np.float32, -np.inf),
    ],
)
@pytest.mark.parametrize("keepdims", [0, 1])
def test_empty_axis_gives_identity(op, dtype, expect, keepdims):
    x = np.zeros((2, 0, 3), dtype=dtype)
    y = _run(op, x, [1], keepdims)
    # numpy's ufunc identities as the oracle where defined (max/min over bools and ints have none)
    assert y.dtype == dtype
    assert y.shape == ((2, 1, 3) if keepdims else (2, 3))
    np.testing.assert_array_equal(y, np.full(y.shape, expect, dtype=dtype))
    assert identity_of(op, np.dtype(dtype)) == expect


def test_nonempty_axis_unchanged_and_empty_kept_axis():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(_run("ReduceMax", x, [1], 0), x.max(axis=1))
    e = np.zeros((0, 3), dtype=np.float32)  # reducing the non-empty axis keeps an empty result
    assert _run("ReduceMin", e, [1], 1).shape == (0, 1)
    np.testing.assert_array_equal(_run("ReduceLogSum", e, [0], 0), np.full(3, -np.inf, np.float32))
