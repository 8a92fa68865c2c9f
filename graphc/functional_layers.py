"""graphc.functional's layers: linear, matmul, conv2d, pooling, layer_norm, batch_norm, dropout, embedding."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphc.eager_linear import linear as _eager_linear
from graphc.functional_base import _composite, _eager, _float, _pair, _result, _t
from graphc.ir import GraphcError
from graphc.ir.ops import conv_output_size
from graphc.tensor import Tensor, _at, user_source
from graphc.tensor import matmul as _matmul
from graphc.tensor import where as _where

__all__ = [
    "linear",
    "matmul",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "layer_norm",
    "batch_norm",
    "dropout",
    "embedding",
]


@_eager
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias, weight [out, in]."""
    out = _eager_linear(input, weight, bias)  # eager mode's fast path (graphc/eager_linear.py)
    if out is not None:
        return out
    x = _t(input)
    w = _t(weight, like=x)
    if w.ndim != 2 or x.shape[-1:] != w.shape[1:]:
        raise GraphcError(
            f"{_at(user_source())}linear: input {x.shape} does not match weight {w.shape} "
            f"(expects input [..., {w.shape[-1]}])"
        )
    out = _matmul(x, w.T)
    if bias is not None:
        out = out + _t(bias, like=out)
    return out


@_eager
def matmul(input: Tensor, other: Tensor) -> Tensor:
    """Matrix product (NumPy/PyTorch rules for 1-D operands, batch broadcasting)."""
    a = _t(input) if isinstance(input, Tensor) or not isinstance(other, Tensor) else _t(input, like=other)
    return _matmul(a, _t(other, like=a))


