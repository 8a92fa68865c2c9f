"""Module, Parameter and the containers (Sequential, ModuleList), following PyTorch's nn.Module.

A ``Parameter`` *is* a NumPy array (an ndarray subclass, float32 by default), so the arrays a
module holds are the very arrays a compiled plan reads and updates in place: after a training
step ``model.state_dict()`` shows the new values, and ``load_state_dict`` copies into the existing
arrays (``np.copyto``) so a plan compiled earlier sees the loaded values. ``p.data`` is the plain
ndarray view (assigning to it copies in place), as in PyTorch.

While a trace is active, reading a parameter, buffer or NumPy-array attribute of a module gives
the trace's Tensor for it instead of the array (one graph input per array object, so a module
used twice shares its inputs). Outside a trace, calling a module on NumPy arrays (or eager
Tensors) runs it op by op in eager mode (graphc/eager.py): it returns eager Tensors, and
``loss.backward()`` fills each parameter's ``.grad``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np

from graphc.creation import default_float, get_default_dtype
from graphc.ir import DTYPES, GraphcError
from graphc.tensor import Tensor, current_context

_SUPPORTED = set(DTYPES.values())


class Parameter(np.ndarray):
    """A trainable array: an ndarray subclass.

    Float data follows PyTorch's default-dtype rule: Python numbers and float64 NumPy data become
    the default dtype (float32 unless ``graphc.set_default_dtype(float64)``), so ``np.ones(d)``
    does not turn a whole plan float64. ``dtype=`` (a graphc extension) keeps or picks a dtype;
    a torch tensor and a Parameter keep theirs.
    """

    def __new__(cls, data: Any = None, requires_grad: bool = True, dtype: Any = None) -> Parameter:
        if dtype is not None and isinstance(data, np.ndarray):
            arr = np.ascontiguousarray(data.view(np.ndarray), dtype=np.dtype(dtype))
        elif data is None:
            arr = np.zeros(0, dtype=get_default_dtype())
        elif isinstance(data, Parameter):
            arr = np.ascontiguousarray(data.view(np.ndarray))
        elif isinstance(data, np.ndarray):
            arr = default_float(np.ascontiguousarray(data))
        elif hasattr(data, "detach"):  # a torch tensor keeps its dtype
            arr = np.ascontiguousarray(data.detach().cpu().numpy())
        else:
            arr = np.ascontiguousarray(np.asarray(data, dtype=get_default_dtype()))
        if dtype is not None:
            arr = np.ascontiguousarray(arr, dtype=np.dtype(dtype))
        obj = arr.view(cls)
        obj.requires_grad = requires_grad
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        self.requires_grad = getattr(obj, "requires_grad", True)
        self.grad = None

    # Results of arithmetic on parameters are plain arrays, not new parameters.
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        inputs = tuple(i.view(np.ndarray) if isinstance(i, Parameter) else i for i in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(
                o.view(np.ndarray) if isinstance(o, Parameter) else o for o in kwargs["out"]
            )
        return getattr(ufunc, method)(*inputs, **kwargs)

    @property
    def data(self) -> np.ndarray:  # type: ignore[override]
        """The plain ndarray view of this parameter (same memory)."""
        return self.view(np.ndarray)

    @data.setter
    def data(self, value: Any) -> None:
        np.copyto(self.view(np.ndarray), np.asarray(value), casting="unsafe")

    def numpy(self) -> np.ndarray:
        """The plain ndarray view (same memory)."""
        return self.view(np.ndarray)

    def detach(self) -> np.ndarray:
        """The plain ndarray view (same memory)."""
        return self.view(np.ndarray)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + repr(self.view(np.ndarray))

    def __reduce__(self) -> tuple:
        return (Parameter, (self.view(np.ndarray).copy(), self.requires_grad))


class UninitializedParameter(Parameter):
    """A parameter of a lazy module whose shape the first trace (or load_state_dict) decides."""

    def __new__(
        cls, requires_grad: bool = True, device: Any = None, dtype: Any = None
    ) -> UninitializedParameter:
        dt = np.dtype(dtype or get_default_dtype())
        return Parameter.__new__(cls, np.zeros(0, dtype=dt), requires_grad, dtype=dt)

    def __repr__(self) -> str:
        return "<UninitializedParameter>"


def _is_eager(value: Any) -> bool:
    return (
        isinstance(value, Tensor) and current_context() is None and type(value.value).__name__ == "EagerValue"
    )


class _IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach") and not isinstance(value, np.ndarray):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class Module:
    """Base class of models and layers; attributes that are Modules or Parameters register."""

    training: bool

    def __init__(self) -> None:
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = {}
        d["_buffers"] = {}
        d["_non_persistent"] = set()
        d["_modules"] = {}
        d["_constants"] = {}

    # ------------------------------------------------------------ attributes
    def _stores(self) -> dict:
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign to {type(self).__name__} before Module.__init__() is called "
                "(call super().__init__() first)"
            )
        return self.__dict__

    def _forget(self, name: str) -> None:
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules", "_constants"):
            d[store].pop(name, None)
        d["_non_persistent"].discard(name)
        d.pop(name, None)

    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        if isinstance(value, Parameter):
            self._stores()
            self._forget(name)
            d["_parameters"][name] = value
        elif isinstance(value, Module):
            self._stores()
            self._forget(name)
            d["_modules"][name] = value
        elif "_parameters" in d and name in d["_parameters"]:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as parameter {name!r} (wrap it in nn.Parameter)"
                )
            d["_parameters"][name] = None
        elif "_modules" in d and name in d["_modules"]:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module {name!r}")
            d["_modules"][name] = None
        elif "_buffers" in d and name in d["_buffers"]:
            if isinstance(value, Tensor):
                self._assign_traced(name, value)
            elif value is None or isinstance(value, np.ndarray):
                d["_buffers"][name] = value if value is None else default_float(value)
            else:
                raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r}")
        elif "_constants" in d and name in d["_constants"] and isinstance(value, Tensor):
            self._assign_traced(name, value)
        elif _is_eager(value) and "_constants" in d:  # e.g. torch.ones(...) in __init__: a constant
            self._forget(name)
            d["_constants"][name] = default_float(np.array(value.numpy()))
        elif isinstance(value, np.ndarray) and value.dtype in _SUPPORTED and "_constants" in d:
            self._forget(name)
            d["_constants"][name] = default_float(value)
        else:
            if "_constants" in d:
                d["_constants"].pop(name, None)
            object.__setattr__(self, name, value)

    def _assign_traced(self, name: str, value: Tensor) -> None:
        ctx = current_context()
        if ctx is None:
            raise GraphcError(f"cannot store a traced Tensor in {type(self).__name__}.{name} outside a trace")
        ctx.assign(getattr(self, name), value)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        if "_parameters" in d:
            for store, kind in (("_parameters", "param"), ("_buffers", "const"), ("_constants", "const")):
                if name in d[store]:
                    array = d[store][name]
                    ctx = current_context()
                    if ctx is not None and array is not None:
                        return ctx.array(array, name=ctx.array_names.get(id(array), name), kind=kind)
                    return array
            if name in d["_modules"]:
                return d["_modules"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        d = self.__dict__
        if any(name in d.get(s, ()) for s in ("_parameters", "_buffers", "_modules", "_constants")):
            self._forget(name)
        else:
            object.__delattr__(self, name)

    def __dir__(self) -> list[str]:
        d = self.__dict__
        extra = [k for s in ("_parameters", "_buffers", "_modules", "_constants") for k in d.get(s, ())]
        return sorted(set(super().__dir__()) | set(extra))

    # ------------------------------------------------------------ registration
    def register_buffer(self, name: str, tensor: Any, persistent: bool = True, *, dtype: Any = None) -> None:
        """Add a non-trainable array (in state_dict unless ``persistent=False``); float64 NumPy data
        becomes the default dtype unless ``dtype=`` (a graphc extension) says otherwise."""
        d = self._stores()
        if "." in name or not name:
            raise KeyError(f"buffer name {name!r} must be non-empty and contain no '.'")
        self._forget(name)
        if tensor is None:
            array = None
        elif dtype is not None:
            array = np.asarray(_to_numpy(tensor), dtype=np.dtype(dtype))
        elif hasattr(tensor, "detach") and not isinstance(tensor, np.ndarray):
            array = _to_numpy(tensor)
        else:
            array = default_float(np.asarray(tensor))
        d["_buffers"][name] = array
        if not persistent:
            d["_non_persistent"].add(name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or None, a declared but absent one like ``bias=False``)."""
        d = self._stores()
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot register {type(param).__name__} as parameter {name!r}")
        self._forget(name)
        d["_parameters"][name] = param

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a child module."""
        d = self._stores()
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module")
        self._forget(name)
        d["_modules"][name] = module

    register_module = add_module

    # ------------------------------------------------------------ traversal
    def named_modules(
        self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        """This module and its descendants, pre-order, each instance once by default."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is None:
                continue
            sub = f"{prefix}.{name}" if prefix else name
            yield from child.named_modules(memo, sub, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        """This module and its descendants."""
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Direct children with their names."""
        seen = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self) -> Iterator[Module]:
        """Direct children."""
        for _, m in self.named_children():
            yield m

    def _named_members(self, store: str, prefix: str, recurse: bool, remove_duplicate: bool):
        seen = set()
        mods = (
            self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
            if recurse
            else [(prefix, self)]
        )
        for mod_prefix, mod in mods:
            for name, value in mod.__dict__[store].items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), value

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """(name, Parameter) pairs, each shared parameter once under its first name."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """All parameters, each once."""
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, np.ndarray]]:
        """(name, array) pairs of the registered buffers."""
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[np.ndarray]:
        """All buffers, each once."""
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def named_constants(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """(name, array) pairs of plain NumPy-array attributes (traced as const inputs)."""
        yield from self._named_members("_constants", prefix, True, True)

    # ------------------------------------------------------------ state
    def state_dict(
        self, destination: dict | None = None, prefix: str = "", keep_vars: bool = False
    ) -> dict[str, np.ndarray]:
        """Parameters and persistent buffers by PyTorch key names (arrays sharing memory)."""
        if destination is None:
            destination = OrderedDict()
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.view(np.ndarray)
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent:
                destination[prefix + name] = b
        for name, child in self._modules.items():
            if child is not None:
                child.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def load_state_dict(
        self, state_dict: dict, strict: bool = True, assign: bool = False
    ) -> _IncompatibleKeys:
        """Copy arrays (NumPy or torch tensors) into this module's existing arrays, in place.

        As PyTorch: returns ``(missing_keys, unexpected_keys)``; with ``strict=True`` either list
        being non-empty is an error, and a shape mismatch always is. Nothing is copied unless
        every check passes. Lazy parameters not yet materialized take the loaded shape.
        """
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors, copies = [], []
        for key, dst in own.items():
            if key not in state_dict:
                continue
            src = _to_numpy(state_dict[key])
            if isinstance(dst, UninitializedParameter):
                if src.size or src.ndim != 1:  # an empty array leaves the lazy parameter waiting
                    copies.append((key, dst, src))
                continue
            if src.shape != dst.shape:
                errors.append(
                    f"size mismatch for {key}: copying a param with shape {src.shape} from checkpoint, "
                    f"the shape in current model is {dst.shape}."
                )
                continue
            copies.append((key, dst, src))
        if strict:
            if unexpected:
                errors.insert(
                    0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". "
                )
            if missing:
                errors.insert(
                    0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". "
                )
        if errors:
            raise GraphcError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors)
            )
        for key, dst, src in copies:
            if isinstance(dst, UninitializedParameter):
                self._materialize_loaded(key, src)
            else:
                np.copyto(dst.view(np.ndarray), src, casting="unsafe")
        return _IncompatibleKeys(missing, unexpected)

    def _materialize_loaded(self, key: str, src: np.ndarray) -> None:
        owner: Module = self
        *path, leaf = key.split(".")
        for part in path:
            owner = owner._modules[part]
        owner.__dict__["_parameters"][leaf] = Parameter(src.copy(), dtype=src.dtype)

    # ------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and its descendants."""
        for m in self.modules():
            m.__dict__["training"] = bool(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (running stats, no dropout)."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Mark every parameter trainable or frozen."""
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget stored gradients (graphc's training steps do not keep any)."""
        for p in self.parameters():
            p.grad = None

    def apply(self, fn: Callable[[Module], None]) -> Module:
        """Call ``fn`` on every descendant, then on this module."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def to(self, *args: Any, **kwargs: Any) -> Module:
        """Itself (graphc chooses the device at compile time)."""
        return self

    def cpu(self) -> Module:
        """Itself."""
        return self

    # ------------------------------------------------------------ calling
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The computation; subclasses define it."""
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if current_context() is None and _eager_args((*args, *kwargs.values())):
            import graphc.eager as eager

            return eager.call(self, args, kwargs)  # inside, the call below runs forward
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        """One line of this module's settings for repr."""
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, child in self._modules.items():
            text = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {text}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n" + "\n".join(lines) + "\n)"


def _eager_args(args: tuple) -> bool:
    import graphc.eager as eager

    return eager.wants_eager(args)


class Sequential(Module):
    """Children applied in turn; keys "0", "1", ... (or the names of an OrderedDict)."""

    def __init__(self, *args: Any) -> None:
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, module in args[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(args):
                self.add_module(str(i), module)

    def __getitem__(self, idx: int | slice) -> Any:
        items = list(self._modules.items())
        if isinstance(idx, slice):
            return Sequential(OrderedDict(items[idx]))
        return items[_index(idx, len(items))][1]

    def __setitem__(self, idx: int, module: Module) -> None:
        key = list(self._modules)[_index(idx, len(self._modules))]
        self.add_module(key, module)

    def __delitem__(self, idx: int) -> None:
        key = list(self._modules)[_index(idx, len(self._modules))]
        self._forget(key)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        """Add a module at the end."""
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x: Any) -> Any:
        """Apply each child in turn."""
        for module in self._modules.values():
            x = module(x)
        return x


class ModuleList(Module):
    """A list of modules, registered under "0", "1", ..."""

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, idx: int | slice) -> Any:
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            return ModuleList(mods[idx])
        return mods[_index(idx, len(mods))]

    def __setitem__(self, idx: int, module: Module) -> None:
        self.add_module(str(_index(idx, len(self))), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __iadd__(self, modules: Iterable[Module]) -> ModuleList:
        return self.extend(modules)

    def append(self, module: Module) -> ModuleList:
        """Add a module at the end."""
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        """Add several modules at the end."""
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> None:
        """Insert a module before ``index``."""
        mods = list(self._modules.values())
        mods.insert(index, module)
        self.__dict__["_modules"] = {}
        for i, m in enumerate(mods):
            self.add_module(str(i), m)


def _index(idx: int, n: int) -> int:
    if not -n <= idx < n:
        raise IndexError(f"index {idx} is out of range for {n} modules")
    return idx % n
