"""graphc.functional's losses: nll_loss, cross_entropy, mse_loss, l1_loss, binary_cross_entropy_with_logits.

Each is written once out of graphc's primitives; in eager mode nll_loss and cross_entropy run as
one composite step (graphc/eager_composite.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.functional_activations import log_softmax
from graphc.functional_base import _eager, _float, _reduce, _t
from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, user_source
from graphc.tensor import where as _where

__all__ = ["nll_loss", "cross_entropy", "mse_loss", "l1_loss", "binary_cross_entropy_with_logits"]


def _class_mask(target: Tensor, n_classes: int, ndim: int) -> Tensor:
    """Bool one-hot [N, C, ...] of integer targets [N, ...] (a compare with a class-index const)."""
    ctx = target.ctx
    shape = (1, n_classes) + (1,) * (ndim - 2)
    classes = ctx.array(np.arange(n_classes, dtype=target.dtype).reshape(shape), name="classes")
    return target.unsqueeze(1) == classes


@_eager
def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of log-probabilities [N, C, ...] at integer targets [N, ...]."""
    logp, target = _t(input), _t(target)
    if (
        logp.ctx.eager
        and logp.value.dtype in ("f32", "f64")
        and (weight is None or isinstance(weight, (Tensor, np.ndarray)))
    ):
        from graphc import eager_composite  # eager mode: one composite step

        w = None if weight is None else _t(weight, like=logp)
        static = {"ignore_index": ignore_index, "reduction": reduction, "smoothing": 0.0}
        out = eager_composite.run(_nll, (logp, target, w), static)
        if out is not None:
            return out
    return _nll(logp, target, weight, ignore_index, reduction, 0.0)


def _nll(
    logp: Tensor, target: Tensor, weight: Any, ignore_index: int, reduction: str, smoothing: float
) -> Tensor:
    if logp.ndim == 1:
        logp, target = logp.unsqueeze(0), target.reshape(1)
        if reduction == "none":
            return _nll(logp, target, weight, ignore_index, reduction, smoothing).reshape(())
    if target.value.dtype not in ("i32", "i64"):
        raise GraphcError(f"{_at(user_source())}class targets must be integers, got {target.value.dtype}")
    expect = (logp.shape[0], *logp.shape[2:])
    if target.shape != expect:
        raise GraphcError(
            f"{_at(user_source())}cross_entropy/nll_loss: input {logp.shape} needs targets of shape "
            f"{expect}, got {target.shape}"
        )
    n_classes = logp.shape[1]
    if weight is None and getattr(logp.ctx, "eager", False):
        pre = _eager_targets(logp, target, ignore_index)
        if pre is not None:  # the target side's values at once (they need no gradient)
            onehot, valid, w_target, denom = pre
            picked = _where(onehot, logp, 0.0).sum(1)
            return _nll_tail(logp, picked, valid, w_target, denom, None, reduction, smoothing)
    onehot = _class_mask(target, n_classes, logp.ndim)
    picked = _where(onehot, logp, 0.0).sum(1)
    ignored = target == ignore_index
    valid = (~ignored).to(logp.value.dtype)
    bshape = (1, n_classes) + (1,) * (logp.ndim - 2)
    # Each target's class weight (1 without weights) is read with a gather: its kernels raise a
    # GraphcError naming a label outside [0, classes) at run time, on every backend, as PyTorch
    # does. ignore_index reads class 0 and is masked out by ``valid``.
    if weight is not None:
        w_vec = _t(weight, like=logp)
        if w_vec.shape != (n_classes,):
            raise GraphcError(
                f"{_at(user_source())}cross_entropy/nll_loss: weight must have shape ({n_classes},), "
                f"got {w_vec.shape}"
            )
        w = w_vec.reshape(bshape)
    else:
        w = None
        w_vec = logp.ctx.array(np.ones(n_classes, dtype=logp.dtype), name="class_weight")
    in_range = 0 <= ignore_index < n_classes  # then ignore_index is itself a safe index
    safe = target if in_range else _where(ignored, _t(0, like=target), target)
    w_target = logp.ctx.op("gather", w_vec, safe, axis=0) * valid
    denom = w_target.sum() if reduction == "mean" else None
    return _nll_tail(logp, picked, valid, w_target, denom, w, reduction, smoothing)


def _nll_tail(
    logp: Tensor,
    picked: Tensor,
    valid: Tensor,
    w_target: Tensor,
    denom: Tensor | None,
    w: Tensor | None,
    reduction: str,
    smoothing: float,
) -> Tensor:
    """The weighted loss from the picked log-probabilities (``denom``: the weights' sum for "mean")."""
    n_classes = logp.shape[1]
    loss = -(picked * w_target)
    if smoothing:
        smooth = -((logp * w) if w is not None else logp).sum(1) * valid
        if reduction == "mean":
            return loss.sum() / denom * (1.0 - smoothing) + smooth.sum() / denom * (smoothing / n_classes)
        loss = loss * (1.0 - smoothing) + smooth * (smoothing / n_classes)
        return _reduce(loss, reduction)
    if reduction == "mean":
        return loss.sum() / denom
    return _reduce(loss, reduction)


# (classes, label dtype, logits' ndim) -> the class indices _class_mask compares targets with.
_CLASSES: dict[tuple, np.ndarray] = {}


