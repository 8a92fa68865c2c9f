"""Eager mode's fast path: the common elementwise ops, matmul and relu at a few microseconds a call.

``Tensor._binary``/``_unary``/``relu`` and ``matmul`` ask :class:`~graphc.eager.EagerContext`
first; it answers here. Each op signature (op, operand types, or a Python scalar's type) is
resolved once into an entry: the normalized attributes and output type the op registry's type
rule gives (``graphc.eager._signature``, the same cache the general path uses), the NumPy
reference kernel, and whether the op is differentiable. A later call with that signature runs
the kernel under NumPy's "ignore" error state and wraps the result, with no ``const`` node for a
Python scalar (its 0-d array is cached per value), no casts and no graph node. A signature whose
meaning needs more (a promotion cast, a bool operand of add, the "cpu" backend, an operand
of another trace, a type error to report) is remembered as such and the general path
(``EagerContext.multi_op``) runs it, so the results, the recorded tape and the errors are the
same as there.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from graphc.eager import _BACKEND, _SEQ, EagerContext, EagerValue, _kernels, _signature
from graphc.ir import GraphcError, TensorType
from graphc.ir.ops import UNARY_FLOAT
from graphc.tensor import Tensor, _internal_dirs, _short

__all__ = ["binary", "matmul", "quiet", "relu", "run_quiet", "source", "unary"]

_FLOATS = ("f32", "f64")
_NUMERIC = ("i32", "i64", "f32", "f64")
_BOOL_PROMOTED = ("add", "sub", "mul", "maximum", "minimum")
# signature -> entry tuple, or None where the general path must run it; bounded, cleared when full.
_ENTRIES: dict[tuple, tuple | None] = {}
_MAX_ENTRIES = 4096
_SCALARS: dict[tuple, EagerValue] = {}
_MAX_SCALARS = 512
_INTERNAL: dict[str, bool] = {}  # file name -> whether it is graphc's own (not the user's)

try:  # NumPy 2: set the error state's context variable directly (np.errstate costs ~2 us a call)
    from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj

    _IGNORE = _make_extobj(all="ignore")
    _quiet_on: Callable[[], Any] = functools.partial(_extobj_contextvar.set, _IGNORE)
    _quiet_off: Callable[[Any], Any] = _extobj_contextvar.reset
except ImportError:  # pragma: no cover - other NumPy versions: the public (slower) context manager

    def _quiet_on() -> Any:
        state = np.errstate(all="ignore")
        state.__enter__()
        return state

    def _quiet_off(state: Any) -> None:
        state.__exit__(None, None, None)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """NumPy's error state "ignore" for all floating-point errors (``np.errstate(all="ignore")``)."""
    token = _quiet_on()
    try:
        yield
    finally:
        _quiet_off(token)


def run_quiet(kernel: Callable, args: list[np.ndarray], attrs: dict) -> list[np.ndarray]:
    """``kernel(args, attrs)`` under NumPy's error state "ignore" (what ``quiet()`` sets, cheaper)."""
    token = _quiet_on()
    try:
        return kernel(args, attrs)
    finally:
        _quiet_off(token)


def source() -> str | None:
    """``graphc.tensor.user_source()`` (the user's ``file:line``), with each file's verdict cached."""
    frame = sys._getframe(1)
    internal = _INTERNAL
    while frame is not None:
        filename = frame.f_code.co_filename
        inside = internal.get(filename)
        if inside is None:
            inside = internal[filename] = filename.startswith(_internal_dirs())
        if not inside:
            return f"{_short(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def _fix(o: object, out_dt: np.dtype, shape: tuple) -> np.ndarray:
    """A kernel's result that is not one already as a C-contiguous array of exactly the output
    type (as ``_run_kernel`` makes it; the callers check, so the common case costs no call)."""
    return np.ascontiguousarray(o, dtype=out_dt).reshape(shape)


def _run(kernel: Callable, args: list[np.ndarray], attrs: dict, out_dt: np.dtype, shape: tuple) -> np.ndarray:
    token = _quiet_on()
    try:
        o = kernel(args, attrs)[0]
    finally:
        _quiet_off(token)
    if type(o) is not np.ndarray or o.dtype != out_dt or o.shape != shape or not o.flags.c_contiguous:
        o = _fix(o, out_dt, shape)
    return o


