"""Bounded reading of graphc's zip files (plan files and checkpoints): trust nothing in them.

Both file kinds are a zip holding a JSON member and ``arrays.npz`` (a zip of ``.npy`` members).
Every read here is bounded before anything is allocated: member count and sizes are checked
against caps, a deflated member may not inflate past a ratio (zip bombs), encrypted members and
compression other than stored/deflated are refused, a member is read no further than its
declared size, and an array is numeric ``.npy`` data whose header agrees with its byte count
(nothing is unpickled). Every failure is a GraphcError saying what is wrong and where.
"""

from __future__ import annotations

import io
import json
import struct
import tokenize
import warnings
import zipfile
import zlib

import numpy as np
from numpy.lib import format as npy_format

from graphc.ir import GraphcError

MAX_RATIO = 200  # a member over RATIO_FLOOR bytes may inflate at most this much
RATIO_FLOOR = 1 << 20
READABLE_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
NUMERIC_KINDS = "biuf"  # and ml_dtypes' bfloat16 (kind "V") where the caller expects it (_is_raw_form)
# What a damaged zip, zlib stream or .npy header can raise from the standard library and NumPy.
CORRUPT = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    struct.error,
    OverflowError,
    MemoryError,
    KeyError,
    IndexError,
    TypeError,
    SyntaxError,  # a .npy header is a Python literal: NumPy parses it with tokenize and ast
    tokenize.TokenError,
)


def short(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages about untrusted values."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def members(zf: zipfile.ZipFile, where: str, max_count: int, max_total: int) -> dict[str, zipfile.ZipInfo]:
    """The zip's members by name, after checking their number, total size, names and compression."""
    infos = zf.infolist()
    if len(infos) > max_count:
        raise GraphcError(f"{where}: {len(infos)} members, at most {max_count} expected")
    total = sum(info.file_size for info in infos)
    if total > max_total:
        raise GraphcError(f"{where}: members hold {total} bytes, more than the {max_total} allowed")
    out: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if info.filename in out:
            raise GraphcError(f"{where}: member {short(info.filename)} appears twice")
        check_member(info, f"{where}: member {short(info.filename)}")
        out[info.filename] = info
    return out


def check_member(info: zipfile.ZipInfo, what: str) -> None:
    """Refuse an encrypted member, one of another compression, or a zip bomb."""
    if info.flag_bits & 0x1:
        raise GraphcError(f"{what} is encrypted")
    if info.compress_type not in READABLE_COMPRESSION:
        raise GraphcError(f"{what} uses compression method {info.compress_type}, not stored or deflated")
    if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise GraphcError(
            f"{what} inflates {info.compress_size} bytes to {info.file_size} (over {MAX_RATIO}x)"
        )


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, what: str) -> bytes:
    """A member's bytes: at most ``limit`` and exactly as many as it declares."""
    check_member(info, what)
    if info.file_size > limit:
        raise GraphcError(f"{what} holds {info.file_size} bytes, more than the limit of {limit}")
    chunks, total = [], 0
    with zf.open(info) as f:
        while True:
            chunk = f.read(min(1 << 20, info.file_size + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > info.file_size:
                raise GraphcError(f"{what} holds more bytes than it declares")
    if total != info.file_size:
        raise GraphcError(f"{what} is truncated")
    return b"".join(chunks)


def _is_raw_form(found: np.dtype, dtype: np.dtype | None) -> bool:
    """Whether ``found`` is how ``np.save`` stores ``dtype``, an ml_dtypes type (bfloat16, float8,
    int4, ...): raw void items of its size, with no fields. Only an expected dtype of that kind is
    read that way."""
    if dtype is None:
        return False
    want = np.dtype(dtype)
    return (
        want.type.__module__.startswith("ml_dtypes")
        and found.kind == "V"
        and found.names is None
        and found.subdtype is None
        and found.itemsize == want.itemsize
    )


def read_npy(
    data: bytes, what: str, dtype: np.dtype | None = None, shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """The numeric array in ``.npy`` bytes (a writable C-contiguous copy; 0-d stays 0-d).

    The header must agree with the byte count; ``dtype``/``shape``, when given, must match exactly
    (checked before the data is touched). Object and structured dtypes are refused: no pickle.
    """
    f = io.BytesIO(data)
    version = npy_format.read_magic(f)
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise GraphcError(f"{what}: unsupported .npy version {version}")
    read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    with warnings.catch_warnings():  # a corrupt header is a literal with odd escapes: no warning
        warnings.simplefilter("ignore")
        found_shape, fortran, found = read_header(f)
    raw = _is_raw_form(found, dtype)
    if raw:
        found = np.dtype(dtype)  # NumPy writes ml_dtypes' bfloat16 as raw 2-byte items ("|V2")
    if not raw and (found.hasobject or found.kind not in NUMERIC_KINDS or found.subdtype is not None):
        raise GraphcError(f"{what}: dtype {found} is not a numeric dtype")
    if (dtype is not None and found != dtype) or (shape is not None and tuple(found_shape) != tuple(shape)):
        want = f"{np.dtype(dtype) if dtype is not None else found}{list(shape or found_shape)}"
        raise GraphcError(f"{what}: holds {found}{list(found_shape)}, expected {want}")
    count = 1
    for n in found_shape:
        count *= n
    offset = f.tell()
    if count * found.itemsize != len(data) - offset:
        raise GraphcError(
            f"{what}: declares {found}{list(found_shape)} but holds {len(data) - offset} data bytes"
        )
    flat = np.frombuffer(data, dtype=found, count=count, offset=offset)
    return np.array(flat.reshape(found_shape, order="F" if fortran else "C"), order="C")


def read_json(data: bytes, what: str) -> object:
    """Parsed JSON (any value; the caller checks its type)."""
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, huge ints
        raise GraphcError(f"{what} is not valid JSON ({type(err).__name__}: {short(str(err))})") from None
