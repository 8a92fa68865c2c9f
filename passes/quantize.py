"""quantize_matmuls: dequantize -> matmul patterns become the integer GEMM plus a float epilogue.

The pattern (what ``graphc.quantization`` writes, and the QDQ form of ONNX models)::

    y = matmul(dequantize(qa, sa, za), W)      W = dequantize(qw, sw, 0)  or  transpose of it

with ``qa`` an i8/u8 activation of rank >= 2 quantized per tensor (``sa``, ``za`` scalars), and
``qw`` a 2-D i8/u8 weight quantized symmetrically (zero point a compile-time 0) per tensor or per
output channel (``sw`` of shape (), or 1 along the contraction axis). Since
``sum_k (qa - za) sa * qw sw = sa sw (sum_k qa qw - za sum_k qw)``, it becomes::

    acc = qmatmul(qa, qb)                              i32, exact: qa @ qb.T, qb [n, k] (qw
                                                       itself under a transpose, else qw.T)
    y   = cast(acc - za * rowsum(qb), f32) * (sa * sw)  the dequantizing epilogue

(activations of rank > 2 are reshaped to rows and back). The epilogue, with whatever bias add and
activation follow, is elementwise over the product, so ``fusion`` makes it one kernel reading the
i32 product; ``constant_fold`` folds ``rowsum(qb)`` and ``sa * sw`` when they are constants. The
result equals the float matmul of the dequantized operands up to float32 rounding of the last
multiply (the integer sum is exact; the float path rounds at every step).
"""

from __future__ import annotations

import numpy as np

from graphc.ir import Graph, Node, Value
from graphc.ir.types import QUANT_DTYPES

from .rewrite import Pat, PatternMatcher, Rewriter, graph_rewrite
from .util import graph_pass

_qa, _sa, _za = Pat.var("qa"), Pat.var("sa"), Pat.var("za")
_qw, _sw, _zw = Pat.var("qw"), Pat.var("sw"), Pat.var("zw")
_ACT = Pat.op("dequantize", _qa, _sa, _za)
_WEIGHT = Pat.op("dequantize", _qw, _sw, _zw)


def _is_zero(rw: Rewriter, v: Value) -> bool:
    arr = rw.const(v)
    return arr is not None and not np.any(arr)


def _lower(
    rw: Rewriter,
    node: Node,
    qa: Value,
    sa: Value,
    za: Value,
    qw: Value,
    sw: Value,
    zw: Value,
    transposed: bool,
) -> Value | None:
    out = node.output
    if qa.dtype not in QUANT_DTYPES or qw.dtype not in QUANT_DTYPES or qa.type.rank < 2 or qw.type.rank != 2:
        return None
    if sa.shape != () or za.shape != () or not _is_zero(rw, zw):
        return None
    # Per output channel: the weight scale varies only along the output axis.
    n_axis, k_axis = (0, 1) if transposed else (1, 0)
    if sw.shape != () and (sw.type.rank != 2 or sw.shape[k_axis] != 1):
        return None
    qb = qw if transposed else rw.emit("transpose", [qw], perm=(1, 0))  # [n, k], as qmatmul takes it
    n, k = qb.shape
    rows = qa if qa.type.rank == 2 else rw.emit("reshape", [qa], shape=(qa.type.numel // k, k))
    acc = rw.emit("qmatmul", [rows, qb])
    rowsum = rw.emit("sum", [rw.emit("cast", [qb], dtype="i32")], axes=(1,), keepdims=False)
    shift = rw.emit("mul", [rw.emit("cast", [za], dtype="i32"), rowsum])
    centered = rw.emit("cast", [rw.emit("sub", [acc, shift])], dtype=out.dtype)
    col_scale = sw if sw.shape == () else rw.emit("reshape", [sw], shape=(sw.shape[n_axis],))
    if col_scale.dtype != out.dtype or sa.dtype != out.dtype:
        return None
    y = rw.emit("mul", [centered, rw.emit("mul", [sa, col_scale])])
    return y if y.shape == out.shape else rw.emit("reshape", [y], shape=out.shape)


RULES = PatternMatcher(
    [
        (
            Pat.op(
                "matmul",
                _ACT,
                Pat.op("transpose", _WEIGHT, where=lambda rw, v: rw.producer(v).attrs["perm"] == (1, 0)),
            ),
            lambda rw, node, **b: _lower(rw, node, transposed=True, **b),
        ),
        (Pat.op("matmul", _ACT, _WEIGHT), lambda rw, node, **b: _lower(rw, node, transposed=False, **b)),
    ]
)


@graph_pass("quantize_matmuls")
def quantize_matmuls(graph: Graph) -> Graph:
    """Rewrite every matching dequantize -> matmul into ``qmatmul`` and its epilogue (in place)."""
    graph_rewrite(graph, RULES)
    return graph