def _remember(key: tuple, entry: tuple | None) -> tuple | None:
    if len(_ENTRIES) >= _MAX_ENTRIES:
        _ENTRIES.clear()
    _ENTRIES[key] = entry
    return entry


def _entry(op: str, types: list[TensorType]) -> tuple | None:
    """(attrs, output type, its NumPy dtype, kernel, differentiable) or None (general path)."""
    kernel = _kernels().get(op)
    if kernel is None:
        return None
    try:
        attrs, out_types, dtypes, differentiable = _signature(op, {}, [EagerValue(t, None) for t in types])
    except GraphcError:
        return None  # the general path reports it, naming the user's line
    if len(out_types) != 1:
        return None
    return attrs, out_types[0], dtypes[0], kernel, differentiable


def _scalar(ctx: EagerContext, value: float, dtype: str) -> EagerValue:
    """The 0-d value of a Python scalar as ``ctx.const`` makes it (cached per value and dtype)."""
    key = (value, dtype, type(value), math.copysign(1.0, value) if type(value) is float else 0.0)
    v = _SCALARS.get(key)
    if v is None:
        v = ctx.const(value, dtype).value  # type: ignore[assignment]
        if len(_SCALARS) >= _MAX_SCALARS:
            _SCALARS.clear()
        _SCALARS[key] = v
    return v


def _wrap(ctx: EagerContext, entry: tuple, op: str, arr: np.ndarray, inputs: tuple) -> Tensor:
    """The result as a Tensor; recorded on the tape (op, attributes, operands, user's line) when an
    operand requires grad, the op is differentiable and ``no_grad`` is not on: as ``multi_op``."""
    if entry[4] and ctx.grad_enabled:
        for x in inputs:
            if x.requires_grad:
                v = EagerValue(entry[1], arr, True)
                v.op, v.attrs, v.inputs, v.seq = op, entry[0], inputs, next(_SEQ)
                v.source = source()
                return Tensor(v, ctx)
    return Tensor(EagerValue(entry[1], arr, False), ctx)


def binary(
    ctx: EagerContext, op: str, a: Tensor, other: object, reflected: bool, need_float: bool
) -> Tensor | None:
    """``a <op> other`` (``other <op> a`` when ``reflected``) now, or None where the general path must run.

    Taken when no promotion cast is needed: both operands of one dtype (a Python scalar takes the
    tensor's), a float dtype where ``need_float``, no bool operand of add/sub/mul/maximum/minimum.
    """
    av = a.value
    kind = type(other)
    if type(av) is not EagerValue or _BACKEND[0] != "reference":
        return None
    if kind is Tensor:
        bv = other.value  # type: ignore[attr-defined]
        if type(bv) is not EagerValue:
            return None
        key = (op, av.type, bv.type, reflected, need_float)
    elif kind is float or kind is int:
        bv = None
        key = (op, av.type, kind, reflected, need_float)
    else:
        return None
    entry = _ENTRIES.get(key, False)
    if entry is False:
        entry = _remember(
            key, _binary_entry(op, av.type, bv.type if bv is not None else kind, reflected, need_float)
        )
    if entry is None:
        return None
    if bv is None:
        bv = _scalar(ctx, other, av.type.dtype)  # type: ignore[arg-type]
    inputs = (bv, av) if reflected else (av, bv)
    attrs, out, out_dt, kernel, _ = entry
    token = _quiet_on()
    try:
        o = kernel([inputs[0].data, inputs[1].data], attrs)[0]
    finally:
        _quiet_off(token)
    if type(o) is not np.ndarray or o.dtype != out_dt or o.shape != out.shape or not o.flags.c_contiguous:
        o = _fix(o, out_dt, out.shape)
    return _wrap(ctx, entry, op, o, inputs)


def _binary_entry(
    op: str, ta: TensorType, tb: TensorType | type, reflected: bool, need_float: bool
) -> tuple | None:
    dtype = ta.dtype
    if isinstance(tb, TensorType):
        if tb.dtype != dtype:
            return None
    elif dtype not in _NUMERIC or tb is float and dtype not in _FLOATS:
        return None  # the scalar's const would take another dtype: a promotion cast follows
    else:
        tb = TensorType((), dtype)
    if need_float and dtype not in _FLOATS or op in _BOOL_PROMOTED and dtype == "bool":
        return None
    return _entry(op, [tb, ta] if reflected else [ta, tb])


