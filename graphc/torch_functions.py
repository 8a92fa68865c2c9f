"""``torch.<fn>(tensor, ...)`` spellings of Tensor methods, for the ``graphc`` namespace.

Model code written against ``torch`` calls many functions on the top-level module
(``torch.exp(x)``, ``torch.flatten(x, 1)``, ``torch.clamp(x, 0, 6)``); each here forwards to the
Tensor method of the same name, so both spellings trace the same ops.
"""

from __future__ import annotations

from typing import Any

from graphc.functional import _eager
from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, as_tensor, current_context, user_source

_METHODS = (
    "abs",
    "acos",
    "acosh",
    "arccos",
    "arccosh",
    "arcsin",
    "arcsinh",
    "arctan",
    "arctanh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "bitwise_and",
    "bitwise_left_shift",
    "bitwise_not",
    "bitwise_or",
    "bitwise_right_shift",
    "bitwise_xor",
    "cumprod",
    "prod",
    "amax",
    "amin",
    "argmax",
    "argmin",
    "clamp",
    "clip",
    "cos",
    "erf",
    "exp",
    "flatten",
    "floor",
    "ceil",
    "round",
    "trunc",
    "fmod",
    "remainder",
    "floor_divide",
    "log",
    "masked_fill",
    "maximum",
    "mean",
    "minimum",
    "neg",
    "permute",
    "pow",
    "reciprocal",
    "reshape",
    "rsqrt",
    "sign",
    "sin",
    "sqrt",
    "square",
    "squeeze",
    "std",
    "sum",
    "swapaxes",
    "transpose",
    "unsqueeze",
    "var",
)

__all__ = [*_METHODS, "numel", "max", "min", "any", "all"]


def _forward(name: str):
    def fn(input: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(input, (list, tuple, int, float)) and current_context() is not None:
            input = as_tensor(input)
        if not isinstance(input, Tensor):
            raise GraphcError(
                f"{_at(user_source())}torch.{name} needs a traced Tensor, got {type(input).__name__}"
            )
        return getattr(input, name)(*args, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``input.{name}(...)``."
    return fn


for _name in _METHODS:
    globals()[_name] = _forward(_name)


def numel(input: Any) -> int:
    """Number of elements."""
    return int(input.numel() if isinstance(input, Tensor) else input.size)


def max(input: Any, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001
    """Maximum over all (or ``dim``, with ``.indices``), or the elementwise maximum of two tensors."""
    if isinstance(dim, Tensor):
        return input.maximum(dim)
    return input.max() if dim is None else input.max(dim, keepdim)


def min(input: Any, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001
    """Minimum over all (or ``dim``, with ``.indices``), or the elementwise minimum of two tensors."""
    if isinstance(dim, Tensor):
        return input.minimum(dim)
    return input.min() if dim is None else input.min(dim, keepdim)


def any(input: Any, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001
    """Whether any entry (along ``dim``) is nonzero."""
    from graphc.torch_extras import any as any_

    return any_(input, dim, keepdim)


def all(input: Any, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001
    """Whether every entry (along ``dim``) is nonzero."""
    from graphc.torch_extras import all as all_

    return all_(input, dim, keepdim)


# Outside a trace, NumPy arguments run the function in eager mode (graphc/eager.py).
for _name in __all__:
    globals()[_name] = _eager(globals()[_name])
