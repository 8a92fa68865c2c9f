"""Symbolic tensors: a Tensor wraps an ir.Value of the active trace and records primitive ops.

Every operator on a Tensor appends nodes to the graph of its ``TraceContext`` (the tracing state
lives in graphc.tracing) and returns a new Tensor; nothing is computed (in eager mode its context
computes the values at once, graphc.eager). ``Tensor.dtype`` is a NumPy dtype
(``np.dtype('float32')``), so user code can compare it with ``np.float32``; the graphc dtype name
is ``t.value.dtype`` (``"f32"``).

Reductions follow PyTorch (``dim``, ``keepdim``) and accept NumPy's ``axis``/``keepdims``.
``t.max(dim=1)`` returns the values as a Tensor that also has ``.values`` and ``.indices`` and
unpacks as ``values, indices = t.max(dim=1)``, as in PyTorch; with ``axis=`` it is NumPy's max.

In-place ops (``y += 1``, ``y.add_(1)``, ``y.relu_()``, ``F.relu(y, inplace=True)``, ...) follow
PyTorch's aliasing: the Tensor object is rebound to the new value, so every Python name bound to
it sees the update, and a buffer gets it as its next value. Where graphc cannot give PyTorch's
meaning (a view of a tensor that is still alive, a tensor whose views are alive, a parameter, a
graph input) the op raises a GraphcError at the user's line. NaN propagates through relu, clamp,
maximum/minimum and the max/min reductions as in PyTorch.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Sequence

import numpy as np

from graphc import ir
from graphc.ir import GraphcError, Value

_DTYPE_ORDER = {"bool": 0, "i32": 1, "i64": 2, "f32": 3, "f64": 4}

# Source locations and the tracing state (TraceContext, the stack of active contexts) live in
# graphc.tracing; the names are re-exported here for the modules that import them from this one.
from graphc.tracing import (  # noqa: E402,F401
    _STACK,
    TraceContext,
    _at,
    _flatten_outputs,
    _internal_dirs,
    _reactivated,
    _short,
    current_context,
    user_source,
)


def as_tensor(x: object, like: Tensor | None = None, ctx: TraceContext | None = None) -> Tensor:
    """``x`` as a Tensor of the trace: scalars become const nodes (of ``like``'s dtype)."""
    if isinstance(x, Tensor):
        return x
    ctx = ctx or (like.ctx if like is not None else current_context())
    if ctx is None:
        raise GraphcError(f"{_at(user_source())}no active trace to turn a {type(x).__name__} into a Tensor")
    if isinstance(x, (bool, int, float, np.generic)) or (isinstance(x, np.ndarray) and x.ndim == 0):
        scalar = x.item() if hasattr(x, "item") else x
        if like is not None:
            dtype = like.value.dtype
            if isinstance(scalar, float) and dtype in ("bool", "i32", "i64"):
                dtype = "f32"
            elif isinstance(scalar, int) and not isinstance(scalar, bool) and dtype == "bool":
                dtype = "i64"
        elif isinstance(scalar, bool):
            dtype = "bool"
        elif isinstance(scalar, int):
            dtype = "i64"
        else:
            dtype = "f32"
        return ctx.const(scalar, dtype)
    if isinstance(x, np.ndarray):
        if x.dtype == np.float64 and (like is None or like.value.dtype != "f64"):
            from graphc.creation import default_float  # float64 NumPy data: PyTorch's default dtype

            x = default_float(x)
        return ctx.array(x)
    if isinstance(x, (list, tuple)):
        return ctx.array(np.asarray(x) if not _all_floats(x) else np.asarray(x, dtype=np.float32))
    raise GraphcError(f"{_at(user_source())}cannot use a {type(x).__name__} as a tensor")


def _nested(a: TraceContext, b: TraceContext) -> bool:
    """Whether the innermost trace (a control-flow body) can use Tensors of both ``a`` and ``b``."""
    inner = current_context()
    return inner is not None and inner.lifts_from(a) and inner.lifts_from(b)


def _all_floats(x: Sequence) -> bool:
    return np.asarray(x).dtype.kind == "f"


def _promote(a: Tensor, b: Tensor, need_float: bool = False) -> tuple[Tensor, Tensor]:
    da, db = a.value.dtype, b.value.dtype
    target = da if _DTYPE_ORDER[da] >= _DTYPE_ORDER[db] else db
    if need_float and target not in ("f32", "f64"):
        target = "f32"
    return a.to(target), b.to(target)


def _control_flow_error(what: str) -> GraphcError:
    return GraphcError(
        f"{_at(user_source())}{what} of a traced Tensor: its value is not known while tracing, so Python "
        "control flow that depends on it (if/while/and/or/bool()/int()/float()) cannot be traced. "
        "Data-dependent control flow needs graphc's control-flow ops (cond/while_loop, to come); "
        "for elementwise choices use graphc.functional.where or masking."
    )


def _concrete_value_error(what: str) -> GraphcError:
    return GraphcError(
        f"{_at(user_source())}{what} needs the concrete value of a traced Tensor, which does not exist "
        "while tracing: the Tensor stands for a value computed later, inside the compiled graph. "
        "Keep the computation in Tensor operations and return the Tensor from the traced function; "
        "the compiled plan returns it as a NumPy array."
    )


class _MissingAttributeError(GraphcError, AttributeError):
    """A Tensor attribute graphc does not have (a GraphcError that hasattr() understands)."""


def _unsupported_op_error(symbol: str) -> GraphcError:
    return GraphcError(
        f"{_at(user_source())}the {symbol} operator is not supported on traced Tensors yet (graphc has no "
        "floor primitive to build it from exactly); compute it on the arrays before or after running "
        "the compiled plan"
    )


# ---------------------------------------------------------------------------- Tensor
class Tensor:
    """A symbolic tensor: an ir.Value in the graph of a TraceContext."""

    # ``_base``: weak reference to the tensor this one is a view of (reshape, transpose, indexing,
    # expand); ``_views``: weak references to this tensor's views. In-place ops consult both.
    __slots__ = ("value", "ctx", "_base", "_views", "_index", "__weakref__")

    def __init__(self, value: Value, ctx: TraceContext | None = None) -> None:
        ctx = ctx or current_context()
        if ctx is None:
            raise GraphcError("Tensor(value) needs an active trace")
        self.value = value
        self.ctx = ctx
        self._base: weakref.ref | None = None
        self._views: list[weakref.ref] | None = None
        # (weak reference to the root tensor, static key, root's value) for a view made by indexing
        # the root: an in-place op on it writes through into the root (PyTorch's view semantics).
        self._index: tuple | None = None

    # ------------------------------------------------------------ metadata
    @property
    def shape(self) -> tuple[int, ...]:
        """The static shape."""
        return self.value.type.shape

    @property
    def dtype(self) -> np.dtype:
        """The NumPy dtype (the graphc name is ``self.value.dtype``)."""
        return self.value.type.np_dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def dim(self) -> int:
        """Number of dimensions (PyTorch spelling)."""
        return len(self.shape)

    def size(self, dim: int | None = None) -> tuple[int, ...] | int:
        """The shape, or one dimension of it."""
        if dim is None:
            return self.shape
        return self.shape[_axis(dim, self.ndim)]

    def numel(self) -> int:
        """Number of elements."""
        return self.value.type.numel

    def __len__(self) -> int:
        if not self.shape:
            raise GraphcError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        if not self.shape:
            raise GraphcError("iteration over a 0-d tensor")
        for i in range(self.shape[0]):
            yield self[i]

    def __repr__(self) -> str:
        if self.ctx.eager:
            return self.ctx.tensor_repr(self)
        return f"Tensor(%{self.value.name}: {self.value.type})"

    def __format__(self, spec: str) -> str:
        return format(self.ctx.concrete(self, "format()").item(), spec) if spec else repr(self)

    __hash__ = object.__hash__

    # ------------------------------------------------------------ no values while tracing
    # Values exist in eager mode only (graphc/eager.py); while tracing ctx.concrete raises.
    def __bool__(self) -> bool:
        return bool(self.ctx.concrete(self, "bool()"))

    def __int__(self) -> int:
        return int(self.ctx.concrete(self, "int()"))

    def __float__(self) -> float:
        return float(self.ctx.concrete(self, "float()"))

    def __index__(self) -> int:
        return int(self.ctx.concrete(self, "using as an index"))

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        arr = self.ctx.concrete(self, "__array__")
        return arr.astype(dtype) if dtype is not None else (arr.copy() if copy else arr)

    def item(self) -> object:
        """The value of a one-element eager Tensor as a Python number (a GraphcError while tracing)."""
        return self.ctx.concrete(self, "item()").item()

    def numpy(self) -> np.ndarray:
        """The eager Tensor's values as a NumPy array (a GraphcError while tracing)."""
        return self.ctx.concrete(self, "numpy()")

    def tolist(self) -> list:
        """The eager Tensor's values as nested lists (a GraphcError while tracing)."""
        return self.ctx.concrete(self, "tolist()").tolist()

    def backward(self, gradient: object = None, retain_graph: bool = False) -> None:
        """Eager mode: fill ``param.grad`` of the parameters this loss depends on (graphc/eager.py)."""
        self.ctx.backward(self, gradient, retain_graph)

    def __setitem__(self, key: object, value: object) -> None:
        """``t[key] = v``, traced as a functional update that rebinds ``t`` (see ``_assign_inplace``)."""
        if isinstance(value, Tensor) and value._index is not None:
            root, done_key, done_value = value._index
            if root() is self and done_value is self.value and indexing.same_key(done_key, key):
                return  # ``t[key] += v``: the in-place op on the view already wrote into t
        self._assign_inplace(indexing.index_update(self, key, value), "item assignment (t[...] = v)")

    def __floordiv__(self, other: object) -> Tensor:
        raise _unsupported_op_error("//")

    __rfloordiv__ = __floordiv__
    __ifloordiv__ = __floordiv__

    def __mod__(self, other: object) -> Tensor:
        raise _unsupported_op_error("%")

    __rmod__ = __mod__
    __imod__ = __mod__

    # ------------------------------------------------------------ casting
    def to(self, *args: object, dtype: object = None, device: object = None, **kwargs: object) -> Tensor:
        """Cast to a dtype (graphc name like "f32", a NumPy or torch-style dtype, or another
        Tensor's); a device ("cpu", "cuda") is accepted and ignored (graphc picks it at compile)."""
        for a in args:
            if isinstance(a, Tensor):
                dtype = a.value.dtype
            elif not _is_device(a):
                dtype = a
        if dtype is None:
            return self
        name = _dtype_name(dtype)
        if name == self.value.dtype:
            return self
        return self.ctx.op("cast", self, dtype=name)

    def astype(self, dtype: object) -> Tensor:
        """Cast to a dtype (NumPy's spelling)."""
        return self.to(dtype)

    def type(self, dtype: object = None) -> object:
        """Cast to ``dtype``; without one, the type name as PyTorch gives it ("torch.FloatTensor")."""
        if dtype is None:
            names = {"f32": "Float", "f64": "Double", "i32": "Int", "i64": "Long", "bool": "Bool"}
            return f"torch.{names[self.value.dtype]}Tensor"
        return self.to(dtype)

    def type_as(self, other: Tensor) -> Tensor:
        """Cast to ``other``'s dtype."""
        return self.to(other.dtype)

    @property
    def device(self) -> str:
        """Always "cpu" while tracing (the device is chosen when compiling)."""
        return "cpu"

    @property
    def is_cuda(self) -> bool:
        """False (the device is chosen when compiling)."""
        return False

    @property
    def requires_grad(self) -> bool:
        """Whether this is a parameter, or (eager mode) computed from one."""
        flag = getattr(self.value, "requires_grad", None)
        if flag is not None:
            return bool(flag)
        return getattr(self.ctx.graph, "kinds", {}).get(self.value.name) == "param"

    def cpu(self) -> Tensor:
        """Itself."""
        return self

    def cuda(self, *args: object, **kwargs: object) -> Tensor:
        """Itself (compile with device="cuda" to run on the GPU)."""
        return self

    def is_floating_point(self) -> bool:
        """Whether the dtype is float32 or float64."""
        return self.value.dtype in ("f32", "f64")

    def element_size(self) -> int:
        """Bytes per element."""
        return self.dtype.itemsize

    @property
    def data(self) -> Tensor:
        """The same values, with no gradient flowing back (PyTorch's ``.data``, as ``detach``)."""
        return self.detach()

    def detach(self) -> Tensor:
        """The same values as a new Tensor through which no gradient flows (traced: the
        ``stop_gradient`` op; eager mode cuts the tape)."""
        if self.ctx.eager:
            return self.ctx.detach(self)
        return self.ctx.op("stop_gradient", self)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Itself (graphc differentiates with respect to parameters)."""
        return self

    def __getattr__(self, name: str) -> object:
        if name.startswith("__") or name in Tensor.__slots__:
            raise AttributeError(name)
        # Also an AttributeError: NumPy (np.any(t)) and hasattr() then fall back as they should.
        raise _MissingAttributeError(
            f"{_at(user_source())}Tensor.{name} (torch.Tensor.{name}) is not implemented in graphc; "
            "build it from the supported Tensor methods and graphc.functional"
        )

    def float(self) -> Tensor:
        """Cast to float32."""
        return self.to("f32")

    def double(self) -> Tensor:
        """Cast to float64."""
        return self.to("f64")

    def long(self) -> Tensor:
        """Cast to int64."""
        return self.to("i64")

    def int(self) -> Tensor:
        """Cast to int32."""
        return self.to("i32")

    def bool(self) -> Tensor:
        """Cast to bool."""
        return self.to("bool")

    def contiguous(self) -> Tensor:
        """Itself (traced tensors have no layout); a copy for a view, as in PyTorch."""
        return self if self._live_base() is None else Tensor(self.value, self.ctx)

    def clone(self) -> Tensor:
        """A copy: a new Tensor object, so in-place ops on either leave the other alone."""
        return Tensor(self.value, self.ctx)

    # ------------------------------------------------------------ arithmetic
    def _binary(self, op: str, other: object, reflected: bool = False, need_float: bool = False) -> Tensor:
        if self.ctx.eager:  # eager mode's per-signature fast path (graphc/eager_fast.py); None: no shortcut
            out = self.ctx.binary(op, self, other, reflected, need_float)
            if out is not None:
                return out
        if isinstance(other, Tensor) and other.ctx is not self.ctx and not _nested(other.ctx, self.ctx):
            raise GraphcError(f"{_at(user_source())}{op}: operands come from different traces")
        b = as_tensor(other, like=self)
        a, b = (b, self) if reflected else (self, b)
        a, b = _promote(a, b, need_float)
        if op in ("add", "sub", "mul", "maximum", "minimum") and a.value.dtype == "bool":
            a, b = a.to("i64"), b.to("i64")
        return self.ctx.op(op, a, b)

    def __add__(self, other: object) -> Tensor:
        return self._binary("add", other)

    def __radd__(self, other: object) -> Tensor:
        return self._binary("add", other, reflected=True)

    def __sub__(self, other: object) -> Tensor:
        return self._binary("sub", other)

    def __rsub__(self, other: object) -> Tensor:
        return self._binary("sub", other, reflected=True)

    def __mul__(self, other: object) -> Tensor:
        return self._binary("mul", other)

    def __rmul__(self, other: object) -> Tensor:
        return self._binary("mul", other, reflected=True)

    def __truediv__(self, other: object) -> Tensor:
        return self._binary("div", other, need_float=True)

    def __rtruediv__(self, other: object) -> Tensor:
        return self._binary("div", other, reflected=True, need_float=True)

    def __pow__(self, other: object) -> Tensor:
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            if other == 1:
                return Tensor(self.value, self.ctx)  # a new tensor, as in PyTorch (not an alias)
            if other == 2:
                return self * self
        return self._binary("pow", other, need_float=True)

    def __rpow__(self, other: object) -> Tensor:
        return self._binary("pow", other, reflected=True, need_float=True)

    def __matmul__(self, other: object) -> Tensor:
        return matmul(self, as_tensor(other, like=self))

    def __rmatmul__(self, other: object) -> Tensor:
        return matmul(as_tensor(other, like=self), self)

    def __neg__(self) -> Tensor:
        return self.ctx.op("neg", self.to("i64") if self.value.dtype == "bool" else self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return self.abs()

    def __lt__(self, other: object) -> Tensor:
        return self._binary("lt", other)

    def __le__(self, other: object) -> Tensor:
        return self._binary("le", other)

    def __gt__(self, other: object) -> Tensor:
        return self._binary("gt", other)

    def __ge__(self, other: object) -> Tensor:
        return self._binary("ge", other)

    def __eq__(self, other: object) -> Tensor:  # type: ignore[override]
        return self._binary("eq", other)

    def __ne__(self, other: object) -> Tensor:  # type: ignore[override]
        return self._binary("ne", other)

    def __invert__(self) -> Tensor:
        if self.value.dtype != "bool":
            raise GraphcError(f"{_at(user_source())}~ needs a bool tensor, got {self.value.dtype}")
        return self._binary("eq", False)

    def __and__(self, other: object) -> Tensor:
        return self._logical(other, "minimum")

    def __or__(self, other: object) -> Tensor:
        return self._logical(other, "maximum")

    def _logical(self, other: object, op: str) -> Tensor:
        b = as_tensor(other, like=self)
        if self.value.dtype != "bool" or b.value.dtype != "bool":
            raise GraphcError(f"{_at(user_source())}& and | need bool tensors")
        return self.ctx.op(op, self.to("i32"), b.to("i32")).to("bool")

    # ------------------------------------------------------------ in-place ops (PyTorch aliasing)
    def _live_base(self) -> Tensor | None:
        """The tensor this one is a view of, if that tensor is still alive."""
        return self._base() if self._base is not None else None

    def _view_of(self, source: Tensor) -> Tensor:
        """Record ``self`` (just made from ``source`` by a view op) as a view of source's base."""
        if self is source:
            return self
        root = source._live_base()
        if root is None:
            root = source
        self._base = weakref.ref(root)
        views = root._views
        if views is None:
            views = root._views = []
        elif len(views) > 32:
            views[:] = [r for r in views if r() is not None]
        views.append(weakref.ref(self))
        return self

    def _assign_inplace(self, new: object, what: str, allow_view: Tensor | None = None) -> Tensor:
        """PyTorch's in-place semantics: rebind this Tensor object to ``new`` and return it.

        Every Python name bound to this object then sees the new value. A view of a live tensor,
        a tensor with live views, a parameter and a graph input cannot be written (GraphcError at
        the user's line); a buffer (const/state input) gets ``new`` as its next value.
        """
        source = user_source()
        ctx = self.ctx
        base = self._live_base()
        if base is not None and self._index is not None and self._index[0]() is base:
            # A view made by indexing its root: write the new values through into the root.
            t = as_tensor(new, like=self)
            if t.shape != self.shape:
                t = t.broadcast_to(self.shape)
            t = t.to(self.value.dtype)
            key = self._index[1]
            base._assign_inplace(indexing.index_update(base, key, t), what, allow_view=self)
            self.value = t.value
            self._index = (weakref.ref(base), key, base.value)
            return self
        if base is not None:
            raise GraphcError(
                f"{_at(source)}{what}: in-place operation on a view (made by indexing, reshape/view, "
                f"transpose or expand) of %{base.value.name} is not supported while tracing; use the "
                "out-of-place form (y = x.add(1)) and build the new tensor from it"
            )
        if self._views and any(r() is not None and r() is not allow_view for r in self._views):
            raise GraphcError(
                f"{_at(source)}{what}: in-place operation on %{self.value.name}, which has live views "
                "(made by indexing, reshape/view, transpose or expand) that would see the change; this "
                "is not supported while tracing: use the out-of-place form (y = x.add(1))"
            )
        name = self.value.name
        kind = ctx.graph.kinds.get(name)
        if kind == "param":
            raise GraphcError(
                f"{_at(source)}{what}: in-place operation on parameter %{name} while tracing; parameters "
                "change only through the optimizer (use an out-of-place op on a copy)"
            )
        if kind == "data" or name in ctx.readonly or (kind is not None and name not in ctx._owner):
            raise GraphcError(
                f"{_at(source)}{what}: in-place operation on graph input %{name}; graphc does not write "
                "into its inputs: use the out-of-place form (y = x.add(1), F.relu(x))"
            )
        t = as_tensor(new, like=self)
        if t.ctx is not ctx:
            raise GraphcError(f"{_at(source)}{what}: operand comes from a different trace")
        if t.shape != self.shape:
            try:
                same = ir.ops.broadcast_shapes(t.shape, self.shape) == self.shape
            except GraphcError:
                same = False
            if not same:
                raise GraphcError(
                    f"{_at(source)}{what}: the result has shape {t.shape}, which does not fit in place "
                    f"into %{name} of shape {self.shape}"
                )
            t = t.broadcast_to(self.shape)
        if t.value.dtype != self.value.dtype:
            if _DTYPE_ORDER[t.value.dtype] > _DTYPE_ORDER[self.value.dtype] and not (
                t.value.dtype in ("f32", "f64") and self.value.dtype in ("f32", "f64")
            ):
                raise GraphcError(
                    f"{_at(source)}{what}: the result's dtype {t.value.dtype} cannot be cast to "
                    f"%{name}'s dtype {self.value.dtype} in place"
                )
            t = t.to(self.value.dtype)
        if name in ctx._owner:  # a buffer: its next value, written back when the plan runs
            ctx.assign(self, t)
        self.value = t.value
        return self

    def __iadd__(self, other: object) -> Tensor:
        return self._assign_inplace(self + other, "+=")

    def __isub__(self, other: object) -> Tensor:
        return self._assign_inplace(self - other, "-=")

    def __imul__(self, other: object) -> Tensor:
        return self._assign_inplace(self * other, "*=")

    def __itruediv__(self, other: object) -> Tensor:
        return self._assign_inplace(self / other, "/=")

    def __ipow__(self, other: object) -> Tensor:
        return self._assign_inplace(self**other, "**=")

    def add_(self, other: object, *, alpha: object = 1) -> Tensor:
        """In place: self + alpha * other."""
        return self._assign_inplace(self + (other if alpha == 1 else other * alpha), "add_")

    def sub_(self, other: object, *, alpha: object = 1) -> Tensor:
        """In place: self - alpha * other."""
        return self._assign_inplace(self - (other if alpha == 1 else other * alpha), "sub_")

    def mul_(self, other: object) -> Tensor:
        """In place: self * other."""
        return self._assign_inplace(self * other, "mul_")

    def div_(self, other: object) -> Tensor:
        """In place: self / other."""
        return self._assign_inplace(self / other, "div_")

    def pow_(self, other: object) -> Tensor:
        """In place: self ** other."""
        return self._assign_inplace(self**other, "pow_")

    def neg_(self) -> Tensor:
        """In place: -self."""
        return self._assign_inplace(-self, "neg_")

    def abs_(self) -> Tensor:
        """In place: |self|."""
        return self._assign_inplace(self.abs(), "abs_")

    def exp_(self) -> Tensor:
        """In place: exp(self)."""
        return self._assign_inplace(self.exp(), "exp_")

    def log_(self) -> Tensor:
        """In place: log(self)."""
        return self._assign_inplace(self.log(), "log_")

    def sqrt_(self) -> Tensor:
        """In place: sqrt(self)."""
        return self._assign_inplace(self.sqrt(), "sqrt_")

    def tanh_(self) -> Tensor:
        """In place: tanh(self)."""
        return self._assign_inplace(self.tanh(), "tanh_")

    def sigmoid_(self) -> Tensor:
        """In place: sigmoid(self)."""
        return self._assign_inplace(self.sigmoid(), "sigmoid_")

    def relu_(self) -> Tensor:
        """In place: relu(self)."""
        return self._assign_inplace(self.relu(), "relu_")

    def clamp_(self, min: object = None, max: object = None) -> Tensor:
        """In place: clamp(self, min, max)."""
        return self._assign_inplace(self.clamp(min, max), "clamp_")

    clip_ = clamp_

    def masked_fill_(self, mask: Tensor, value: object) -> Tensor:
        """In place: value where mask, else self."""
        return self._assign_inplace(self.masked_fill(mask, value), "masked_fill_")

    def zero_(self) -> Tensor:
        """In place: all zeros."""
        return self._assign_inplace(self.ctx.const(0, self.value.dtype), "zero_")

    def fill_(self, value: object) -> Tensor:
        """In place: every element ``value``."""
        return self._assign_inplace(as_tensor(value, like=self).to(self.value.dtype), "fill_")

    def copy_(self, src: object) -> Tensor:
        """In place: the values of ``src`` (broadcast, cast to this tensor's dtype)."""
        t = as_tensor(src, like=self)
        return self._assign_inplace(t.to(self.value.dtype), "copy_")

    # NumPy functions (np.mean(t), np.concatenate): on eager values NumPy computes them (no
    # gradient); while tracing, NumPy's own implementation runs as without this hook.
    def __array_function__(self, func: object, types: object, args: tuple, kwargs: dict) -> object:
        if self.ctx.eager:
            from graphc.eager import to_numpy

            return func(*to_numpy(args), **to_numpy(kwargs))  # type: ignore[operator]
        return func._implementation(*args, **kwargs)  # type: ignore[attr-defined]

    # NumPy calls this for ``array + tensor`` and ``np.exp(tensor)``: record the op instead.
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: object, **kwargs: object) -> object:
        fn = _UFUNCS.get(ufunc.__name__) if method == "__call__" and not kwargs else None
        if fn is None:
            if self.ctx.eager:  # eager values exist: NumPy computes other ufuncs (no gradient)
                return getattr(ufunc, method)(*(np.asarray(i) for i in inputs), **kwargs)
            return NotImplemented
        return fn(*inputs)

    # ------------------------------------------------------------ pointwise
    def _unary(self, op: str) -> Tensor:
        x = self
        if self.ctx.eager:
            out = self.ctx.unary(op, x)
            if out is not None:
                return out
        if op in ir.ops.UNARY_FLOAT and x.value.dtype not in ("f32", "f64"):
            x = x.to("f32")
        return self.ctx.op(op, x)

    def exp(self) -> Tensor:
        """e ** x."""
        return self._unary("exp")

    def log(self) -> Tensor:
        """Natural logarithm."""
        return self._unary("log")

    def sqrt(self) -> Tensor:
        """Square root."""
        return self._unary("sqrt")

    def rsqrt(self) -> Tensor:
        """1 / sqrt(x)."""
        return self._unary("rsqrt")

    def abs(self) -> Tensor:
        """Absolute value."""
        return self._unary("abs")

    def sign(self) -> Tensor:
        """Sign (-1, 0, 1)."""
        return self._unary("sign")

    def tanh(self) -> Tensor:
        """Hyperbolic tangent."""
        return self._unary("tanh")

    def erf(self) -> Tensor:
        """The error function."""
        return self._unary("erf")

    def sin(self) -> Tensor:
        """Sine."""
        return self._unary("sin")

    def cos(self) -> Tensor:
        """Cosine."""
        return self._unary("cos")

    def reciprocal(self) -> Tensor:
        """1 / x."""
        return self._unary("reciprocal")

    def neg(self) -> Tensor:
        """-x."""
        return -self

    def square(self) -> Tensor:
        """x * x."""
        return self * self

    def sigmoid(self) -> Tensor:
        """1 / (1 + exp(-x))."""
        x = self if self.value.dtype in ("f32", "f64") else self.to("f32")
        return (1.0 + (-x).exp()).reciprocal()

    def relu(self) -> Tensor:
        """0 where x <= 0, else x: NaN stays NaN, and the gradient is 0 at 0 and passes at NaN (torch)."""
        if self.ctx.eager:
            out = self.ctx.relu(self)
            if out is not None:
                return out
        zero = as_tensor(0, like=self)
        return self.ctx.op("where", self.ctx.op("le", self, zero), zero, self)

    def maximum(self, other: object) -> Tensor:
        """Elementwise maximum."""
        return self._binary("maximum", other)

    def minimum(self, other: object) -> Tensor:
        """Elementwise minimum."""
        return self._binary("minimum", other)

    def clamp(self, min: object = None, max: object = None) -> Tensor:
        """Limit values to [min, max] (either may be None), with PyTorch's NaN and gradient rules.

        ``min(max(x, min), max)`` where a NaN anywhere gives NaN; the gradient reaches x where
        ``min <= x <= max`` (so at the bounds too) and not at NaN, and a tensor bound where it is
        the result.
        """
        if min is None and max is None:
            raise GraphcError(f"{_at(user_source())}clamp: at least one of min and max must be given")
        out, guarded = self, False
        for bound, cmp in ((min, "lt"), (max, "gt")):
            if bound is None:
                continue
            b = as_tensor(bound, like=out)
            out, b = _promote(out, b)
            if not guarded and out.value.dtype in ("f32", "f64"):
                guarded = True
                # x itself where it is a number, a NaN constant (no gradient) where it is NaN
                nan = self.ctx.const(math.nan, out.value.dtype)
                out = self.ctx.op("where", self.ctx.op("ne", out, out), nan, out)
            take = self.ctx.op(cmp, out, b)
            number = isinstance(bound, (int, float)) and not math.isnan(bound)
            if not number and b.value.dtype in ("f32", "f64"):  # a NaN bound gives NaN
                take = self.ctx.op("where", self.ctx.op("ne", b, b), b.ctx.const(True, "bool"), take)
            out = self.ctx.op("where", take, b, out)
        return out

    clip = clamp

    def masked_fill(self, mask: Tensor, value: object) -> Tensor:
        """``value`` where ``mask`` is true, else ``self`` (the result keeps self's dtype)."""
        v = as_tensor(value, like=self)
        if v.value.dtype != self.value.dtype and not (isinstance(value, Tensor) and v.ndim):
            v = v.to(self.value.dtype)
        return where(mask, v, self)

    def softmax(self, dim: int = -1) -> Tensor:
        """Softmax over ``dim``."""
        from graphc import functional

        return functional.softmax(self, dim)

    def log_softmax(self, dim: int = -1) -> Tensor:
        """Log-softmax over ``dim``."""
        from graphc import functional

        return functional.log_softmax(self, dim)

    # ------------------------------------------------------------ reductions
    def _reduce(self, op: str, dim: object, keepdim: bool, axis: object, keepdims: object) -> Tensor:
        axes = _axes(axis if dim is None else dim, self.ndim)
        keep = bool(keepdims) if keepdims is not None else bool(keepdim)
        if not axes:
            return self
        x = self.to("i64") if op == "sum" and self.value.dtype == "bool" else self
        return self.ctx.op(op, x, axes=axes, keepdims=keep)

    def sum(
        self, dim: object = None, keepdim: bool = False, *, axis: object = None, keepdims: object = None
    ) -> Tensor:
        """Sum over ``dim`` (all axes when None)."""
        return self._reduce("sum", dim, keepdim, axis, keepdims)

    def mean(
        self, dim: object = None, keepdim: bool = False, *, axis: object = None, keepdims: object = None
    ) -> Tensor:
        """Mean over ``dim`` (all axes when None)."""
        axes = _axes(axis if dim is None else dim, self.ndim)
        x = self if self.value.dtype in ("f32", "f64") else self.to("f32")
        count = math.prod(self.shape[a] for a in axes)
        return x._reduce("sum", axes, keepdim, None, keepdims) * (1.0 / count if count else math.nan)

    def var(
        self,
        dim: object = None,
        unbiased: bool | None = None,
        keepdim: bool = False,
        *,
        correction: int | None = None,
        axis: object = None,
        keepdims: object = None,
        ddof: int | None = None,
    ) -> Tensor:
        """Variance over ``dim``; PyTorch's default correction 1 (NumPy's ``ddof=`` accepted)."""
        axes = _axes(axis if dim is None else dim, self.ndim)
        if ddof is not None:
            corr = ddof
        elif correction is not None:
            corr = correction
        else:
            corr = 0 if unbiased is False else 1
        keep = bool(keepdims) if keepdims is not None else bool(keepdim)
        x = self if self.value.dtype in ("f32", "f64") else self.to("f32")
        centered = x - x.mean(axes, keepdim=True)
        count = math.prod(self.shape[a] for a in axes)
        return (centered * centered).sum(axes, keep) * (
            1.0 / max(count - corr, 0) if count > corr else math.nan
        )

    def std(self, *args: object, **kwargs: object) -> Tensor:
        """Standard deviation (same arguments as ``var``)."""
        return self.var(*args, **kwargs).sqrt()

    def _max_min(self, op: str, dim: object, keepdim: bool, axis: object, keepdims: object) -> Tensor:
        if axis is None and isinstance(dim, int) and not isinstance(dim, bool):
            keep = bool(keepdims) if keepdims is not None else bool(keepdim)
            return _MaxMinResult(self, op, dim, keep)
        return self._reduce(op, dim, keepdim, axis, keepdims)

    def max(
        self, dim: object = None, keepdim: bool = False, *, axis: object = None, keepdims: object = None
    ) -> Tensor:
        """Maximum over ``dim`` (all axes when None); with an int ``dim`` also ``.indices``."""
        return self._max_min("max", dim, keepdim, axis, keepdims)

    def min(
        self, dim: object = None, keepdim: bool = False, *, axis: object = None, keepdims: object = None
    ) -> Tensor:
        """Minimum over ``dim`` (all axes when None); with an int ``dim`` also ``.indices``."""
        return self._max_min("min", dim, keepdim, axis, keepdims)

    def amax(self, dim: object = None, keepdim: bool = False) -> Tensor:
        """Maximum over ``dim`` (values only)."""
        return self._reduce("max", dim, keepdim, None, None)

    def amin(self, dim: object = None, keepdim: bool = False) -> Tensor:
        """Minimum over ``dim`` (values only)."""
        return self._reduce("min", dim, keepdim, None, None)

    def argmax(
        self,
        dim: int | None = None,
        keepdim: bool = False,
        *,
        axis: int | None = None,
        keepdims: object = None,
    ) -> Tensor:
        """Index of the maximum along ``dim`` (of the flattened tensor when None)."""
        d = axis if dim is None else dim
        keep = bool(keepdims) if keepdims is not None else bool(keepdim)
        if d is None:
            out = self.ctx.op("argmax", self.reshape(-1), axis=0, keepdims=False)
            return out.reshape([1] * self.ndim) if keep else out
        return self.ctx.op("argmax", self, axis=_axis(d, self.ndim), keepdims=keep)

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        """Index of the minimum along ``dim``."""
        return (-self).argmax(dim, keepdim)

    # ------------------------------------------------------------ movement
    def reshape(self, *shape: object) -> Tensor:
        """Reshape; one dimension may be -1."""
        target = _infer_shape(_shape_args(shape), self.numel(), self.shape)
        if target == self.shape:
            return self
        return self.ctx.op("reshape", self, shape=target)._view_of(self)

    view = reshape

    def view_as(self, other: Tensor) -> Tensor:
        """Reshape to ``other``'s shape."""
        return self.reshape(other.shape)

    def transpose(self, *dims: object) -> Tensor:
        """Swap two dims (PyTorch); no arguments or one tuple is NumPy's permutation."""
        if len(dims) == 2 and all(isinstance(d, int) for d in dims):
            perm = list(range(self.ndim))
            a, b = _axis(dims[0], self.ndim), _axis(dims[1], self.ndim)
            perm[a], perm[b] = perm[b], perm[a]
            return self.permute(perm)
        if not dims:
            return self.permute(list(reversed(range(self.ndim))))
        return self.permute(*dims)

    def permute(self, *dims: object) -> Tensor:
        """Reorder dims: ``out.shape[i] == self.shape[dims[i]]``."""
        perm = tuple(_axis(d, self.ndim) for d in _shape_args(dims))
        if sorted(perm) != list(range(self.ndim)):
            raise GraphcError(f"{_at(user_source())}permute: {perm} is not a permutation of {self.ndim} dims")
        if perm == tuple(range(self.ndim)):
            return self
        return self.ctx.op("transpose", self, perm=perm)._view_of(self)

    @property
    def T(self) -> Tensor:
        """All dims reversed."""
        return self.permute(list(reversed(range(self.ndim))))

    @property
    def mT(self) -> Tensor:
        """The last two dims swapped."""
        return self.transpose(-2, -1)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        """Merge dims start_dim..end_dim into one."""
        if self.ndim == 0:
            return self.reshape(1)
        s, e = _axis(start_dim, self.ndim), _axis(end_dim, self.ndim)
        if s > e:
            raise GraphcError(
                f"{_at(user_source())}flatten: start_dim {start_dim} is after end_dim {end_dim}"
            )
        merged = math.prod(self.shape[s : e + 1])
        return self.reshape((*self.shape[:s], merged, *self.shape[e + 1 :]))

    def unsqueeze(self, dim: int) -> Tensor:
        """Insert a dim of size 1 at ``dim``."""
        d = _axis(dim, self.ndim + 1)
        return self.reshape((*self.shape[:d], 1, *self.shape[d:]))

    def squeeze(self, dim: object = None) -> Tensor:
        """Drop dims of size 1 (all, or the given ones that are 1)."""
        if dim is None:
            drop = {i for i, d in enumerate(self.shape) if d == 1}
        else:
            drop = {a for a in _axes(dim, self.ndim) if self.shape[a] == 1}
        return self.reshape(tuple(d for i, d in enumerate(self.shape) if i not in drop))

    def broadcast_to(self, *shape: object) -> Tensor:
        """Broadcast to ``shape`` (NumPy rules)."""
        target = tuple(int(d) for d in _shape_args(shape))
        if target == self.shape:
            return self
        return self.ctx.op("broadcast_to", self, shape=target)._view_of(self)

    def expand(self, *sizes: object) -> Tensor:
        """Broadcast to ``sizes`` (-1 keeps a dim), PyTorch's expand."""
        sizes = _shape_args(sizes)
        lead = len(sizes) - self.ndim
        target = [self.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes)]
        return self.broadcast_to(tuple(target))

    def expand_as(self, other: Tensor) -> Tensor:
        """Broadcast to ``other``'s shape."""
        return self.broadcast_to(other.shape)

    def split(self, split_size: object, dim: int = 0) -> tuple[Tensor, ...]:
        """Pieces along ``dim`` of ``split_size`` each (or the listed sizes)."""
        d = _axis(dim, self.ndim)
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
        n = self.shape[_axis(dim, self.ndim)]
        return self.split(-(-n // chunks), dim)

    def __getitem__(self, key: object) -> Tensor:
        return indexing.getitem(self, key)

    def unbind(self, dim: int = 0) -> tuple[Tensor, ...]:
        """The slices along ``dim``, that dim removed."""
        d = _axis(dim, self.ndim)
        return tuple(t.squeeze(d) for t in self.split(1, d))

    def swapaxes(self, axis0: int, axis1: int) -> Tensor:
        """Swap two dims."""
        return self.transpose(axis0, axis1)

    swapdims = swapaxes

    def movedim(self, source: int, destination: int) -> Tensor:
        """Move dim ``source`` to position ``destination``."""
        perm = list(range(self.ndim))
        perm.insert(_axis(destination, self.ndim), perm.pop(_axis(source, self.ndim)))
        return self.permute(perm)

    def repeat(self, *sizes: object) -> Tensor:
        """Tile the tensor ``sizes`` times along each dim (PyTorch's repeat)."""
        reps = [int(r) for r in _shape_args(sizes)]
        x = self.reshape((1,) * (len(reps) - self.ndim) + self.shape)
        inter = []
        for r, n in zip(reps, x.shape):
            inter += [r, n]
        y = x.reshape([v for n in x.shape for v in (1, n)]).broadcast_to(inter)
        return y.reshape([r * n for r, n in zip(reps, x.shape)])

    def new_zeros(self, *size: object, dtype: object = None, **kwargs: object) -> Tensor:
        """Zeros of ``size`` in this tensor's dtype."""
        return self.ctx.const(0, _dtype_name(dtype or self.dtype)).broadcast_to(_shape_args(size))

    def new_ones(self, *size: object, dtype: object = None, **kwargs: object) -> Tensor:
        """Ones of ``size`` in this tensor's dtype."""
        return self.ctx.const(1, _dtype_name(dtype or self.dtype)).broadcast_to(_shape_args(size))

    def new_full(self, size: object, fill_value: object, dtype: object = None, **kwargs: object) -> Tensor:
        """``fill_value`` in ``size`` and this tensor's dtype."""
        return self.ctx.const(fill_value, _dtype_name(dtype or self.dtype)).broadcast_to(_shape_args((size,)))

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

    def div(self, other: object) -> Tensor:
        """self / other."""
        return self / other

    divide = div

    def pow(self, exponent: object) -> Tensor:
        """self ** exponent."""
        return self**exponent

    def matmul(self, other: object) -> Tensor:
        """Matrix product."""
        return matmul(self, as_tensor(other, like=self))

    def bmm(self, other: Tensor) -> Tensor:
        """Batched matrix product of [B, n, m] and [B, m, p]."""
        if self.ndim != 3 or getattr(other, "ndim", 0) != 3:
            raise GraphcError(
                f"{_at(user_source())}bmm needs two 3-D tensors, got {self.shape} and {other.shape}"
            )
        return matmul(self, other)

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

    def tril(self, diagonal: int = 0) -> Tensor:
        """The lower triangle of the last two dims."""
        return self._fn("tril", diagonal)

    def triu(self, diagonal: int = 0) -> Tensor:
        """The upper triangle of the last two dims."""
        return self._fn("triu", diagonal)


class _MaxMinResult(Tensor):
    """The values of ``t.max(dim)``, with ``.values``, ``.indices`` and unpacking as in PyTorch.

    For a float tensor the values are picked at the indices (the first extreme, a NaN counting as
    the extreme), so the gradient reaches that one element only, as in PyTorch's ``max(dim)``
    (``amax`` and ``max()`` split it over ties instead).
    """

    __slots__ = ("_src", "_op", "_dim", "_keep", "_indices")

    def __init__(self, src: Tensor, op: str, dim: int, keep: bool) -> None:
        d = _axis(dim, src.ndim)
        indices = None
        if src.value.dtype in ("f32", "f64") and src.ndim:
            indices = (src if op == "max" else -src).argmax(d, keepdim=True)
            shape = [1] * src.ndim
            shape[d] = src.shape[d]
            positions = np.arange(src.shape[d], dtype=np.int64).reshape(shape)
            positions = src.ctx.array(positions, name="positions")
            values = where(indices == positions, src, 0.0).sum(d, keepdim=keep)
            indices = indices if keep else indices.reshape(values.shape)
        else:
            values = src._reduce(op, d, keep, None, None)
        super().__init__(values.value, values.ctx)
        # A snapshot of src: an in-place op on src afterwards must not change these indices.
        self._src, self._op, self._dim, self._keep = Tensor(src.value, src.ctx), op, d, keep
        self._indices = indices

    @property
    def values(self) -> Tensor:
        """The reduced values."""
        return Tensor(self.value, self.ctx)

    @property
    def indices(self) -> Tensor:
        """Where the values are (argmax/argmin along dim)."""
        if self._indices is not None:
            return Tensor(self._indices.value, self.ctx)
        src = self._src if self._op == "max" else -self._src
        return src.argmax(self._dim, self._keep)

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.values, self.indices))


