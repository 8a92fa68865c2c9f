"""graphc: a static-graph deep-learning compiler for PyTorch-style models."""

import sys
import types

from graphc import calibration, eager, functional, nn, optim, pruning, qat, quantization  # noqa: F401  (+ eager, compression)
from graphc.checkpoint import load_checkpoint, save_checkpoint
from graphc.compiler import compile, compile_graph, load_plan
from graphc.control_flow import cond, scan, while_loop  # noqa: F401  (control flow: graphc.cond, ...)

# PyTorch's top-level API (``import graphc as torch``): creation, dtypes and functions.
from graphc.creation import *  # noqa: E402, F403
from graphc.creation import __all__ as _creation_names  # noqa: E402
from graphc.creation import bool, double, float, int, long  # noqa: E402, F401, A004
from graphc.data import DataLoader
from graphc.functional import cat, einsum, log_softmax, matmul, relu, sigmoid, softmax, stack, tanh, where  # noqa: E402  # noqa: E402
from graphc.ir import Graph, GraphcError
from graphc.nn.init import manual_seed
from graphc.qat import convert_qat, prepare_qat  # quantization-aware training
from graphc.runtime import Plan
from graphc.tensor import Tensor
from graphc.tensor_functions import *  # noqa: E402, F403
from graphc.tensor_functions import __all__ as _function_names  # noqa: E402
from graphc.torch_functions import *  # noqa: E402, F403
from graphc.torch_functions import __all__ as _method_names  # noqa: E402
from graphc.tracing import trace
from graphc.training import TrainStep, compile_train, evaluate, fit
from graphc.weights import load_weights

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
    "convert_qat",
    "evaluate",
    "fit",
    "functional",
    "load_checkpoint",
    "load_plan",
    "manual_seed",
    "nn",
    "optim",
    "prepare_qat",
    "save_checkpoint",
    "trace",
    "load_weights",
    "cat",
    "einsum",
    "log_softmax",
    "matmul",
    "relu",
    "sigmoid",
    "softmax",
    "stack",
    "tanh",
    "where",
    *_creation_names,
    *_function_names,
    *_method_names,
]


class _CallableTensorModule(types.ModuleType):
    """``graphc.tensor`` stays the module (``from graphc.tensor import Tensor``) and is also
    ``torch.tensor``: calling it makes a tensor (``graphc.creation.tensor``)."""

    def __call__(self, data, dtype=None, device=None, requires_grad=False):  # noqa: ANN001, ANN204
        from graphc.creation import tensor as make

        return make(data, dtype=dtype, device=device, requires_grad=requires_grad)


sys.modules["graphc.tensor"].__class__ = _CallableTensorModule
tensor = sys.modules["graphc.tensor"]


def no_grad():
    """Eager ops inside record nothing for backward() (compiled plans compute no gradients anyway)."""
    from graphc.eager import no_grad as eager_no_grad

    return eager_no_grad()


inference_mode = no_grad


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    from graphc.functional import unsupported

    raise unsupported("torch", name)
