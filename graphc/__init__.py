"""graphc: a static-graph deep-learning compiler for PyTorch-style models."""

from graphc import functional, nn, optim
from graphc.checkpoint import load_checkpoint, save_checkpoint
from graphc.compiler import compile, compile_graph, load_plan
from graphc.data import DataLoader
from graphc.ir import Graph, GraphcError
from graphc.nn.init import manual_seed
from graphc.runtime import Plan
from graphc.tensor import Tensor
from graphc.tracing import trace
from graphc.training import TrainStep, compile_train, evaluate, fit

__version__ = "0.1.0"

__all__ = [
    "DataLoader",
    "Graph",
    "GraphcError",
    "Plan",
    "Tensor",
    "TrainStep",
    "__version__",
    "compile",
    "compile_graph",
    "compile_train",
    "evaluate",
    "fit",
    "functional",
    "load_checkpoint",
    "load_plan",
    "manual_seed",
    "nn",
    "optim",
    "save_checkpoint",
    "trace",
]
