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
import json
import os
import re
import struct
import tempfile
import tokenize
import warnings
import zipfile
import zlib

import numpy as np
from numpy.lib import format as npy_format

from graphc.ir import GraphcError

META = "checkpoint.json"
ARRAYS = "arrays.npz"
# Caps on what a read accepts (module attributes, so a caller may raise them).
MAX_FILE_BYTES = 16 << 30
MAX_META_BYTES = 16 << 20
MAX_ARRAYS = 100_000
MAX_RATIO = 200  # a deflated member over RATIO_FLOOR bytes may inflate at most this much (zip bombs)
RATIO_FLOOR = 1 << 20
_READABLE_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_NUMERIC_KINDS = "biuf"
# What a corrupt zip or npy can raise from the standard library while it is being parsed.
_CORRUPT = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    zlib.error,
    struct.error,
    OverflowError,
    KeyError,
    IndexError,
    TypeError,
    MemoryError,
    SyntaxError,  # a .npy header is a Python literal: numpy parses it with tokenize and ast
    tokenize.TokenError,
)


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


def _members(z: zipfile.ZipFile, where: str, limit: int, total: int) -> dict[str, zipfile.ZipInfo]:
    """The zip's members by name, after checking their number, names, sizes and compression."""
    infos = z.infolist()
    if len(infos) > limit:
        raise GraphcError(f"{where}: {len(infos)} members, at most {limit} expected")
    members: dict[str, zipfile.ZipInfo] = {}
    inflated = sum(info.file_size for info in infos)
    if inflated > total:
        raise GraphcError(f"{where}: members hold {inflated} bytes, more than the {total} allowed")
    for info in infos:
        if info.filename in members:
            raise GraphcError(f"{where}: member {info.filename!r} appears twice")
        if info.flag_bits & 0x1:
            raise GraphcError(f"{where}: member {info.filename!r} is encrypted")
        if info.compress_type not in _READABLE_COMPRESSION:
            raise GraphcError(
                f"{where}: member {info.filename!r} uses compression method {info.compress_type}, "
                "not stored or deflated"
            )
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise GraphcError(
                f"{where}: member {info.filename!r} inflates {info.compress_size} bytes to "
                f"{info.file_size} (over {MAX_RATIO}x)"
            )
        members[info.filename] = info
    return members


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, where: str) -> bytes:
    if info.file_size > cap:
        raise GraphcError(f"{where}: {info.filename} is {info.file_size} bytes, more than the {cap} allowed")
    with z.open(info) as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise GraphcError(f"{where}: {info.filename} is more than the {cap} bytes allowed")
    return data


def _parse_npy(data: bytes, name: str, where: str) -> np.ndarray:
    """A numeric array from ``.npy`` bytes whose header agrees with their length (no pickle)."""
    f = io.BytesIO(data)
    version = npy_format.read_magic(f)
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise GraphcError(f"{where}: array {name!r} has .npy version {version}")
    read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    with warnings.catch_warnings():
        # a corrupt header is a Python literal with odd escapes: no warning (or error, under -W error)
        warnings.simplefilter("ignore")
        shape, fortran, dtype = read_header(f)
    if dtype.hasobject or dtype.kind not in _NUMERIC_KINDS or dtype.subdtype is not None:
        raise GraphcError(f"{where}: array {name!r} has dtype {dtype}, not a numeric dtype")
    count = 1
    for n in shape:
        count *= n
    offset = f.tell()
    if count * dtype.itemsize != len(data) - offset:
        raise GraphcError(
            f"{where}: array {name!r} declares shape {shape} of {dtype} but holds {len(data) - offset} bytes"
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran else "C").copy(order="C")


def _parse_npz(blob: bytes, where: str) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        members = _members(z, f"{where} {ARRAYS}", MAX_ARRAYS, MAX_FILE_BYTES)
        for name, info in members.items():
            if not name.endswith(".npy"):
                raise GraphcError(f"{where}: {ARRAYS} member {name!r} is not a .npy array")
            data = _read_member(z, info, MAX_FILE_BYTES, where)
            arrays[name[: -len(".npy")]] = _parse_npy(data, name, where)
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
            members = _members(z, where, 16, MAX_FILE_BYTES)
            for name in (META, ARRAYS):
                if name not in members:
                    raise GraphcError(f"{path!r} is not a graphc checkpoint (no {name} inside)")
            meta_bytes = _read_member(z, members[META], MAX_META_BYTES, where)
            blob = _read_member(z, members[ARRAYS], MAX_FILE_BYTES, where)
        arrays = _parse_npz(blob, where)
    except GraphcError:
        raise
    except _CORRUPT as err:
        raise GraphcError(f"{path!r} is not a graphc checkpoint (or it is corrupt): {err}") from None
    try:
        meta = json.loads(meta_bytes.decode("utf-8"))
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
        raise GraphcError(f"{where}: {META} is not valid JSON: {err}") from None
    return meta, arrays
