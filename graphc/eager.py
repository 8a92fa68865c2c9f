"""Eager mode (define-by-run): Tensor operations outside a trace compute their values at once.

Calling a module or a ``graphc.functional`` function on NumPy arrays outside ``graphc.compile``
runs it op by op under :data:`EAGER`, the one :class:`EagerContext`. Every primitive op the
Tensor methods record is checked and typed exactly as while tracing (the op registry's attribute
specs and type rules, cached per signature: op, attributes, operand types) and then run at once
with graphc's NumPy reference kernels, so the values are graphc's own semantics. The result is a
Tensor whose ``value`` is an :class:`EagerValue` holding the array: ``print``, ``bool()``,
``float()``, ``item()``, ``numpy()`` and NumPy's array protocol give real values, so Python
``if``/``while`` on tensor values and a debugger work as in PyTorch. The common ops (binary
operators, unary pointwise ops, relu, matmul) take a per-signature fast path
(:mod:`graphc.eager_fast`) that gives the same values and tape without the general path's work.

Gradients (the tape): an op with an operand that requires grad (a trainable ``Parameter``, or a
value computed from one) remembers its op, attributes and operands on its output value, as
PyTorch's ``grad_fn``. The tape is that graph of values: it lives exactly as long as the tensors
that reach it, so it cannot grow without bound. ``loss.backward()`` collects the ops that lead
to the loss into an ``ir.Graph``, appends its backward graph with ``passes.autodiff.grad`` (the
same rules ``compile_train`` differentiates with), runs the backward nodes over the recorded
forward values, adds each parameter's gradient to ``param.grad`` (a NumPy array, accumulating
like torch) and frees the recorded graph (``retain_graph=True`` keeps it). Ops on values that
need no gradient record nothing.

Buffers a module assigns (BatchNorm's running statistics, in-place ops on them) are written into
the module's arrays at once, as in PyTorch. Parameters are read in place (no copy), so an
optimizer's ``step()`` and a compiled plan see and update the very same arrays.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from graphc.ir import Graph, GraphcError, Node, TensorType, Value
from graphc.ir.ops import infer_types, normalize_attrs
from graphc.tensor import _STACK, Tensor, TraceContext, _at, _short, user_source
from graphc.tracing import const_key

__all__ = [
    "EAGER",
    "EagerContext",
    "EagerValue",
    "call",
    "get_backend",
    "is_eager",
    "no_grad",
    "set_backend",
    "to_numpy",
    "wants_eager",
]

_FLOATS = ("f32", "f64")
_new = object.__new__
_NAMES = itertools.count()
_SEQ = itertools.count()
# (op, attrs, operand types) -> (normalized attrs, output types); bounded, cleared when full.
_SIGNATURES: dict[tuple, tuple[dict, list[TensorType]]] = {}
_MAX_SIGNATURES = 4096
_MAX_CONSTS = 512
_SCALAR_WHATS = ("bool()", "int()", "float()", "using as an index", "item()", "format()")


class EagerValue(Value):
    """A value computed in eager mode: its array, and how it was made when it needs a gradient.

    ``op``/``attrs``/``inputs``/``source``/``seq`` are set only on values that require grad (the
    tape); a leaf that requires grad has ``param`` (the Parameter its gradient goes to).
    ``kind`` is the input kind a leaf plays ("param", "const" or "data"); ``owner`` is the
    module array (buffer) this value is the current contents of, written through on assignment.
    """

    __slots__ = ("data", "requires_grad", "op", "attrs", "inputs", "_source", "seq", "kind", "owner", "param")
    __slots__ += ("__weakref__",)

    def __init__(self, type_: TensorType, data: np.ndarray, requires_grad: bool = False) -> None:
        self.type = type_  # Value.__init__'s fields, set here (a call less per op); the name is lazy
        self.data = data
        self.requires_grad = requires_grad
        self.op: str | None = None
        self.attrs: dict | None = None
        self.inputs: tuple[EagerValue, ...] | None = None
        self._source: str | tuple | None = None  # a tuple: (file name, line), formatted when read
        self.seq = 0
        self.kind: str | None = None
        self.owner: np.ndarray | None = None
        self.param: np.ndarray | None = None

    @property  # type: ignore[override]
    def name(self) -> str:
        """A unique name, made the first time it is read (most eager values are never named)."""
        try:
            return _VALUE_NAME.__get__(self, EagerValue)
        except AttributeError:
            name = f"e{next(_NAMES)}"
            _VALUE_NAME.__set__(self, name)
            return name

    @name.setter
    def name(self, name: str) -> None:
        _VALUE_NAME.__set__(self, name)

    @property
    def source(self) -> str | None:
        """The user's ``file:line`` that computed this value (on the tape), else None."""
        src = self._source
        if type(src) is tuple:
            src = self._source = f"{_short(src[0])}:{src[1]}"
        return src

    @source.setter
    def source(self, source: str | tuple | None) -> None:
        self._source = source


