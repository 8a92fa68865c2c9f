"""Eager mode's fast path for ``F.linear`` (so ``nn.Linear``): ``x @ weight.T + bias`` in one call.

The general path runs three ops through three layers each (``weight.T`` -> ``permute`` -> the
transpose; ``matmul``; ``+ bias``), with operand coercions between them. Here the three ops'
NumPy calls run back to back (the transpose kernel's C-contiguous copy, ``np.matmul``, ``np.add``:
the same calls, so the same bits; for a matrix input, ``ndarray.dot``, np.matmul's bits, as
``eager_fast`` runs ``@``) and the results are recorded on the tape exactly as the
general path records them (``transpose``, ``matmul``, ``add``: each only where an operand
requires grad), so ``backward()`` differentiates the same ops. The entries (attributes, output
types) are ``graphc.eager_fast``'s, resolved once per (input, weight, bias) type signature; a
signature any of them refuses (another dtype, a 1-D input, the "cpu" backend) takes the general
path, which reports the errors as before.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from graphc.eager import _BACKEND, EagerValue
from graphc.eager_fast import (
    _IGNORE,
    _binary_entry,
    _cv_reset,
    _cv_set,
    _entry,
    _fix,
    _matmul_fn,
    _plain,
    _record,
    dot_applies,
)
from graphc.ir import TensorType
from graphc.tensor import Tensor

__all__ = ["ENABLED", "linear"]

ENABLED = True  # False: F.linear takes the general path (the tests compare the two)

_MAX_ENTRIES = 1024
# (input type id, weight type id, bias type id or None) -> ((transpose, matmul, add entries, dot), keep)
# or (None, keep); dot: the product may run as ``ndarray.dot`` (see ``eager_fast._matmul_entry``)
_ENTRIES: dict[tuple, tuple | None] = {}
_ascontiguous = np.ascontiguousarray
_matmul, _add = np.matmul, np.add


def _make(key: tuple, tx: TensorType, tw: TensorType, tb: TensorType | None) -> tuple | None:
    """The three ops' eager_fast entries for this signature, or None (the general path)."""
    entry = None
    if (
        _BACKEND[0] == "reference"
        and len(tw.shape) == 2
        and len(tx.shape) >= 2
        and tx.shape[-1] == tw.shape[1]
    ):
        tr = _entry("transpose", [tw], None, {"perm": (1, 0)})
        fn = _matmul_fn()
        mm = _entry("matmul", [tx, tr[1]], fn) if tr is not None and fn is np.matmul else None
        ad = _binary_entry("add", mm[1], tb, False, False) if mm is not None and tb is not None else None
        if mm is not None and (tb is None or ad is not None and ad[0] is np.add):
            entry = (tr, mm, ad, dot_applies(tx, tr[1]))
    if len(_ENTRIES) >= _MAX_ENTRIES:
        _ENTRIES.clear()
    _ENTRIES[key] = (entry, (tx, tw, tb))  # the types kept alive: their ids stay theirs
    return entry


def linear(x: Any, weight: Any, bias: Any) -> Tensor | None:
    """``x @ weight.T + bias`` for eager Tensors, recorded as the general path records it, or None
    where the general path must run (other operands, a signature it must check or report)."""
    if not ENABLED or type(x) is not Tensor or type(weight) is not Tensor:
        return None
    ctx = x.ctx
    xv, wv = x.value, weight.value
    if not ctx.eager or type(xv) is not EagerValue or type(wv) is not EagerValue or weight.ctx is not ctx:
        return None
    if bias is None:
        bv = None
        key = (id(xv.type), id(wv.type), None)
    else:
        if type(bias) is not Tensor or bias.ctx is not ctx:
            return None
        bv = bias.value
        if type(bv) is not EagerValue:
            return None
        key = (id(xv.type), id(wv.type), id(bv.type))
    hit = _ENTRIES.get(key)
    entry = hit[0] if hit is not None else _make(key, xv.type, wv.type, None if bv is None else bv.type)
    if entry is None:
        return None
    tr, mm, ad, dot = entry
    wt = _ascontiguous(wv.data.transpose(1, 0))  # the transpose kernel's copy
    xd = xv.data
    token = _cv_set(_IGNORE)
    try:
        m = xd.dot(wt) if dot and xd.flags.c_contiguous else _matmul(xd, wt)
        o = None if bv is None else _add(m, bv.data)
    finally:
        _cv_reset(token)
    if not m.flags.c_contiguous or not mm[6] and (m.dtype != mm[2] or m.shape != mm[5]):
        m = _fix(m, mm[2], mm[5])
    if o is not None and (not o.flags.c_contiguous or not ad[6] and (o.dtype != ad[2] or o.shape != ad[5])):
        o = _fix(o, ad[2], ad[5])
    grad = ctx.grad_enabled
    frame = sys._getframe(1)
    if grad and wv.requires_grad and tr[4]:
        tv = _record(tr, "transpose", wt, (wv,), ctx, frame).value
    else:
        tv = _plain(tr[1], wt, ctx).value
    if grad and mm[4] and (xv.requires_grad or tv.requires_grad):
        mt = _record(mm, "matmul", m, (xv, tv), ctx, frame)
    else:
        mt = _plain(mm[1], m, ctx)
    if bv is None:
        return mt
    mv = mt.value
    if grad and ad[4] and (mv.requires_grad or bv.requires_grad):
        return _record(ad, "add", o, (mv, bv), ctx, frame)
    return _plain(ad[1], o, ctx)
