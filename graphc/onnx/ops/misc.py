"""ONNX ops graphc has no primitive for, built from its primitives: TopK, Einsum, Trilu."""

from __future__ import annotations

import math

import numpy as np

from graphc.ir import to_numpy_dtype
from graphc.ir.types import FLOAT_DTYPES

from ..context import NodeContext
from ..registry import converter
from .shape import shape_of


@converter("Trilu", since=14)
def trilu(nc: NodeContext) -> list:
    """Keep the upper (lower) triangle of the last two axes, offset by k."""
    dims = shape_of(nc.inputs[0])
    if len(dims) < 2:
        raise nc.fail("needs rank >= 2")
    k = nc.static_ints(1, "k")[0] if nc.has(1) else 0
    upper = bool(nc.attrs.int("upper", 1, 0, 1))
    rows, cols = dims[-2:]
    keep = (
        np.triu(np.ones((rows, cols), dtype=bool), k)
        if upper
        else np.tril(np.ones((rows, cols), dtype=bool), k)
    )
    if nc.is_static(0):
        arr = nc.static(0)
        return [np.where(keep, arr, np.zeros((), arr.dtype))]
    x = nc.t(0)
    zero = nc.ctx.const(False if x.value.dtype == "bool" else 0, x.value.dtype)
    return [nc.op("where", nc.tensor(keep, "trilu_mask"), x, zero)]


@converter("TopK", since=10)
def topk(nc: NodeContext) -> list:
    """The k largest (smallest) values along ``axis`` and their indices, by k arg-max steps.

    Ties go to the lower index, as in ONNX; NaN counts as the largest value.
    """
    x = nc.t(0)
    axis = nc.axis(nc.attrs.int("axis", -1), x.ndim)
    (k,) = nc.static_ints(1, "K", 0, x.shape[axis])
    if k > MAX_K:
        raise nc.fail(f"K={k} is more than graphc's TopK supports ({MAX_K}: it unrolls one arg-max per k)")
    largest = bool(nc.attrs.int("largest", 1, 0, 1))
    nc.attrs.int("sorted", 1, 0, 1)
    dtype = x.value.dtype
    if dtype == "bool":
        raise nc.fail("needs a numeric input, got bool")
    work = x if largest else _reversed_order(nc, x)
    positions = np.arange(x.shape[axis], dtype=np.int64).reshape(
        [x.shape[axis] if a == axis else 1 for a in range(x.ndim)]
    )
    pos = nc.tensor(positions, "topk_positions")
    lowest = -math.inf if dtype in FLOAT_DTYPES else int(np.iinfo(to_numpy_dtype(dtype)).min)
    low = nc.ctx.const(lowest, dtype)
    values, indices = [], []
    for _ in range(k):
        idx = nc.op("argmax", work, axis=axis, keepdims=True)
        values.append(_take(nc, x, idx, pos, axis))
        indices.append(idx)
        work = nc.op("where", nc.op("eq", pos, idx), low, work)
    if k == 0:
        raise nc.fail("K=0 gives empty outputs, which graphc does not support")
    vals = values[0] if k == 1 else nc.op("concat", *values, axis=axis)
    inds = indices[0] if k == 1 else nc.op("concat", *indices, axis=axis)
    return [vals, inds]


def _reversed_order(nc: NodeContext, x):
    """Values whose order is x's reversed: -x for floats, the bitwise complement for integers
    (-1 - x or max - x: exact where -x wraps, at INT_MIN and for every unsigned x > 0)."""
    dtype = x.value.dtype
    if dtype in FLOAT_DTYPES:
        return nc.op("neg", x)
    info = np.iinfo(to_numpy_dtype(dtype))
    top = -1 if info.min < 0 else int(info.max)
    return nc.op("sub", nc.ctx.const(top, dtype), x)


def _take(nc: NodeContext, x, idx, pos, axis: int):
    """x at ``idx`` (keepdims arg-max indices) along ``axis``: a masked sum."""
    hit = nc.op("eq", pos, idx)
    zero = nc.ctx.const(0, x.value.dtype)
    return nc.op("sum", nc.op("where", hit, x, zero), axes=(axis,), keepdims=True)


MAX_K = 256


@converter("Einsum", since=12)
def einsum(nc: NodeContext) -> list:
    """Einstein summation with graphc.einsum (torch's semantics, which ONNX's follow: diagonals,
    ``...`` broadcasting, the implicit output of the letters used once, sorted)."""
    from graphc.einsum import einsum as graphc_einsum

    eq = nc.attrs.raw_string("equation")
    if eq is None:
        raise nc.fail("missing attribute 'equation'")
    ts = nc.ts()
    if len({t.value.dtype for t in ts}) > 1:
        raise nc.fail("inputs differ in dtype")
    return [graphc_einsum(eq.replace(" ", ""), *ts)]
