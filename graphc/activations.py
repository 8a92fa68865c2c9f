"""Activations and normalizations of torch.nn.functional beyond the core ones, as composites.

Each is written out of primitives with PyTorch's formula (and its defaults: ``rms_norm``'s eps
is the dtype's machine epsilon, ``softplus`` is linear above ``threshold``). Functions whose
unused branch could overflow (softplus, elu, mish) clamp that branch's input, so the gradient
of ``where`` never multiplies 0 by inf.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphc.functional import _eager
from graphc.ir import GraphcError
from graphc.ir.types import FLOAT_DTYPES
from graphc.tensor import Tensor, _at, as_tensor, matmul, user_source, where

__all__ = [
    "celu",
    "elu",
    "group_norm",
    "hardsigmoid",
    "hardswish",
    "hardtanh",
    "instance_norm",
    "logsigmoid",
    "mish",
    "normalize",
    "relu6",
    "rms_norm",
    "scaled_dot_product_attention",
    "selu",
    "softplus",
    "softsign",
]


def _float(x: Any) -> Tensor:
    t = as_tensor(x)
    return t if t.value.dtype in FLOAT_DTYPES else t.to("f32")


def hardtanh(input: Any, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:
    """x clamped to [min_val, max_val]."""
    x = as_tensor(input)
    out = x.clamp(min_val, max_val)
    return x._assign_inplace(out, "hardtanh(inplace=True)") if inplace else out


def relu6(input: Any, inplace: bool = False) -> Tensor:
    """min(max(x, 0), 6)."""
    return hardtanh(input, 0.0, 6.0, inplace)


def hardsigmoid(input: Any, inplace: bool = False) -> Tensor:
    """relu6(x + 3) / 6."""
    x = _float(input)
    out = (x + 3.0).clamp(0.0, 6.0) * (1.0 / 6.0)
    return x._assign_inplace(out, "hardsigmoid(inplace=True)") if inplace else out


def hardswish(input: Any, inplace: bool = False) -> Tensor:
    """x * relu6(x + 3) / 6."""
    x = _float(input)
    out = x * ((x + 3.0).clamp(0.0, 6.0) * (1.0 / 6.0))
    return x._assign_inplace(out, "hardswish(inplace=True)") if inplace else out


def softplus(input: Any, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + exp(beta x)) / beta, and x where beta x > threshold."""
    x = _float(input)
    bx = x * beta if beta != 1 else x
    soft = (bx.clamp(max=threshold).exp() + 1.0).log()
    soft = soft * (1.0 / beta) if beta != 1 else soft
    return where(bx > threshold, x, soft)


def mish(input: Any, inplace: bool = False) -> Tensor:
    """x * tanh(softplus(x))."""
    x = _float(input)
    out = x * softplus(x).tanh()
    return x._assign_inplace(out, "mish(inplace=True)") if inplace else out


