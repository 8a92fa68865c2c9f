"""ONNX reductions over an empty axis: the reduction's identity element, in the reduced shape."""

from __future__ import annotations

import numpy as np

from graphc.tensor import Tensor

from ..context import NodeContext

# Per reduction: its identity for floats, and for integers/bools (None: the float one, cast).
_IDENTITY = {
    "ReduceMax": (-np.inf, "min"),
    "ReduceMin": (np.inf, "max"),
    "ReduceLogSum": (-np.inf, None),
    "ReduceLogSumExp": (-np.inf, None),
}


def identity_of(op_type: str, dtype: np.dtype) -> object:
    """The value ``op_type`` gives over no elements in ``dtype`` (max: -inf, False or the lowest int)."""
    value, int_end = _IDENTITY[op_type]
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return int_end == "max"
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return info.max if int_end == "max" else info.min
    return value


def empty_reduction(
    nc: NodeContext, x: Tensor, axes: tuple[int, ...], keepdims: bool, op_type: str | None = None
) -> Tensor | None:
    """The result of reducing ``x`` over ``axes`` when one of them is empty (else None): the identity."""
    if not any(x.shape[a] == 0 for a in axes):
        return None
    shape = tuple(1 if a in axes else d for a, d in enumerate(x.shape) if keepdims or a not in axes)
    dtype = np.dtype(x.value.type.np_dtype)
    return nc.tensor(np.full(shape, identity_of(op_type or nc.op_type, dtype), dtype=dtype), "empty_reduce")