_VALUE_NAME = Value.__dict__["name"]  # the slot Value keeps its name in


def _named(v: EagerValue) -> str:
    """A new value's name, made now (``EagerValue.name`` makes it on the first read too, but
    through an AttributeError, which costs more)."""
    name = f"e{next(_NAMES)}"
    _VALUE_NAME.__set__(v, name)
    return name


class _Registry:
    """Leaf and buffer values by name (weakly): what ``Tensor``'s in-place checks look up."""

    def __init__(self) -> None:
        self.values: weakref.WeakValueDictionary[str, EagerValue] = weakref.WeakValueDictionary()

    def get(self, name: str, default: Any = None) -> Any:
        """The input kind of the named value (None for a computed one)."""
        v = self.values.get(name)
        return default if v is None else v.kind


class _Owned:
    """``name in ctx._owner``: whether the named value is a module buffer's current contents."""

    def __init__(self, registry: _Registry) -> None:
        self.registry = registry

    def __contains__(self, name: object) -> bool:
        v = self.registry.values.get(name)  # type: ignore[arg-type]
        return v is not None and v.owner is not None


class _GraphShim:
    """What Tensor's in-place checks read of ``ctx.graph`` (``kinds.get``); eager has no graph."""

    def __init__(self, registry: _Registry) -> None:
        self.name = "eager"
        self.kinds = registry

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise GraphcError(
            f"eager mode runs ops at once and has no graph (graph.{name}); this construct works only "
            "while tracing (graphc.compile / graphc.trace)"
        )


