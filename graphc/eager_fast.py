"""Eager mode's fast path: the common elementwise ops, matmul and relu at about a microsecond a call.

Tensor's operators (``+ - * /``, the comparisons, ``@``), ``relu`` and ``_unary`` ARE this
module's functions (:func:`install`, at ``graphc.eager``'s import: one Python call an op, each
falling back to the method it replaced); ``Tensor._binary``, ``tensor.matmul``, ``permute``, the
reductions and ``where`` ask :class:`~graphc.eager.EagerContext` first, which answers here.
Results are made without ``__init__`` (every slot set inline).

Each op signature (op, operand types, or a Python scalar's type) is resolved once into an entry:
the normalized attributes and output type the op registry's type rule gives
(``graphc.eager._signature``, the same cache the general path uses), what runs it (the NumPy
function the reference kernel applies, called directly, or the kernel itself), and whether the
op is differentiable. Entries are keyed by the operand types' identities (leaves of one shape
and dtype share one type object, ``graphc.eager._type_of``) and keep those types alive. A later
call with that signature runs the op under NumPy's "ignore" error state and wraps the result, with
no ``const`` node for a Python scalar (its 0-d array is cached per value), no casts and no graph
node; a ufunc's result, whose dtype and shape were tried once (:func:`_exact`), has only its
layout checked; a result that needs no gradient records nothing on the tape. A signature whose
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
    "dot_applies",
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
_MAX_PROBE = 1 << 16  # elements: the largest operand _exact tries a ufunc on
_INTERNAL: dict[str, bool] = {}  # file name -> whether it is graphc's own (not the user's)

try:  # NumPy 2: set the error state's context variable directly (np.errstate costs ~2 us a call)
    from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj

    _IGNORE: Any = _make_extobj(all="ignore")
    _cv_set: Callable[[Any], Any] = _extobj_contextvar.set  # _cv_set(_IGNORE): the token to reset
    _cv_reset: Callable[[Any], Any] = _extobj_contextvar.reset
except ImportError:  # pragma: no cover - other NumPy versions: the public (slower) context manager
    _IGNORE = None

    def _cv_set(_: Any) -> Any:
        state = np.errstate(all="ignore")
        state.__enter__()
        return state

    def _cv_reset(state: Any) -> None:
        state.__exit__(None, None, None)


_quiet_on: Callable[[], Any] = functools.partial(_cv_set, _IGNORE)
_quiet_off: Callable[[Any], Any] = _cv_reset
_new = object.__new__  # results are made without __init__: every slot set inline (two calls less an op)


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
    return _frame_ref(sys._getframe(1 + skip))


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
    """(call, output type, its NumPy dtype, attrs, differentiable, output shape, exact) or None
    (general path; always under the "cpu" backend). ``call(*arrays)`` runs the op: ``fn`` (the
    NumPy function the reference kernel applies, called directly), else the reference kernel.
    ``exact``: ``call`` is a ufunc whose results need only their layout checked (:func:`_exact`).
    ``given``: the op's attributes (none if None)."""
    kernel = _kernels().get(op)
    if kernel is None or _BACKEND[0] != "reference":
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

    out = out_types[0]
    trusted = isinstance(fn, np.ufunc) and _exact(fn, types, dtypes[0], out.shape)
    return fn, out, dtypes[0], attrs, differentiable, out.shape, trusted


def _exact(fn: np.ufunc, types: list[TensorType], dtype: np.dtype, shape: tuple) -> bool:
    """Whether the ufunc ``fn`` on arrays of ``types`` gives an ndarray of exactly ``dtype`` and
    ``shape`` (tried once on zeros). A ufunc's result dtype and shape follow from its operands'
    dtypes and shapes alone, so the callers then check only the result's layout (C-contiguous:
    an operand that is not, a transposed leaf, gives a result in its order). Large operands are
    not tried (their results are checked at every call, a small cost beside their arithmetic)."""
    if any(t.numel > _MAX_PROBE for t in types):
        return False
    token = _cv_set(_IGNORE)
    try:
        o = fn(*[np.zeros(t.shape, t.np_dtype) for t in types])
    except Exception:  # noqa: BLE001 - any failure: the result is checked at every call instead
        return False
    finally:
        _cv_reset(token)
    return type(o) is np.ndarray and o.dtype == dtype and o.shape == shape


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


