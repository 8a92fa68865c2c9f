"""Composite operations written once out of graphc's primitives (torch.nn.functional's API).

Every function takes traced Tensors (NumPy arrays and Python scalars are turned into constants)
and appends primitive nodes to the active trace. Softmax, log_softmax and layer_norm reduce the
trailing axes with ``keepdims`` so the fusion pass can make each of them one kernel.

Outside a trace the functions also accept plain NumPy arrays: they run op by op in eager mode
(graphc/eager.py) and return eager Tensors (``batch_norm`` in training updates the running
arrays in place, as PyTorch does).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from graphc.ir import GraphcError
from graphc.ir.types import promote_dtypes
from graphc.tensor import Tensor, _at, user_source
from graphc.tensor import where as _where

__all__ = [
    "avg_pool2d",
    "batch_norm",
    "binary_cross_entropy_with_logits",
    "cat",
    "conv2d",
    "cross_entropy",
    "dropout",
    "embedding",
    "gelu",
    "l1_loss",
    "layer_norm",
    "leaky_relu",
    "linear",
    "log_softmax",
    "matmul",
    "max_pool2d",
    "mse_loss",
    "nll_loss",
    "one_hot",
    "pad",
    "relu",
    "sigmoid",
    "silu",
    "softmax",
    "stack",
    "tanh",
    "where",
]


# The parts, one module each; the shared helpers re-exported (other modules import _eager, _t here).
from graphc.functional_activations import (  # noqa: E402
    gelu,
    leaky_relu,
    log_softmax,
    relu,
    sigmoid,
    silu,
    softmax,
    tanh,
)
from graphc.functional_base import _composite, _eager, _float, _pair, _reduce, _t  # noqa: E402, F401
from graphc.functional_layers import (  # noqa: E402
    avg_pool2d,
    batch_norm,
    conv2d,
    dropout,
    embedding,
    layer_norm,
    linear,
    matmul,
    max_pool2d,
)
from graphc.functional_losses import (  # noqa: E402
    binary_cross_entropy_with_logits,
    cross_entropy,
    l1_loss,
    mse_loss,
    nll_loss,
)


# ---------------------------------------------------------------------------- tensor helpers
@_eager
def where(condition: Any, input: Any, other: Any) -> Tensor:
    """``input`` where ``condition`` else ``other``."""
    return _where(condition, input, other)


def _tensors(tensors: Sequence[Any]) -> list[Tensor]:
    like = next((t for t in tensors if isinstance(t, Tensor)), None)
    out = [_t(t, like=like) for t in tensors]
    dtypes = {t.value.dtype for t in out}
    if len(dtypes) > 1:
        target = functools.reduce(promote_dtypes, sorted(dtypes))
        out = [t.to(target) for t in out]
    return out


def cat(tensors: Sequence[Any], dim: int = 0) -> Tensor:
    """Concatenate along ``dim``."""
    ts = _tensors(tensors)
    if not ts:
        raise GraphcError(f"{_at(user_source())}cat needs at least one tensor")
    axis = dim % ts[0].ndim if ts[0].ndim else 0
    if len(ts) == 1:
        return ts[0]
    return ts[0].ctx.op("concat", *ts, axis=axis)


def stack(tensors: Sequence[Any], dim: int = 0) -> Tensor:
    """Stack along a new ``dim``."""
    ts = _tensors(tensors)
    if not ts:
        raise GraphcError(f"{_at(user_source())}stack needs at least one tensor")
    d = dim % (ts[0].ndim + 1)
    return cat([t.unsqueeze(d) for t in ts], d)


@_eager
def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot vectors of integer labels (num_classes must be given while tracing)."""
    t = _t(tensor)
    if num_classes < 0:
        raise GraphcError(
            f"{_at(user_source())}one_hot: num_classes must be given (it sets the output shape)"
        )
    classes = t.ctx.array(np.arange(num_classes, dtype=t.dtype), name="classes")
    return (t.unsqueeze(-1) == classes).to("i64")


@_eager
def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:
    """PyTorch's F.pad; ``pad`` lists (low, high) pairs from the last dim backwards; modes "constant",
    "reflect", "replicate" and "circular" (graphc/padding.py)."""
    from graphc.padding import pad as _pad

    return _pad(input, pad, mode, value)


# ---------------------------------------------------------------------------- more of torch's API
from graphc import activations as _activations  # noqa: E402
from graphc import convolution as _convolution  # noqa: E402
from graphc import creation as _creation  # noqa: E402
from graphc import functional_extras as _functional_extras  # noqa: E402
from graphc import tensor_functions as _tensor_functions  # noqa: E402
from graphc.activations import *  # noqa: E402, F403
from graphc.control_flow import cond, scan, while_loop  # noqa: E402, F401  (graphc.functional.cond, ...)
from graphc.convolution import *  # noqa: E402, F403
from graphc.convolution_transpose import conv_transpose1d, conv_transpose3d  # noqa: E402
from graphc.creation import tril, triu  # noqa: E402
from graphc.functional_extras import *  # noqa: E402, F403
from graphc.resize import interpolate, pixel_shuffle, pixel_unshuffle, upsample  # noqa: E402
from graphc.tensor_functions import *  # noqa: E402, F403

__all__ += [
    n
    for n in (*_activations.__all__, *_convolution.__all__, *_tensor_functions.__all__)
    if n != "grouped_conv2d"
]
__all__ += ["tril", "triu", "hardtanh_", "unsupported", "conv_transpose1d", "conv_transpose3d"]
__all__ += ["interpolate", "pixel_shuffle", "pixel_unshuffle", "upsample", *_functional_extras.__all__]
del _creation


def hardtanh_(input: Tensor, min_val: float = -1.0, max_val: float = 1.0) -> Tensor:
    """In place: hardtanh."""
    return _activations.hardtanh(input, min_val, max_val, inplace=True)


class UnsupportedAPIError(GraphcError, AttributeError):
    """A torch API graphc does not implement (also an AttributeError: hasattr() and
    ``from ... import`` keep their meaning)."""


def unsupported(module: str, name: str) -> GraphcError:
    """The error for a torch API graphc does not implement, naming it and the user's line."""
    return UnsupportedAPIError(
        f"{_at(user_source())}{module}.{name} is not implemented in graphc (no torch equivalent yet); "
        "write it with the supported functions or open an issue"
    )


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    raise unsupported("torch.nn.functional", name)


from graphc.compress_functional import dequantize_linear, distillation_loss, fake_quantize, quantize_linear  # noqa: E402, F401, E501
from graphc.functional_sampling import affine_grid, grid_sample, lp_pool1d, lp_pool2d, max_unpool2d  # noqa: E402, F401

__all__ += ["affine_grid", "grid_sample", "lp_pool1d", "lp_pool2d", "max_unpool2d"]
