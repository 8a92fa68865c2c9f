"""ONNX ops on 16-bit floats rounded once, as ONNX Runtime does: widen the inputs, narrow the result.

graphc lowers some ONNX ops to several primitives (Celu to max, min, exp, mul, sub, add; Softmax to
max, sub, exp, sum, div; Gemm to matmul, mul, add), and on f16/bf16 values each primitive would
round its own result to 16 bits (``passes.legalize_half`` computes each in f32 and rounds it).
ONNX Runtime, and onnx's reference implementation that the node tests' expected values come
from, compute such an op in float32 and round once. For the single-output ops in
``ROUNDED_ONCE`` the converter therefore runs on the f32 widening of every f16/bf16 input, and its
output is rounded back to the input's 16-bit dtype once. bfloat16 (7 fraction bits) is where it
matters most: a rounding after each step drifts past the node tests' tolerance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir.types import DTYPES, HALF_DTYPES
from graphc.tensor import Tensor

from .context import Initializer

# Single-output ONNX ops whose one float output has their float inputs' dtype and whose converter
# emits several primitives.
ROUNDED_ONCE = frozenset(
    {
        "Celu",
        "Elu",
        "Selu",
        "Softplus",
        "Softsign",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Gelu",
        "Mish",
        "Swish",
        "Softmax",
        "LogSoftmax",
        "Gemm",
        "Conv",
        "ReduceMean",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceSumSquare",
        "LpNormalization",
        "MeanVarianceNormalization",
    }
)
_WIDE = "f32"


def _dtype(value: Any) -> str | None:
    if isinstance(value, Tensor):
        return value.value.dtype
    if isinstance(value, Initializer):
        value = value.array
    if isinstance(value, np.ndarray):
        return next((name for name, d in DTYPES.items() if d == value.dtype), None)
    return None


def widen_inputs(op_type: str, values: list[Any]) -> str | None:
    """For an op of ``ROUNDED_ONCE`` reading 16-bit floats: replace each such input in ``values``
    by its f32 widening (exact) and return the 16-bit dtype its output is rounded to; else None."""
    if op_type not in ROUNDED_ONCE:
        return None
    halves = {d for d in map(_dtype, values) if d in HALF_DTYPES}
    if len(halves) != 1:
        return None
    for i, v in enumerate(values):
        if _dtype(v) not in halves:
            continue
        if isinstance(v, Tensor):
            values[i] = v.to(_WIDE)
        elif isinstance(v, Initializer):
            values[i] = v.tensor().to(_WIDE)
        else:
            values[i] = np.asarray(v).astype(np.float32)
    return halves.pop()


def narrow_outputs(outs: list[Any], dtype: str) -> list[Any]:
    """The converter's outputs with each f32 Tensor rounded once to ``dtype``."""
    return [o.to(dtype) if isinstance(o, Tensor) and o.value.dtype == _WIDE else o for o in outs]
