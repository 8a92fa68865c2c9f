"""Loads a model file: a Python file defining ``model()`` and ``example_inputs()``, or an ONNX file.

A ``.onnx`` file is imported with graphc.onnx (the optional ``onnx`` extra); its example inputs
are seeded random arrays of the graph inputs' declared dtypes and shapes (dynamic dims are 1).

The CLI's commands take a MODEL argument, ``file.py`` or ``file.py:factory`` (``load_model``).
``graphc bench`` reads more of the file (``load_model_file``), all of it optional:

- ``torch_model()``: the same model in PyTorch, with the state_dict keys of ``model()``'s (the bench
  loads graphc's initial weights into it by name). Only a file that defines it is compared with
  the peers (PyTorch eager, torch.compile, ONNX Runtime); graphc does not translate models.
- ``LOSS``, ``OPTIMIZER`` and ``example_labels()``: with the first two the file is a training step.
  ``LOSS`` names a function of both graphc.functional and torch.nn.functional
  (``"cross_entropy"``), ``OPTIMIZER`` is ``(class name in graphc.optim and torch.optim, kwargs)``,
  ``example_labels()`` gives the target array, passed after the inputs.
- ``NAME`` (default: the file's stem), ``WHAT`` (default: the docstring's first line), ``BATCH``,
  ``TARGETS``: graphc's goals, ``[(ratio, "<= 1"), ...]`` (see graphc.bench.targets), and
  ``moved_bytes(inputs)``: the bytes a perfect kernel reads and writes (a bandwidth bound), and
  ``FREEZE = True``: compile inference with ``freeze=True`` (parameters as constants).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from graphc.ir import GraphcError


def import_file(path: str | os.PathLike) -> ModuleType:
    """Import a Python file by path, under a module name unique to that path."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise GraphcError(f"model file {path!r} does not exist")
    tag = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]
    name = f"graphc_model_{os.path.splitext(os.path.basename(path))[0]}_{tag}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise GraphcError(f"{path} is not a Python file graphc can import")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except GraphcError:
        sys.modules.pop(name, None)
        raise
    except Exception as err:
        sys.modules.pop(name, None)
        raise GraphcError(f"{path}: importing it raised {type(err).__name__}: {err}") from err
    return module


def _arrays(value: Any, where: str) -> tuple[np.ndarray, ...]:
    if isinstance(value, np.ndarray):
        return (value,)
    if not isinstance(value, (tuple, list)) or not all(isinstance(a, np.ndarray) for a in value):
        raise GraphcError(f"{where} must return a NumPy array or a tuple of them, got {type(value).__name__}")
    return tuple(value)


def is_onnx(path: str | os.PathLike) -> bool:
    """Whether a MODEL argument names an ONNX file."""
    return os.fspath(path).lower().endswith(".onnx")


def _load_onnx(path: str):
    try:
        from graphc import onnx as graphc_onnx
    except ImportError:
        raise GraphcError(
            f"{path}: reading ONNX files needs the onnx extra (pip install 'graphc[onnx]')"
        ) from None
    return graphc_onnx.load(path)


def load_model(spec: str) -> tuple[object, tuple[np.ndarray, ...]]:
    """The model object and its example input arrays named by a MODEL argument."""
    if is_onnx(spec):
        module = _load_onnx(spec)
        return module, module.example_inputs()
    path, _, factory = spec.partition(":")
    module = import_file(path)
    factory = factory or "model"
    make = getattr(module, factory, None)
    if not callable(make):
        raise GraphcError(f"{path} defines no function {factory}() that builds the model")
    examples = getattr(module, "example_inputs", None)
    if not callable(examples):
        raise GraphcError(f"{path} defines no example_inputs() giving the input arrays")
    return make(), _arrays(examples(), f"{path}: example_inputs()")


