"""The checkpoint file itself: atomic writes, stale temporary files, bounded reads.

A checkpoint is one zip file holding ``checkpoint.json`` and ``arrays.npz`` (itself a zip of
``.npy`` members). It is written to a temporary file beside the target, named
``<name>.graphc-<pid>-<8 random characters>.tmp``, and moved over the target with ``os.replace``.
A save that was killed leaves its temporary file behind; the next save of the same checkpoint
removes those of processes that no longer run (only names of exactly that form).

Reading trusts nothing in the file: sizes are capped before anything is read or allocated, only
stored or deflated members without encryption are read, arrays are numeric ``.npy`` data whose
header agrees with their size (no pickle), and every failure is a GraphcError naming the file.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import zipfile

import numpy as np

from graphc.ir import GraphcError
from graphc.runtime import archive

META = "checkpoint.json"
ARRAYS = "arrays.npz"
# Caps on what a read accepts (module attributes, so a caller may raise them).
MAX_FILE_BYTES = 16 << 30
MAX_META_BYTES = 16 << 20
MAX_ARRAYS = 100_000


# ---------------------------------------------------------------------------- writing


def _temp_prefix(path: str) -> str:
    return f"{os.path.basename(path)}.graphc-{os.getpid()}-"


def _temp_pattern(path: str) -> re.Pattern:
    # tempfile.mkstemp's random part: 8 characters of [a-z0-9_]
    return re.compile(re.escape(os.path.basename(path)) + r"\.graphc-(\d+)-[a-z0-9_]{8}\.tmp")


def _process_runs(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":
        # this process: maybe another thread's save in progress; elsewhere than POSIX,
        # os.kill(pid, 0) would terminate the process instead of probing it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or not checkable: leave its file alone
    return True


def remove_stale_temporaries(path: str) -> list[str]:
    """Remove temporary files of killed saves of ``path`` (graphc's own names only); return them."""
    folder = os.path.dirname(os.path.abspath(path))
    pattern = _temp_pattern(path)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or _process_runs(int(match.group(1))):
            continue
        full = os.path.join(folder, name)
        try:
            if os.path.isfile(full) and not os.path.islink(full):
                os.unlink(full)
                removed.append(full)
        except OSError:
            pass  # gone already, or not ours to remove
    return removed


def write_atomically(path: str, meta: bytes, arrays: bytes) -> None:
    """Write the checkpoint zip to a temporary file beside ``path``, then move it over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
                z.writestr(META, meta)
                z.writestr(ARRAYS, arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------- reading


def _parse_npz(blob: bytes, where: str) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        members = archive.members(z, f"{where} {ARRAYS}", MAX_ARRAYS, MAX_FILE_BYTES)
        for name, info in members.items():
            if not name.endswith(".npy"):
                raise GraphcError(f"{where}: {ARRAYS} member {name!r} is not a .npy array")
            what = f"{where}: array {name[: -len('.npy')]!r}"
            data = archive.read_member(z, info, MAX_FILE_BYTES, what)
            arrays[name[: -len(".npy")]] = archive.read_npy(data, what)
    return arrays


def read_file(path: str) -> tuple[object, dict[str, np.ndarray]]:
    """The parsed JSON metadata (not yet checked) and the arrays of the checkpoint at ``path``."""
    where = f"checkpoint {path!r}"
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise GraphcError(f"{where} does not exist") from None
    except OSError as err:
        raise GraphcError(f"{where} cannot be read: {err}") from None
    if size > MAX_FILE_BYTES:
        raise GraphcError(f"{where} is {size} bytes, more than the {MAX_FILE_BYTES} allowed")
    try:
        with zipfile.ZipFile(path) as z:
            members = archive.members(z, where, 16, MAX_FILE_BYTES)
            for name in (META, ARRAYS):
                if name not in members:
                    raise GraphcError(f"{path!r} is not a graphc checkpoint (no {name} inside)")
            meta_bytes = archive.read_member(z, members[META], MAX_META_BYTES, f"{where}: {META}")
            blob = archive.read_member(z, members[ARRAYS], MAX_FILE_BYTES, f"{where}: {ARRAYS}")
        arrays = _parse_npz(blob, where)
    except GraphcError:
        raise
    except archive.CORRUPT as err:
        raise GraphcError(f"{path!r} is not a graphc checkpoint (or it is corrupt): {err}") from None
    meta = archive.read_json(meta_bytes, f"{where}: {META}")
    return meta, arrays
