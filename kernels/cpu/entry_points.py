"""Calling a numba kernel through its compiled entry point: the machine code the dispatcher would
pick for arguments of these exact types, without the dispatcher's type lookup of every argument
on every call (about a third of the call's overhead for a fused LSTM gate kernel of 14 arrays,
several microseconds for a GEMM driver given a tuple of arrays). For callers that pass
arguments of the same types on every call: a loop schedule's steps (kernels/cpu/control_flow.py),
a GEMM bound to its arrays (``sgemm.bind_small_m_matmul``)."""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
from numba.core import types
from numba.core.dispatcher import Dispatcher

__all__ = ["arg_types", "entry_point"]

# entry_point's answers by (dispatcher, _cheap_key of the arguments): numba's typeof costs ~10 us
# for a GEMM driver's seven arguments, and a loop schedule binds one GEMM per step.
_ENTRIES: dict[tuple, Callable] = {}
MAX_ENTRIES = 1024  # emptied when full


def arg_types(args: tuple) -> tuple:
    """numba's types of ``args``, as a dispatcher's overloads are keyed."""
    return tuple(numba.typeof(a) for a in args)


def entry_point(fn: Callable, args: tuple) -> Callable:
    """``fn`` itself, or, for a numba dispatcher, the entry point of the overload its dispatch
    would choose for arguments of exactly the types of ``args``: the overload compiled for those
    types, or else its only overload where that takes them as they are (an explicit signature's
    any-layout or read-only arrays: ``_takes``). Valid for later calls with arguments of those
    same types only."""
    if not isinstance(fn, Dispatcher):
        return fn
    try:
        key = (fn, len(fn.overloads), *map(_cheap_key, args))
    except _NoKey:
        return _entry_point(fn, args)
    found = _ENTRIES.get(key)
    if found is None:
        if len(_ENTRIES) >= MAX_ENTRIES:
            _ENTRIES.clear()
        found = _ENTRIES[key] = _entry_point(fn, args)
    return found


class _NoKey(Exception):
    """An argument ``_cheap_key`` does not describe."""


def _cheap_key(x: object) -> tuple:
    """What numba's ``typeof(x)`` depends on, for NumPy arrays (dtype, rank, layout, writable,
    aligned), small ints and tuples of them; _NoKey for anything else."""
    if isinstance(x, np.ndarray) and type(x) is np.ndarray:
        f = x.flags
        return (x.dtype, x.ndim, f.c_contiguous, f.f_contiguous, f.writeable, f.aligned)
    if type(x) is int and x.bit_length() < 63:
        return (int,)
    if type(x) is tuple:
        return (tuple, *map(_cheap_key, x))
    raise _NoKey


def _entry_point(fn: Dispatcher, args: tuple) -> Callable:
    """``entry_point`` without its cache."""
    actual = arg_types(args)
    compiled = fn.overloads.get(actual)
    if compiled is None and len(fn.overloads) == 1:
        ((formal, only),) = fn.overloads.items()
        compiled = only if len(formal) == len(actual) and all(map(_takes, formal, actual)) else None
    return fn if compiled is None else compiled.entry_point


def _takes(formal: types.Type, actual: types.Type) -> bool:
    """Whether an argument of numba type ``actual`` is passed as it is to a compiled parameter of
    type ``formal`` (its unboxing reads it the same way): the same type, an array of the same
    dtype and rank where ``formal`` takes any layout (or the same) and is not writable unless
    ``actual`` is, or a tuple of such."""
    if formal == actual:
        return True
    if isinstance(formal, types.Array) and isinstance(actual, types.Array):
        return (
            formal.dtype == actual.dtype
            and formal.ndim == actual.ndim
            and formal.layout in ("A", actual.layout)
            and (actual.mutable or not formal.mutable)
        )
    if isinstance(formal, types.BaseTuple) and isinstance(actual, types.BaseTuple):
        return len(formal) == len(actual) and all(map(_takes, formal, actual))
    return False
