"""Kernel cache entries: a generated source on disk, checked, imported, repaired once.

A cached source is used only when its bytes are exactly the generated text (its file name is
a hash of that text): a missing file is created atomically (a private temporary file linked
into place, so concurrent writers race safely); a file with other content (edited, planted,
truncated) is replaced atomically, after removing numba's index and objects for it so they are
not reused against the new text. A valid file is never rewritten, so numba's index for it
stays valid. The module runs the generated text itself (compiled in memory under the file's
name), never bytes read back from disk, and writes no ``.pyc``.

numba loads its pickled index lazily, on a kernel's first call: a corrupt or truncated index
or object file is dropped (the module's numba files are deleted) and the kernel is compiled
afresh, instead of failing on every later run. An import that fails with an error a damaged
cache can cause is retried once from a regenerated entry.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pickle
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from graphc.ir import GraphcError

# Errors a damaged cache entry can raise while its module loads: these get one retry.
RETRY_ERRORS = (SyntaxError, ImportError, EOFError, pickle.UnpicklingError)

_NUMBA_SUFFIXES = (".nbi", ".nbc", ".pyc")


def numba_cache_dirs(path: Path) -> list[Path]:
    """Where numba may keep the compiled objects and index of the functions in ``path``."""
    dirs = [path.parent / "__pycache__"]
    try:  # NUMBA_CACHE_DIR set: numba's cache for this folder is under it instead
        from numba.core import caching, config

        if config.CACHE_DIR:
            sub = caching._CacheLocator.get_suitable_cache_subpath(str(path))
            dirs.append(Path(config.CACHE_DIR) / sub)
    except (ImportError, AttributeError):
        pass
    return dirs


def purge_numba_files(path: Path) -> None:
    """Delete numba's index and object files (and any ``.pyc``) of the module at ``path``."""
    for folder in numba_cache_dirs(path):
        if not folder.is_dir():
            continue
        for f in folder.glob(f"{path.stem}.*"):
            if f.suffix in _NUMBA_SUFFIXES:
                f.unlink(missing_ok=True)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def place_source(folder: Path, filename: str, source: str) -> Path:
    """The file ``folder/filename`` holding exactly ``source``: reused, created or replaced.

    Raises OSError when the folder cannot be written (the caller tries another folder).
    """
    path = folder / filename
    data = source.encode()
    existing = _read(path)
    if existing == data:
        return path
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".py", dir=folder)  # mode 0o600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if existing is None:
            try:
                os.link(tmp, path)  # atomic create-if-absent: never replaces a file numba indexed
                return path
            except FileExistsError:  # another process wrote it first
                if _read(path) == data:
                    return path
            except OSError:  # file systems without hard links
                if _read(path) == data:
                    return path
        purge_numba_files(path)
        os.replace(tmp, path)
        tmp = ""
        return path
    finally:
        if tmp:
            os.unlink(tmp)


def _guard_numba_loads(module: ModuleType, path: Path) -> None:
    """Make the module's cached numba functions treat an unreadable cache as a miss."""
    for obj in list(vars(module).values()):
        cache = getattr(obj, "_cache", None)
        load = getattr(cache, "load_overload", None)
        py_func = getattr(obj, "py_func", None)
        if load is None or getattr(py_func, "__module__", None) != module.__name__:
            continue

        def guarded(*args, _load=load, **kwargs):
            try:
                return _load(*args, **kwargs)
            except Exception:  # a damaged index or object file: drop it, numba compiles afresh
                purge_numba_files(path)
                return None

        cache.load_overload = guarded


def _exec_module(name: str, path: Path, source: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    code = compile(source, str(path), "exec", dont_inherit=True)
    sys.modules[name] = module  # before exec: numba's cache finds the module by name
    try:
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    _guard_numba_loads(module, path)
    return module


def _place_anywhere(folders: Iterable[Path], filename: str, source: str) -> Path:
    error: OSError | None = None
    for folder in folders:
        try:
            return place_source(folder, filename, source)
        except OSError as err:
            error = err
    raise GraphcError(f"kernel cache: no folder to write {filename} to ({error})")


def load_source_module(name: str, filename: str, source: str, folders: Iterable[Path]) -> ModuleType:
    """Import ``source`` as module ``name`` from the cache file ``filename``.

    ``folders`` yields candidate cache folders, best first (the first one that can be written
    is used). An import failing with one of ``RETRY_ERRORS`` is retried once after deleting the
    entry (source and numba files); a second failure raises GraphcError naming the file.
    """
    folders = iter(folders)
    path = _place_anywhere(folders, filename, source)
    try:
        return _exec_module(name, path, source)
    except RETRY_ERRORS:
        purge_numba_files(path)
        path.unlink(missing_ok=True)
    path = _place_anywhere(itertools.chain([path.parent], folders), filename, source)
    try:
        return _exec_module(name, path, source)
    except RETRY_ERRORS as err:
        raise GraphcError(f"generated kernel {path} does not load: {type(err).__name__}: {err}") from err
