"""The CPU kernel cache: generated source on disk, imported as a module, compiled once.

Each generated source is written to ``<cache>/kernels/<salt>/<sha256 of the source>.py``
(``<cache>`` is ``$GRAPHC_CACHE_DIR`` or ``~/.cache/graphc``; ``<salt>`` covers graphc's
version and the helper modules kernels import, see ``graphc.kernels.cache_dir``) and imported
with its module registered in ``sys.modules`` before it runs: numba's ``cache=True`` needs a
real file to locate its cache (``__pycache__`` beside the source) and a second process needs
the module importable by name. The folders are private to the user and checked before use; a
file is used only if its content is the source it is named after, and a valid file is never
rewritten (see ``graphc.kernels.cache_store``).

Within a process, modules are memoized by source hash, so identical kernels (same ops, dtypes
and broadcast pattern) share one compiled function.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path
from types import ModuleType

from graphc.kernels.cache_dir import backend_dir, cache_root, candidate_dirs
from graphc.kernels.cache_store import load_source_module

__all__ = ["cache_root", "kernel_dir", "load_kernel", "load_module", "module_name", "source_hash"]

BACKEND = "kernels"

_MODULES: dict[str, ModuleType] = {}
_LOCK = threading.Lock()


def kernel_dir() -> Path:
    """Where generated kernel sources (and numba's cache beside them) live, when private."""
    return backend_dir(BACKEND)


def source_hash(source: str) -> str:
    """The sha256 hex digest naming a generated source."""
    return hashlib.sha256(source.encode()).hexdigest()


def module_name(digest: str) -> str:
    """The sys.modules name of the kernel module with this digest."""
    return f"graphc_kernel_{digest}"


def load_module(source: str) -> ModuleType:
    """The imported module of a generated source (written to the cache on first use)."""
    digest = source_hash(source)
    with _LOCK:
        mod = _MODULES.get(digest)
        if mod is not None:
            return mod
        name = module_name(digest)
        mod = sys.modules.get(name)
        if mod is None:
            mod = load_source_module(name, f"{digest}.py", source, candidate_dirs(BACKEND))
        _MODULES[digest] = mod
        return mod


def load_kernel(source: str, name: str = "kernel"):
    """The njit dispatcher ``name`` of a generated source."""
    return getattr(load_module(source), name)
