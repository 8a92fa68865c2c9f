"""More of torch's functions that ported model code calls, as composites of graphc's primitives:
``outer``, ``addmm`` (GPT-2's Conv1D), ``lerp`` (EMA), ``logsumexp``, ``flip``/``roll`` (gathers with a
constant index), ``diagonal``/``diag``/``trace``, ``tensordot`` (an einsum), ``hstack``/``vstack``,
``clamp_min``/``clamp_max``, ``any``/``all``, ``norm``, ``log1p``/``expm1`` and
``isnan``/``isinf``/``isfinite``, ``index_fill``/``index_add``/``take_along_dim``.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

import numpy as np

from graphc.einsum import einsum
from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, _axis, as_tensor, user_source, where
from graphc.tensor import traced_operand as _tensor

__all__ = [
    "addmm",
    "all",
    "any",
    "clamp_max",
    "clamp_min",
    "diag",
    "diagonal",
    "expm1",
    "flip",
    "hstack",
    "index_add",
    "index_fill",
    "isfinite",
    "isinf",
    "isnan",
    "lerp",
    "log1p",
    "logsumexp",
    "norm",
    "outer",
    "roll",
    "take_along_dim",
    "tensordot",
    "trace",
    "vstack",
]


def _dims(dim: Any, ndim: int) -> list[int]:
    dims = [dim] if isinstance(dim, int) else list(dim)
    return [_axis(d, ndim) for d in dims]


def outer(input: Any, vec2: Any) -> Tensor:
    """The outer product of two 1-D tensors (torch.outer / torch.ger)."""
    a = _tensor(input)
    b = _tensor(vec2, like=a)
    if a.ndim != 1 or b.ndim != 1:
        raise GraphcError(f"{_at(user_source())}outer: needs two 1-D tensors, got {a.shape} and {b.shape}")
    return a.unsqueeze(1) * b.unsqueeze(0)


def addmm(input: Any, mat1: Any, mat2: Any, *, beta: float = 1, alpha: float = 1) -> Tensor:
    """beta * input + alpha * (mat1 @ mat2) for 2-D mat1 and mat2."""
    m1 = _tensor(mat1)
    m2 = _tensor(mat2, like=m1)
    if m1.ndim != 2 or m2.ndim != 2:
        raise GraphcError(f"{_at(user_source())}addmm: needs 2-D matrices, got {m1.shape} and {m2.shape}")
    prod = m1 @ m2
    prod = prod if alpha == 1 else prod * alpha
    if beta == 0:
        return prod
    inp = as_tensor(input, like=prod)
    return prod + (inp if beta == 1 else inp * beta)


def lerp(input: Any, end: Any, weight: Any) -> Tensor:
    """input + weight * (end - input)."""
    x = _tensor(input)
    return x + as_tensor(weight, like=x) * (as_tensor(end, like=x) - x)


def logsumexp(input: Any, dim: Any, keepdim: bool = False) -> Tensor:
    """log(sum(exp(input))) over ``dim``, shifted by the maximum so it does not overflow."""
    x = _tensor(input)
    dims = tuple(_dims(dim, x.ndim))
    m = x.amax(dims, keepdim=True).detach()
    m = where(m.abs() == float("inf"), 0.0, m)  # an all -inf slice gives -inf, not NaN
    out = (x - m).exp().sum(dims, keepdim=True).log() + m
    return out if keepdim else out.squeeze(dims)


def _take(x: Tensor, d: int, index: np.ndarray) -> Tensor:
    return x.ctx.op("gather", x, x.ctx.array(index.astype(np.int64), name="index"), axis=d)


def flip(input: Any, dims: Any) -> Tensor:
    """The entries in reverse order along each of ``dims``."""
    x = _tensor(input)
    for d in _dims(dims, x.ndim):
        x = _take(x, d, np.arange(x.shape[d])[::-1])
    return x


def roll(input: Any, shifts: Any, dims: Any = None) -> Tensor:
    """The entries shifted circularly by ``shifts`` along ``dims`` (of the flattened tensor if None)."""
    x = _tensor(input)
    if dims is None:
        return roll(x.reshape(-1), shifts, 0).reshape(x.shape)
    shift_list = [shifts] if isinstance(shifts, int) else list(shifts)
    dim_list = _dims(dims, x.ndim)
    if len(shift_list) != len(dim_list):
        raise GraphcError(
            f"{_at(user_source())}roll: {len(shift_list)} shifts for {len(dim_list)} dims (they must pair up)"
        )
    for s, d in zip(shift_list, dim_list):
        n = x.shape[d]
        if n:
            x = _take(x, d, (np.arange(n) - int(s)) % n)
    return x


def diagonal(input: Any, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
    """The diagonal of the (dim1, dim2) planes as a new last dim (torch.diagonal)."""
    x = _tensor(input)
    d1, d2 = _axis(dim1, x.ndim), _axis(dim2, x.ndim)
    if d1 == d2:
        raise GraphcError(f"{_at(user_source())}diagonal: dim1 and dim2 are both {d1}")
    rest = [a for a in range(x.ndim) if a not in (d1, d2)]
    n, m = x.shape[d1], x.shape[d2]
    rows = np.arange(max(0, min(n, m - offset) if offset >= 0 else min(n + offset, m)))
    pos = (rows + max(-offset, 0)) * m + rows + max(offset, 0)
    x = x.permute(rest + [d1, d2]).reshape([x.shape[a] for a in rest] + [n * m])
    return _take(x, x.ndim - 1, pos)


def diag(input: Any, diagonal: int = 0) -> Tensor:
    """A 1-D input as the ``diagonal``-th diagonal of a square matrix; a 2-D input's diagonal."""
    x = _tensor(input)
    if x.ndim == 2:
        return globals()["diagonal"](x, diagonal)
    if x.ndim != 1:
        raise GraphcError(f"{_at(user_source())}diag: needs a 1-D or 2-D tensor, got {x.shape}")
    n, k = x.shape[0], abs(diagonal)
    eye = x.ctx.array(np.eye(n, dtype=bool), name="eye")
    square = where(eye, x.unsqueeze(0), x.ctx.const(0, x.value.dtype))
    if k == 0:
        return square
    pads = ((0, k), (k, 0)) if diagonal > 0 else ((k, 0), (0, k))
    return x.ctx.op("pad", square, pads=pads, value=0.0)


