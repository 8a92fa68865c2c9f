"""Tensor creation with PyTorch's names: dtypes, the default dtype, and arange/zeros/ones/... .

Outside a trace each function returns an eager Tensor (graphc/eager.py: PyTorch's Tensor methods
work on it, and NumPy reads it as an array, so ``__init__`` code builds buffers and parameters
from it); inside a trace it returns a Tensor: a graph constant, or for ``*_like`` of a
traced Tensor and for the random functions, graph ops (``rand``/``randn``/``randint`` draw from
the counter-based RNG that dropout uses, so each call of the plan gives new numbers). Outside a
trace the random functions draw from graphc's generator (``graphc.manual_seed``).

Float results take the default dtype (float32 unless ``set_default_dtype(float64)``), as in
PyTorch; integer ones int64.
"""

from __future__ import annotations

import builtins
import math
from typing import Any

import numpy as np

from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, as_tensor, current_context, user_source

# PyTorch's dtype names, as NumPy dtypes (``x.to(graphc.float32)``, ``dtype=torch.long``).
float32 = float = np.dtype(np.float32)
float64 = double = np.dtype(np.float64)
int32 = int = np.dtype(np.int32)
int64 = long = np.dtype(np.int64)
bool = np.dtype(np.bool_)

_DEFAULT = [np.dtype(np.float32)]

# ``bool``/``float``/``int``/``long``/``double`` are left out of __all__ (a star import would hide
# Python's builtins); ``graphc.float`` etc. are imported by name in graphc/__init__.py.

__all__ = [
    "arange",
    "empty",
    "empty_like",
    "eye",
    "float32",
    "float64",
    "from_numpy",
    "full",
    "full_like",
    "get_default_dtype",
    "int32",
    "int64",
    "linspace",
    "ones",
    "ones_like",
    "rand",
    "rand_like",
    "randint",
    "randn",
    "randn_like",
    "set_default_dtype",
    "tensor",
    "tril",
    "triu",
    "zeros",
    "zeros_like",
]


def get_default_dtype() -> np.dtype:
    """The dtype float data gets when none is given (float32, as PyTorch's default)."""
    return _DEFAULT[0]


def set_default_dtype(dtype: Any) -> None:
    """Set the default float dtype (float32 or float64), as ``torch.set_default_dtype``."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise GraphcError(f"set_default_dtype: float32 or float64 only, got {dt}")
    _DEFAULT[0] = dt


def default_float(array: np.ndarray) -> np.ndarray:
    """``array`` with float64 data cast to the default dtype (PyTorch's rule for new tensors)."""
    if array.dtype == np.float64 and _DEFAULT[0] != array.dtype:
        return array.astype(_DEFAULT[0])
    return array


def _size(size: tuple) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (list, tuple)):
        size = tuple(size[0])
    try:
        return tuple(_int(s) for s in size)
    except (TypeError, ValueError, GraphcError):
        raise GraphcError(f"{_at(user_source())}sizes must be ints, got {size}") from None


def _int(v: Any) -> builtins.int:
    return builtins.int(v)


def _dtype(dtype: Any, fallback: Any = None) -> np.dtype:
    if dtype is None:
        return np.dtype(fallback if fallback is not None else _DEFAULT[0])
    from graphc.ir import DTYPES
    from graphc.tensor import _dtype_name

    return np.dtype(DTYPES[_dtype_name(dtype)])


def _out(array: np.ndarray) -> Any:
    """The array outside a trace, a graph constant inside one."""
    ctx = current_context()
    if ctx is None:  # an eager Tensor: torch's Tensor methods work on it, and it is an array too
        from graphc.eager import EAGER

        return EAGER.array(array, kind="const")
    return ctx.array(array, name="const")


def tensor(data: Any, dtype: Any = None, device: Any = None, requires_grad: Any = False) -> Any:
    """A new array of ``data`` (float data in the default dtype unless ``dtype`` is given)."""
    if isinstance(data, Tensor):
        return data if dtype is None else data.to(dtype)
    arr = np.array(data)
    if dtype is not None:
        arr = arr.astype(_dtype(dtype))
    elif arr.dtype.kind == "f":
        arr = arr.astype(_DEFAULT[0])
    return _out(arr)


def from_numpy(array: np.ndarray) -> Any:
    """The array itself (its dtype kept, as ``torch.from_numpy``)."""
    return _out(np.asarray(array))


def zeros(*size: Any, dtype: Any = None, device: Any = None, requires_grad: Any = False) -> Any:
    """An array of zeros."""
    return _out(np.zeros(_size(size), dtype=_dtype(dtype)))


def ones(*size: Any, dtype: Any = None, device: Any = None, requires_grad: Any = False) -> Any:
    """An array of ones."""
    return _out(np.ones(_size(size), dtype=_dtype(dtype)))


def empty(*size: Any, dtype: Any = None, device: Any = None, requires_grad: Any = False) -> Any:
    """An array of the given size (zeros: graphc never hands out uninitialized memory)."""
    return zeros(*size, dtype=dtype)


def full(
    size: Any, fill_value: Any, dtype: Any = None, device: Any = None, requires_grad: Any = False
) -> Any:
    """An array filled with ``fill_value`` (its dtype from the value unless given, as PyTorch)."""
    if dtype is None:
        kind = np.asarray(fill_value).dtype.kind
        dtype = np.bool_ if kind == "b" else np.int64 if kind in "iu" else None
    return _out(np.full(_size((size,)), fill_value, dtype=_dtype(dtype)))


