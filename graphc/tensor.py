"""Symbolic tensors: a Tensor wraps an ir.Value of the active trace and records primitive ops.

Every operator on a Tensor appends nodes to the graph of its ``TraceContext`` (the tracing state
lives in graphc.tracing) and returns a new Tensor; nothing is computed (in eager mode its context
computes the values at once, graphc.eager). ``Tensor.dtype`` is a NumPy dtype
(``np.dtype('float32')``), so user code can compare it with ``np.float32``; the graphc dtype name
is ``t.value.dtype`` (``"f32"``).

Reductions follow PyTorch (``dim``, ``keepdim``) and accept NumPy's ``axis``/``keepdims``.
``t.max(dim=1)`` returns the values as a Tensor that also has ``.values`` and ``.indices`` and
unpacks as ``values, indices = t.max(dim=1)``, as in PyTorch; with ``axis=`` it is NumPy's max.

The class is split along its seams, mixed into Tensor: the in-place methods live in
graphc/tensor_inplace.py, the movement methods (reshape, transpose, expand, indexing, ...) in
graphc/tensor_movement.py, the pointwise methods (math functions, activations, clamp) in
graphc/tensor_pointwise.py and the reductions in graphc/tensor_reductions.py; this file keeps
metadata, values, casting, the arithmetic operators and the max(dim) result.

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
from graphc.ir.types import FLOAT_DTYPES, INT_DTYPES, promote_dtypes

# bool < integers (by width) < floats: an in-place result may not move up this order.
_DTYPE_ORDER = {"bool": 0, "i8": 1, "u8": 1, "i16": 2, "u16": 2, "i32": 3, "u32": 3, "i64": 4, "u64": 4}
_DTYPE_ORDER.update({"f16": 5, "f32": 6, "f64": 7})

from graphc.tensor_inplace import InPlaceOps  # noqa: E402
from graphc.tensor_movement import MovementOps  # noqa: E402
from graphc.tensor_pointwise import PointwiseOps  # noqa: E402
from graphc.tensor_reductions import ReductionOps  # noqa: E402

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
    if ctx.eager and isinstance(x, np.ndarray) and x.ndim and x.dtype != np.float64:
        return ctx.array(x)  # an eager leaf (a parameter: its kept one): the common case, first
    if isinstance(x, (bool, int, float, np.generic)) or (isinstance(x, np.ndarray) and x.ndim == 0):
        scalar = x.item() if hasattr(x, "item") else x
        if like is not None:
            dtype = like.value.dtype
            if isinstance(scalar, float) and (dtype == "bool" or dtype in INT_DTYPES):
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


def traced_operand(x: object, like: Tensor | None = None) -> Tensor:
    """``x`` as a Tensor for a torch-style function: a Tensor as it is, anything else as a constant
    of the active trace (or of ``like``'s); a GraphcError at the user's line outside any trace."""
    if isinstance(x, Tensor):
        return x
    if current_context() is None and like is None:
        raise GraphcError(f"{_at(user_source())}expected a traced Tensor, got {type(x).__name__}")
    return as_tensor(x, like=like)


def _nested(a: TraceContext, b: TraceContext) -> bool:
    """Whether the innermost trace (a control-flow body) can use Tensors of both ``a`` and ``b``."""
    inner = current_context()
    return inner is not None and inner.lifts_from(a) and inner.lifts_from(b)


def _all_floats(x: Sequence) -> bool:
    return np.asarray(x).dtype.kind == "f"


def _promote(a: Tensor, b: Tensor, need_float: bool = False) -> tuple[Tensor, Tensor]:
    da, db = a.value.dtype, b.value.dtype
    try:
        target = promote_dtypes(da, db)
    except GraphcError as err:
        raise GraphcError(f"{_at(user_source())}{err}") from None
    if need_float and target not in FLOAT_DTYPES:
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


# ---------------------------------------------------------------------------- Tensor
class Tensor(InPlaceOps, MovementOps, PointwiseOps, ReductionOps):
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
        return self._binary("floordiv", other)

    def __rfloordiv__(self, other: object) -> Tensor:
        return self._binary("floordiv", other, reflected=True)

    def __mod__(self, other: object) -> Tensor:
        return self._binary("remainder", other)

    def __rmod__(self, other: object) -> Tensor:
        return self._binary("remainder", other, reflected=True)

    def floor_divide(self, other: object) -> Tensor:
        """floor(self / other) (Python's and NumPy's ``//``; an integer divisor of 0 gives 0)."""
        return self._binary("floordiv", other)

    def remainder(self, other: object) -> Tensor:
        """self - floor(self / other) * other: the divisor's sign (Python's and torch's ``%``)."""
        return self._binary("remainder", other)

    def fmod(self, other: object) -> Tensor:
        """C's fmod: self - trunc(self / other) * other, the dividend's sign (torch.fmod)."""
        return self._binary("fmod", other)

    def floor(self) -> Tensor:
        """Largest integer <= x (as a float; integers unchanged)."""
        return self._unary("floor")

    def ceil(self) -> Tensor:
        """Smallest integer >= x."""
        return self._unary("ceil")

    def trunc(self) -> Tensor:
        """x rounded toward zero."""
        return self._unary("trunc")

    def round(self, decimals: int = 0) -> Tensor:
        """x rounded to ``decimals`` places, ties to even (torch.round)."""
        if not decimals:
            return self._unary("round")
        scale = 10.0**decimals
        return (self * scale)._unary("round") / scale

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
            names = {"f16": "Half", "f32": "Float", "f64": "Double", "i32": "Int", "i64": "Long"}
            names["bool"] = "Bool"
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
        return self.value.dtype in FLOAT_DTYPES

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
        """A copy: a new Tensor object, so in-place ops on either leave the other alone (a copy of a
        graph input or parameter is a new value, which item assignment may then update)."""
        graph = None if getattr(self.ctx, "eager", False) else getattr(self.ctx, "graph", None)
        if graph is not None and self.value.name in graph.kinds:
            return self.ctx.op("reshape", self, shape=self.shape)
        return Tensor(self.value, self.ctx)

    # ------------------------------------------------------------ arithmetic
    def _binary(self, op: str, other: object, reflected: bool = False, need_float: bool = False) -> Tensor:
        if self.ctx.eager:  # eager mode's per-signature fast path (graphc/eager_fast.py); None: no shortcut
            out = self.ctx.binary(op, self, other, reflected, need_float)
            if out is not None:
                return out
        return self._binary_general(op, other, reflected, need_float)

    def _binary_general(
        self, op: str, other: object, reflected: bool = False, need_float: bool = False
    ) -> Tensor:
        """``self <op> other`` (``other <op> self`` when ``reflected``) recorded as a primitive op
        after the promotion casts: the general path (eager mode's operators try its fast path first,
        graphc/eager_fast.py)."""
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
        if self.ctx.eager and type(other) is Tensor:
            out = self.ctx.matmul(self, other)
            if out is not None:
                return out
        return matmul(self, as_tensor(other, like=self))

    def __rmatmul__(self, other: object) -> Tensor:
        return matmul(as_tensor(other, like=self), self)

    def __neg__(self) -> Tensor:
        x = self.to("i64") if self.value.dtype == "bool" else self
        if x.ctx.eager:  # eager mode's fast path (graphc/eager_fast.py); None: the general path
            out = x.ctx.unary("neg", x)
            if out is not None:
                return out
        return x.ctx.op("neg", x)

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

    # ~, &, |, ^, <<, >> (bool and integer tensors): graphc/tensor_pointwise.py


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
        if src.value.dtype in FLOAT_DTYPES and src.ndim:
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

    def __getitem__(self, key: object) -> Tensor:
        """``[0]``/``[1]`` are values/indices, as on PyTorch's (values, indices) tuple."""
        if isinstance(key, int) and not isinstance(key, bool) and -2 <= key < 2:
            return (self.values, self.indices)[key]
        return self.values[key]


# ---------------------------------------------------------------------------- helpers
_TORCH_DTYPES = {"float": "f32", "float32": "f32", "double": "f64", "float64": "f64", "long": "i64"}
_TORCH_DTYPES.update({"int64": "i64", "int": "i32", "int32": "i32", "bool": "bool"})
_TORCH_DTYPES.update({"half": "f16", "float16": "f16"})


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
    if like.ctx.eager:  # eager mode's fast path (graphc/eager_fast.py); None: the general path
        out = like.ctx.fast_op("where", (c, ta, tb), {}, ())
        if out is not None:
            return out
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
    "floor": lambda x: x.floor(),
    "ceil": lambda x: x.ceil(),
    "trunc": lambda x: x.trunc(),
    "rint": lambda x: x.round(),
    "fmod": _ufunc_binary("fmod"),
    "remainder": _ufunc_binary("remainder"),
    "mod": _ufunc_binary("remainder"),
    "floor_divide": _ufunc_binary("floordiv"),
}


# Indexing and item assignment (graphc/indexing.py) use the Tensor class defined above.
from graphc import indexing  # noqa: E402