@dataclass(frozen=True)
class ModelFile:
    """What a model file defines, for ``graphc bench``."""

    path: str
    name: str
    what: str
    model: Callable[[], Any]
    example_inputs: Callable[[], Any]
    torch_model: Callable[[], Any] | None = None
    example_labels: Callable[[], Any] | None = None
    loss: str | None = None
    optimizer: tuple[str, dict] | None = None
    batch: int | None = None
    targets: tuple[tuple[str, str], ...] = ()
    moved_bytes: Callable[[tuple[np.ndarray, ...]], int] | None = None
    freeze: bool = False

    @property
    def kind(self) -> str:
        """ "train" (forward + loss + backward + update) or "infer" (forward)."""
        return "train" if self.optimizer is not None else "infer"

    def inputs(self) -> tuple[np.ndarray, ...]:
        """The step's arrays: the example inputs, then (training) the labels."""
        arrays = _arrays(self.example_inputs(), f"{self.path}: example_inputs()")
        if self.example_labels is not None:
            arrays += _arrays(self.example_labels(), f"{self.path}: example_labels()")
        return arrays


def _optional_callable(module: ModuleType, name: str, path: str) -> Callable | None:
    value = getattr(module, name, None)
    if value is not None and not callable(value):
        raise GraphcError(f"{path}: {name} must be a function, got {type(value).__name__}")
    return value


def load_model_file(path: str | os.PathLike) -> ModelFile:
    """Import a model file and check what it defines (module docstring: the names it may define)."""
    path = os.fspath(path)
    if is_onnx(path):
        onnx_module = _load_onnx(path)
        return ModelFile(
            path=path,
            name=os.path.splitext(os.path.basename(path))[0],
            what=f"ONNX model {os.path.basename(path)}",
            model=lambda: onnx_module,
            example_inputs=onnx_module.example_inputs,
        )
    module = import_file(path)
    for required in ("model", "example_inputs"):
        if not callable(getattr(module, required, None)):
            raise GraphcError(f"{path} defines no function {required}()")
    loss, optimizer = getattr(module, "LOSS", None), getattr(module, "OPTIMIZER", None)
    labels = _optional_callable(module, "example_labels", path)
    if (loss is None) != (optimizer is None) or (optimizer is not None and labels is None):
        given = [n for n, v in (("LOSS", loss), ("OPTIMIZER", optimizer), ("example_labels()", labels)) if v]
        raise GraphcError(
            f"{path}: a training step needs LOSS, OPTIMIZER and example_labels(); it defines only {given}"
        )
    if loss is not None and not isinstance(loss, str):
        raise GraphcError(f"{path}: LOSS must name a function of graphc.functional, e.g. 'cross_entropy'")
    if optimizer is not None:
        ok = isinstance(optimizer, (tuple, list)) and len(optimizer) == 2
        if not (ok and isinstance(optimizer[0], str) and isinstance(optimizer[1], dict)):
            raise GraphcError(f"{path}: OPTIMIZER must be (class name, kwargs), e.g. ('SGD', {{'lr': 0.01}})")
        optimizer = (optimizer[0], dict(optimizer[1]))
    targets = getattr(module, "TARGETS", ())
    if not isinstance(targets, (tuple, list)) or not all(
        isinstance(t, (tuple, list)) and len(t) == 2 and all(isinstance(s, str) for s in t) for t in targets
    ):
        raise GraphcError(
            f"{path}: TARGETS must be a list of (ratio, target) strings, e.g. ('time / torch eager', '<= 1')"
        )
    batch = getattr(module, "BATCH", None)
    if batch is not None and not isinstance(batch, int):
        raise GraphcError(f"{path}: BATCH must be an int, got {type(batch).__name__}")
    doc = (module.__doc__ or "").strip().splitlines()
    return ModelFile(
        path=path,
        name=str(getattr(module, "NAME", None) or os.path.splitext(os.path.basename(path))[0]),
        what=str(getattr(module, "WHAT", None) or (doc[0] if doc else "")),
        model=module.model,
        example_inputs=module.example_inputs,
        torch_model=_optional_callable(module, "torch_model", path),
        example_labels=labels if optimizer is not None else None,
        loss=loss,
        optimizer=optimizer,
        batch=batch,
        targets=tuple((t[0], t[1]) for t in targets),
        moved_bytes=_optional_callable(module, "moved_bytes", path),
        freeze=bool(getattr(module, "FREEZE", False)),
    )