class EagerContext(TraceContext):
    """The eager 'trace': every op runs at once; ops that need a gradient are remembered."""

    eager = True

    def __init__(self) -> None:
        self._registry = _Registry()
        super().__init__(_GraphShim(self._registry))  # type: ignore[arg-type]
        self._owner = _Owned(self._registry)  # type: ignore[assignment]
        self._const_values: dict[tuple, EagerValue] = {}
        self._rng_counter = 0
        self.active = True
        self.grad_enabled = True  # False inside no_grad(): nothing is recorded

    # ------------------------------------------------------------ activation (always usable)
    def __enter__(self) -> EagerContext:
        _STACK.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _STACK.remove(self)

    # ------------------------------------------------------------ running ops
    def multi_op(self, op: str, *inputs: Tensor, source: str | None = None, **attrs: object) -> list[Tensor]:
        """Check and type the op as tracing does, run it now, and return its outputs."""
        values = []
        for t in inputs:
            v = t.value
            if not isinstance(v, EagerValue):
                raise GraphcError(
                    f"{_at(source or user_source())}{op}: an operand is a traced Tensor and another an "
                    "eager one; a trace cannot read values computed outside it"
                )
            values.append(v)
        try:
            attrs_n, types, dtypes, differentiable = _signature(op, attrs, values)
        except GraphcError as err:
            raise GraphcError(f"{_at(source or user_source())}{err}") from None
        kernel = _KERNELS.get(op) if _KERNELS is not None and _BACKEND[0] == "reference" else None
        if kernel is not None and len(types) == 1:  # the common case of _run_kernel, inline
            token = _fast._quiet_on()
            try:
                o = kernel([v.data for v in values], attrs_n)[0]
            except GraphcError as err:
                raise GraphcError(f"{_at(source or user_source())}{err}") from None
            finally:
                _fast._quiet_off(token)
            t, dt = types[0], dtypes[0]
            if type(o) is not np.ndarray or o.dtype != dt or o.shape != t.shape or not o.flags.c_contiguous:
                o = np.ascontiguousarray(o, dtype=dt).reshape(t.shape)
            results = [o]
        else:
            results = _run_kernel(op, attrs_n, [v.data for v in values], types, source, dtypes, values)
        grad = False
        if differentiable and self.grad_enabled:  # one float output, an op with a gradient rule
            for v in values:
                if v.requires_grad:
                    grad = True
                    break
        if not grad and len(types) == 1:
            return [Tensor(EagerValue(types[0], results[0], False), self)]
        out = []
        for t, arr in zip(types, results):
            v = EagerValue(t, arr, grad)
            if grad:
                v.op, v.attrs, v.inputs, v.seq = op, attrs_n, tuple(values), next(_SEQ)
                v._source = source or _fast.source_ref(1)  # above multi_op's caller's frame
            out.append(Tensor(v, self))
        return out

    def const(self, value: bool | int | float, dtype: str = "f32") -> Tensor:
        """A scalar constant (its value made once per (value, dtype) and shared)."""
        value, key = const_key(value, dtype)
        v = self._const_values.get(key)
        if v is None:
            v = self.op("const", value=value, dtype=dtype).value
            if len(self._const_values) >= _MAX_CONSTS:
                self._const_values.clear()
            self._const_values[key] = v  # type: ignore[assignment]
        return Tensor(v, self)

    def array(self, array: np.ndarray, name: str | None = None, kind: str = "const") -> Tensor:
        """A leaf Tensor over ``array`` (no copy): a trainable Parameter requires grad.

        ``kind`` is the part the array plays: "param" (a module's parameter), "const" (a buffer
        or constant: in-place ops write through into it) or "data" (an argument of an eager call,
        which in-place ops must not write, as while tracing).
        """
        Parameter = _PARAMETER[0] or _parameter_class()
        if type(array) is Parameter:  # its leaf is made once and kept on it (see _param_leaf)
            leaf = _param_leaf(array)
            if leaf is not None:
                t = _new(Tensor)  # Tensor(leaf, self), without __init__
                t.value = leaf
                t.ctx = self
                t._base = None
                t._views = None
                t._index = None
                return t
        arr = np.asarray(array)
        if arr.dtype == np.float64 and not isinstance(array, np.ndarray):
            arr = arr.astype(np.float32)
        type_ = _type_of(arr)
        is_param = isinstance(array, Parameter)
        requires = is_param and bool(getattr(array, "requires_grad", True)) and type_.dtype in _FLOATS
        data = arr.view(np.ndarray) if isinstance(arr, np.ndarray) and type(arr) is not np.ndarray else arr
        v = EagerValue(type_, data, requires)
        if is_param or kind == "param":
            v.kind = "param"
            v.param = array if requires else None
        elif kind == "data":  # in-place ops raise; functionals that update state (batch_norm) write it
            v.kind = "data"
            v.owner = array if isinstance(array, np.ndarray) and array.flags.writeable else None
        else:
            v.kind = "const"
            v.owner = array if isinstance(array, np.ndarray) and array.flags.writeable else None
        self._registry.values[_named(v)] = v
        if type(array) is Parameter:
            array.__dict__[_LEAF] = (v, id(array))
        return Tensor(v, self)

    def detach(self, tensor: Tensor) -> Tensor:
        """The same values as a leaf that needs no gradient (backward() stops here)."""
        v = EagerValue(tensor.value.type, tensor.value.data)  # type: ignore[attr-defined]
        v.kind = "const"
        self._registry.values[_named(v)] = v
        return Tensor(v, self)

    def input(self, name: str) -> Tensor:
        """Not available in eager mode (there is no graph to name values in)."""
        raise GraphcError("eager mode has no graph: input() works only while tracing")

    def assign(self, target: Tensor, new: Tensor) -> None:
        """Write ``new`` into the module buffer ``target`` stands for, now (as PyTorch does)."""
        tv = target.value
        owner = tv.owner if isinstance(tv, EagerValue) else None
        if owner is None:
            raise GraphcError(
                f"{_at(user_source())}cannot assign to %{tv.name}: it is not a buffer of a module"
            )
        if new.shape != tuple(owner.shape):
            new = new.broadcast_to(tuple(owner.shape))
        if new.value.type.np_dtype != owner.dtype:
            new = new.to(owner.dtype)
        nv = new.value
        # Ops already run read the old contents: they keep a snapshot (the tape may need it).
        if isinstance(tv, EagerValue) and np.may_share_memory(tv.data, owner):
            tv.data = tv.data.copy()
        np.copyto(owner, nv.data)
        if nv.owner is None and nv.kind is None:  # later in-place ops on it write through too
            nv.owner = owner
            self._registry.values[nv.name] = nv

    def rng_offset(self) -> Tensor:
        """A fresh random-stream offset for each random op (dropout) run eagerly."""
        self._rng_counter += 1
        return self.array(np.array(self._rng_counter, dtype=np.int64), name="rng.offset")

    def finish(self, outputs: object = None) -> Graph:
        """Eager mode builds no graph."""
        raise GraphcError("eager mode has no graph to finish")

    # ------------------------------------------------------------ values
    def concrete(self, tensor: Tensor, what: str) -> np.ndarray:
        """The array of an eager tensor; for a Python scalar (``bool()``, ``item()``, ...) it must
        have one element."""
        v = tensor.value
        if not isinstance(v, EagerValue):
            raise GraphcError(
                f"{_at(user_source())}{what}: this Tensor belongs to a trace, not to eager mode"
            )
        arr = v.data
        if what in _SCALAR_WHATS:
            if arr.size != 1:
                raise GraphcError(
                    f"{_at(user_source())}{what} of a Tensor of shape {tuple(arr.shape)} is ambiguous: it "
                    "needs exactly one element (reduce it first, e.g. with .sum(), .max() or .all())"
                )
            if what == "using as an index" and arr.dtype.kind not in "iub":
                raise GraphcError(f"{_at(user_source())}only integer Tensors can be used as an index")
            return arr.reshape(())[()]
        return arr

    def tensor_repr(self, tensor: Tensor) -> str:
        """``tensor([...])`` with the values, as PyTorch prints."""
        arr = self.concrete(tensor, "repr()")
        body = np.array2string(arr, separator=", ", prefix="tensor(")
        suffix = "" if arr.dtype in (np.float32, np.int64, np.bool_) else f", dtype={arr.dtype}"
        grad = ", requires_grad=True" if tensor.value.requires_grad else ""  # type: ignore[attr-defined]
        return f"tensor({body}{suffix}{grad})"

    # ------------------------------------------------------------ gradients
    def backward(self, loss: Tensor, gradient: Any = None, retain_graph: bool = False) -> None:
        """Fill ``param.grad`` of every parameter that ``loss`` depends on (see the module doc)."""
        from graphc.eager_backward import backward

        backward(self, loss, gradient, retain_graph)


