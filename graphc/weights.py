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
from graphc.ir.types import enable_bf16

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
            enable_bf16()  # safetensors gives BF16 as ml_dtypes' bfloat16
        if arr.dtype not in _KINDS and arr.dtype not in DTYPES.values():  # bf16: added on first use
            raise GraphcError(f"{path}: array {key!r} has dtype {arr.dtype}, which graphc cannot load")
        out[key] = arr
    return out


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