def arange(
    start: Any,
    end: Any = None,
    step: Any = 1,
    dtype: Any = None,
    device: Any = None,
    requires_grad: Any = False,
) -> Any:
    """Values from start to end (exclusive) by step; int64 for ints, else the default dtype."""
    if end is None:
        start, end = 0, start
    ints = all(isinstance(v, (np.integer,)) or type(v).__name__ == "int" for v in (start, end, step))
    return _out(np.arange(start, end, step).astype(_dtype(dtype, np.int64 if ints else None)))


def linspace(start: Any, end: Any, steps: Any, dtype: Any = None, device: Any = None) -> Any:
    """``steps`` evenly spaced values from start to end (both included)."""
    return _out(np.linspace(start, end, _int(steps)).astype(_dtype(dtype)))


def eye(n: Any, m: Any = None, dtype: Any = None, device: Any = None) -> Any:
    """The identity matrix [n, m]."""
    return _out(np.eye(_int(n), None if m is None else _int(m), dtype=_dtype(dtype)))


def _triangle(input: Any, diagonal: int, lower: bool) -> Any:
    if isinstance(input, Tensor):
        rows, cols = input.shape[-2:]
        keep = (
            np.tri(rows, cols, diagonal, dtype=np.bool_)
            if lower
            else ~np.tri(rows, cols, diagonal - 1, dtype=np.bool_)
        )
        from graphc.tensor import where

        return where(input.ctx.array(keep, name="mask"), input, as_tensor(0, like=input))
    arr = np.asarray(input)
    return _out(np.tril(arr, diagonal) if lower else np.triu(arr, diagonal))


def tril(input: Any, diagonal: int = 0) -> Any:
    """The lower triangle (of the last two dims), the rest zero."""
    return _triangle(input, diagonal, True)


def triu(input: Any, diagonal: int = 0) -> Any:
    """The upper triangle (of the last two dims), the rest zero."""
    return _triangle(input, diagonal, False)


def _like(input: Any, value: Any, dtype: Any) -> Any:
    if isinstance(input, Tensor):
        dt = _dtype(dtype, input.dtype)
        from graphc.tensor import _dtype_name

        return input.ctx.const(value, _dtype_name(dt)).broadcast_to(input.shape)
    arr = np.asarray(input)
    return _out(np.full(arr.shape, value, dtype=_dtype(dtype, arr.dtype)))


def zeros_like(input: Any, dtype: Any = None, device: Any = None, requires_grad: Any = False) -> Any:
    """Zeros of ``input``'s shape and dtype."""
    return _like(input, 0, dtype)


def ones_like(input: Any, dtype: Any = None, device: Any = None, requires_grad: Any = False) -> Any:
    """Ones of ``input``'s shape and dtype."""
    return _like(input, 1, dtype)


def empty_like(input: Any, dtype: Any = None, device: Any = None, requires_grad: Any = False) -> Any:
    """Zeros of ``input``'s shape and dtype (graphc never hands out uninitialized memory)."""
    return _like(input, 0, dtype)


def full_like(input: Any, fill_value: Any, dtype: Any = None, device: Any = None) -> Any:
    """``fill_value`` in ``input``'s shape and dtype."""
    return _like(input, fill_value, dtype)


# ---------------------------------------------------------------------------- random
def _uniform_traced(shape: tuple[int, ...], dtype: np.dtype) -> Tensor:
    from graphc.ir import from_numpy_dtype
    from graphc.nn.init import next_seed

    ctx = current_context()
    return ctx.op(
        "rng_uniform", ctx.rng_offset(), shape=shape, seed=next_seed(), dtype=from_numpy_dtype(dtype)
    )


def rand(
    *size: Any, dtype: Any = None, generator: Any = None, device: Any = None, requires_grad: Any = False
) -> Any:
    """Uniform values in [0, 1)."""
    from graphc.nn.init import generator as gen

    shape, dt = _size(size), _dtype(dtype)
    if current_context() is not None:
        return _uniform_traced(shape, dt)
    return _out(gen().random(shape).astype(dt))


def randn(
    *size: Any, dtype: Any = None, generator: Any = None, device: Any = None, requires_grad: Any = False
) -> Any:
    """Standard normal values (Box-Muller of two uniform draws inside a trace)."""
    from graphc.nn.init import generator as gen

    shape, dt = _size(size), _dtype(dtype)
    if current_context() is not None:
        u1, u2 = _uniform_traced(shape, dt), _uniform_traced(shape, dt)
        radius = ((1.0 - u1).log() * -2.0).sqrt()
        return radius * (u2 * (2 * math.pi)).cos()
    return _out(gen().standard_normal(shape).astype(dt))


def randint(low: Any, high: Any = None, size: Any = None, dtype: Any = None, device: Any = None) -> Any:
    """Integers in [low, high) (int64 unless ``dtype``)."""
    from graphc.nn.init import generator as gen

    if size is None:
        low, high, size = 0, low, high
    shape, dt = _size((size,)), _dtype(dtype, np.int64)
    if current_context() is not None:
        u = _uniform_traced(shape, np.dtype(np.float64))
        out = (u * (_int(high) - _int(low))).to("i64") + _int(low)
        return out.minimum(_int(high) - 1).to(dt)
    return _out(gen().integers(low, high, size=shape).astype(dt))


def rand_like(input: Any, dtype: Any = None) -> Any:
    """Uniform values in [0, 1) of ``input``'s shape."""
    return rand(*input.shape, dtype=dtype if dtype is not None else input.dtype)


def randn_like(input: Any, dtype: Any = None) -> Any:
    """Standard normal values of ``input``'s shape."""
    return randn(*input.shape, dtype=dtype if dtype is not None else input.dtype)
