"""The kernel cache: generated source on disk, imported as a module, compiled once.

Each generated source is written to ``<cache>/kernels/<sha256 of the source>.py`` (``<cache>``
is ``$GRAPHC_CACHE_DIR`` or ``~/.cache/graphc``) and imported with its module registered in
``sys.modules`` before it runs: numba's ``cache=True`` needs a real file to locate its cache
(``__pycache__`` beside the source) and a second process needs the module importable by name.
A file, once written, is never rewritten: numba keys its cache index on the source file's
modification time, so rewriting identical text would invalidate compiled code. Writers race
safely: each writes a private temporary file and links it into place; the loser's link fails
and it uses the winner's identical file.

Within a process, modules are memoized by source hash, so identical kernels (same ops, dtypes
and broadcast pattern) share one compiled function.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType

_MODULES: dict[str, ModuleType] = {}
_LOCK = threading.Lock()


def cache_root() -> Path:
    """The graphc cache directory: ``$GRAPHC_CACHE_DIR`` or ``~/.cache/graphc``."""
    env = os.environ.get("GRAPHC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "graphc"


def kernel_dir() -> Path:
    """Where generated kernel sources (and numba's cache beside them) live."""
    return cache_root() / "kernels"


def source_hash(source: str) -> str:
    """The sha256 hex digest naming a generated source."""
    return hashlib.sha256(source.encode()).hexdigest()


def module_name(digest: str) -> str:
    """The sys.modules name of the kernel module with this digest."""
    return f"graphc_kernel_{digest}"


def _write_once(path: Path, source: str) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".py", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(source)
        try:
            os.link(tmp, path)  # atomic create-if-absent: never replaces a file numba indexed
        except FileExistsError:
            pass
        except OSError:  # file systems without hard links
            if not path.exists():
                os.replace(tmp, path)
                tmp = ""
    finally:
        if tmp:
            os.unlink(tmp)


def _fallback_dir() -> Path:
    return (
        Path(tempfile.gettempdir()) / f"graphc-{os.getuid() if hasattr(os, 'getuid') else 'user'}" / "kernels"
    )


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
            path = kernel_dir() / f"{digest}.py"
            try:
                _write_once(path, source)
            except OSError:  # unwritable cache: compile from a private temporary directory
                path = _fallback_dir() / f"{digest}.py"
                _write_once(path, source)
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod  # before exec: numba's cache finds the module by name
            try:
                spec.loader.exec_module(mod)
            except BaseException:
                del sys.modules[name]
                raise
        _MODULES[digest] = mod
        return mod


def load_kernel(source: str, name: str = "kernel"):
    """The njit dispatcher ``name`` of a generated source."""
    return getattr(load_module(source), name)