def _frame_ref(frame: Any) -> tuple[str, int] | None:
    """(file name, line) of the first frame from ``frame`` up that is not graphc's own."""
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


def _plain(t: TensorType, arr: np.ndarray, ctx: EagerContext) -> Tensor:
    """A result that records nothing: ``Tensor(EagerValue(t, arr, False), ctx)``, made without
    ``__init__`` (every slot set as the constructors set it). The hottest paths inline this."""
    v = _new(EagerValue)
    v.type = t
    v.data = arr
    v.requires_grad = False
    v.op = None
    v.attrs = None
    v.inputs = None
    v._source = None
    v.seq = 0
    v.kind = None
    v.owner = None
    v.param = None
    r = _new(Tensor)
    r.value = v
    r.ctx = ctx
    r._base = None
    r._views = None
    r._index = None
    return r


def _record(entry: tuple, op: str, arr: np.ndarray, inputs: tuple, ctx: EagerContext, frame: Any) -> Tensor:
    """The result as a Tensor recorded on the tape (op, attributes, operands, the user's line: the
    first frame from ``frame`` up that is not graphc's own), as ``multi_op`` records it; the
    callers check that an operand requires grad, the op is differentiable and ``no_grad`` is off."""
    v = _new(EagerValue)
    v.type = entry[1]
    v.data = arr
    v.requires_grad = True
    v.op = op
    v.attrs = entry[3]
    v.inputs = inputs
    v._source = None
    internal = _INTERNAL  # _frame_ref(frame), inline
    while frame is not None:
        filename = frame.f_code.co_filename
        inside = internal.get(filename)
        if inside is None:
            inside = internal[filename] = filename.startswith(_internal_dirs())
        if not inside:
            v._source = (filename, frame.f_lineno)
            break
        frame = frame.f_back
    v.seq = next(_SEQ)
    v.kind = None
    v.owner = None
    v.param = None
    r = _new(Tensor)
    r.value = v
    r.ctx = ctx
    r._base = None
    r._views = None
    r._index = None
    return r


def _none(*_: object) -> None:
    """The fast functions' answer where the general path must run (``EagerContext.binary`` & co.)."""
    return None


# (op, reflected, need_float) -> the binary fast function that answers None on a miss
_BINARY_FNS: dict[tuple, Callable] = {}


def binary_method(op: str, reflected: bool, need_float: bool, fallback: Callable) -> Callable:
    """``method(a, other)``: ``a <op> other`` (``other <op> a`` when ``reflected``) on the fast path,
    else ``fallback(a, other)`` (a traced Tensor, an operand of another kind, a signature the
    general path must run). Installed as Tensor's operators (``__add__``, ...: one Python call an
    op, see :func:`install`) and behind :func:`binary`.

    Taken when no promotion cast is needed: both operands of one dtype (a Python scalar takes the
    tensor's), a float dtype where ``need_float``, no bool operand of add/sub/mul/maximum/minimum.
    """
    tag = sys.intern(f"{op}:{int(reflected)}{int(need_float)}")  # the signature's first key item

    def method(self: Tensor, other: object) -> Any:
        ctx = self.ctx
        if ctx.eager:
            av = self.value
            kind = type(other)
            if kind is Tensor:
                bv = other.value  # type: ignore[attr-defined]
                key = (tag, id(av.type), id(bv.type))
            elif kind is float or kind is int:
                bv = None
                key = (tag, id(av.type), kind)
            else:
                return fallback(self, other)
            entry = _ENTRIES.get(key)
            if entry is None:
                tb = kind if bv is None else bv.type
                entry = _remember(key, _binary_entry(op, av.type, tb, reflected, need_float), (av.type, tb))
            fn = entry[0]
            if fn is not None and type(av) is EagerValue:
                if bv is None:
                    bv = _scalar(ctx, other, av.type.dtype)  # type: ignore[arg-type]
                elif type(bv) is not EagerValue:
                    return fallback(self, other)
                token = _cv_set(_IGNORE)
                try:
                    o = fn(bv.data, av.data) if reflected else fn(av.data, bv.data)
                finally:
                    _cv_reset(token)
                if entry[6]:  # a ufunc of known result dtype and shape: only the layout may differ
                    if not o.flags.c_contiguous:
                        o = _fix(o, entry[2], entry[5])
                elif (
                    type(o) is not np.ndarray
                    or o.dtype != entry[2]
                    or o.shape != entry[5]
                    or not o.flags.c_contiguous
                ):
                    o = _fix(o, entry[2], entry[5])
                if entry[4] and ctx.grad_enabled and (av.requires_grad or bv.requires_grad):
                    return _record(entry, op, o, (bv, av) if reflected else (av, bv), ctx, sys._getframe(1))
                v = _new(EagerValue)  # _plain(), inline
                v.type = entry[1]
                v.data = o
                v.requires_grad = False
                v.op = None
                v.attrs = None
                v.inputs = None
                v._source = None
                v.seq = 0
                v.kind = None
                v.owner = None
                v.param = None
                r = _new(Tensor)
                r.value = v
                r.ctx = ctx
                r._base = None
                r._views = None
                r._index = None
                return r
        return fallback(self, other)

    method.__name__ = method.__qualname__ = f"{op}{'_reflected' if reflected else ''}_fast"
    return method


