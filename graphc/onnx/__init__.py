"""ONNX import and export (needs the optional ``onnx`` extra: ``pip install graphc[onnx]``).

- ``load(path_or_model)``: an ONNX model as a graphc ``nn.Module`` (parameters = initializers).
- ``export(model, *examples, path=..., opset=...)``: a graphc model's traced graph as ONNX.
- ``Backend``: graphc as an ``onnx.backend.base.Backend`` (for onnx's backend test suite).

See docs/ONNX.md for the supported ops.
"""

from __future__ import annotations

from graphc.ir import GraphcError

try:
    import onnx as _onnx  # noqa: F401
except ImportError as _err:  # pragma: no cover - exercised only without the extra
    raise GraphcError("graphc.onnx needs the 'onnx' package: pip install 'graphc[onnx]'") from _err

from graphc.ir.types import enable_bf16

enable_bf16()  # onnx has imported ml_dtypes already: bf16 joins the type tables built below

from .exporter import export, to_onnx  # noqa: E402
from .importer import OnnxModule, load  # noqa: E402
from .registry import supported_ops  # noqa: E402

__all__ = ["OnnxModule", "export", "load", "supported_ops", "to_onnx"]