def trace(input: Any) -> Tensor:
    """The sum of a 2-D tensor's diagonal."""
    x = _tensor(input)
    if x.ndim != 2:
        raise GraphcError(f"{_at(user_source())}trace: needs a 2-D tensor, got {x.shape}")
    return diagonal(x).sum()


def tensordot(a: Any, b: Any, dims: Any = 2) -> Tensor:
    """Sum over the last ``dims`` dims of ``a`` and the first of ``b`` (or the listed dim pairs)."""
    x = _tensor(a)
    y = _tensor(b, like=x)
    if isinstance(dims, int):
        da, db = list(range(x.ndim - dims, x.ndim)), list(range(dims))
    else:
        da, db = ([d] if isinstance(d, int) else list(d) for d in dims)
    da, db = [_axis(d, x.ndim) for d in da], [_axis(d, y.ndim) for d in db]
    if len(da) != len(db) or x.ndim + y.ndim > 52:
        raise GraphcError(f"{_at(user_source())}tensordot: dims {dims} do not pair up")
    letters = string.ascii_letters
    la = letters[: x.ndim]
    lb = list(letters[x.ndim : x.ndim + y.ndim])
    for i, j in zip(da, db):
        lb[j] = la[i]
    lb_s = "".join(lb)
    out = "".join(c for i, c in enumerate(la) if i not in da) + "".join(
        c for j, c in enumerate(lb_s) if j not in db
    )
    return einsum(f"{la},{lb_s}->{out}", x, y)


def _atleast(x: Tensor, rank: int) -> Tensor:
    return x.reshape((1,) * (rank - x.ndim) + tuple(x.shape)) if x.ndim < rank else x


def hstack(tensors: Sequence[Any]) -> Tensor:
    """Concatenate along dim 1 (dim 0 for 1-D tensors)."""
    from graphc.functional import cat

    ts = [
        _atleast(_tensor(t, like=tensors[0] if isinstance(tensors[0], Tensor) else None), 1) for t in tensors
    ]
    return cat(ts, 0 if ts[0].ndim == 1 else 1)


def vstack(tensors: Sequence[Any]) -> Tensor:
    """Concatenate along dim 0, 1-D tensors as rows."""
    from graphc.functional import cat

    ts = [
        _atleast(_tensor(t, like=tensors[0] if isinstance(tensors[0], Tensor) else None), 2) for t in tensors
    ]
    return cat(ts, 0)


def clamp_min(input: Any, min: Any) -> Tensor:  # noqa: A002
    """max(input, min)."""
    return _tensor(input).clamp(min=min)


def clamp_max(input: Any, max: Any) -> Tensor:  # noqa: A002
    """min(input, max)."""
    return _tensor(input).clamp(max=max)


def _nonzero_count(x: Tensor, dim: Any, keepdim: bool, zero: bool) -> Tensor:
    flags = (x == 0) if zero else (x != 0)
    return flags.to("i32").sum(dim, keepdim=keepdim) if dim is not None else flags.to("i32").sum()


def any(input: Any, dim: Any = None, keepdim: bool = False) -> Tensor:  # noqa: A001
    """Whether any entry (along ``dim``) is nonzero, as bool."""
    return _nonzero_count(_tensor(input), dim, keepdim, zero=False) > 0