def binary(
    ctx: EagerContext, op: str, a: Tensor, other: object, reflected: bool, need_float: bool
) -> Tensor | None:
    """``a <op> other`` (``other <op> a`` when ``reflected``) now, or None where the general path must
    run (:func:`binary_method`'s fast path, for the ops Tensor's operators do not call directly)."""
    fn = _BINARY_FNS.get((op, reflected, need_float))
    if fn is None:
        fn = _BINARY_FNS[(op, reflected, need_float)] = binary_method(op, reflected, need_float, _none)
    return fn(a, other)


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


def unary_method(fallback: Callable) -> Callable:
    """``method(x, op)``: the unary pointwise ``op`` of ``x`` on the fast path, else
    ``fallback(x, op)``. Installed as ``Tensor._unary`` and behind :func:`unary`."""

    def method(self: Tensor, op: str) -> Any:
        ctx = self.ctx
        if ctx.eager:
            xv = self.value
            key = (op, id(xv.type))
            entry = _ENTRIES.get(key)
            if entry is None:
                entry = _unary_entry(key, op, xv.type)
            fn = entry[0]
            if fn is not None and type(xv) is EagerValue:
                token = _cv_set(_IGNORE)
                try:
                    o = fn(xv.data)
                finally:
                    _cv_reset(token)
                if entry[6]:
                    if not o.flags.c_contiguous:
                        o = _fix(o, entry[2], entry[5])
                elif (
                    type(o) is not np.ndarray
                    or o.dtype != entry[2]
                    or o.shape != entry[5]
                    or not o.flags.c_contiguous
                ):
                    o = _fix(o, entry[2], entry[5])
                if entry[4] and xv.requires_grad and ctx.grad_enabled:
                    return _record(entry, op, o, (xv,), ctx, sys._getframe(1))
                return _plain(entry[1], o, ctx)
        return fallback(self, op)

    return method


def _unary_entry(key: tuple, op: str, t: TensorType) -> tuple:
    # a float op on an integer or bool x: the general path casts it to f32 first
    cast = op in UNARY_FLOAT and t.dtype not in _FLOATS
    fn = _reference_fns()[1].get(op)
    made = None if cast else _entry(op, [t], fn)
    if made is not None and fn is not None and made[2] != t.np_dtype:
        made = _entry(op, [t])  # the kernel's cast to x's dtype is not the output type's
    return _remember(key, made, (t,))


_UNARY_FN = unary_method(_none)


def unary(ctx: EagerContext, op: str, x: Tensor) -> Tensor | None:
    """The unary pointwise ``op`` of ``x`` now, or None where the general path must run."""
    return _UNARY_FN(x, op)


