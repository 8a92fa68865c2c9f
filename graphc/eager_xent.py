"""Eager mode's fused cross-entropy: ``F.cross_entropy`` of logits [N, C] at integer labels [N] in
a dozen NumPy calls, recorded as ONE tape entry whose gradient is softmax - onehot.

The composite (graphc/eager_composite.py) runs the traced definition's ~21 kernels and keeps
every intermediate value for ``backward()``. Here the loss is computed with the same NumPy calls
the definition's kernels make, in the same order (max-subtract, exp, sum, log; the picked
log-probabilities negated, summed, divided by the count of valid labels), so its VALUE is the
composite's bit for bit; only the values the loss reads are computed (the picked entries, not
the whole log-softmax). The GRADIENT is not derived op by op: the tape entry is a composite
entry (``op`` ``"composite"``) whose small graph is ``sum(x * c)`` over a residual ``c`` = the
gradient of the loss with respect to the logits, ``(softmax - onehot) * valid / count`` (PyTorch's
formula), so ``backward()`` runs two kernels for it (a broadcast and a multiply) instead of
~22, with values within float rounding of the op-by-op gradients (not bit for bit).

Taken for float32/float64 logits [N, C], integer labels [N], no class weights, no label
smoothing, any reduction and ignore_index, every label in range (else the composite runs and
reports it). :data:`ENABLED` turns it off (the composite's bit-for-bit tests do).

``F.nll_loss`` of log-probabilities [N, C] takes the same path without the log-softmax (its
gradient: -onehot * valid / count). ``F.log_softmax`` (any float tensor, any dim) runs the
composite's five kernels' calls and records ``x - sum(x * softmax)`` over the residual softmax,
whose gradient is log_softmax's, ``g - softmax * sum(g)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir import TensorType
from graphc.tensor import Tensor

__all__ = ["ENABLED", "cross_entropy"]

ENABLED = True  # False: cross_entropy takes the composite (graphc/eager_composite.py)

_MAX_ENTRIES = 256
# ("linear_loss", N, C, dtype, reduction) or ("log_softmax", shape, dtype, dim) -> the tape entry's graph
_ENTRIES: dict[tuple, _Linear | _LogSoftmax] = {}
# (N, C) -> row indices times C (the flat index of row i's class 0)
_ROWS: dict[tuple, np.ndarray] = {}
_REDUCTIONS = ("mean", "sum", "none")
_LABELS = (np.dtype(np.int32), np.dtype(np.int64))  # the class targets the definition accepts
_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_max, _sum, _umax = np.maximum.reduce, np.add.reduce, np.maximum.reduce
_exp, _log, _any = np.exp, np.log, np.logical_or.reduce


class _Linear:
    """A composite entry (``eager_composite._Composite``'s fields that ``expand`` and
    ``eager_backward`` read) for ``out = sum(x * c, axes)``: slot 0 the logits, slot 1 the
    product, slot 2 the loss; ``c`` its one residual leaf."""

    def __init__(self, key: tuple, x_type: TensorType, reduction: str) -> None:
        from graphc.eager import EagerValue, _signature

        self.key = key
        x = EagerValue(x_type, None)  # type: ignore[arg-type]
        mul_attrs, (mul_t,), _, _ = _signature("mul", {}, [x, x])
        axes = [0, 1] if reduction != "none" else [1]
        prod = EagerValue(mul_t, None)  # type: ignore[arg-type]
        sum_attrs, (sum_t,), _, _ = _signature("sum", {"axes": axes, "keepdims": False}, [prod])
        self.records = [
            ("mul", mul_attrs, [("v", 0), ("leaf", 0)], 1, mul_t, 1),
            ("sum", sum_attrs, [("v", 1)], 2, sum_t, 1),
        ]
        self.out_slot = 2
        self.out_type = sum_t
        self.live_inputs = [0]
        self.leaf_types = [x_type]
        self.live_slots = [1]
        self.differentiable = True


def _entry(n: int, c: int, t: TensorType, reduction: str) -> _Linear:
    key = ("linear_loss", n, c, t.dtype, reduction)
    entry = _ENTRIES.get(key)
    if entry is None:
        if len(_ENTRIES) >= _MAX_ENTRIES:
            _ENTRIES.clear()
        entry = _ENTRIES[key] = _Linear(key, t, reduction)
    return entry


def _rows(n: int, c: int) -> np.ndarray:
    rows = _ROWS.get((n, c))
    if rows is None:
        rows = np.arange(n, dtype=np.intp) * c
        rows.flags.writeable = False
        if len(_ROWS) >= 64:
            _ROWS.clear()
        _ROWS[(n, c)] = rows
    return rows


def cross_entropy(x: Tensor, target: Tensor, static: dict, log_probs: bool = False) -> Tensor | None:
    """``F.cross_entropy(x, target, **static)`` fused (see the module's docstring), or None where
    the composite must run (another case, a label out of range, the "cpu" backend).
    ``log_probs``: ``x`` holds log-probabilities: ``F.nll_loss`` (its gradient is -onehot)."""
    import graphc.eager_fast as _fast
    from graphc.eager import _BACKEND, _SEQ, EAGER, EagerValue

    if not ENABLED or _BACKEND[0] != "reference":
        return None
    xv, tv = x.value, target.value
    if type(xv) is not EagerValue or type(tv) is not EagerValue or x.ctx is not EAGER:
        return None
    reduction, ignore_index = static.get("reduction"), static.get("ignore_index")
    if static.get("label_smoothing") or reduction not in _REDUCTIONS or type(ignore_index) is not int:
        return None
    xt = xv.type
    logits, labels = xv.data, tv.data
    if len(xt.shape) != 2 or xt.dtype not in ("f32", "f64") or labels.dtype not in _LABELS:
        return None
    n, c = xt.shape
    if labels.shape != (n,) or n == 0 or c == 0 or not -(2**31) <= ignore_index < 2**31:
        return None
    if 0 <= ignore_index < c:  # an ignore_index that is a class is picked like any label (weighted 0)
        ignored = labels == ignore_index
        some_ignored = bool(_any(ignored))
        safe = labels
        top = _umax(labels.view(_UNSIGNED[labels.dtype.itemsize]))  # a negative label: huge
    else:  # another ignore_index reads class 0; the common case: all labels in range, none ignored
        top = _umax(labels.view(_UNSIGNED[labels.dtype.itemsize]))
        some_ignored = False
        safe = labels
        if top >= c:
            ignored = labels == ignore_index
            some_ignored = bool(_any(ignored))
            if some_ignored:
                safe = np.where(ignored, 0, labels)
                top = _umax(safe.view(_UNSIGNED[safe.dtype.itemsize]))
    if top >= c:
        return None  # a label out of range: the composite's gather reports it
    flat = _rows(n, c) + safe
    dt = logits.dtype
    token = _fast._quiet_on()
    try:
        if log_probs:
            picked = logits.take(flat)
        else:  # log_softmax's kernels: x - max(x), exp, sum, log; the loss reads only the picked entries
            shifted = logits - _max(logits, axis=1, keepdims=True)
            e = _exp(shifted)
            z = _sum(e, axis=1, keepdims=True)
            picked = shifted.take(flat) - _log(z.reshape(n))  # log_softmax at the labels, its rounding
        # the definition's where(onehot, logp, 0).sum(1): + 0.0 (a -0.0 becomes 0.0); a label of
        # ignore_index that is no class picks nothing (0.0)
        picked += dt.type(0.0)
        if some_ignored:
            valid = (~ignored).astype(dt)
            if not 0 <= ignore_index < c:
                picked[ignored] = 0.0
            loss = -(picked * valid)
            count = _sum(valid, axis=0)
        else:
            loss = -picked
            count = dt.type(n)
        if reduction == "none":
            out = loss
        elif reduction == "mean":
            out = _sum(loss, axis=0, keepdims=True) / count
            out = out.reshape(())
        else:
            out = _sum(loss, axis=0, keepdims=True).reshape(())
        record = xv.requires_grad and EAGER.grad_enabled
        if record:
            # d loss / d x = (softmax - onehot) * valid (/ count for "mean"); nll_loss: -onehot * ...
            if log_probs:
                grad = np.zeros((n, c), dt)
                grad.put(flat, dt.type(-1.0))
            else:
                grad = e / z
                grad.put(flat, grad.take(flat) - dt.type(1.0))
            if some_ignored:
                grad *= valid.reshape(n, 1)
            if reduction == "mean":
                grad /= count
    finally:
        _fast._quiet_off(token)
    entry = _entry(n, c, xt, reduction)
    if not record:
        return _fast._plain(entry.out_type, out, EAGER)
    from graphc.eager_composite import COMPOSITE

    v = EagerValue(entry.out_type, out, True)
    v.op = COMPOSITE
    v.attrs = {"composite": entry, "leaves": [grad], "values": [grad]}
    v.inputs = (xv,)
    v.seq = next(_SEQ)
    v._source = _fast.source_ref(1)
    return Tensor(v, EAGER)


def fused_for(fn: Any) -> Any:
    """The fused eager function standing in for the composite definition ``fn``, or None."""
    from graphc.functional_activations import _log_softmax
    from graphc.functional_losses import _cross_entropy, _nll

    fused = {_cross_entropy: _fused_cross_entropy, _nll: _fused_nll, _log_softmax: _fused_log_softmax}
    return fused.get(fn)


def _fused_cross_entropy(operands: tuple, static: dict) -> Tensor | None:
    x, target, weight = operands
    if weight is not None:
        return None
    return cross_entropy(x, target, static)


def _fused_nll(operands: tuple, static: dict) -> Tensor | None:
    logp, target, weight = operands
    if weight is not None or static.get("smoothing"):
        return None
    return cross_entropy(logp, target, {**static, "label_smoothing": 0.0}, log_probs=True)


class _LogSoftmax:
    """The composite entry of a fused log_softmax along ``d``: ``out = x - sum(x * p, d)`` over the
    residual ``p`` = softmax(x), whose gradient is log_softmax's, ``g - p * sum(g, d)``. Slots: 0
    the input, 1 the product, 2 its sum (kept dims), 3 the output."""

    def __init__(self, key: tuple, x_type: TensorType, d: int) -> None:
        from graphc.eager import EagerValue, _signature

        self.key = key
        x = EagerValue(x_type, None)  # type: ignore[arg-type]
        mul_attrs, (mul_t,), _, _ = _signature("mul", {}, [x, x])
        prod = EagerValue(mul_t, None)  # type: ignore[arg-type]
        sum_attrs, (sum_t,), _, _ = _signature("sum", {"axes": [d], "keepdims": True}, [prod])
        total = EagerValue(sum_t, None)  # type: ignore[arg-type]
        sub_attrs, (sub_t,), _, _ = _signature("sub", {}, [x, total])
        self.records = [
            ("mul", mul_attrs, [("v", 0), ("leaf", 0)], 1, mul_t, 1),
            ("sum", sum_attrs, [("v", 1)], 2, sum_t, 1),
            ("sub", sub_attrs, [("v", 0), ("v", 2)], 3, sub_t, 1),
        ]
        self.out_slot = 3
        self.out_type = sub_t
        self.live_inputs = [0]
        self.leaf_types = [x_type]
        self.live_slots = [1, 2]
        self.differentiable = True


def _fused_log_softmax(operands: tuple, static: dict) -> Tensor | None:
    """``F.log_softmax(x, dim)`` with the composite's kernels' calls (x - max, exp, sum, log, the
    subtraction: the same bits) and a tape entry whose gradient is ``g - softmax * sum(g)``."""
    import graphc.eager_fast as _fast
    from graphc.eager import _BACKEND, _SEQ, EAGER, EagerValue
    from graphc.functional_activations import _softmax_dim

    (x,) = operands
    xv = x.value
    if not ENABLED or _BACKEND[0] != "reference" or type(xv) is not EagerValue or x.ctx is not EAGER:
        return None
    t = xv.type
    ndim = len(t.shape)
    d = static.get("dim")
    d = _softmax_dim(ndim, d) if d is None or type(d) is int else None
    if d is None or t.dtype not in ("f32", "f64") or not -ndim <= d < ndim or ndim == 0 or 0 in t.shape:
        return None
    d %= ndim
    data = xv.data
    token = _fast._quiet_on()
    try:
        shifted = data - _max(data, axis=d, keepdims=True)
        e = _exp(shifted)
        z = _sum(e, axis=d, keepdims=True)
        out = shifted - _log(z)
        record = xv.requires_grad and EAGER.grad_enabled
        if record:
            p = e / z
    finally:
        _fast._quiet_off(token)
    key = ("log_softmax", t.shape, t.dtype, d)
    entry = _ENTRIES.get(key)
    if entry is None:
        if len(_ENTRIES) >= _MAX_ENTRIES:
            _ENTRIES.clear()
        entry = _ENTRIES[key] = _LogSoftmax(key, t, d)  # type: ignore[assignment]
    if not out.flags.c_contiguous:
        out = np.ascontiguousarray(out)
    if not record:
        return _fast._plain(entry.out_type, out, EAGER)
    from graphc.eager_composite import COMPOSITE

    v = EagerValue(entry.out_type, out, True)
    v.op = COMPOSITE
    v.attrs = {"composite": entry, "leaves": [p], "values": [p, z]}
    v.inputs = (xv,)
    v.seq = next(_SEQ)
    v._source = _fast.source_ref(1)
    return Tensor(v, EAGER)
