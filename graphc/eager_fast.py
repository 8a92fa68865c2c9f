"""Eager mode's fast path: the common elementwise ops, matmul and relu at a few microseconds a call.

``Tensor._binary``/``_unary``/``relu`` and ``matmul`` ask :class:`~graphc.eager.EagerContext`
first; it answers here. Each op signature (op, operand types, or a Python scalar's type) is
resolved once into an entry: the normalized attributes and output type the op registry's type
rule gives (``graphc.eager._signature``, the same cache the general path uses), what runs it (the
NumPy function the reference kernel applies, called directly, or the kernel itself), and whether
the op is differentiable. Entries are keyed by the operand types' identities (leaves of one shape
and dtype share one type object, ``graphc.eager._type_of``) and keep those types alive. A later
call with that signature runs the op under NumPy's "ignore" error state and wraps the result, with
no ``const`` node for a Python scalar (its 0-d array is cached per value), no casts and no graph
node; a result that needs no gradient records nothing on the tape. A signature whose
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

__all__ = [
    "binary",
    "direct_reduce",
    "matmul",
    "op",
    "permute",
    "quiet",
    "relu",
    "run_quiet",
    "source",
    "unary",
]

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
    ref = source_ref()
    return None if ref is None else f"{_short(ref[0])}:{ref[1]}"


def source_ref(skip: int = 0) -> tuple[str, int] | None:
    """What :func:`source` names, unformatted: (file name, line) of the user's frame, for
    ``EagerValue.source`` to format only if it is ever read.

    ``skip``: how many frames above the caller are graphc's own for certain (the walk starts
    above them: ``sys._getframe(n)`` reaches a frame without making frame objects for the ones
    between, and making them is most of the walk's cost)."""
    frame: Any = sys._getframe(1 + skip)
    internal = _INTERNAL
    while frame is not None:
        filename = frame.f_code.co_filename
        inside = internal.get(filename)
        if inside is None:
            inside = internal[filename] = filename.startswith(_internal_dirs())
        if not inside:
            return filename, frame.f_lineno
        frame = frame.f_back
    return None


def _fix(o: object, out_dt: np.dtype, shape: tuple) -> np.ndarray:
    """A kernel's result that is not one already as a C-contiguous array of exactly the output
    type (as ``_run_kernel`` makes it; the callers check, so the common case costs no call)."""
    return np.ascontiguousarray(o, dtype=out_dt).reshape(shape)


def _remember(key: tuple, entry: tuple | None, keep: tuple) -> tuple:
    """Store ``entry`` (None: the general path) under ``key``.

    Keys hold the operand types by ``id()`` (a dataclass hashes in Python, a dict key of ints in
    C); each stored entry ends with the types themselves (``keep``), so none of them can be freed
    and its id taken by another object while the key is in the table.
    """
    if len(_ENTRIES) >= _MAX_ENTRIES:
        _ENTRIES.clear()
    stored = (None, keep) if entry is None else (*entry, keep)
    _ENTRIES[key] = stored
    return stored


def _entry(
    op: str, types: list[TensorType], fn: Callable | None = None, given: dict | None = None
) -> tuple | None:
    """(call, output type, its NumPy dtype, attrs, differentiable, output shape) or None (general
    path). ``call(*arrays)`` runs the op: ``fn`` (the NumPy function the reference kernel applies,
    called directly), else the reference kernel. ``given``: the op's attributes (none if None)."""
    kernel = _kernels().get(op)
    if kernel is None:
        return None
    try:
        values = [EagerValue(t, None) for t in types]
        attrs, out_types, dtypes, differentiable = _signature(op, given or {}, values)
    except GraphcError:
        return None  # the general path reports it, naming the user's line
    if len(out_types) != 1:
        return None
    if fn is None and len(types) == 1:
        fn = direct_reduce(op, kernel, attrs, types[0].np_dtype, dtypes[0])
    if fn is None:

        def fn(*arrays: np.ndarray, _kernel: Callable = kernel, _attrs: dict = attrs) -> Any:
            return _kernel(list(arrays), _attrs)[0]

    return fn, out_types[0], dtypes[0], attrs, differentiable, out_types[0].shape