def matmul_method(fallback: Callable) -> Callable:
    """``method(a, b)``: ``a @ b`` on the fast path for operands of one dtype and at least two
    dimensions each, else ``fallback(a, b)``. Installed as ``Tensor.__matmul__`` and behind
    :func:`matmul`."""

    def method(self: Tensor, other: object) -> Any:
        ctx = self.ctx
        if ctx.eager and type(other) is Tensor:
            av, bv = self.value, other.value  # type: ignore[attr-defined]
            key = ("matmul", id(av.type), id(bv.type))
            entry = _ENTRIES.get(key)
            if entry is None:
                entry = _matmul_entry(key, av.type, bv.type)
            fn = entry[0]
            if fn is not None and type(av) is EagerValue and type(bv) is EagerValue:
                ad, bd = av.data, bv.data
                token = _cv_set(_IGNORE)
                try:
                    if entry[7] and ad.flags.c_contiguous and bd.flags.c_contiguous:
                        o = ad.dot(bd)  # np.matmul's bits here (see _matmul_entry)
                    else:
                        o = fn(ad, bd)
                finally:
                    _cv_reset(token)
                if entry[6]:
                    if not o.flags.c_contiguous:
                        o = _fix(o, entry[2], entry[5])
                elif (
                    type(o) is not np.ndarray
                    or o.dtype != entry[2]
                    or o.shape != entry[5]
                    or not o.flags.c_contiguous
                ):
                    o = _fix(o, entry[2], entry[5])
                if entry[4] and ctx.grad_enabled and (av.requires_grad or bv.requires_grad):
                    return _record(entry, "matmul", o, (av, bv), ctx, sys._getframe(1))
                v = _new(EagerValue)  # _plain(), inline
                v.type = entry[1]
                v.data = o
                v.requires_grad = False
                v.op = None
                v.attrs = None
                v.inputs = None
                v._source = None
                v.seq = 0
                v.kind = None
                v.owner = None
                v.param = None
                r = _new(Tensor)
                r.value = v
                r.ctx = ctx
                r._base = None
                r._views = None
                r._index = None
                return r
        return fallback(self, other)

    return method


_MATMUL_FN = matmul_method(_none)


def matmul(ctx: EagerContext, a: Tensor, b: Tensor) -> Tensor | None:
    """``a @ b`` now for operands of one dtype and at least two dimensions each, else None."""
    return _MATMUL_FN(a, b)


def _matmul_entry(key: tuple, ta: TensorType, tb: TensorType) -> tuple:
    """matmul's entry (:func:`_entry`'s, then whether ``ndarray.dot`` may run it on C-contiguous
    operands, then keep): dot where both operands are matrices of a float dtype with at least two
    rows and columns in the product (a vector-shaped product may take another BLAS routine) and
    :func:`_dot_is_matmul` holds. ``a.dot(b)`` skips the ufunc machinery ``np.matmul`` goes
    through (16 x 16 float32: 0.60 against 1.13 us a call here); both call the same BLAS GEMM."""
    ok = ta.dtype == tb.dtype and len(ta.shape) >= 2 and len(tb.shape) >= 2
    entry = _entry("matmul", [ta, tb], _matmul_fn()) if ok else None
    if entry is None:
        return _remember(key, None, (ta, tb))
    return _remember(key, (*entry, entry[0] is np.matmul and dot_applies(ta, tb)), (ta, tb))


def dot_applies(ta: TensorType, tb: TensorType) -> bool:
    """Whether ``a @ b`` of these types may run as ``a.dot(b)`` (on C-contiguous arrays): two
    matrices of one float dtype, at least two rows and columns in the product, and
    :func:`_dot_is_matmul` holding for that dtype."""
    return (
        len(ta.shape) == len(tb.shape) == 2
        and ta.shape[0] >= 2
        and tb.shape[1] >= 2
        and ta.dtype == tb.dtype
        and ta.dtype in _FLOATS
        and _dot_is_matmul(ta.np_dtype)
    )


_DOT_IS_MATMUL: dict[np.dtype, bool] = {}
_DOT_PROBE_SHAPES = ((2, 1, 2), (2, 3, 2), (3, 5, 7), (16, 16, 16), (17, 31, 2), (65, 129, 33), (4, 64, 300))


