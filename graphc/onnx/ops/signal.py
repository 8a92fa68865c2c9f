"""Window-function ONNX ops (HannWindow, HammingWindow, BlackmanWindow): constants of a constant size."""

from __future__ import annotations

import numpy as np

from graphc.ir.types import to_numpy_dtype

from ..context import NodeContext
from ..proto import graphc_dtype
from ..registry import STATIC_SLOTS, converter
from .shape import check_static_size

STATIC_SLOTS.update({"HannWindow": (0,), "HammingWindow": (0,), "BlackmanWindow": (0,)})


def window(kind: str, size: int, periodic: bool) -> np.ndarray:
    """The float64 window of ``size`` points (periodic: of a window of size + 1 without its last point)."""
    n = np.arange(size, dtype=np.float64)
    denom = size if periodic else size - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        phase = 2.0 * np.pi * n / denom if denom else np.zeros(size)
    if kind == "HannWindow":
        return np.sin(phase / 2.0) ** 2
    if kind == "HammingWindow":
        alpha = 25.0 / 46.0
        return alpha - (1.0 - alpha) * np.cos(phase)
    return 0.42 - 0.5 * np.cos(phase) + 0.08 * np.cos(2.0 * phase)


@converter("HannWindow", "HammingWindow", "BlackmanWindow", since=17)
def window_op(nc: NodeContext) -> list:
    """A window of a constant size (input 0): ``periodic`` (default 1) and ``output_datatype`` (default
    float). Hamming uses ONNX's alpha = 25/46."""
    (size,) = nc.static_ints(0, "size", 0, 2**31)
    if nc.static(0, "size").ndim != 0:
        raise nc.fail("size must be a scalar")
    periodic = bool(nc.attrs.int("periodic", 1, 0, 1))
    dtype = graphc_dtype(nc.attrs.int("output_datatype", 1, 0, 64), nc.where)
    check_static_size(nc, (size,))
    values = window(nc.op_type, size, periodic)
    if dtype == "bool":
        return [values != 0]
    np_dtype = to_numpy_dtype(dtype)
    if np.issubdtype(np_dtype, np.integer):
        values = np.trunc(values)
    return [values.astype(np_dtype)]