def _same_padding(kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    pads = []
    for k, d in zip(kernel, dilation):
        total = d * (k - 1)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


@_eager
def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> Tensor:
    """2-D convolution (NCHW, weight [O, C/groups, kh, kw]) as im2col + matmul (grouped: one
    batched matmul over the groups, see graphc.convolution)."""
    x = _t(input)
    w = _t(weight, like=x)
    unbatched = x.ndim == 3
    if unbatched:
        x = x.unsqueeze(0)
    if x.ndim != 4 or w.ndim != 4:
        raise GraphcError(
            f"{_at(user_source())}conv2d: needs input [N, C, H, W] and weight [O, C, kh, kw], "
            f"got {x.shape} and {w.shape}"
        )
    n, c = x.shape[:2]
    o, cw, kh, kw = w.shape
    if groups < 1 or c % groups or o % groups or c != cw * groups:
        raise GraphcError(
            f"{_at(user_source())}conv2d: input {x.shape} with groups={groups} does not fit weight {w.shape} "
            f"(needs {cw * groups} channels, both channel counts divisible by groups)"
        )
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            pads = ((0, 0), (0, 0))
        elif padding == "same":
            if stride != (1, 1):
                raise GraphcError(f"{_at(user_source())}conv2d: padding='same' needs stride 1")
            pads = _same_padding((kh, kw), dilation)
        else:
            raise GraphcError(f"{_at(user_source())}conv2d: padding must be 'same', 'valid' or ints")
    else:
        ph, pw = _pair(padding, "padding")
        pads = ((ph, ph), (pw, pw))
    if pads[0][0] == pads[0][1] and pads[1][0] == pads[1][1]:
        im_pad = (pads[0][0], pads[1][0])
    else:
        x = x.ctx.op("pad", x, pads=((0, 0), (0, 0), pads[0], pads[1]), value=0.0)
        im_pad = (0, 0)
    h, wd = x.shape[2:]
    oh = conv_output_size(h, kh, stride[0], im_pad[0], dilation[0])
    ow = conv_output_size(wd, kw, stride[1], im_pad[1], dilation[1])
    from graphc.convolution import depthwise_conv2d, grouped_conv2d, is_depthwise

    if is_depthwise(x, w, groups):
        out = depthwise_conv2d(x, w, stride, im_pad, dilation)  # a direct kernel, no im2col
    else:
        cols = x.ctx.op("im2col", x, kernel=(kh, kw), stride=stride, padding=im_pad, dilation=dilation)
        if groups == 1:
            out = _matmul(w.reshape(o, c * kh * kw), cols).reshape(n, o, oh, ow)
        else:
            out = grouped_conv2d(cols, w, n, groups, oh, ow)
    if bias is not None:
        out = out + _t(bias, like=out).reshape(1, o, 1, 1)
    return out.reshape(out.shape[1:]) if unbatched else out


def _pool_out(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    """PyTorch's pooling output length (with its ceil_mode rule)."""
    numer = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)
    out = numer // s + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_setup(x: Tensor, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil: bool, name: str):
    k = _pair(kernel_size, "kernel_size")
    s = _pair(stride, "stride") if stride is not None and stride != [] and stride != () else k
    p, d = _pair(padding, "padding"), _pair(dilation, "dilation")
    if x.ndim != 4:
        raise GraphcError(f"{_at(user_source())}{name}: needs input [N, C, H, W], got {x.shape}")
    if any(pi > ki // 2 for pi, ki in zip(p, k)):
        raise GraphcError(f"{_at(user_source())}{name}: padding {p} must be at most half the kernel {k}")
    h, w = x.shape[2:]
    oh, ow = (_pool_out(n, ki, si, pi, di, ceil) for n, ki, si, pi, di in zip((h, w), k, s, p, d))
    if oh <= 0 or ow <= 0:
        raise GraphcError(f"{_at(user_source())}{name}: kernel {k} does not fit input {x.shape}")
    extra = tuple(
        max(0, (o - 1) * si + di * (ki - 1) + 1 - (n + 2 * pi))
        for o, n, ki, si, pi, di in zip((oh, ow), (h, w), k, s, p, d)
    )
    return k, s, p, d, oh, ow, extra


def _windows(x: Tensor, k, s, d, oh: int, ow: int) -> Tensor:
    """[N, C, kh*kw, oh*ow] windows of an already padded input."""
    n, c = x.shape[:2]
    cols = x.ctx.op("im2col", x, kernel=k, stride=s, padding=(0, 0), dilation=d)
    cols = cols.reshape(n, c, k[0] * k[1], -1)
    if cols.shape[-1] != oh * ow:  # ceil_mode rounding: keep only the windows PyTorch keeps
        h2 = (x.shape[2] - d[0] * (k[0] - 1) - 1) // s[0] + 1
        w2 = (x.shape[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1
        cols = cols.reshape(n, c, k[0] * k[1], h2, w2)[:, :, :, :oh, :ow].reshape(n, c, k[0] * k[1], oh * ow)
    return cols


@_eager
def max_pool2d(
    input: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor:
    """Max over windows: one max_pool2d op whose padding cells are -inf (the lowest value for
    integers), ceil_mode's extra end padding included.

    NaN counts as the maximum and a window of -inf gives -inf, as in PyTorch. One difference: a
    window that covers padding and holds only -inf values sends its gradient to a padding element
    (dropped), where PyTorch sends it to the window's first element inside the input.
    """
    if return_indices:
        raise GraphcError(f"{_at(user_source())}max_pool2d: return_indices is not supported")
    x = _t(input)
    k, s, p, d, oh, ow, extra = _pool_setup(
        x, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d"
    )
    pads = (p[0], p[1], p[0] + extra[0], p[1] + extra[1])  # top, left, bottom, right
    y = x.ctx.op("max_pool2d", x, kernel=k, stride=s, dilation=d, padding=pads)
    if y.shape[2:] != (oh, ow):  # ceil_mode rounding: keep only the windows PyTorch keeps
        y = y[:, :, :oh, :ow]
    return y


@_eager
def avg_pool2d(
    input: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """Mean over windows (PyTorch's divisor rules for padding and ceil_mode)."""
    x = _float(_t(input))
    k, s, p, d, oh, ow, extra = _pool_setup(x, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    n, c, h, w = x.shape
    if any(p) or any(extra):
        pads = ((0, 0), (0, 0), (p[0], p[0] + extra[0]), (p[1], p[1] + extra[1]))
        x = x.ctx.op("pad", x, pads=pads, value=0.0)
    total = _windows(x, k, s, d, oh, ow).sum(2).reshape(n, c, oh, ow)
    if divisor_override:
        return total * (1.0 / divisor_override)
    if count_include_pad and not any(extra):
        return total * (1.0 / (k[0] * k[1]))
    divisor = np.outer(
        *(
            _pool_counts(size, ki, si, pi, o, count_include_pad)
            for size, ki, si, pi, o in zip((h, w), k, s, p, (oh, ow))
        )
    )
    return total * total.ctx.array((1.0 / divisor).astype(x.dtype), name="pool_scale")


def _pool_counts(size: int, k: int, s: int, p: int, out: int, include_pad: bool) -> np.ndarray:
    counts = []
    for i in range(out):
        start = i * s - p
        end = min(start + k, size + p)
        if include_pad:
            counts.append(end - start)
        else:
            counts.append(min(end, size) - max(start, 0))
    return np.array(counts, dtype=np.float64)


@_eager
def layer_norm(
    input: Tensor,
    normalized_shape: Any,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalize over the trailing ``normalized_shape`` dims, then scale and shift."""
    x = _float(_t(input))
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape) :] != shape or len(shape) > x.ndim:
        raise GraphcError(
            f"{_at(user_source())}layer_norm: input {x.shape} does not end in normalized_shape {shape}"
        )
    w = None if weight is None else _t(weight, like=x)
    b = None if bias is None else _t(bias, like=x)
    if x.ctx.eager and isinstance(eps, (int, float)):  # eager mode: one composite step
        out = _composite(_layer_norm, (x, w, b), {"n_axes": len(shape), "eps": float(eps)})
        if out is not None:
            return out
    return _layer_norm(x, w, b, len(shape), eps)


def _layer_norm(x: Tensor, w: Tensor | None, b: Tensor | None, n_axes: int, eps: float) -> Tensor:
    """``layer_norm``'s definition over the trailing ``n_axes`` dims (traced as is)."""
    axes = tuple(range(x.ndim - n_axes, x.ndim))
    inv_n = 1.0 / math.prod(x.shape[x.ndim - n_axes :])
    mean = x.sum(axes, keepdim=True) * inv_n
    centered = x - mean
    var = (centered * centered).sum(axes, keepdim=True) * inv_n
    y = centered * (var + eps).rsqrt()
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y


@_eager
def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: Any = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch norm over all dims but 1; in training, batch stats and running-stat updates."""
    x = _float(_t(input))
    if x.ndim < 2:
        raise GraphcError(f"{_at(user_source())}batch_norm: needs input [N, C, ...], got {x.shape}")
    c = x.shape[1]
    axes = (0, *range(2, x.ndim))
    bshape = (1, c) + (1,) * (x.ndim - 2)
    if training:
        n = math.prod(x.shape[a] for a in axes)
        if n <= 1:
            raise GraphcError(
                f"{_at(user_source())}batch_norm: expected more than 1 value per channel when training, "
                f"got input {x.shape}"
            )
        mean = x.sum(axes, keepdim=True) * (1.0 / n)
        centered = x - mean
        var = (centered * centered).sum(axes, keepdim=True) * (1.0 / n)
        y = centered * (var + eps).rsqrt()
        for running, stat, scale in ((running_mean, mean, 1.0), (running_var, var, n / (n - 1))):
            if running is not None:
                r = _t(running, like=x)
                new = r * (1.0 - momentum) + stat.reshape(c) * (momentum * scale)
                x.ctx.assign(r, new)
    else:
        if running_mean is None or running_var is None:
            raise GraphcError(
                f"{_at(user_source())}batch_norm: evaluation needs running_mean and running_var"
            )
        rm = _t(running_mean, like=x).reshape(bshape)
        rv = _t(running_var, like=x).reshape(bshape)
        y = (x - rm) * (rv + eps).rsqrt()
    if weight is not None:
        y = y * _t(weight, like=y).reshape(bshape)
    if bias is not None:
        y = y + _t(bias, like=y).reshape(bshape)
    return y


@_eager
def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability p (counter-based RNG), scale the rest by 1/(1-p).

    ``inplace`` rebinds ``input`` to the result (PyTorch's in-place semantics, see Tensor).
    """
    if not 0.0 <= p <= 1.0:
        raise GraphcError(f"{_at(user_source())}dropout probability must be in [0, 1], got {p}")
    x = _t(input)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return _result(x, x * 0.0, inplace, "dropout(inplace=True)")
    from graphc.nn.init import next_seed

    xf = _float(x)
    ctx = x.ctx
    u = ctx.op("rng_uniform", ctx.rng_offset(), shape=x.shape, seed=next_seed(), dtype=xf.value.dtype)
    # x times a 0 / (1/(1-p)) mask, as PyTorch: a dropped inf or NaN gives NaN
    out = xf * _where(u >= p, _t(1.0 / (1.0 - p), like=xf), 0.0)
    return _result(x, out, inplace, "dropout(inplace=True)")


@_eager
def embedding(
    input: Tensor,
    weight: Tensor,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> Tensor:
    """Rows of ``weight`` [num, dim] at integer indices: gather along axis 0."""
    idx = _t(input)
    w = _t(weight)
    if max_norm is not None:
        raise GraphcError(f"{_at(user_source())}embedding: max_norm is not supported")
    if idx.value.dtype not in ("i32", "i64"):
        raise GraphcError(f"{_at(user_source())}embedding: indices must be integers, got {idx.value.dtype}")
    out = w.ctx.op("gather", w, idx, axis=0)
    if padding_idx is not None:
        # The padding row's gradient must be zero, as in PyTorch; masking gives that.
        pad = padding_idx % w.shape[0]
        out = _where((idx == pad).unsqueeze(-1), 0.0, out)
    return out