_LEAF = "_graphc_eager_leaf"
_PARAMETER: list[Any] = [None]  # graphc.nn.module.Parameter, imported at the first leaf (a cycle)


def _parameter_class() -> type:
    from graphc.nn.module import Parameter

    _PARAMETER[0] = Parameter
    return Parameter


# (shape, NumPy dtype) -> the TensorType of a leaf: one object per type, so the per-signature caches
# keyed by the types' identities (graphc/eager_fast.py, _signature) keep hitting across steps.
_LEAF_TYPES: dict[tuple, TensorType] = {}


def _type_of(arr: np.ndarray) -> TensorType:
    """``TensorType.of(arr)``, the same object for every array of one shape and dtype."""
    key = (arr.shape, arr.dtype)
    t = _LEAF_TYPES.get(key)
    if t is None:
        t = TensorType.of(arr)
        if len(_LEAF_TYPES) >= _MAX_SIGNATURES:
            _LEAF_TYPES.clear()
        _LEAF_TYPES[key] = t
    return t


def _param_leaf(param: np.ndarray) -> EagerValue | None:
    """The leaf value ``EagerContext.array`` made for ``param`` before, if it still describes it.

    A Parameter's leaf is kept in its ``__dict__`` (it lives and dies with the parameter), so a
    module's forward does not make a new leaf for each parameter at every call. It is reused
    only by the very parameter it was made for, while its shape, dtype and ``requires_grad`` are
    unchanged (a copied parameter, a lazy one materialized, a frozen one make a new leaf).
    """
    kept = param.__dict__.get(_LEAF)
    if kept is None or kept[1] != id(param):
        return None
    v = kept[0]
    data = v.data
    requires = bool(getattr(param, "requires_grad", True)) and v.type.dtype in _FLOATS
    if data.shape != param.shape or data.dtype != param.dtype:
        return None
    if v.requires_grad != requires:
        return None
    return v


