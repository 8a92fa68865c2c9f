"""``graphc.load_weights(path)``: a state_dict of NumPy arrays from a weights file, without torch.

``.safetensors`` files are read with the safetensors package's NumPy API (a JSON header and raw
little-endian buffers: no code runs); ``.npz`` files with ``np.load(allow_pickle=False)``, so an
object array in the file is refused rather than unpickled. The result feeds
``Module.load_state_dict``.
"""

from __future__ import annotations

import os
import zipfile
from collections import OrderedDict

import numpy as np

from graphc.ir import DTYPES, GraphcError
from graphc.ir.types import enable_ml_dtypes, to_numpy_dtype

__all__ = ["load_weights"]

_KINDS = {np.dtype(d) for d in DTYPES.values()} | {
    np.dtype(np.float16),
    np.dtype(np.int8),
    np.dtype(np.uint8),
}


def _checked(path: str, arrays: dict) -> OrderedDict[str, np.ndarray]:
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for key, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.type.__module__.startswith("ml_dtypes"):
            enable_ml_dtypes()  # safetensors gives BF16 as ml_dtypes' bfloat16
        if arr.dtype not in _KINDS and arr.dtype not in DTYPES.values():  # bf16: added on first use
            why = ""
            if arr.dtype.kind == "V" and arr.dtype.names is None:  # how np.savez writes ml_dtypes' types
                why = " (raw bytes: .npz does not record bfloat16/float8/int4 types; use .safetensors)"
            raise GraphcError(f"{path}: array {key!r} has dtype {arr.dtype}, which graphc cannot load{why}")
        out[key] = arr
    return out


# safetensors dtype names graphc reads itself where the package's NumPy API cannot (float8).
_SAFETENSORS_DTYPES = {"F8_E4M3": "f8e4m3fn", "F8_E5M2": "f8e5m2", "BF16": "bf16", "F16": "f16"}
_SAFETENSORS_DTYPES.update({"F32": "f32", "F64": "f64", "BOOL": "bool"})
_SAFETENSORS_DTYPES.update(
    {f"{k[0].upper()}{k[1:]}": k for k in ("i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64")}
)


def _safetensors_float8(name: str) -> dict[str, np.ndarray]:
    """A safetensors file holding F8_E4M3/F8_E5M2 tensors, read with the package's ``deserialize``
    (the header's dtype and shape, the raw little-endian bytes) as ml_dtypes' float8 arrays."""
    from safetensors import deserialize

    try:
        with open(name, "rb") as fh:
            views = deserialize(fh.read())
    except Exception as err:  # the package raises its own error types for damaged files
        raise GraphcError(f"load_weights: {name} is not a readable safetensors file ({err})") from None
    arrays = {}
    for key, view in views:
        dtype = _SAFETENSORS_DTYPES.get(view["dtype"])
        if dtype is None:
            raise GraphcError(
                f"{name}: array {key!r} has safetensors dtype {view['dtype']}, which graphc cannot load"
            )
        np_dtype = to_numpy_dtype(dtype).newbyteorder("<")
        try:
            flat = np.frombuffer(view["data"], dtype=np_dtype)
            arrays[key] = flat.reshape(view["shape"]).astype(np_dtype.newbyteorder("="))
        except ValueError as err:  # a byte count that does not fit the shape
            raise GraphcError(f"{name}: array {key!r} is malformed ({err})") from None
    return arrays


def load_weights(path: str | os.PathLike) -> OrderedDict[str, np.ndarray]:
    """Read a ``.safetensors`` or ``.npz`` file into a state_dict of arrays (never unpickling)."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise GraphcError(f"load_weights: no such file {name!r}")
    ext = os.path.splitext(name)[1].lower()
    if ext == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:  # pragma: no cover - a dependency of graphc
            raise GraphcError("load_weights: reading .safetensors needs the safetensors package") from None
        try:
            arrays = load_file(name)
        except AttributeError:  # its NumPy API has no float8 (it looks up numpy.float8_e4m3fn)
            arrays = _safetensors_float8(name)
        except Exception as err:  # the package raises its own error types for damaged files
            raise GraphcError(f"load_weights: {name} is not a readable safetensors file ({err})") from None
        return _checked(name, arrays)
    if ext == ".npz":
        try:
            with np.load(name, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
            raise GraphcError(
                f"load_weights: {name} is not a readable .npz file of plain arrays ({err})"
            ) from None
        return _checked(name, arrays)
    raise GraphcError(
        f"load_weights: {name} has extension {ext!r}; graphc reads .safetensors and .npz (convert a "
        "PyTorch .pt/.bin checkpoint with safetensors.torch.save_file, since unpickling runs code)"
    )