def unary(ctx: EagerContext, op: str, x: Tensor) -> Tensor | None:
    """The unary pointwise ``op`` of ``x`` now, or None where the general path must run."""
    xv = x.value
    if type(xv) is not EagerValue or _BACKEND[0] != "reference":
        return None
    key = (op, xv.type)
    entry = _ENTRIES.get(key, False)
    if entry is False:  # a float op on an integer or bool x: the general path casts it to f32 first
        cast = op in UNARY_FLOAT and xv.type.dtype not in _FLOATS
        entry = _remember(key, None if cast else _entry(op, [xv.type]))
    if entry is None:
        return None
    attrs, out, out_dt, kernel, _ = entry
    token = _quiet_on()
    try:
        o = kernel([xv.data], attrs)[0]
    finally:
        _quiet_off(token)
    if type(o) is not np.ndarray or o.dtype != out_dt or o.shape != out.shape or not o.flags.c_contiguous:
        o = _fix(o, out_dt, out.shape)
    return _wrap(ctx, entry, op, o, (xv,))


def matmul(ctx: EagerContext, a: Tensor, b: Tensor) -> Tensor | None:
    """``a @ b`` now for operands of one dtype and at least two dimensions each, else None."""
    av, bv = a.value, b.value
    if type(av) is not EagerValue or type(bv) is not EagerValue or _BACKEND[0] != "reference":
        return None
    key = ("matmul", av.type, bv.type)
    entry = _ENTRIES.get(key, False)
    if entry is False:
        ok = av.type.dtype == bv.type.dtype and len(av.type.shape) >= 2 and len(bv.type.shape) >= 2
        entry = _remember(key, _entry("matmul", [av.type, bv.type]) if ok else None)
    if entry is None:
        return None
    arr = _run(entry[3], [av.data, bv.data], entry[0], entry[2], entry[1].shape)
    return _wrap(ctx, entry, "matmul", arr, (av, bv))


def relu(ctx: EagerContext, x: Tensor) -> Tensor | None:
    """``where(x <= 0, 0, x)`` now (the traced relu's two ops: NaN stays NaN, -0.0 becomes 0.0).

    Both reference kernels run under one switch of NumPy's error state; with a gradient to record,
    the tape gets the ``le`` mask and the ``where`` exactly as the general path records them, so
    backward() differentiates the same ops.
    """
    xv = x.value
    if type(xv) is not EagerValue or _BACKEND[0] != "reference":
        return None
    key = ("relu", xv.type)
    entry = _ENTRIES.get(key, False)
    if entry is False:
        t = xv.type
        le = _entry("le", [t, TensorType((), t.dtype)]) if t.dtype in _NUMERIC else None
        where = _entry("where", [le[1], TensorType((), t.dtype), t]) if le is not None else None
        ok = where is not None and where[1] == t
        entry = _remember(key, (le, where, _scalar(ctx, 0, t.dtype)) if ok else None)
    if entry is None:
        return None
    le, where, zero = entry  # zero: the const 0 of x's dtype (its value; as_tensor(0, like=x))
    token = _quiet_on()
    try:
        mask = le[3]([xv.data, zero.data], le[0])[0]
        mshape = le[1].shape
        if (
            type(mask) is not np.ndarray
            or mask.dtype != le[2]
            or mask.shape != mshape
            or not mask.flags.c_contiguous
        ):
            mask = _fix(mask, le[2], mshape)
        arr = where[3]([mask, zero.data, xv.data], where[0])[0]
    finally:
        _quiet_off(token)
    shape = where[1].shape
    if (
        type(arr) is not np.ndarray
        or arr.dtype != where[2]
        or arr.shape != shape
        or not arr.flags.c_contiguous
    ):
        arr = _fix(arr, where[2], shape)
    if not (where[4] and ctx.grad_enabled and xv.requires_grad):
        return Tensor(EagerValue(where[1], arr, False), ctx)
    m = EagerValue(le[1], mask, False)  # a bool value: no gradient, so a leaf of the tape
    return _wrap(ctx, where, "where", arr, (m, zero, xv))