def _non_differentiable() -> frozenset[str]:
    global _NON_DIFF
    if _NON_DIFF is None:
        from graphc.passes.autodiff_rules import NON_DIFFERENTIABLE

        _NON_DIFF = frozenset(NON_DIFFERENTIABLE)
    return _NON_DIFF


_NON_DIFF: frozenset[str] | None = None


def _signature(op: str, attrs: dict, values: list[EagerValue]) -> tuple[dict, list[TensorType], list, bool]:
    """Normalized attributes, output types, their NumPy dtypes and whether the tape records the op
    (one float output, a gradient rule), cached per (op, attributes, operand types): an op seen
    before is not checked or typed again. A real-valued attribute (const's value, pad's) is keyed
    with its type and sign too (``0.0 == -0.0 == 0 == False`` as dict keys, not as values)."""
    try:
        items = tuple(attrs.items())
        # First by the operand types' identities (a dict key of ints hashes in C, a TensorType in
        # Python); the entry keeps the types, so no id in a stored key can be another object's.
        fast_key = (op, items, tuple([id(v.type) for v in values]))
        hit = _SIGNATURE_IDS.get(fast_key)
        if hit is not None:
            return hit[0]
        real = _REAL_ATTRS.get(op)
        if real is None:
            real = _has_real_attr(op)
        if real:
            items = tuple(
                [(k, v, type(v), math.copysign(1.0, v) if type(v) is float else 0) for k, v in items]
            )
        key = (op, items, tuple([v.type for v in values]))
        hit = _SIGNATURES.get(key)
    except TypeError:  # an unhashable attribute (a list): check it every time
        key, hit = None, None
    if hit is not None:
        if not real:  # real-valued attributes: 0.0 and -0.0 are one dict key, so only by value
            _remember_ids(fast_key, hit, values)
        return hit
    attrs_n = normalize_attrs(op, attrs)
    types = infer_types(op, [v.type for v in values], attrs_n)
    differentiable = len(types) == 1 and types[0].dtype in _FLOATS and op not in _non_differentiable()
    entry = (attrs_n, types, [t.np_dtype for t in types], differentiable)
    if key is not None:
        if len(_SIGNATURES) >= _MAX_SIGNATURES:
            _SIGNATURES.clear()
        _SIGNATURES[key] = entry
        if not real:
            _remember_ids(fast_key, entry, values)
    return entry


