"""Loads a MODEL argument: `file.py` (defining model() and example_inputs()) or `file.py:factory`."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from types import ModuleType

import numpy as np

from graphc.ir import GraphcError


def _import_file(path: str) -> ModuleType:
    if not os.path.isfile(path):
        raise GraphcError(f"model file {path!r} does not exist")
    tag = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]
    name = f"graphc_model_{os.path.splitext(os.path.basename(path))[0]}_{tag}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_model(spec: str) -> tuple[object, tuple[np.ndarray, ...]]:
    """The model object and its example input arrays named by a MODEL argument."""
    path, _, factory = spec.partition(":")
    module = _import_file(path)
    factory = factory or "model"
    make = getattr(module, factory, None)
    if not callable(make):
        raise GraphcError(f"{path} defines no function {factory}() that builds the model")
    examples = getattr(module, "example_inputs", None)
    if not callable(examples):
        raise GraphcError(f"{path} defines no example_inputs() giving the input arrays")
    inputs = examples()
    if isinstance(inputs, np.ndarray):
        inputs = (inputs,)
    return make(), tuple(inputs)
