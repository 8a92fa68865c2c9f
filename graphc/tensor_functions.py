"""Indexing, ordering and contraction functions of PyTorch, as composites of graphc's primitives.

``gather``/``scatter``/``scatter_add`` compute flat positions (a constant base plus the traced
index times a stride) and use the ``gather``/``scatter_add`` primitives on the flattened tensor;
``sort``/``argsort``/``topk`` rank each element by counting comparisons (O(n^2) along the sorted
dim: meant for the short dims models sort over), ``cumsum`` is a product with a triangular
constant; ``einsum`` (graphc/einsum.py) reduces its subscripts to diagonals, sums and matmuls.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphc import torch_extras
from graphc.einsum import einsum
from graphc.functional import _eager
from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, _axis, as_tensor, matmul, user_source, where
from graphc.tensor import traced_operand as _tensor

__all__ = [
    "argsort",
    "baddbmm",
    "bmm",
    "chunk",
    "cumsum",
    "einsum",
    "gather",
    "index_select",
    "repeat_interleave",
    "scatter",
    "scatter_add",
    "sort",
    "split",
    "topk",
    "unbind",
]


def _flat_positions(shape: tuple[int, ...], index: Tensor, dim: int) -> Tensor:
    """Flat positions in a C-ordered tensor of ``shape`` of ``index`` along ``dim``, every other
    coordinate the index's own (torch.gather's addressing)."""
    strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
    base = np.zeros(index.shape, dtype=np.int64)
    for a, n in enumerate(index.shape):
        if a != dim:
            view = [1] * index.ndim
            view[a] = n
            base = base + np.arange(n, dtype=np.int64).reshape(view) * strides[a]
    idx = index.to("i64")
    size = shape[dim]
    idx = where(idx < 0, idx + size, idx)
    return idx * strides[dim] + index.ctx.array(base, name="positions")


def _check_index(x: Tensor, index: Tensor, dim: int, name: str) -> None:
    if index.ndim != x.ndim or any(i > n for a, (i, n) in enumerate(zip(index.shape, x.shape)) if a != dim):
        raise GraphcError(
            f"{_at(user_source())}{name}: index {index.shape} must have the rank of the input {x.shape} "
            "and no larger size along the other dims"
        )
    if index.value.dtype not in ("i32", "i64"):
        raise GraphcError(f"{_at(user_source())}{name}: index must be integers, got {index.value.dtype}")


def gather(input: Any, dim: int, index: Any, sparse_grad: bool = False) -> Tensor:
    """``out[i][j] = input[index[i][j]][j]`` along ``dim`` (torch.gather)."""
    x = _tensor(input)
    index = _tensor(index, like=x)
    d = _axis(dim, x.ndim)
    _check_index(x, index, d, "gather")
    pos = _flat_positions(x.shape, index, d)
    return x.ctx.op("gather", x.reshape(-1), pos, axis=0)


def _scattered(x: Tensor, d: int, index: Tensor, src: Any, name: str) -> tuple[Tensor, Tensor]:
    _check_index(x, index, d, name)
    s = as_tensor(src, like=x)
    if s.ndim == 0:
        s = s.broadcast_to(index.shape)
    elif s.shape != index.shape:
        s = s[tuple(slice(0, n) for n in index.shape)]
    pos = _flat_positions(x.shape, index, d).reshape(-1)
    s = s.to(x.value.dtype).reshape(-1)
    placed = x.ctx.op("scatter_add", pos, s, axis=0, shape=(x.numel(),)).reshape(x.shape)
    return pos, placed


def scatter_add(input: Any, dim: int, index: Any, src: Any) -> Tensor:
    """A copy of ``input`` with ``src`` added at ``index`` along ``dim`` (torch.scatter_add)."""
    x = _tensor(input)
    index = _tensor(index, like=x)
    _, placed = _scattered(x, _axis(dim, x.ndim), index, src, "scatter_add")
    return x + placed


def scatter(
    input: Any, dim: int, index: Any, src: Any = None, value: Any = None, reduce: Any = None
) -> Tensor:
    """A copy of ``input`` with ``src`` (or ``value``) written at ``index`` along ``dim``
    (torch.scatter; where an index repeats, PyTorch leaves the result open and graphc sums)."""
    x = _tensor(input)
    index = _tensor(index, like=x)
    if reduce is not None:
        raise GraphcError(
            f"{_at(user_source())}scatter: reduce={reduce!r} is not supported (use scatter_add)"
        )
    d = _axis(dim, x.ndim)
    pos, placed = _scattered(x, d, index, value if src is None else src, "scatter")
    ones = x.ctx.const(1, "i32").broadcast_to(pos.shape)
    hit = x.ctx.op("scatter_add", pos, ones, axis=0, shape=(x.numel(),)).reshape(x.shape)
    return where(hit > 0, placed, x)


def index_select(input: Any, dim: int, index: Any) -> Tensor:
    """The entries of ``input`` at the 1-D ``index`` along ``dim``."""
    x = _tensor(input)
    d = _axis(dim, x.ndim)
    if isinstance(index, Tensor):
        idx = index.to("i64") if index.value.dtype != "i64" else index
        idx = where(idx < 0, idx + x.shape[d], idx)
    else:
        arr = np.asarray(index, dtype=np.int64)
        idx = x.ctx.array(np.where(arr < 0, arr + x.shape[d], arr), name="index")
    if idx.ndim != 1:
        raise GraphcError(f"{_at(user_source())}index_select: index must be 1-D, got {idx.shape}")
    return x.ctx.op("gather", x, idx, axis=d)


def cumsum(input: Any, dim: int, dtype: Any = None) -> Tensor:
    """Running sum along ``dim`` (a product with a triangular constant)."""
    x = _tensor(input)
    if dtype is not None:
        x = x.to(dtype)
    elif x.value.dtype in ("bool", "i32"):
        x = x.to("i64")
    d = _axis(dim, x.ndim)
    n = x.shape[d]
    moved = x.movedim(d, -1)
    if x.value.dtype in ("f32", "f64"):
        upper = x.ctx.array(np.triu(np.ones((n, n), dtype=x.dtype)), name="cumsum")
        out = matmul(moved, upper)
    else:
        lower = x.ctx.array(np.tril(np.ones((n, n), dtype=bool)), name="cumsum")
        out = where(lower, moved.unsqueeze(-2), 0).sum(-1)
    return out.movedim(-1, d)


def _ranks(x: Tensor, descending: bool) -> Tensor:
    """Each element's position in a stable sort of the last dim (ties keep their order)."""
    n = x.shape[-1]
    xi, xj = x.unsqueeze(-1), x.unsqueeze(-2)
    before = (xj > xi) if descending else (xj < xi)
    earlier = x.ctx.array(np.tri(n, n, -1, dtype=bool), name="earlier")  # [i, j]: j < i
    tie = (xj == xi) & earlier
    return (before | tie).to("i64").sum(-1)