# (op, attrs, ids of the operand types) -> (the _SIGNATURES entry, the operand types); bounded.
_SIGNATURE_IDS: dict[tuple, tuple] = {}


def _remember_ids(key: tuple, entry: tuple, values: list[EagerValue]) -> None:
    if len(_SIGNATURE_IDS) >= _MAX_SIGNATURES:
        _SIGNATURE_IDS.clear()
    _SIGNATURE_IDS[key] = (entry, [v.type for v in values])


_REAL_ATTRS: dict[str, bool] = {}


def _has_real_attr(op: str) -> bool:
    """Whether ``op`` has a real-valued attribute (``RealSpec``: a bool, int or float kept as given)."""
    from graphc.ir import ops as ir_ops

    try:
        opdef = ir_ops.get_op(op)
    except GraphcError:
        return False  # normalize_attrs names the unknown op
    real = any(isinstance(a.spec, ir_ops.RealSpec) for a in opdef.attrs.values())
    _REAL_ATTRS[op] = real
    return real


def _run_kernel(
    op: str,
    attrs: dict,
    args: list[np.ndarray],
    types: list[TensorType],
    source: str | None,
    dtypes: list | None = None,
    operands: list[Value] | None = None,
) -> list[np.ndarray]:
    """Run ``op`` on ``args`` (``operands`` typed them): C-contiguous results of exactly ``types``.

    The NumPy reference kernel, or with ``set_backend("cpu")`` the CPU backend's compiled kernel
    for this signature (compiled once, kept; ops it has no kernel for use the reference one).
    """
    if _BACKEND[0] == "cpu" and operands is not None:
        fn = _cpu_kernel(op, attrs, operands, types, source)
        if fn is not None:
            outs = [np.empty(t.shape, dt) for t, dt in zip(types, dtypes or [t.np_dtype for t in types])]
            try:
                fn(*[np.ascontiguousarray(a) for a in args], *outs)
            except GraphcError as err:
                raise GraphcError(f"{_at(source or user_source())}{err}") from None
            return outs
    kernel = (_KERNELS or _kernels()).get(op)
    if kernel is None:
        raise GraphcError(f"{_at(source or user_source())}{op}: no eager kernel for this op")
    try:
        outs = _fast.run_quiet(kernel, args, attrs)
    except GraphcError as err:
        raise GraphcError(f"{_at(source or user_source())}{err}") from None
    results = []
    for o, t, dt in zip(outs, types, dtypes or [t.np_dtype for t in types]):
        if type(o) is not np.ndarray or o.dtype != dt or o.shape != t.shape or not o.flags.c_contiguous:
            o = np.ascontiguousarray(o, dtype=dt).reshape(t.shape)
        results.append(o)
    return results


_BACKEND = ["reference"]
# (op, attrs, operand types) -> the CPU backend's kernel, or None where it has none.
_CPU_KERNELS: dict[tuple, Callable | None] = {}


def set_backend(name: str) -> None:
    """Choose the kernels eager ops run with: "reference" (NumPy; the default) or "cpu".

    "cpu" runs graphc's compiled CPU kernels (numba), each op signature (op, attributes, operand
    types) compiled the first time it runs, which pauses that call (seconds; numba's disk cache
    under ``$GRAPHC_CACHE_DIR`` keeps them across processes), and then called with little
    overhead: for long eager training loops on fixed shapes. "reference" never pauses.
    """
    if name not in ("reference", "cpu"):
        raise GraphcError(f"eager backend must be 'reference' or 'cpu', got {name!r}")
    if name != _BACKEND[0]:
        _fast._ENTRIES.clear()  # the fast path's entries are made for one backend (none for "cpu")
    _BACKEND[0] = name


def get_backend() -> str:
    """The kernels eager ops run with ("reference" or "cpu")."""
    return _BACKEND[0]


