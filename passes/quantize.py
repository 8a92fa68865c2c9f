"""quantize_matmuls: dequantize -> matmul patterns become the integer GEMM plus a float epilogue.

The pattern (what ``graphc.quantization`` writes, and the QDQ form of ONNX models)::

    y = matmul(dequantize(qa, sa, za), W)      W = dequantize(qw, sw, 0)  or  transpose of it

with ``qa`` an i8/u8 activation of rank >= 2 quantized per tensor (``sa``, ``za`` scalars), and
``qw`` a 2-D i8/u8 weight quantized symmetrically (zero point a compile-time 0) per tensor or per
output channel (``sw`` of shape (), or 1 along the contraction axis). Since
``sum_k (qa - za) sa * qw sw = sa sw (sum_k qa qw - za sum_k qw)``, it becomes::

    y = qlinear(qa, qb, za * rowsum(qb), sa * sw, 0)     qb [n, k]: qw itself under a transpose,
                                                         else qw.T

``qlinear`` (ir/ops/quantized.py) is the int8 GEMM ``acc = qa @ qb.T`` (i32, exact) with its epilogue
``cast(acc - shift, f32) * scale + bias`` applied as each output is stored (activations of rank
> 2 are reshaped to rows and back). Further rules fold what follows into that epilogue, one step
each, while the qlinear has no other reader:

    add(y, c)                  c per column or per tensor   -> bias c (when the bias is still 0)
    where(le(y, 0), 0, y)      the traced relu              -> relu=True
    quantize(y, s, z)          the next layer's activation  -> requantized i8/u8 output

so a ReLU MLP layer becomes one kernel from u8 activations to the next layer's u8 activations.
``constant_fold`` folds ``rowsum(qb)`` and ``sa * sw`` when they are constants. The result
equals the float matmul of the dequantized operands up to float32 rounding of the last multiply
(the integer sum is exact; the float path rounds at every step); the folded epilogue computes
the same float32 operations as the ops it replaces, in the same order.
"""

from __future__ import annotations

import numpy as np

from graphc.ir import Graph, Node, Value
from graphc.ir.types import INT8_DTYPES

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
    if qa.dtype not in INT8_DTYPES or qw.dtype not in INT8_DTYPES or qa.type.rank < 2 or qw.type.rank != 2:
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
    rowsum = rw.emit("sum", [rw.emit("cast", [qb], dtype="i32")], axes=(1,), keepdims=False)
    shift = rw.emit("mul", [rw.emit("cast", [za], dtype="i32"), rowsum])
    col_scale = sw if sw.shape == () else rw.emit("reshape", [sw], shape=(sw.shape[n_axis],))
    if col_scale.dtype != out.dtype or sa.dtype != out.dtype:
        return None
    scale = rw.emit("mul", [sa, col_scale])
    y = rw.emit("qlinear", [rows, qb, shift, scale, rw.scalar(0.0, out.dtype)], relu=False)
    return y if y.shape == out.shape else rw.emit("reshape", [y], shape=out.shape)


def _lower_conv(
    rw: Rewriter,
    node: Node,
    qa: Value,
    sa: Value,
    za: Value,
    qw: Value,
    sw: Value,
    zw: Value,
) -> Value | None:
    """matmul(reshape(dequantize(qw [O, C, kh, kw])), im2col(dequantize(qa))) -> qconv2d."""
    out = node.output
    cols = rw.producer(node.inputs[1])
    o = qw.shape[0] if qw.type.rank == 4 else -1
    if qa.dtype not in INT8_DTYPES or qw.dtype not in INT8_DTYPES or qa.type.rank != 4 or o < 0:
        return None
    if sa.shape != () or za.shape != () or not _is_zero(rw, zw) or sw.shape not in ((), (o, 1, 1, 1)):
        return None
    if tuple(cols.attrs["kernel"]) != qw.shape[2:] or qa.shape[1] != qw.shape[1] or out.type.rank != 3:
        return None
    if sw.dtype != out.dtype or sa.dtype != out.dtype:
        return None
    rowsum = rw.emit("sum", [rw.emit("cast", [qw], dtype="i32")], axes=(1, 2, 3), keepdims=False)
    shift = rw.emit("mul", [rw.emit("cast", [za], dtype="i32"), rowsum])
    col_scale = sw if sw.shape == () else rw.emit("reshape", [sw], shape=(o,))
    scale = rw.emit("mul", [sa, col_scale])
    window = {k: cols.attrs[k] for k in ("stride", "padding", "dilation")}
    w = rw.emit("transpose", [qw], perm=(0, 2, 3, 1))  # [O, kh, kw, C], as qconv2d takes it
    return rw.emit("qconv2d", [qa, w, za, shift, scale, rw.scalar(0.0, out.dtype)], relu=False, **window)


