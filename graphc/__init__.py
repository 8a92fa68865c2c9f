"""graphc: a static-graph deep-learning compiler for PyTorch-style models."""

from graphc.ir import GraphcError

__version__ = "0.1.0"

__all__ = ["GraphcError", "__version__"]