def _cpu_kernel(
    op: str, attrs: dict, operands: list[Value], types: list[TensorType], source: str | None
) -> Callable | None:
    try:
        key: tuple | None = (op, tuple(attrs.items()), tuple([v.type for v in operands]))
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _CPU_KERNELS:
        return _CPU_KERNELS[key]
    from graphc.kernels.cpu import compile_node

    ins = [Value(f"in{i}", v.type) for i, v in enumerate(operands)]
    outs = [Value(f"out{i}", t) for i, t in enumerate(types)]
    try:
        fn: Callable | None = compile_node(Node(op, ins, dict(attrs), outs, source))
    except GraphcError:
        fn = None  # no CPU kernel for this op: the reference kernel runs it
    if key is not None:
        _CPU_KERNELS[key] = fn
    return fn


_KERNELS: dict | None = None


def _kernels() -> dict:
    global _KERNELS
    if _KERNELS is None:
        from graphc.kernels.reference import KERNELS

        _KERNELS = KERNELS
    return _KERNELS


EAGER = EagerContext()


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Inside, eager ops record nothing for backward() (as ``torch.no_grad()``)."""
    was = EAGER.grad_enabled
    EAGER.grad_enabled = False
    try:
        yield
    finally:
        EAGER.grad_enabled = was


def is_eager(x: object) -> bool:
    """Whether ``x`` is a Tensor computed in eager mode."""
    return isinstance(x, Tensor) and isinstance(x.value, EagerValue)


def wants_eager(args: Iterable[object]) -> bool:
    """Whether a call outside any trace on ``args`` runs eagerly (a NumPy array or eager Tensor)."""
    for a in args:  # a loop, not any() over a generator: this runs on every functional call
        if isinstance(a, np.ndarray) or isinstance(a, Tensor) and isinstance(a.value, EagerValue):
            return True
    return False


def to_numpy(x: Any) -> Any:
    """``x`` with every eager Tensor in it (in lists, tuples and dicts) replaced by its array."""
    if isinstance(x, Tensor):
        return np.asarray(x)
    if isinstance(x, (list, tuple)):
        return type(x)(to_numpy(i) for i in x) if type(x) in (list, tuple) else x
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    return x


def _leaf(a: object) -> object:
    if isinstance(a, np.ndarray):
        Parameter = _PARAMETER[0] or _parameter_class()
        return EAGER.array(a, kind="param" if isinstance(a, Parameter) else "data")
    return a


def call(fn: Callable, args: tuple, kwargs: dict | None = None) -> Any:
    """Run ``fn`` eagerly: array arguments become eager Tensors, the results are eager Tensors."""
    conv = [_leaf(a) if isinstance(a, np.ndarray) else a for a in args]
    if kwargs:
        kwargs = {k: _leaf(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    else:
        kwargs = {}
    _STACK.append(EAGER)  # ``with EAGER:``, without the two method calls
    try:
        return fn(*conv, **kwargs)
    finally:
        _STACK.remove(EAGER)


from graphc import eager_fast as _fast  # noqa: E402  (it builds on the definitions above)

# The op path's shortcuts: Tensor._binary/_unary/relu and tensor.matmul ask the eager context
# first and take the general path (multi_op) on None. graphc.eager_fast's functions are bound as
# the methods themselves (ctx.binary(op, a, b, ...) is _fast.binary(ctx, op, a, b, ...)). Tensor's
# operators, ``@``, ``relu`` and ``_unary`` are replaced by the fast path's own functions (one
# Python call an op; each falls back to the method it replaced: graphc.eager_fast.install).
EagerContext.binary = _fast.binary  # type: ignore[attr-defined]
EagerContext.unary = _fast.unary  # type: ignore[attr-defined]
EagerContext.matmul = _fast.matmul  # type: ignore[attr-defined]
EagerContext.relu = _fast.relu  # type: ignore[attr-defined]
EagerContext.permute = _fast.permute  # type: ignore[attr-defined]
EagerContext.fast_op = _fast.op  # type: ignore[attr-defined]
_fast.install(Tensor)
