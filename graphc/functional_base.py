"""The helpers every part of graphc.functional shares: eager dispatch, operand coercion, reductions."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from graphc.ir import GraphcError
from graphc.ir.types import FLOAT_DTYPES
from graphc.tensor import Tensor, _at, as_tensor, current_context, user_source

F = TypeVar("F", bound=Callable[..., Any])


def _eager(fn: F) -> F:
    """Let ``fn`` run on NumPy arrays or eager Tensors outside a trace, in eager mode."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_context() is None:
            import graphc.eager as eager

            if eager.wants_eager((*args, *kwargs.values())):
                return eager.call(fn, args, kwargs)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _t(x: Any, like: Tensor | None = None) -> Tensor:
    return as_tensor(x, like=like)


def _composite(fn: Callable[..., Tensor], operands: tuple, static: dict) -> Tensor | None:
    """Eager mode: ``fn(*operands, **static)`` as one tape entry (graphc/eager_composite.py), or
    None where that signature runs op by op."""
    from graphc import eager_composite

    return eager_composite.run(fn, operands, static)


def _float(x: Tensor) -> Tensor:
    return x if x.value.dtype in FLOAT_DTYPES else x.to("f32")


def _pair(v: Any, name: str = "argument") -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(i) for i in v)
    if len(v) == 1:
        return (v[0], v[0])
    if len(v) != 2:
        raise GraphcError(f"{_at(user_source())}{name} needs one or two ints, got {v}")
    return v  # type: ignore[return-value]


def _reduce(loss: Tensor, reduction: str, name: str = "") -> Tensor:
    """A loss's ``reduction`` (PyTorch's "mean", "sum" or "none"); ``name`` labels the error."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    label = f"{name}: " if name else ""
    raise GraphcError(
        f"{_at(user_source())}{label}reduction must be 'mean', 'sum' or 'none', got {reduction!r}"
    )


def _result(x: Tensor, out: Tensor, inplace: bool, name: str) -> Tensor:
    """``out``, or with ``inplace`` x rebound to it (PyTorch's in-place semantics, see Tensor)."""
    return x._assign_inplace(out, name) if inplace else out