def direct_reduce(op: str, kernel: Callable, attrs: dict, in_dtype: Any, out_dtype: Any) -> Callable | None:
    """``x -> ufunc.reduce(x, axes, keepdims)`` where ``kernel`` is the reference ``sum``/``max``/
    ``min`` (``np.sum(x, axis=axes, keepdims=...)`` cast to x's dtype) and x's dtype is the
    output's: ``np.sum`` on an ndarray is ``np.add.reduce`` after a few Python-level steps, so the
    values are the kernel's. None where that does not hold."""
    fns = _REDUCTIONS.get(op)
    if fns is None or in_dtype != out_dtype:
        return None
    from graphc.kernels import reference

    cells = getattr(kernel, "__closure__", None) or ()
    if getattr(kernel, "__code__", None) is not reference._reduction(fns[0]).__code__:
        return None
    if len(cells) != 1 or cells[0].cell_contents is not fns[0]:
        return None
    return functools.partial(fns[1].reduce, axis=tuple(attrs["axes"]), keepdims=bool(attrs["keepdims"]))


# op -> (the NumPy function its reference kernel applies, the ufunc whose reduce that is)
_REDUCTIONS = {"sum": (np.sum, np.add), "max": (np.max, np.maximum), "min": (np.min, np.minimum)}


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


def _record(ctx: EagerContext, entry: tuple, op: str, arr: np.ndarray, inputs: tuple) -> Tensor:
    """The result as a Tensor recorded on the tape (op, attributes, operands, user's line), as
    ``multi_op`` records it; the callers check that an operand requires grad, the op is
    differentiable and ``no_grad`` is not on."""
    v = EagerValue(entry[1], arr, True)
    v.op, v.attrs, v.inputs, v.seq = op, entry[3], inputs, next(_SEQ)
    # The walk for the user's line starts above this function's caller (binary, unary, matmul
    # or relu here): both are graphc's own. Inline, as source_ref(1) (a call less per op).
    frame: Any = sys._getframe(2)
    internal = _INTERNAL
    while frame is not None:
        filename = frame.f_code.co_filename
        inside = internal.get(filename)
        if inside is None:
            inside = internal[filename] = filename.startswith(_internal_dirs())
        if not inside:
            v._source = (filename, frame.f_lineno)
            break
        frame = frame.f_back
    return Tensor(v, ctx)


def binary(
    ctx: EagerContext, op: str, a: Tensor, other: object, reflected: bool, need_float: bool
) -> Tensor | None:
    """``a <op> other`` (``other <op> a`` when ``reflected``) now, or None where the general path must run.

    Taken when no promotion cast is needed: both operands of one dtype (a Python scalar takes the
    tensor's), a float dtype where ``need_float``, no bool operand of add/sub/mul/maximum/minimum.
    """
    av = a.value
    if type(av) is not EagerValue or _BACKEND[0] != "reference":
        return None
    kind = type(other)
    if kind is Tensor:
        bv = other.value  # type: ignore[attr-defined]
        if type(bv) is not EagerValue:
            return None
        key = (op, id(av.type), id(bv.type), reflected, need_float)
    elif kind is float or kind is int:
        bv = None
        key = (op, id(av.type), kind, reflected, need_float)
    else:
        return None
    entry = _ENTRIES.get(key)
    if entry is None:
        tb = bv.type if bv is not None else kind
        entry = _remember(key, _binary_entry(op, av.type, tb, reflected, need_float), (av.type, tb))
    fn = entry[0]
    if fn is None:
        return None
    if bv is None:
        bv = _scalar(ctx, other, av.type.dtype)  # type: ignore[arg-type]
    token = _quiet_on()
    try:
        o = fn(bv.data, av.data) if reflected else fn(av.data, bv.data)
    finally:
        _quiet_off(token)
    if type(o) is not np.ndarray or o.dtype != entry[2] or o.shape != entry[5] or not o.flags.c_contiguous:
        o = _fix(o, entry[2], entry[5])
    if entry[4] and ctx.grad_enabled and (av.requires_grad or bv.requires_grad):
        return _record(ctx, entry, op, o, (bv, av) if reflected else (av, bv))
    return Tensor(EagerValue(entry[1], o, False), ctx)


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
    return _entry(op, [tb, ta] if reflected else [ta, tb], _reference_fns()[0].get(op))