def elu(input: Any, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x where x > 0, else alpha * (exp(x) - 1)."""
    x = _float(input)
    out = where(x > 0, x, (x.clamp(max=0.0).exp() - 1.0) * alpha)
    return x._assign_inplace(out, "elu(inplace=True)") if inplace else out


def celu(input: Any, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x where x > 0, else alpha * (exp(x / alpha) - 1)."""
    x = _float(input)
    out = where(x > 0, x, ((x * (1.0 / alpha)).clamp(max=0.0).exp() - 1.0) * alpha)
    return x._assign_inplace(out, "celu(inplace=True)") if inplace else out


def selu(input: Any, inplace: bool = False) -> Tensor:
    """scale * elu(x, alpha) with SELU's constants."""
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    x = _float(input)
    out = elu(x, alpha) * scale
    return x._assign_inplace(out, "selu(inplace=True)") if inplace else out


def logsigmoid(input: Any) -> Tensor:
    """log(sigmoid(x)) = -softplus(-x)."""
    return -softplus(-_float(input))


def softsign(input: Any) -> Tensor:
    """x / (1 + |x|)."""
    x = _float(input)
    return x / (x.abs() + 1.0)


# ---------------------------------------------------------------------------- normalization
def _affine(y: Tensor, weight: Any, bias: Any, shape: tuple[int, ...]) -> Tensor:
    if weight is not None:
        y = y * as_tensor(weight, like=y).reshape(shape)
    if bias is not None:
        y = y + as_tensor(bias, like=y).reshape(shape)
    return y


def _standardize(x: Tensor, axes: tuple[int, ...], eps: float) -> Tensor:
    inv_n = 1.0 / math.prod(x.shape[a] for a in axes)
    mean = x.sum(axes, keepdim=True) * inv_n
    centered = x - mean
    var = (centered * centered).sum(axes, keepdim=True) * inv_n
    return centered * (var + eps).rsqrt()


def group_norm(
    input: Any, num_groups: int, weight: Any = None, bias: Any = None, eps: float = 1e-5
) -> Tensor:
    """Normalize each group of channels of [N, C, ...] over its channels and positions."""
    x = _float(input)
    if x.ndim < 2 or x.shape[1] % num_groups:
        raise GraphcError(
            f"{_at(user_source())}group_norm: input {x.shape} needs [N, C, ...] with C divisible by "
            f"{num_groups}"
        )
    n, c = x.shape[:2]
    y = _standardize(x.reshape(n, num_groups, -1), (2,), eps).reshape(x.shape)
    return _affine(y, weight, bias, (1, c) + (1,) * (x.ndim - 2))


def instance_norm(
    input: Any,
    running_mean: Any = None,
    running_var: Any = None,
    weight: Any = None,
    bias: Any = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalize each channel of each sample over its positions (instance statistics)."""
    x = _float(input)
    if not use_input_stats:
        from graphc.functional import batch_norm

        return batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)
    if running_mean is not None or running_var is not None:
        raise GraphcError(f"{_at(user_source())}instance_norm: track_running_stats is not supported")
    if x.ndim < 3:
        raise GraphcError(f"{_at(user_source())}instance_norm: needs [N, C, ...], got {x.shape}")
    y = _standardize(x, tuple(range(2, x.ndim)), eps)
    return _affine(y, weight, bias, (1, x.shape[1]) + (1,) * (x.ndim - 2))


def rms_norm(input: Any, normalized_shape: Any, weight: Any = None, eps: float | None = None) -> Tensor:
    """x / sqrt(mean(x^2) + eps) over the trailing dims, times weight (eps: the dtype's epsilon)."""
    x = _float(input)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape) :] != shape:
        raise GraphcError(f"{_at(user_source())}rms_norm: input {x.shape} does not end in {shape}")
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    e = float(np.finfo(x.dtype).eps) if eps is None else eps
    y = x * ((x * x).mean(axes, keepdim=True) + e).rsqrt()
    return y if weight is None else y * as_tensor(weight, like=y)


def normalize(input: Any, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """x / max(||x||_p, eps) along ``dim``."""
    x = _float(input)
    if p == 2:
        norm = (x * x).sum(dim, keepdim=True).sqrt()
    elif p == 1:
        norm = x.abs().sum(dim, keepdim=True)
    else:
        norm = (x.abs() ** p).sum(dim, keepdim=True) ** (1.0 / p)
    return x / norm.clamp(min=eps)


def scaled_dot_product_attention(
    query: Any,
    key: Any,
    value: Any,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """softmax(q k^T * scale + mask) v (a bool mask keeps where True; ``is_causal``: the lower
    triangle), with dropout on the weights when ``dropout_p`` > 0."""
    from graphc.functional import dropout, softmax

    q = _float(query)
    k, v = as_tensor(key, like=q), as_tensor(value, like=q)
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = matmul(q, k.transpose(-2, -1)) * s
    if is_causal:
        lq, lk = q.shape[-2], k.shape[-2]
        keep = q.ctx.array(np.tril(np.ones((lq, lk), dtype=bool)), name="causal")
        scores = scores.masked_fill(~keep, -math.inf)
    if attn_mask is not None:
        m = as_tensor(attn_mask, like=scores)
        scores = scores.masked_fill(~m, -math.inf) if m.value.dtype == "bool" else scores + m
    weights = softmax(scores, -1)
    if dropout_p > 0:
        weights = dropout(weights, dropout_p)
    return matmul(weights, v)


# Outside a trace, NumPy arguments run the function in eager mode (graphc/eager.py).
for _name in __all__:
    globals()[_name] = _eager(globals()[_name])