def all(input: Any, dim: Any = None, keepdim: bool = False) -> Tensor:  # noqa: A001
    """Whether every entry (along ``dim``) is nonzero, as bool."""
    return _nonzero_count(_tensor(input), dim, keepdim, zero=True) == 0


def norm(input: Any, p: Any = "fro", dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Tensor:
    """The p-norm (2 and "fro": Euclidean; 1; inf) over ``dim`` (all entries when None)."""
    x = _tensor(input)
    if dtype is not None:
        x = x.to(dtype)
    dims = tuple(range(x.ndim)) if dim is None else tuple(_dims(dim, x.ndim))
    if p in ("fro", 2, 2.0):
        return (x * x).sum(dims, keepdim=keepdim).sqrt()
    if p in (1, 1.0):
        return x.abs().sum(dims, keepdim=keepdim)
    if p == float("inf"):
        return x.abs().amax(dims, keepdim=keepdim)
    if isinstance(p, (int, float)) and p > 0:
        return x.abs().pow(p).sum(dims, keepdim=keepdim).pow(1.0 / p)
    raise GraphcError(f"{_at(user_source())}norm: p={p!r} is not supported (use 1, 2, 'fro', inf or p > 0)")


def log1p(input: Any) -> Tensor:
    """log(1 + input)."""
    return (_tensor(input) + 1).log()


def expm1(input: Any) -> Tensor:
    """exp(input) - 1."""
    return _tensor(input).exp() - 1


def isnan(input: Any) -> Tensor:
    """Where the entries are NaN (x != x)."""
    x = _tensor(input)
    return x != x


def isinf(input: Any) -> Tensor:
    """Where the entries are +-inf."""
    x = _tensor(input)
    return x.abs() == float("inf") if x.value.dtype.startswith(("f", "bf")) else x != x


def isfinite(input: Any) -> Tensor:
    """Where the entries are neither NaN nor +-inf (x - x is 0 exactly then)."""
    x = _tensor(input)
    return (x - x) == 0 if x.value.dtype.startswith(("f", "bf")) else x == x


def _hits(x: Tensor, d: int, index: Any) -> Tensor:
    """[size_d, k]: whether position i along dim d is index[j] (negative entries count from the end)."""
    idx = index if isinstance(index, Tensor) else x.ctx.array(np.asarray(index, dtype=np.int64), name="index")
    if idx.ndim > 1:
        raise GraphcError(f"{_at(user_source())}index must be a 0-D or 1-D tensor, got shape {idx.shape}")
    idx = idx.reshape(-1).to("i64")
    idx = where(idx < 0, idx + x.shape[d], idx)
    positions = x.ctx.array(np.arange(x.shape[d], dtype=np.int64).reshape(-1, 1), name="positions")
    return positions == idx.reshape(1, -1)


def index_fill(input: Any, dim: int, index: Any, value: Any) -> Tensor:
    """A copy with the entries at ``index`` along ``dim`` set to ``value``."""
    x = _tensor(input)
    d = _axis(dim, x.ndim)
    hit = any(_hits(x, d, index), dim=1)
    shape = [1] * x.ndim
    shape[d] = x.shape[d]
    return where(hit.reshape(shape), as_tensor(value, like=x).to(x.value.dtype), x)


def index_add(input: Any, dim: int, index: Any, source: Any, *, alpha: Any = 1) -> Tensor:
    """A copy with ``alpha * source``'s slices added at ``index`` along ``dim`` (repeats add up)."""
    x = _tensor(input)
    d = _axis(dim, x.ndim)
    src = as_tensor(source, like=x)
    onehot = _hits(x, d, index).to(x.value.dtype)  # [size, k]
    moved = src.movedim(d, 0)
    added = (onehot @ moved.reshape(moved.shape[0], -1)).reshape((x.shape[d], *moved.shape[1:])).movedim(0, d)
    return x + (added if alpha == 1 else added * alpha)


def take_along_dim(input: Any, indices: Any, dim: int | None = None) -> Tensor:
    """input.gather(dim, indices) with the other dims broadcast (of the flattened input if dim is None)."""
    from graphc.tensor_functions import gather

    x = _tensor(input)
    idx = _tensor(indices, like=x)
    if dim is None:
        return gather(x.reshape(-1), 0, idx.reshape(-1))
    d = _axis(dim, x.ndim)
    xs, js = list(x.shape), list(idx.shape)
    xs[d] = js[d] = 1
    common = list(np.broadcast_shapes(tuple(xs), tuple(js)))
    x = x.broadcast_to(common[:d] + [x.shape[d]] + common[d + 1 :])
    idx = idx.broadcast_to(common[:d] + [idx.shape[d]] + common[d + 1 :])
    return gather(x, d, idx)