def _reference_fns() -> tuple[dict, dict]:
    """The NumPy functions the reference kernels of the binary and unary pointwise ops apply (the
    kernel is ``np.asarray(fn(...))``, cast to the operand's dtype for a unary op): the fast path
    calls them directly and gives their results the output type, as ``_run_kernel`` does."""
    from graphc.kernels import reference

    return reference._BINARY, reference._UNARY


def unary(ctx: EagerContext, op: str, x: Tensor) -> Tensor | None:
    """The unary pointwise ``op`` of ``x`` now, or None where the general path must run."""
    xv = x.value
    if type(xv) is not EagerValue or _BACKEND[0] != "reference":
        return None
    key = (op, id(xv.type))
    entry = _ENTRIES.get(key)
    if entry is None:  # a float op on an integer or bool x: the general path casts it to f32 first
        t = xv.type
        cast = op in UNARY_FLOAT and t.dtype not in _FLOATS
        fn = _reference_fns()[1].get(op)
        made = None if cast else _entry(op, [t], fn)
        if made is not None and fn is not None and made[2] != t.np_dtype:
            made = _entry(op, [t])  # the kernel's cast to x's dtype is not the output type's
        entry = _remember(key, made, (t,))
    fn = entry[0]
    if fn is None:
        return None
    token = _quiet_on()
    try:
        o = fn(xv.data)
    finally:
        _quiet_off(token)
    if type(o) is not np.ndarray or o.dtype != entry[2] or o.shape != entry[5] or not o.flags.c_contiguous:
        o = _fix(o, entry[2], entry[5])
    if entry[4] and xv.requires_grad and ctx.grad_enabled:
        return _record(ctx, entry, op, o, (xv,))
    return Tensor(EagerValue(entry[1], o, False), ctx)


def matmul(ctx: EagerContext, a: Tensor, b: Tensor) -> Tensor | None:
    """``a @ b`` now for operands of one dtype and at least two dimensions each, else None."""
    av, bv = a.value, b.value
    if type(av) is not EagerValue or type(bv) is not EagerValue or _BACKEND[0] != "reference":
        return None
    key = ("matmul", id(av.type), id(bv.type))
    entry = _ENTRIES.get(key)
    if entry is None:
        ta, tb = av.type, bv.type
        ok = ta.dtype == tb.dtype and len(ta.shape) >= 2 and len(tb.shape) >= 2
        entry = _remember(key, _entry("matmul", [ta, tb], _matmul_fn()) if ok else None, (ta, tb))
    fn = entry[0]
    if fn is None:
        return None
    token = _quiet_on()
    try:
        o = fn(av.data, bv.data)
    finally:
        _quiet_off(token)
    if type(o) is not np.ndarray or o.dtype != entry[2] or o.shape != entry[5] or not o.flags.c_contiguous:
        o = _fix(o, entry[2], entry[5])
    if entry[4] and ctx.grad_enabled and (av.requires_grad or bv.requires_grad):
        return _record(ctx, entry, "matmul", o, (av, bv))
    return Tensor(EagerValue(entry[1], o, False), ctx)


def _matmul_fn() -> Callable | None:
    """``np.matmul`` where the reference matmul kernel is ``[np.matmul(a, b)]`` (checked once)."""
    probe = np.arange(6.0).reshape(2, 3)
    kernel = _kernels().get("matmul")
    if kernel is None or not np.array_equal(kernel([probe, probe.T], {})[0], np.matmul(probe, probe.T)):
        return None
    return np.matmul