_GEMMS = {"qlinear": 2, "qconv2d": 3}  # op -> where its epilogue operands (shift, ...) start


def _gemm(rw: Rewriter, v: Value, uses: int) -> tuple[Node, tuple[int, ...] | None, int] | None:
    """The qlinear/qconv2d making ``v`` (directly, or under one reshape that keeps its channel
    axis) if its epilogue can take one more step: no ReLU, no requantize yet, ``v`` read ``uses``
    times and nothing else reading the GEMM. Returns the node, the reshape's shape (or None), and
    the channel axis of ``v``."""
    shape = None
    node = rw.producer(v)
    if node is not None and node.op == "reshape" and rw.uses(node.inputs[0]) == 1:
        shape, node = node.attrs["shape"], rw.producer(node.inputs[0])
    if node is None or node.op not in _GEMMS or rw.uses(v) != uses:
        return None
    if len(node.inputs) != _GEMMS[node.op] + 3 or node.attrs["relu"]:
        return None
    own = node.output.shape
    axis = len(own) - 1 if node.op == "qlinear" else 1
    if shape is not None:
        keep = shape[-1] == own[-1] if node.op == "qlinear" else tuple(shape[:2]) == own[:2]
        if not keep:
            return None
        axis = len(shape) - 1 if node.op == "qlinear" else 1
    return node, shape, axis


def _rebuild(
    rw: Rewriter, gemm: Node, inputs: list[Value], shape: tuple[int, ...] | None, relu: bool
) -> Value:
    attrs = {k: v for k, v in gemm.attrs.items() if k != "relu"}
    y = rw.emit(gemm.op, inputs, relu=relu, **attrs)
    return y if shape is None else rw.emit("reshape", [y], shape=shape)


def _fold_bias(rw: Rewriter, node: Node, q: Value, c: Value) -> Value | None:
    """add(gemm, c), c constant along all but the channel axis -> the GEMM with bias c."""
    found = _gemm(rw, q, 1)
    if found is None or c.dtype != q.dtype or node.output.shape != q.shape:
        return None
    gemm, shape, axis = found
    first = _GEMMS[gemm.op]
    if not rw.is_all(gemm.inputs[first + 2], 0.0):
        return None
    dims = (1,) * (q.type.rank - c.type.rank) + c.shape
    if any(d != 1 for k, d in enumerate(dims) if k != axis):
        return None
    c = rw.emit("reshape", [c], shape=(dims[axis],) if dims[axis] > 1 else ())
    return _rebuild(rw, gemm, [*gemm.inputs[: first + 2], c], shape, relu=False)


def _fold_relu(rw: Rewriter, node: Node, q: Value, mask: Value) -> Value | None:
    """where(le(gemm, 0), 0, gemm) (a traced relu) -> the GEMM with relu."""
    found = _gemm(rw, q, 2)
    if found is None or rw.uses(mask) != 1:
        return None
    gemm, shape, _ = found
    return _rebuild(rw, gemm, list(gemm.inputs), shape, relu=True)


def _fold_quantize(rw: Rewriter, node: Node, q: Value, os: Value, oz: Value) -> Value | None:
    """quantize(gemm, s, z) per tensor -> the GEMM requantizing its output (to i8/u8)."""
    if os.shape != () or oz.shape != () or os.dtype != q.dtype or oz.dtype not in INT8_DTYPES:
        return None
    gemm = rw.producer(q)
    shape = None
    if gemm is not None and gemm.op == "reshape" and rw.uses(gemm.inputs[0]) == 1:
        shape, gemm = gemm.attrs["shape"], rw.producer(gemm.inputs[0])
    if gemm is None or gemm.op not in _GEMMS or rw.uses(q) != 1:
        return None
    if len(gemm.inputs) != _GEMMS[gemm.op] + 3:
        return None
    return _rebuild(rw, gemm, [*gemm.inputs, os, oz], shape, relu=gemm.attrs["relu"])


_q = Pat.var("q", where=lambda rw, v: rw.op_of(v) in (*_GEMMS, "reshape"))
_ZERO = Pat.cst(0.0)
_COLS = Pat.op("im2col", _ACT)

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
        (Pat.op("matmul", Pat.op("reshape", _WEIGHT), _COLS), _lower_conv),
        (Pat.op("add", _q, Pat.var("c"), commutative=True), _fold_bias),
        (Pat.op("where", Pat.op("le", _q, _ZERO, name="mask"), _ZERO, _q), _fold_relu),
        (Pat.op("quantize", _q, Pat.var("os"), Pat.var("oz")), _fold_quantize),
    ]
)


@graph_pass("quantize_matmuls")
def quantize_matmuls(graph: Graph) -> Graph:
    """Rewrite every matching dequantize -> matmul into ``qlinear``, folding bias, relu and the next
    quantize into its epilogue (in place)."""
    graph_rewrite(graph, RULES)
    return graph
