"""More of torch.nn.functional for ported code: losses (smooth L1, Huber, binary cross-entropy, KL
divergence), ``cosine_similarity``, ``pairwise_distance``, ``glu``, ``softmin``, and ``unfold``/``fold``
(the im2col/col2im primitives), each with PyTorch's formula and reductions.
"""

from __future__ import annotations

from typing import Any

from graphc.functional import _eager, _reduce
from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, as_tensor, user_source, where

__all__ = [
    "binary_cross_entropy",
    "cosine_similarity",
    "fold",
    "glu",
    "huber_loss",
    "kl_div",
    "pairwise_distance",
    "smooth_l1_loss",
    "softmin",
    "unfold",
]


def smooth_l1_loss(
    input: Any,
    target: Any,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Tensor:
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (plain L1 for beta = 0)."""
    x = as_tensor(input)
    d = (x - as_tensor(target, like=x)).abs()
    loss = d if beta == 0 else where(d < beta, d * d * (0.5 / beta), d - 0.5 * beta)
    return _reduce(loss, reduction, "smooth_l1_loss")


def huber_loss(input: Any, target: Any, reduction: str = "mean", delta: float = 1.0) -> Tensor:
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta)."""
    x = as_tensor(input)
    d = (x - as_tensor(target, like=x)).abs()
    loss = where(d < delta, d * d * 0.5, (d - 0.5 * delta) * delta)
    return _reduce(loss, reduction, "huber_loss")


def binary_cross_entropy(
    input: Any,
    target: Any,
    weight: Any = None,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
) -> Tensor:
    """-(t log p + (1 - t) log(1 - p)) of probabilities, each log clamped at -100 as in PyTorch."""
    p = as_tensor(input)
    t = as_tensor(target, like=p)
    loss = -(t * p.log().clamp(min=-100.0) + (1 - t) * (1 - p).log().clamp(min=-100.0))
    if weight is not None:
        loss = loss * as_tensor(weight, like=p)
    return _reduce(loss, reduction, "binary_cross_entropy")


def kl_div(
    input: Any,
    target: Any,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    """target * (log target - input) for log-probabilities ``input``; reduction "batchmean" divides the
    sum by the batch size (a zero target contributes zero)."""
    x = as_tensor(input)
    t = as_tensor(target, like=x)
    if log_target:
        loss = t.exp() * (t - x)
    else:
        safe = where(t > 0, t, 1.0)
        loss = where(t > 0, t * (safe.log() - x), 0.0)
    if reduction == "batchmean":
        return loss.sum() / (x.shape[0] if x.ndim else 1)
    return _reduce(loss, reduction, "kl_div")


def cosine_similarity(x1: Any, x2: Any, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """x1 . x2 / max(|x1| |x2|, eps) along ``dim`` (PyTorch's formula, which clamps the product)."""
    a = as_tensor(x1)
    b = as_tensor(x2, like=a)
    dot = (a * b).sum(dim)
    norms = ((a * a).sum(dim) * (b * b).sum(dim)).clamp(min=eps * eps).sqrt()
    return dot / norms


def pairwise_distance(x1: Any, x2: Any, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False) -> Tensor:
    """The p-norm of x1 - x2 + eps over the last dim."""
    a = as_tensor(x1)
    d = (a - as_tensor(x2, like=a) + eps).abs()
    if p == 2:
        return (d * d).sum(-1, keepdim=keepdim).sqrt()
    if p == 1:
        return d.sum(-1, keepdim=keepdim)
    return d.pow(p).sum(-1, keepdim=keepdim).pow(1.0 / p)


def glu(input: Any, dim: int = -1) -> Tensor:
    """First half times the sigmoid of the second half along ``dim``."""
    x = as_tensor(input)
    if x.shape[dim] % 2:
        raise GraphcError(f"{_at(user_source())}glu: dim {dim} of {x.shape} must have an even size")
    a, b = x.chunk(2, dim)
    return a * b.sigmoid()


def softmin(input: Any, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """softmax(-input)."""
    x = as_tensor(input)
    if dtype is not None:
        x = x.to(dtype)
    return (-x).softmax(dim if dim is not None else -1)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def unfold(input: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1) -> Tensor:
    """Sliding blocks of [N, C, H, W] as [N, C*kh*kw, L] (one im2col)."""
    x = as_tensor(input)
    if x.ndim != 4:
        raise GraphcError(f"{_at(user_source())}unfold: needs input [N, C, H, W], got {x.shape}")
    return x.ctx.op(
        "im2col",
        x,
        kernel=_pair(kernel_size),
        stride=_pair(stride),
        padding=_pair(padding),
        dilation=_pair(dilation),
    )


def fold(
    input: Any, output_size: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1
) -> Tensor:
    """Sum sliding blocks [N, C*kh*kw, L] back into [N, C, H, W] (one col2im)."""
    x = as_tensor(input)
    k = _pair(kernel_size)
    if x.ndim != 3 or x.shape[1] % (k[0] * k[1]):
        raise GraphcError(
            f"{_at(user_source())}fold: needs input [N, C*kh*kw, L] with kernel {k}, got {x.shape}"
        )
    h, w = _pair(output_size)
    c = x.shape[1] // (k[0] * k[1])
    return x.ctx.op(
        "col2im",
        x,
        kernel=k,
        stride=_pair(stride),
        padding=_pair(padding),
        dilation=_pair(dilation),
        image_shape=(x.shape[0], c, h, w),
    )


# Outside a trace, NumPy arguments run the function in eager mode (graphc/eager.py).
for _name in __all__:
    globals()[_name] = _eager(globals()[_name])