def relu(ctx: EagerContext, x: Tensor) -> Tensor | None:
    """``where(x <= 0, 0, x)`` now (the traced relu's two ops: NaN stays NaN, -0.0 becomes 0.0).

    It is computed as ``maximum(x, 0) + 0`` (the same values: NaN propagates through maximum, and
    adding +0 turns a -0.0 into 0.0), faster than NumPy's ``where`` with a 0-d operand. With a
    gradient to record, the tape gets the ``le`` mask and the ``where`` exactly as the general
    path records them, so backward() differentiates the same ops.
    """
    xv = x.value
    if type(xv) is not EagerValue or _BACKEND[0] != "reference":
        return None
    key = ("relu", id(xv.type))
    entry = _ENTRIES.get(key)
    if entry is None:
        t = xv.type
        le = _entry("le", [t, TensorType((), t.dtype)]) if t.dtype in _NUMERIC else None
        where = _entry("where", [le[1], TensorType((), t.dtype), t]) if le is not None else None
        ok = where is not None and where[1] == t and le[1].shape == t.shape and t.shape != ()
        entry = _remember(key, (le, where, _scalar(ctx, 0, t.dtype)) if ok else None, (t,))
    le = entry[0]
    if le is None:
        return None
    where, zero = entry[1], entry[2]  # zero: the const 0 of x's dtype (its value; as_tensor(0, like=x))
    data, z = xv.data, zero.data
    record = where[4] and xv.requires_grad and ctx.grad_enabled
    token = _quiet_on()
    try:
        arr = np.maximum(data, z)
        np.add(arr, z, out=arr)
        if record:
            mask = np.less_equal(data, z)
    finally:
        _quiet_off(token)
    if arr.dtype != where[2] or not arr.flags.c_contiguous:
        arr = _fix(arr, where[2], where[5])
    if not record:
        return Tensor(EagerValue(where[1], arr, False), ctx)
    if mask.dtype != le[2] or not mask.flags.c_contiguous:
        mask = _fix(mask, le[2], le[5])
    m = EagerValue(le[1], mask, False)  # a bool value: no gradient, so a leaf of the tape
    return _record(ctx, where, "where", arr, (m, zero, xv))


def permute(ctx: EagerContext, x: Tensor, perm: tuple[int, ...]) -> Tensor | None:
    """``x.permute(perm)`` now (the ``transpose`` op; ``perm`` checked by the caller, not the
    identity), or None where the general path must run. The result is a C-contiguous copy, as
    the reference kernel gives (``np.ascontiguousarray(np.transpose(x, perm))``)."""
    xv = x.value
    if type(xv) is not EagerValue or _BACKEND[0] != "reference":
        return None
    key = ("transpose", id(xv.type), perm)
    entry = _ENTRIES.get(key)
    if entry is None:
        t = xv.type
        made = _entry("transpose", [t], None, {"perm": perm})
        if made is not None:
            made = (functools.partial(_transposed, perm=made[3]["perm"]), *made[1:])
        entry = _remember(key, made, (t,))
    fn = entry[0]
    if fn is None:
        return None
    o = fn(xv.data)
    if o.dtype != entry[2] or o.shape != entry[5] or not o.flags.c_contiguous:
        o = _fix(o, entry[2], entry[5])
    if entry[4] and xv.requires_grad and ctx.grad_enabled:
        return _record(ctx, entry, "transpose", o, (xv,))
    return Tensor(EagerValue(entry[1], o, False), ctx)


def _transposed(data: np.ndarray, perm: Any) -> np.ndarray:
    """The reference ``transpose`` kernel's result."""
    return np.ascontiguousarray(np.transpose(data, perm))


def op(
    ctx: EagerContext, name: str, inputs: tuple[Tensor, ...], attrs: dict, attrs_key: tuple
) -> Tensor | None:
    """``ctx.op(name, *inputs, **attrs)`` now for any one-output op with a reference kernel (the
    reductions, ``where``), or None where the general path must run. ``attrs_key``: a hashable
    form of ``attrs`` that tells apart every attribute value the caller passes (no real-valued
    attribute whose 0.0 and -0.0 would be one key)."""
    if _BACKEND[0] != "reference":
        return None
    values = []
    for t in inputs:
        v = t.value
        if type(v) is not EagerValue:
            return None
        values.append(v)
    key = (name, attrs_key, *[id(v.type) for v in values])
    entry = _ENTRIES.get(key)
    if entry is None:
        types = tuple([v.type for v in values])
        entry = _remember(key, _entry(name, list(types), None, attrs), types)
    fn = entry[0]
    if fn is None:
        return None
    token = _quiet_on()
    try:
        o = fn(*[v.data for v in values])
    except GraphcError:
        return None  # the general path runs it again and reports it, naming the user's line
    finally:
        _quiet_off(token)
    if type(o) is not np.ndarray or o.dtype != entry[2] or o.shape != entry[5] or not o.flags.c_contiguous:
        o = _fix(o, entry[2], entry[5])
    if entry[4] and ctx.grad_enabled:
        for v in values:
            if v.requires_grad:
                return _record(ctx, entry, name, o, tuple(values))
    return Tensor(EagerValue(entry[1], o, False), ctx)