def _dot_is_matmul(dtype: np.dtype) -> bool:
    """Whether ``a.dot(b)`` gives ``np.matmul(a, b)`` bit for bit for C-contiguous matrices of
    ``dtype`` with at least two rows and columns in the product (both then call BLAS's GEMM, or
    its ``syrk`` for a matrix times its own transpose): tried once per dtype over shapes from
    2 x 1 x 2 to 65 x 129 x 33, random values with infinities, NaN and signed zeros among them,
    and the syrk case; any difference, and matmul stays."""
    hit = _DOT_IS_MATMUL.get(dtype)
    if hit is not None:
        return hit
    rng = np.random.default_rng(0)
    special = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0, 1e30], dtype)
    ok = True
    token = _cv_set(_IGNORE)
    try:
        for m, k, n in _DOT_PROBE_SHAPES:
            a = rng.standard_normal((m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            pairs = [(a, b), (a, np.ascontiguousarray(a.T))]
            special_a = a.copy()
            special_a.reshape(-1)[: special.size] = special[: special_a.size]
            pairs.append((special_a, b))
            for x, y in pairs:
                if x.dot(y).tobytes() != np.matmul(x, y).tobytes():
                    ok = False
    finally:
        _cv_reset(token)
    _DOT_IS_MATMUL[dtype] = ok
    return ok


def _matmul_fn() -> Callable | None:
    """``np.matmul`` where the reference matmul kernel is ``[np.matmul(a, b)]`` (checked once)."""
    probe = np.arange(6.0).reshape(2, 3)
    kernel = _kernels().get("matmul")
    if kernel is None or not np.array_equal(kernel([probe, probe.T], {})[0], np.matmul(probe, probe.T)):
        return None
    return np.matmul


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
            made = (tuple(made[3]["perm"]), *made[1:])  # entry[0]: the permutation (the call is inline)
        entry = _remember(key, made, (t,))
    if entry[0] is None:
        return None
    # the reference kernel's np.ascontiguousarray(np.transpose(x, perm)): a C-contiguous copy of
    # x's dtype and the permuted shape (the output type), so nothing is left to check
    o = _ascontiguous(xv.data.transpose(entry[0]))
    if entry[4] and xv.requires_grad and ctx.grad_enabled:
        return _record(entry, "transpose", o, (xv,), ctx, sys._getframe(2))  # above x.permute()
    return _plain(entry[1], o, ctx)


_ascontiguous = np.ascontiguousarray


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
                return _record(entry, name, o, tuple(values), ctx, sys._getframe(2))
    return _plain(entry[1], o, ctx)


# Tensor's operators that take the binary fast path themselves: name -> (op, reflected, need_float)
_OPERATORS = {
    "__add__": ("add", False, False),
    "__radd__": ("add", True, False),
    "__sub__": ("sub", False, False),
    "__rsub__": ("sub", True, False),
    "__mul__": ("mul", False, False),
    "__rmul__": ("mul", True, False),
    "__truediv__": ("div", False, True),
    "__rtruediv__": ("div", True, True),
    "__lt__": ("lt", False, False),
    "__le__": ("le", False, False),
    "__gt__": ("gt", False, False),
    "__ge__": ("ge", False, False),
    "__eq__": ("eq", False, False),
    "__ne__": ("ne", False, False),
}
# Tensor attribute -> the method install() replaced (what the fast method falls back to): putting
# these back runs every op on the general path (the tests compare the two).
GENERAL: dict[str, Callable] = {}


def install(cls: type) -> None:
    """Make Tensor's hottest methods (``+ - * / < <= > >= == !=``, ``@``, ``relu``, ``_unary``) the
    fast path's own functions, each falling back to what it replaces: an eager op then costs one
    Python call to reach its NumPy function (not three: the operator, ``ctx.binary``, the fast
    path). Values, tape and errors are unchanged; traced Tensors take the fallback at once."""
    if GENERAL:
        return
    for name, (op, reflected, need_float) in _OPERATORS.items():
        GENERAL[name] = cls.__dict__[name]
        general = _general_binary(op, reflected, need_float)
        setattr(cls, name, _named_as(binary_method(op, reflected, need_float, general), GENERAL[name]))
    for name, make in (("__matmul__", matmul_method), ("relu", relu_method), ("_unary", unary_method)):
        GENERAL[name] = getattr(cls, name)
        setattr(cls, name, _named_as(make(GENERAL[name]), GENERAL[name]))


def _named_as(method: Callable, replaced: Callable) -> Callable:
    """``method`` with the name, docstring and ``__wrapped__`` of the method it replaces."""
    functools.update_wrapper(method, replaced, assigned=("__module__", "__name__", "__qualname__", "__doc__"))
    return method


def _general_binary(op: str, reflected: bool, need_float: bool) -> Callable:
    """``lambda a, other: a._binary_general(op, other, reflected, need_float)``, named."""

    def general(self: Tensor, other: object) -> Tensor:
        return self._binary_general(op, other, reflected, need_float)

    general.__name__ = general.__qualname__ = f"{op}{'_reflected' if reflected else ''}_general"
    return general


# relu's fast path lives in graphc/eager_relu.py (it builds on the definitions above)
from graphc.eager_relu import _MAX_IS_RELU, _max_is_relu, relu, relu_method  # noqa: E402, F401
