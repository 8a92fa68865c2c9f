"""ONNX loss ops: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (opset 12+).

Both follow the ONNX spec (and onnx's reference implementation): input [N, C, d1, ...] (log-
probabilities, or logits for SoftmaxCrossEntropyLoss), integer targets [N, d1, ...], optional
class weights [C]. A target equal to ``ignore_index`` adds no loss and weighs 0, so the "mean"
reduction divides by the sum of the weights of the non-ignored targets (their count without
weights). Each target's weight is read with a gather, whose kernels raise a GraphcError at run
time for a label outside [0, C) that is not ignored. f16/bf16 inputs are computed in f32 and
rounded once, as ONNX Runtime does.
"""

from __future__ import annotations

import numpy as np

from graphc import functional as F
from graphc.ir import to_numpy_dtype
from graphc.ir.types import FLOAT_DTYPES, HALF_DTYPES
from graphc.tensor import Tensor

from ..context import NodeContext
from ..registry import converter

_REDUCTIONS = ("none", "sum", "mean")


@converter("NegativeLogLikelihoodLoss", since=12)
def negative_log_likelihood_loss(nc: NodeContext) -> list:
    """The loss -input[n, target[n, d...], d...] (times the target's class weight), reduced."""
    x, target, weight, ignore_index, reduction, dtype = _operands(nc)
    return [_narrow(nc, _nll(nc, x, target, weight, ignore_index, reduction), dtype)]


@converter("SoftmaxCrossEntropyLoss", since=12)
def softmax_cross_entropy_loss(nc: NodeContext) -> list:
    """NegativeLogLikelihoodLoss of log_softmax(scores) over axis 1; output 1 (optional) is that
    log_softmax."""
    x, target, weight, ignore_index, reduction, dtype = _operands(nc)
    log_prob = F.log_softmax(x, 1)
    loss = _nll(nc, log_prob, target, weight, ignore_index, reduction)
    outs = [_narrow(nc, loss, dtype)]
    if nc.n_outputs > 1:
        outs.append(_narrow(nc, log_prob, dtype))
    return outs


def _operands(nc: NodeContext) -> tuple[Tensor, Tensor, Tensor | None, int | None, str, str]:
    """Checked inputs and attributes: (input widened to f32 if 16-bit, target, weight or None,
    ignore_index or None, reduction, the input's and so the outputs' dtype)."""
    most = 2 if nc.op_type == "SoftmaxCrossEntropyLoss" else 1
    if nc.n_outputs > most:
        raise nc.fail(f"has {nc.n_outputs} outputs, the op has at most {most}")
    reduction = nc.attrs.string("reduction", "mean", _REDUCTIONS)
    ignore_index = nc.attrs.int("ignore_index", 0) if "ignore_index" in nc.attrs else None
    x = nc.t(0)
    dtype = x.value.dtype
    if dtype not in FLOAT_DTYPES:
        raise nc.fail(f"input 0 must be float, got {dtype}")
    if x.ndim < 2:
        raise nc.fail(f"input 0 must be [N, C, d1, ...] (rank >= 2), got shape {list(x.shape)}")
    target = nc.t(1)
    if target.value.dtype not in ("i32", "i64"):
        raise nc.fail(f"input 1 (target) must be int32 or int64, got {target.value.dtype}")
    expect = (x.shape[0], *x.shape[2:])
    if tuple(target.shape) != expect:
        raise nc.fail(
            f"input 1 (target) must have shape {list(expect)} for input 0 of shape {list(x.shape)}, "
            f"got {list(target.shape)}"
        )
    weight = None
    if nc.has(2):
        weight = nc.t(2)
        if weight.value.dtype != dtype:
            raise nc.fail(f"input 2 (weight) must have input 0's dtype {dtype}, got {weight.value.dtype}")
        if tuple(weight.shape) != (x.shape[1],):
            raise nc.fail(f"input 2 (weight) must have shape [{x.shape[1]}], got {list(weight.shape)}")
    if dtype in HALF_DTYPES:  # computed in f32, rounded once (_narrow)
        x = nc.op("cast", x, dtype="f32")
        weight = None if weight is None else nc.op("cast", weight, dtype="f32")
    if ignore_index is not None:
        info = np.iinfo(to_numpy_dtype(target.value.dtype))
        if not info.min <= ignore_index <= info.max:
            ignore_index = None  # no target can equal it: nothing is ignored
    return x, target, weight, ignore_index, reduction, dtype


def _narrow(nc: NodeContext, t: Tensor, dtype: str) -> Tensor:
    """``t`` in ``dtype`` (a 16-bit input's result, computed in f32)."""
    return t if t.value.dtype == dtype else nc.op("cast", t, dtype=dtype)


def _nll(
    nc: NodeContext,
    logp: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int | None,
    reduction: str,
) -> Tensor:
    """The spec's loss of log-probabilities [N, C, d...] at ``target`` [N, d...], reduced."""
    n_classes, dtype, tdtype = logp.shape[1], logp.value.dtype, target.value.dtype
    bshape = (1, n_classes) + (1,) * (logp.ndim - 2)
    classes = nc.tensor(np.arange(n_classes, dtype=to_numpy_dtype(tdtype)).reshape(bshape), "loss_classes")
    onehot = nc.op("eq", nc.op("reshape", target, shape=(target.shape[0], 1, *target.shape[1:])), classes)
    zero = nc.ctx.const(0.0, dtype)
    picked = nc.op("sum", nc.op("where", onehot, logp, zero), axes=(1,), keepdims=False)
    if weight is None:
        weight = nc.tensor(np.ones(n_classes, dtype=to_numpy_dtype(dtype)), "loss_class_weight")
    if ignore_index is None:
        w_target = nc.op("gather", weight, target, axis=0)
    else:
        ignored = nc.op("eq", target, nc.ctx.const(ignore_index, tdtype))
        # An ignored target reads class 0 (any index would do: its weight is zeroed).
        safe = (
            target
            if 0 <= ignore_index < n_classes
            else nc.op("where", ignored, nc.ctx.const(0, tdtype), target)
        )
        w_target = nc.op("where", ignored, zero, nc.op("gather", weight, safe, axis=0))
        # An ignored target's loss is 0 even where its picked log-probability is -inf.
        picked = nc.op("where", ignored, zero, picked)
    loss = nc.op("neg", nc.op("mul", picked, w_target))
    if reduction == "none":
        return loss
    every = tuple(range(loss.ndim))
    total = nc.op("sum", loss, axes=every, keepdims=False)
    if reduction == "sum":
        return total
    return nc.op("div", total, nc.op("sum", w_target, axes=every, keepdims=False))
