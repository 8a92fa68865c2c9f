"""Tensor's movement methods: reshape/view, transpose/permute, expand, squeeze, flatten, cat-like
helpers and indexing entry points. A mixin of graphc.tensor.Tensor, kept apart so each file reads
in one sitting."""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING

import numpy as np

from graphc.ir import GraphcError
from graphc.tracing import _at, user_source

if TYPE_CHECKING:
    from graphc.tensor import Tensor


class MovementOps:
    """Shape and layout methods of Tensor (see graphc.tensor for the class itself)."""

    __slots__ = ()

    # ------------------------------------------------------------ movement
    def reshape(self, *shape: object) -> Tensor:
        """Reshape; one dimension may be -1."""
        target = _t._infer_shape(_t._shape_args(shape), self.numel(), self.shape)
        if target == self.shape:
            return self
        view = self.ctx.op("reshape", self, shape=target)._view_of(self)
        if self._live_base() is None:  # writes into the view go back into self (graphc/indexing.py)
            view._index = (weakref.ref(self), _t.indexing.Reshaped(target), self.value)
        return view

    view = reshape

    def view_as(self, other: Tensor) -> Tensor:
        """Reshape to ``other``'s shape."""
        return self.reshape(other.shape)

    def transpose(self, *dims: object) -> Tensor:
        """Swap two dims (PyTorch); no arguments or one tuple is NumPy's permutation."""
        if len(dims) == 2 and all(isinstance(d, int) for d in dims):
            perm = list(range(self.ndim))
            a, b = _t._axis(dims[0], self.ndim), _t._axis(dims[1], self.ndim)
            perm[a], perm[b] = perm[b], perm[a]
            return self.permute(perm)
        if not dims:
            return self.permute(list(reversed(range(self.ndim))))
        return self.permute(*dims)

    def permute(self, *dims: object) -> Tensor:
        """Reorder dims: ``out.shape[i] == self.shape[dims[i]]``."""
        perm = _permutation(dims, len(self.value.type.shape))
        if perm is None:
            return self
        if self.ctx.eager:  # eager mode's fast path (graphc/eager_fast.py); None: the general path
            out = self.ctx.permute(self, perm)
            if out is not None:
                return out._view_of(self)
        return self.ctx.op("transpose", self, perm=perm)._view_of(self)

    @property
    def T(self) -> Tensor:
        """All dims reversed."""
        n = len(self.value.type.shape)
        perm = _REVERSED.get(n)
        if perm is None:
            perm = _REVERSED[n] = tuple(range(n - 1, -1, -1))
        return self.permute(perm)

    @property
    def mT(self) -> Tensor:
        """The last two dims swapped."""
        return self.transpose(-2, -1)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        """Merge dims start_dim..end_dim into one."""
        if self.ndim == 0:
            return self.reshape(1)
        s, e = _t._axis(start_dim, self.ndim), _t._axis(end_dim, self.ndim)
        if s > e:
            raise GraphcError(
                f"{_at(user_source())}flatten: start_dim {start_dim} is after end_dim {end_dim}"
            )
        merged = math.prod(self.shape[s : e + 1])
        return self.reshape((*self.shape[:s], merged, *self.shape[e + 1 :]))

    def unsqueeze(self, dim: int) -> Tensor:
        """Insert a dim of size 1 at ``dim``."""
        d = _t._axis(dim, self.ndim + 1)
        return self.reshape((*self.shape[:d], 1, *self.shape[d:]))

    def squeeze(self, dim: object = None) -> Tensor:
        """Drop dims of size 1 (all, or the given ones that are 1)."""
        if dim is None:
            drop = {i for i, d in enumerate(self.shape) if d == 1}
        else:
            drop = {a for a in _t._axes(dim, self.ndim) if self.shape[a] == 1}
        return self.reshape(tuple(d for i, d in enumerate(self.shape) if i not in drop))

    def broadcast_to(self, *shape: object) -> Tensor:
        """Broadcast to ``shape`` (NumPy rules)."""
        target = tuple(int(d) for d in _t._shape_args(shape))
        if target == self.shape:
            return self
        return self.ctx.op("broadcast_to", self, shape=target)._view_of(self)

    def expand(self, *sizes: object) -> Tensor:
        """Broadcast to ``sizes`` (-1 keeps a dim), PyTorch's expand."""
        sizes = _t._shape_args(sizes)
        lead = len(sizes) - self.ndim
        target = [self.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes)]
        return self.broadcast_to(tuple(target))

    def expand_as(self, other: Tensor) -> Tensor:
        """Broadcast to ``other``'s shape."""
        return self.broadcast_to(other.shape)

    def split(self, split_size: object, dim: int = 0) -> tuple[Tensor, ...]:
        """Pieces along ``dim`` of ``split_size`` each (or the listed sizes)."""
        d = _t._axis(dim, self.ndim)
        n = self.shape[d]
        if isinstance(split_size, int):
            sizes = [min(split_size, n - i) for i in range(0, n, split_size)]
        else:
            sizes = list(split_size)
        out, start = [], 0
        for size in sizes:
            index = [slice(None)] * self.ndim
            index[d] = slice(start, start + size)
            out.append(self[tuple(index)])
            start += size
        return tuple(out)

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        """``chunks`` nearly equal pieces along ``dim``."""
        n = self.shape[_t._axis(dim, self.ndim)]
        return self.split(-(-n // chunks), dim)

    def __getitem__(self, key: object) -> Tensor:
        return _t.indexing.getitem(self, key)

    def unbind(self, dim: int = 0) -> tuple[Tensor, ...]:
        """The slices along ``dim``, that dim removed."""
        d = _t._axis(dim, self.ndim)
        return tuple(t.squeeze(d) for t in self.split(1, d))

    def swapaxes(self, axis0: int, axis1: int) -> Tensor:
        """Swap two dims."""
        return self.transpose(axis0, axis1)

    swapdims = swapaxes

    def movedim(self, source: int, destination: int) -> Tensor:
        """Move dim ``source`` to position ``destination``."""
        perm = list(range(self.ndim))
        perm.insert(_t._axis(destination, self.ndim), perm.pop(_t._axis(source, self.ndim)))
        return self.permute(perm)

    def repeat(self, *sizes: object) -> Tensor:
        """Tile the tensor ``sizes`` times along each dim (PyTorch's repeat)."""
        reps = [int(r) for r in _t._shape_args(sizes)]
        x = self.reshape((1,) * (len(reps) - self.ndim) + self.shape)
        inter = []
        for r, n in zip(reps, x.shape):
            inter += [r, n]
        y = x.reshape([v for n in x.shape for v in (1, n)]).broadcast_to(inter)
        return y.reshape([r * n for r, n in zip(reps, x.shape)])

    def new_zeros(self, *size: object, dtype: object = None, **kwargs: object) -> Tensor:
        """Zeros of ``size`` in this tensor's dtype."""
        return self.ctx.const(0, _t._dtype_name(dtype or self.dtype)).broadcast_to(_t._shape_args(size))

    def new_ones(self, *size: object, dtype: object = None, **kwargs: object) -> Tensor:
        """Ones of ``size`` in this tensor's dtype."""
        return self.ctx.const(1, _t._dtype_name(dtype or self.dtype)).broadcast_to(_t._shape_args(size))

    def new_full(self, size: object, fill_value: object, dtype: object = None, **kwargs: object) -> Tensor:
        """``fill_value`` in ``size`` and this tensor's dtype."""
        return self.ctx.const(fill_value, _t._dtype_name(dtype or self.dtype)).broadcast_to(
            _t._shape_args((size,))
        )

    # Method forms of functions (PyTorch's Tensor API), written once in graphc.functional.
    def add(self, other: object, *, alpha: object = 1) -> Tensor:
        """self + alpha * other."""
        return self + (other if alpha == 1 else other * alpha)

    def sub(self, other: object, *, alpha: object = 1) -> Tensor:
        """self - alpha * other."""
        return self - (other if alpha == 1 else other * alpha)

    def mul(self, other: object) -> Tensor:
        """self * other."""
        return self * other

    multiply = mul

    def div(self, other: object, *, rounding_mode: str | None = None) -> Tensor:
        """self / other; ``rounding_mode`` "floor" (``//``) or "trunc" rounds the quotient (torch.div)."""
        if rounding_mode is None:
            return self / other
        if rounding_mode == "floor":
            return self.floor_divide(other)
        if rounding_mode == "trunc":
            if self.value.dtype in ("f32", "f64"):
                return (self / other).trunc()
            return (self - self.fmod(other)).floor_divide(other)  # exact for integers
        raise GraphcError(
            f"{_at(user_source())}div: rounding_mode must be None, 'floor' or 'trunc', got {rounding_mode!r}"
        )

    divide = div

    def pow(self, exponent: object) -> Tensor:
        """self ** exponent."""
        return self**exponent

    def matmul(self, other: object) -> Tensor:
        """Matrix product."""
        return _t.matmul(self, _t.as_tensor(other, like=self))

    def bmm(self, other: Tensor) -> Tensor:
        """Batched matrix product of [B, n, m] and [B, m, p]."""
        if self.ndim != 3 or getattr(other, "ndim", 0) != 3:
            raise GraphcError(
                f"{_at(user_source())}bmm needs two 3-D tensors, got {self.shape} and {other.shape}"
            )
        return _t.matmul(self, other)

    def eq(self, other: object) -> Tensor:
        """self == other."""
        return self == other

    def ne(self, other: object) -> Tensor:
        """self != other."""
        return self != other

    def gt(self, other: object) -> Tensor:
        """self > other."""
        return self > other

    def ge(self, other: object) -> Tensor:
        """self >= other."""
        return self >= other

    def lt(self, other: object) -> Tensor:
        """self < other."""
        return self < other

    def le(self, other: object) -> Tensor:
        """self <= other."""
        return self <= other

    def logical_not(self) -> Tensor:
        """not self (as bool)."""
        return ~self.to("bool")

    def _fn(self, name: str, *args: object, **kwargs: object) -> Tensor:
        from graphc import functional

        return getattr(functional, name)(self, *args, **kwargs)

    def gather(self, dim: int, index: object) -> Tensor:
        """``out[i][j] = self[index[i][j]][j]`` along ``dim`` (torch.gather)."""
        return self._fn("gather", dim, index)

    def scatter(self, dim: int, index: object, src: object) -> Tensor:
        """A copy with ``src`` written at ``index`` along ``dim`` (torch.scatter)."""
        return self._fn("scatter", dim, index, src)

    def scatter_add(self, dim: int, index: object, src: object) -> Tensor:
        """A copy with ``src`` added at ``index`` along ``dim`` (torch.scatter_add)."""
        return self._fn("scatter_add", dim, index, src)

    def index_select(self, dim: int, index: object) -> Tensor:
        """The entries at ``index`` along ``dim``."""
        return self._fn("index_select", dim, index)

    def cumsum(self, dim: int, dtype: object = None) -> Tensor:
        """Running sum along ``dim``."""
        return self._fn("cumsum", dim, dtype=dtype)

    def sort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> tuple[Tensor, Tensor]:
        """(values, indices) sorted along ``dim``."""
        return self._fn("sort", dim, descending)

    def argsort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
        """Indices that sort along ``dim``."""
        return self._fn("argsort", dim, descending)

    def topk(self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> tuple[Tensor, Tensor]:
        """(values, indices) of the k largest (or smallest) along ``dim``."""
        return self._fn("topk", k, dim, largest, sorted)

    def repeat_interleave(self, repeats: int, dim: int | None = None) -> Tensor:
        """Each entry ``repeats`` times along ``dim`` (of the flattened tensor when None)."""
        return self._fn("repeat_interleave", repeats, dim)

    def _extra(self, name: str, *args: object, **kwargs: object) -> Tensor:
        from graphc import torch_extras

        return getattr(torch_extras, name)(self, *args, **kwargs)

    def flip(self, *dims: object, **kwargs: object) -> Tensor:
        """The entries in reverse order along ``dims`` (``x.flip(0, 1)``, ``x.flip([0, 1])``, ``dims=``)."""
        return self._extra("flip", kwargs.get("dims", dims[0] if len(dims) == 1 else dims))

    def roll(self, shifts: object, dims: object = None) -> Tensor:
        """The entries shifted circularly along ``dims``."""
        return self._extra("roll", shifts, dims)

    def diagonal(self, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
        """The diagonal of the (dim1, dim2) planes as the last dim."""
        return self._extra("diagonal", offset, dim1, dim2)

    def diag(self, diagonal: int = 0) -> Tensor:
        """torch.diag of this tensor."""
        return self._extra("diag", diagonal)

    def trace(self) -> Tensor:
        """The sum of the diagonal (2-D)."""
        return self._extra("trace")

    def logsumexp(self, dim: object, keepdim: bool = False) -> Tensor:
        """log(sum(exp(self))) over ``dim``."""
        return self._extra("logsumexp", dim, keepdim)

    def clamp_min(self, min: object) -> Tensor:  # noqa: A002
        """max(self, min)."""
        return self._extra("clamp_min", min)

    def clamp_max(self, max: object) -> Tensor:  # noqa: A002
        """min(self, max)."""
        return self._extra("clamp_max", max)

    def any(self, dim: object = None, keepdim: bool = False) -> Tensor:
        """Whether any entry (along ``dim``) is nonzero."""
        return self._extra("any", dim, keepdim)

    def all(self, dim: object = None, keepdim: bool = False) -> Tensor:
        """Whether every entry (along ``dim``) is nonzero."""
        return self._extra("all", dim, keepdim)

    def norm(
        self, p: object = "fro", dim: object = None, keepdim: bool = False, dtype: object = None
    ) -> Tensor:
        """The p-norm over ``dim``."""
        return self._extra("norm", p, dim, keepdim, dtype)

    def outer(self, vec2: object) -> Tensor:
        """The outer product with ``vec2``."""
        return self._extra("outer", vec2)

    def lerp(self, end: object, weight: object) -> Tensor:
        """self + weight * (end - self)."""
        return self._extra("lerp", end, weight)

    def index_fill(self, dim: int, index: object, value: object) -> Tensor:
        """A copy with the entries at ``index`` along ``dim`` set to ``value``."""
        return self._extra("index_fill", dim, index, value)

    def index_add(self, dim: int, index: object, source: object, *, alpha: object = 1) -> Tensor:
        """A copy with ``source`` added at ``index`` along ``dim``."""
        return self._extra("index_add", dim, index, source, alpha=alpha)

    def take_along_dim(self, indices: object, dim: int | None = None) -> Tensor:
        """gather with the other dims broadcast."""
        return self._extra("take_along_dim", indices, dim)

    def scatter_(self, dim: int, index: object, src: object = None, *, value: object = None) -> Tensor:
        """In place: scatter (``src`` may be a number, as ``value``)."""
        new = self._fn("scatter", dim, index, src if src is not None else value)
        return self._assign_inplace(new, "scatter_")

    def scatter_add_(self, dim: int, index: object, src: object) -> Tensor:
        """In place: scatter_add."""
        return self._assign_inplace(self._fn("scatter_add", dim, index, src), "scatter_add_")

    def index_fill_(self, dim: int, index: object, value: object) -> Tensor:
        """In place: index_fill."""
        return self._assign_inplace(self.index_fill(dim, index, value), "index_fill_")

    def index_add_(self, dim: int, index: object, source: object, *, alpha: object = 1) -> Tensor:
        """In place: index_add."""
        return self._assign_inplace(self.index_add(dim, index, source, alpha=alpha), "index_add_")

    def log1p(self) -> Tensor:
        """log(1 + self)."""
        return self._extra("log1p")

    def expm1(self) -> Tensor:
        """exp(self) - 1."""
        return self._extra("expm1")

    def isnan(self) -> Tensor:
        """Where the entries are NaN."""
        return self._extra("isnan")

    def isinf(self) -> Tensor:
        """Where the entries are +-inf."""
        return self._extra("isinf")

    def isfinite(self) -> Tensor:
        """Where the entries are finite."""
        return self._extra("isfinite")

    def new_tensor(
        self, data: object, dtype: object = None, device: object = None, requires_grad: bool = False
    ) -> Tensor:
        """A constant tensor of ``data`` with this tensor's dtype (or ``dtype``)."""
        if isinstance(data, _t.Tensor):
            return data.detach().to(dtype if dtype is not None else data.value.dtype)
        from graphc.ir import to_numpy_dtype

        target = self.value.dtype if dtype is None else _t._dtype_name(dtype)
        array = np.asarray(data, dtype=to_numpy_dtype(target))
        return self.ctx.array(array, name="new_tensor")

    def tril(self, diagonal: int = 0) -> Tensor:
        """The lower triangle of the last two dims."""
        return self._fn("tril", diagonal)

    def triu(self, diagonal: int = 0) -> Tensor:
        """The upper triangle of the last two dims."""
        return self._fn("triu", diagonal)


_REVERSED: dict[int, tuple[int, ...]] = {}  # rank -> its dims reversed (Tensor.T's permutation)
# (rank, the dims as passed) -> the permutation they name, or None for the identity; bounded
_PERMUTATIONS: dict[tuple, tuple[int, ...] | None] = {}


def _permutation(dims: tuple, ndim: int) -> tuple[int, ...] | None:
    """``permute(*dims)``'s permutation of ``ndim`` dims (None: the identity), checked; cached by
    the dims' values (equal values name the same dims: ``int(d)`` is what counts)."""
    try:
        key = (ndim, dims)
        if key in _PERMUTATIONS:
            return _PERMUTATIONS[key]
    except TypeError:  # a list of dims: not hashable
        key = None
    perm = tuple(_t._axis(d, ndim) for d in _t._shape_args(dims))
    if sorted(perm) != list(range(ndim)):
        raise GraphcError(f"{_at(user_source())}permute: {perm} is not a permutation of {ndim} dims")
    found = None if perm == tuple(range(ndim)) else perm
    if key is not None:
        if len(_PERMUTATIONS) >= 1024:
            _PERMUTATIONS.clear()
        _PERMUTATIONS[key] = found
    return found


from graphc import tensor as _t  # noqa: E402  (graphc.tensor imports this module first)