def _eager_targets(
    logp: Tensor, target: Tensor, ignore_index: int
) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """Eager mode, no class weights: the target side of ``_nll`` (class mask, ``valid``, each
    target's weight, their sum) computed directly with NumPy, the same values the ops give
    (comparisons, a cast of bools, ones gathered times ``valid``, the reference ``sum``). They
    need no gradient, so the tape holds them as leaves either way. None (the ops run) where a
    label is out of range, so the gather reports it as usual."""
    from graphc.eager import EagerValue, _type_of

    tv = target.value
    if type(tv) is not EagerValue or type(logp.value) is not EagerValue:
        return None
    labels = tv.data
    n_classes = logp.shape[1]
    if type(ignore_index) is not int or not -(2**31) <= ignore_index < 2**31:
        return None  # the ops path handles (and reports) any other ignore_index
    ignored = labels == ignore_index
    safe = labels if 0 <= ignore_index < n_classes else np.where(ignored, 0, labels)
    if safe.size and (safe.min() < 0 or safe.max() >= n_classes):
        return None
    key = (n_classes, labels.dtype, logp.ndim)
    classes = _CLASSES.get(key)
    if classes is None:
        shape = (1, n_classes) + (1,) * (logp.ndim - 2)
        classes = np.arange(n_classes, dtype=labels.dtype).reshape(shape)
        classes.flags.writeable = False
        if len(_CLASSES) >= 64:
            _CLASSES.clear()
        _CLASSES[key] = classes
    onehot = np.ascontiguousarray(labels.reshape(labels.shape[:1] + (1,) + labels.shape[1:]) == classes)
    valid = np.ascontiguousarray(~ignored, dtype=logp.value.type.np_dtype)
    w_target = valid * valid.dtype.type(1)  # the ones gathered, times valid
    # Tensor.sum() over all axes: the reference kernel's own call.
    denom = np.asarray(np.sum(w_target, axis=tuple(range(w_target.ndim)), keepdims=False))
    ctx = logp.ctx
    out = []
    for arr in (onehot, valid, w_target, denom.astype(w_target.dtype, copy=False)):
        out.append(Tensor(EagerValue(_type_of(arr), arr, False), ctx))
    return tuple(out)  # type: ignore[return-value]


@_eager
def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy of logits [N, C, ...] with int class targets [N, ...] or class probabilities."""
    x, target = _t(input), _t(target)
    if (
        x.ctx.eager
        and x.value.dtype in ("f32", "f64")
        and (weight is None or isinstance(weight, (Tensor, np.ndarray)))
    ):
        # Eager mode: the definition below traced once per signature, run as one tape entry.
        from graphc import eager_composite

        w = None if weight is None else _t(weight, like=x)
        static = {"ignore_index": ignore_index, "reduction": reduction, "label_smoothing": label_smoothing}
        out = eager_composite.run(_cross_entropy, (x, target, w), static)
        if out is not None:
            return out
    return _cross_entropy(x, target, weight, ignore_index, reduction, label_smoothing)


def _cross_entropy(
    x: Tensor, target: Tensor, weight: Any, ignore_index: int, reduction: str, label_smoothing: float
) -> Tensor:
    """``cross_entropy``'s definition (traced as is; eager mode runs it as one composite step)."""
    class_dim = 0 if x.ndim == 1 else 1
    logp = log_softmax(x, class_dim)
    if target.value.dtype in ("f32", "f64"):
        if target.shape != x.shape:
            raise GraphcError(
                f"{_at(user_source())}cross_entropy: targets must be integer class indices or float "
                f"probabilities of the input's shape {x.shape}, got {target.value.type}"
            )
        n_classes = x.shape[class_dim]
        if label_smoothing:
            target = target * (1.0 - label_smoothing) + label_smoothing / n_classes
        prod = logp * target
        if weight is not None:
            shape = (n_classes,) + (1,) * (x.ndim - class_dim - 1)
            prod = prod * _t(weight, like=logp).reshape(shape)
        loss = -prod.sum(class_dim)
        if reduction == "mean" and x.ndim > 1:
            return loss.sum() * (1.0 / (x.numel() // n_classes))
        return _reduce(loss, reduction)
    return _nll(logp, target, weight, ignore_index, reduction, label_smoothing)


@_eager
def mse_loss(
    input: Tensor, target: Tensor, size_average: Any = None, reduce: Any = None, reduction: str = "mean"
) -> Tensor:
    """Mean (or summed) squared error."""
    x = _t(input)
    d = x - _t(target, like=x)
    return _reduce(d * d, reduction)


@_eager
def l1_loss(
    input: Tensor, target: Tensor, size_average: Any = None, reduce: Any = None, reduction: str = "mean"
) -> Tensor:
    """Mean (or summed) absolute error."""
    x = _t(input)
    return _reduce((x - _t(target, like=x)).abs(), reduction)


@_eager
def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """Sigmoid + binary cross-entropy in the stable form max(x,0) - x*y + log(1 + exp(-|x|))."""
    x = _float(_t(input))
    y = _t(target, like=x).to(x.value.dtype)
    softplus_neg = (1.0 + (-x.abs()).exp()).log() + (-x).relu()  # log(1 + exp(-x))
    if pos_weight is not None:
        log_weight = (_t(pos_weight, like=x) - 1.0) * y + 1.0
        loss = (1.0 - y) * x + log_weight * softplus_neg
    else:
        loss = (1.0 - y) * x + softplus_neg
    if weight is not None:
        loss = loss * _t(weight, like=x)
    return _reduce(loss, reduction)