def _sorted(x: Tensor, dim: int, descending: bool) -> tuple[Tensor, Tensor]:
    d = _axis(dim, x.ndim)
    moved = x.movedim(d, -1)
    n = moved.shape[-1]
    rank = _ranks(moved, descending)
    slots = x.ctx.array(np.arange(n, dtype=np.int64), name="slots")
    placed = rank.unsqueeze(-1) == slots  # [..., i, r]
    values = where(placed, moved.unsqueeze(-1), 0).sum(-2)
    positions = x.ctx.array(np.arange(n, dtype=np.int64).reshape(n, 1), name="positions")
    indices = where(placed, positions, 0).sum(-2)
    return values.movedim(-1, d), indices.movedim(-1, d)


class _Pair(tuple):
    """(values, indices) with ``.values`` and ``.indices``, as PyTorch's sort/topk results."""

    @property
    def values(self) -> Tensor:
        """The sorted values."""
        return self[0]

    @property
    def indices(self) -> Tensor:
        """Where they came from."""
        return self[1]


def sort(input: Any, dim: int = -1, descending: bool = False, stable: bool = False) -> tuple[Tensor, Tensor]:
    """(values, indices) sorted along ``dim`` (stable)."""
    x = _tensor(input)
    return _Pair(_sorted(x, dim, descending))


def argsort(input: Any, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
    """Indices that sort ``input`` along ``dim`` (stable)."""
    return _sorted(_tensor(input), dim, descending)[1]


def topk(
    input: Any, k: int, dim: int = -1, largest: bool = True, sorted: bool = True
) -> tuple[Tensor, Tensor]:
    """(values, indices) of the ``k`` largest (or smallest) entries along ``dim``, sorted."""
    x = _tensor(input)
    d = _axis(dim, x.ndim)
    if not 0 <= k <= x.shape[d]:
        raise GraphcError(f"{_at(user_source())}topk: k={k} is out of range for dim {d} of size {x.shape[d]}")
    values, indices = _sorted(x, d, largest)
    key = tuple(slice(0, k) if a == d else slice(None) for a in range(x.ndim))
    return _Pair((values[key], indices[key]))


def repeat_interleave(input: Any, repeats: Any, dim: int | None = None) -> Tensor:
    """Each entry ``repeats`` times along ``dim`` (of the flattened input when None)."""
    x = _tensor(input)
    if not isinstance(repeats, int):
        raise GraphcError(f"{_at(user_source())}repeat_interleave: repeats must be an int while tracing")
    if dim is None:
        x, dim = x.reshape(-1), 0
    d = _axis(dim, x.ndim)
    shape = list(x.shape)
    expanded = x.unsqueeze(d + 1).broadcast_to((*shape[: d + 1], repeats, *shape[d + 1 :]))
    shape[d] *= repeats
    return expanded.reshape(shape)


def split(tensor: Any, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
    """Pieces along ``dim`` (torch.split)."""
    return _tensor(tensor).split(split_size_or_sections, dim)


def chunk(input: Any, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """``chunks`` nearly equal pieces along ``dim``."""
    return _tensor(input).chunk(chunks, dim)


def unbind(input: Any, dim: int = 0) -> tuple[Tensor, ...]:
    """The slices along ``dim``."""
    return _tensor(input).unbind(dim)


def bmm(input: Any, mat2: Any) -> Tensor:
    """Batched matrix product of [B, n, m] and [B, m, p]."""
    return _tensor(input).bmm(mat2)


def baddbmm(input: Any, batch1: Any, batch2: Any, *, beta: float = 1, alpha: float = 1) -> Tensor:
    """beta * input + alpha * (batch1 @ batch2)."""
    prod = _tensor(batch1).bmm(batch2)
    prod = prod if alpha == 1 else prod * alpha
    if beta == 0:
        return prod
    inp = as_tensor(input, like=prod)
    return prod + (inp if beta == 1 else inp * beta)


# graphc/torch_extras.py's functions too (any/all only at the top level: graphc/torch_functions.py)
for _name in torch_extras.__all__:
    if _name not in ("any", "all"):
        globals()[_name] = getattr(torch_extras, _name)
        __all__.append(_name)

# Outside a trace, NumPy arguments run the function in eager mode (graphc/eager.py).
for _name in __all__:
    globals()[_name] = _eager(globals()[_name])