# ---------------------------------------------------------------------------- helpers
_TORCH_DTYPES = {"float": "f32", "float32": "f32", "double": "f64", "float64": "f64", "long": "i64"}
_TORCH_DTYPES.update({"int64": "i64", "int": "i32", "int32": "i32", "bool": "bool"})


def _dtype_name(dtype: object) -> str:
    if isinstance(dtype, str) and dtype in ir.DTYPES:
        return dtype
    text = str(dtype).removeprefix("torch.")
    if text in _TORCH_DTYPES and not isinstance(dtype, type):
        return _TORCH_DTYPES[text]
    try:
        return ir.from_numpy_dtype(np.dtype(dtype))
    except (TypeError, ValueError):
        raise GraphcError(f"{_at(user_source())}unknown dtype {dtype!r}") from None


def _is_device(arg: object) -> bool:
    text = str(arg)
    return (
        text in ("cpu", "cuda", "meta")
        or text.startswith(("cuda:", "device("))
        or type(arg).__name__ == "device"
    )


def _axis(dim: object, ndim: int) -> int:
    d = int(dim)  # type: ignore[arg-type]
    if not -max(ndim, 1) <= d < max(ndim, 1):
        raise GraphcError(f"{_at(user_source())}dim {d} is out of range for a tensor of rank {ndim}")
    return d % ndim if ndim else 0


