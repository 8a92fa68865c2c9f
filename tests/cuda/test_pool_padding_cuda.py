"""Padded max_pool2d and max_pool2d_grad on the CUDA backend (the simulator here) against the NumPy
reference and the CPU kernel: border windows, windows of -inf and padding, NaN, ties, integers."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.ir import Graph, TensorType
from graphc.kernels import cpu
from graphc.kernels import cuda as kc
from graphc.kernels.reference import run_node

pytestmark = pytest.mark.cudasim

POOLS = [
    # (input shape, kernel, stride, dilation, padding (top, left, bottom, right))
    ((2, 3, 7, 9), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),
    ((1, 2, 6, 7), (3, 3), (2, 2), (1, 1), (0, 0, 1, 1)),  # ONNX-style end padding (ceil_mode)
    ((1, 2, 6, 8), (2, 3), (1, 2), (2, 1), (1, 0, 1, 1)),
    ((1, 2, 2, 5), (2, 2), (1, 1), (3, 3), (1, 1, 1, 1)),  # dilated: windows of padding only
]


def _node(op: str, types: list[tuple[tuple[int, ...], str]], attrs: dict):
    g = Graph(op)
    ins = [g.add_input(f"x{k}", TensorType(shape, dtype)) for k, (shape, dtype) in enumerate(types)]
    return g.add_node(op, ins, attrs)


def _input(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, size=shape)  # many exact ties
    if dtype == "i32":
        return x.astype(np.int32)
    x = x.astype(np.float32 if dtype == "f32" else np.float64)
    x[0, 0, 0, :2] = -np.inf  # the corner window: -inf cells after a padding cell
    x[0, 1, 1, 1] = np.nan
    return x


def _run_cuda(node, arrays: list[np.ndarray]) -> list[np.ndarray]:
    from numba import cuda

    kernel = kc.compile_node(node)
    outs = [cuda.device_array(v.shape, v.type.np_dtype) for v in node.outputs]
    kernel(*[cuda.to_device(a) for a in arrays], *outs)
    return [o.copy_to_host() for o in outs]


def _run_cpu(node, arrays: list[np.ndarray]) -> list[np.ndarray]:
    outs = [np.full(v.shape, 7, dtype=v.type.np_dtype) for v in node.outputs]
    cpu.compile_node(node)(*arrays, *outs)
    return outs


@pytest.mark.parametrize("dtype", ["f32", "f64", "i32"])
@pytest.mark.parametrize("shape,kernel,stride,dilation,padding", POOLS)
def test_padded_max_pool_cuda_matches_reference_and_cpu(shape, kernel, stride, dilation, padding, dtype):
    attrs = {"kernel": kernel, "stride": stride, "dilation": dilation, "padding": padding}
    node = _node("max_pool2d", [(shape, dtype)], attrs)
    x = _input(shape, dtype)
    (want,) = run_node(node, [x])
    np.testing.assert_array_equal(_run_cuda(node, [x])[0], want)
    np.testing.assert_array_equal(_run_cpu(node, [x])[0], want)
    if dtype == "i32":
        return
    dy = np.random.default_rng(4).standard_normal(want.shape).astype(x.dtype)
    grad = _node("max_pool2d_grad", [(shape, dtype), (want.shape, dtype)], attrs)
    (dx,) = run_node(grad, [x, dy])
    np.testing.assert_allclose(_run_cuda(grad, [x, dy])[0], dx, rtol=1e-6)
    np.testing.assert_allclose(_run_cpu(grad, [x, dy])[0], dx, rtol=1e-6)