def _axes(dim: object, ndim: int) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, (list, tuple)):
        axes = tuple(sorted(_axis(d, ndim) for d in dim))
        if len(set(axes)) != len(axes):
            raise GraphcError(f"{_at(user_source())}repeated dim in {tuple(dim)}")
        return axes
    return (_axis(dim, ndim),)


def _shape_args(args: Sequence) -> tuple:
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return tuple(args[0])
    return tuple(args)


def _infer_shape(shape: Sequence, numel: int, old: tuple[int, ...]) -> tuple[int, ...]:
    shape = [int(d) for d in shape]
    unknown = [i for i, d in enumerate(shape) if d == -1]
    if len(unknown) > 1 or any(d < -1 for d in shape):
        raise GraphcError(f"{_at(user_source())}reshape: bad shape {tuple(shape)}")
    known = math.prod(d for d in shape if d != -1)
    if unknown:
        if known == 0 or numel % known:
            raise GraphcError(
                f"{_at(user_source())}reshape: cannot reshape {old} ({numel} elements) to {tuple(shape)}"
            )
        shape[unknown[0]] = numel // known
    elif known != numel:
        raise GraphcError(
            f"{_at(user_source())}reshape: cannot reshape {old} ({numel} elements) to {tuple(shape)}"
        )
    return tuple(shape)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product with NumPy/PyTorch rules for 1-D operands and batch broadcasting."""
    if a.ctx.eager:
        out = a.ctx.matmul(a, b)
        if out is not None:
            return out
    a, b = _promote(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise GraphcError(f"{_at(user_source())}matmul: both operands need at least one dimension")
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = a.reshape(1, a.shape[0])
    if squeeze_b:
        b = b.reshape(b.shape[0], 1)
    out = a.ctx.op("matmul", a, b)
    if squeeze_a or squeeze_b:
        shape = list(out.shape)
        if squeeze_b:
            del shape[-1]
        if squeeze_a:
            del shape[-1 if squeeze_b else -2]
        out = out.reshape(tuple(shape))
    return out


def where(cond: object, a: object, b: object) -> Tensor:
    """``a`` where ``cond`` else ``b`` (NumPy broadcasting)."""
    like = next((t for t in (a, b, cond) if isinstance(t, Tensor)), None)
    if like is None:
        raise GraphcError(f"{_at(user_source())}where needs at least one Tensor operand")
    if isinstance(a, Tensor):
        ta, tb = a, as_tensor(b, like=a)
    elif isinstance(b, Tensor):
        ta, tb = as_tensor(a, like=b), b
    else:
        ta = as_tensor(a, ctx=like.ctx)
        tb = as_tensor(b, like=ta)
    ta, tb = _promote(ta, tb)
    c = as_tensor(cond, ctx=like.ctx)
    if c.value.dtype != "bool":
        c = c.ctx.op("ne", c, c.ctx.const(0, c.value.dtype))
    return like.ctx.op("where", c, ta, tb)


def _ufunc_binary(op: str, need_float: bool = False):
    def run(a: object, b: object) -> Tensor:
        if isinstance(a, Tensor):
            return a._binary(op, b, need_float=need_float)
        return b._binary(op, a, reflected=True, need_float=need_float)  # type: ignore[union-attr]

    return run


_UFUNCS = {
    "add": _ufunc_binary("add"),
    "subtract": _ufunc_binary("sub"),
    "multiply": _ufunc_binary("mul"),
    "divide": _ufunc_binary("div", True),
    "true_divide": _ufunc_binary("div", True),
    "power": _ufunc_binary("pow", True),
    "maximum": _ufunc_binary("maximum"),
    "minimum": _ufunc_binary("minimum"),
    "less": _ufunc_binary("lt"),
    "less_equal": _ufunc_binary("le"),
    "greater": _ufunc_binary("gt"),
    "greater_equal": _ufunc_binary("ge"),
    "equal": _ufunc_binary("eq"),
    "not_equal": _ufunc_binary("ne"),
    "matmul": lambda a, b: (
        matmul(a, as_tensor(b, like=a)) if isinstance(a, Tensor) else matmul(as_tensor(a, like=b), b)
    ),
    "negative": lambda x: -x,
    "exp": lambda x: x.exp(),
    "log": lambda x: x.log(),
    "sqrt": lambda x: x.sqrt(),
    "tanh": lambda x: x.tanh(),
    "absolute": lambda x: x.abs(),
    "sign": lambda x: x.sign(),
    "sin": lambda x: x.sin(),
    "cos": lambda x: x.cos(),
    "reciprocal": lambda x: x.reciprocal(),
    "square": lambda x: x * x,
}


# Indexing and item assignment (graphc/indexing.py) use the Tensor class defined above.
from graphc import indexing  # noqa: E402
