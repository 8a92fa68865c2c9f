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
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from graphc.ir import GraphcError
from graphc.ir.ops import conv_output_size
from graphc.ir.types import FLOAT_DTYPES, promote_dtypes
from graphc.tensor import Tensor, _at, as_tensor, current_context, user_source
from graphc.tensor import matmul as _matmul
from graphc.tensor import where as _where

F = TypeVar("F", bound=Callable[..., Any])

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


def _eager(fn: F) -> F:
    """Let ``fn`` run on NumPy arrays or eager Tensors outside a trace, in eager mode."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_context() is None:
            import graphc.eager as eager

            if eager.wants_eager((*args, *kwargs.values())):
                return eager.call(fn, args, kwargs)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _t(x: Any, like: Tensor | None = None) -> Tensor:
    return as_tensor(x, like=like)


def _composite(fn: Callable[..., Tensor], operands: tuple, static: dict) -> Tensor | None:
    """Eager mode: ``fn(*operands, **static)`` as one tape entry (graphc/eager_composite.py), or
    None where that signature runs op by op."""
    from graphc import eager_composite

    return eager_composite.run(fn, operands, static)


def _float(x: Tensor) -> Tensor:
    return x if x.value.dtype in FLOAT_DTYPES else x.to("f32")


def _pair(v: Any, name: str = "argument") -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(i) for i in v)
    if len(v) == 1:
        return (v[0], v[0])
    if len(v) != 2:
        raise GraphcError(f"{_at(user_source())}{name} needs one or two ints, got {v}")
    return v  # type: ignore[return-value]


def _reduce(loss: Tensor, reduction: str, name: str = "") -> Tensor:
    """A loss's ``reduction`` (PyTorch's "mean", "sum" or "none"); ``name`` labels the error."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    label = f"{name}: " if name else ""
    raise GraphcError(
        f"{_at(user_source())}{label}reduction must be 'mean', 'sum' or 'none', got {reduction!r}"
    )


# ---------------------------------------------------------------------------- activations
def _result(x: Tensor, out: Tensor, inplace: bool, name: str) -> Tensor:
    """``out``, or with ``inplace`` x rebound to it (PyTorch's in-place semantics, see Tensor)."""
    return x._assign_inplace(out, name) if inplace else out


@_eager
def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(x, 0), NaN propagating (``inplace`` rebinds ``input``, as PyTorch's does)."""
    x = _t(input)
    return _result(x, x.relu(), inplace, "relu(inplace=True)")


@_eager
def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x where x > 0, else negative_slope * x (so the gradient at 0 is negative_slope, as in torch)."""
    x = _t(input)
    return _result(x, _where(x > 0, x, x * negative_slope), inplace, "leaky_relu(inplace=True)")


@_eager
def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit: exact (erf) or ``approximate='tanh'``."""
    x = _float(_t(input))
    if x.ctx.eager and approximate in ("none", "tanh"):  # eager mode: one composite step
        out = _composite(_gelu, (x,), {"approximate": approximate})
        if out is not None:
            return out
    return _gelu(x, approximate)


def _gelu(x: Tensor, approximate: str) -> Tensor:
    """``gelu``'s definition on a float tensor (traced as is)."""
    if approximate == "none":
        return x * 0.5 * (1.0 + (x * (1.0 / math.sqrt(2.0))).erf())
    if approximate == "tanh":
        inner = (x + x * x * x * 0.044715) * math.sqrt(2.0 / math.pi)
        return x * 0.5 * (1.0 + inner.tanh())
    raise GraphcError(f"{_at(user_source())}gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


@_eager
def sigmoid(input: Tensor) -> Tensor:
    """1 / (1 + exp(-x))."""
    return _t(input).sigmoid()


@_eager
def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """x * sigmoid(x)."""
    x = _t(input)
    return _result(x, x * x.sigmoid(), inplace, "silu(inplace=True)")


@_eager
def tanh(input: Tensor) -> Tensor:
    """Hyperbolic tangent."""
    return _t(input).tanh()


def _softmax_dim(ndim: int, dim: int | None) -> int:
    if dim is not None:
        return dim
    # PyTorch's legacy choice when dim is left out.
    return 0 if ndim in (0, 1, 3) else 1


@_eager
def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """exp(x - max) / sum(exp(x - max)) along ``dim``."""
    x = _float(_t(input) if dtype is None else _t(input).to(dtype))
    if x.ctx.eager:  # eager mode: one composite step (graphc/eager_composite.py)
        out = _composite(_softmax, (x,), {"dim": dim})
        if out is not None:
            return out
    return _softmax(x, dim)


def _softmax(x: Tensor, dim: int | None) -> Tensor:
    """``softmax``'s definition on a float tensor (traced as is)."""
    d = _softmax_dim(x.ndim, dim)
    e = (x - x.amax(d, keepdim=True)).exp()
    return e / e.sum(d, keepdim=True)


@_eager
def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """x - max - log(sum(exp(x - max))) along ``dim`` (numerically stable)."""
    x = _float(_t(input) if dtype is None else _t(input).to(dtype))
    if x.ctx.eager:  # eager mode: one composite step (graphc/eager_composite.py)
        out = _composite(_log_softmax, (x,), {"dim": dim})
        if out is not None:
            return out
    return _log_softmax(x, dim)


def _log_softmax(x: Tensor, dim: int | None) -> Tensor:
    """``log_softmax``'s definition on a float tensor (traced as is)."""
    d = _softmax_dim(x.ndim, dim)
    shifted = x - x.amax(d, keepdim=True)
    return shifted - shifted.exp().sum(d, keepdim=True).log()


# ---------------------------------------------------------------------------- losses
def _class_mask(target: Tensor, n_classes: int, ndim: int) -> Tensor:
    """Bool one-hot [N, C, ...] of integer targets [N, ...] (a compare with a class-index const)."""
    ctx = target.ctx
    shape = (1, n_classes) + (1,) * (ndim - 2)
    classes = ctx.array(np.arange(n_classes, dtype=target.dtype).reshape(shape), name="classes")
    return target.unsqueeze(1) == classes


@_eager
def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of log-probabilities [N, C, ...] at integer targets [N, ...]."""
    logp, target = _t(input), _t(target)
    if (
        logp.ctx.eager
        and logp.value.dtype in ("f32", "f64")
        and (weight is None or isinstance(weight, (Tensor, np.ndarray)))
    ):
        from graphc import eager_composite  # eager mode: one composite step

        w = None if weight is None else _t(weight, like=logp)
        static = {"ignore_index": ignore_index, "reduction": reduction, "smoothing": 0.0}
        out = eager_composite.run(_nll, (logp, target, w), static)
        if out is not None:
            return out
    return _nll(logp, target, weight, ignore_index, reduction, 0.0)


def _nll(
    logp: Tensor, target: Tensor, weight: Any, ignore_index: int, reduction: str, smoothing: float
) -> Tensor:
    if logp.ndim == 1:
        logp, target = logp.unsqueeze(0), target.reshape(1)
        if reduction == "none":
            return _nll(logp, target, weight, ignore_index, reduction, smoothing).reshape(())
    if target.value.dtype not in ("i32", "i64"):
        raise GraphcError(f"{_at(user_source())}class targets must be integers, got {target.value.dtype}")
    expect = (logp.shape[0], *logp.shape[2:])
    if target.shape != expect:
        raise GraphcError(
            f"{_at(user_source())}cross_entropy/nll_loss: input {logp.shape} needs targets of shape "
            f"{expect}, got {target.shape}"
        )
    n_classes = logp.shape[1]
    if weight is None and getattr(logp.ctx, "eager", False):
        pre = _eager_targets(logp, target, ignore_index)
        if pre is not None:  # the target side's values at once (they need no gradient)
            onehot, valid, w_target, denom = pre
            picked = _where(onehot, logp, 0.0).sum(1)
            return _nll_tail(logp, picked, valid, w_target, denom, None, reduction, smoothing)
    onehot = _class_mask(target, n_classes, logp.ndim)
    picked = _where(onehot, logp, 0.0).sum(1)
    ignored = target == ignore_index
    valid = (~ignored).to(logp.value.dtype)
    bshape = (1, n_classes) + (1,) * (logp.ndim - 2)
    # Each target's class weight (1 without weights) is read with a gather: its kernels raise a
    # GraphcError naming a label outside [0, classes) at run time, on every backend, as PyTorch
    # does. ignore_index reads class 0 and is masked out by ``valid``.
    if weight is not None:
        w_vec = _t(weight, like=logp)
        if w_vec.shape != (n_classes,):
            raise GraphcError(
                f"{_at(user_source())}cross_entropy/nll_loss: weight must have shape ({n_classes},), "
                f"got {w_vec.shape}"
            )
        w = w_vec.reshape(bshape)
    else:
        w = None
        w_vec = logp.ctx.array(np.ones(n_classes, dtype=logp.dtype), name="class_weight")
    in_range = 0 <= ignore_index < n_classes  # then ignore_index is itself a safe index
    safe = target if in_range else _where(ignored, _t(0, like=target), target)
    w_target = logp.ctx.op("gather", w_vec, safe, axis=0) * valid
    denom = w_target.sum() if reduction == "mean" else None
    return _nll_tail(logp, picked, valid, w_target, denom, w, reduction, smoothing)


def _nll_tail(
    logp: Tensor,
    picked: Tensor,
    valid: Tensor,
    w_target: Tensor,
    denom: Tensor | None,
    w: Tensor | None,
    reduction: str,
    smoothing: float,
) -> Tensor:
    """The weighted loss from the picked log-probabilities (``denom``: the weights' sum for "mean")."""
    n_classes = logp.shape[1]
    loss = -(picked * w_target)
    if smoothing:
        smooth = -((logp * w) if w is not None else logp).sum(1) * valid
        if reduction == "mean":
            return loss.sum() / denom * (1.0 - smoothing) + smooth.sum() / denom * (smoothing / n_classes)
        loss = loss * (1.0 - smoothing) + smooth * (smoothing / n_classes)
        return _reduce(loss, reduction)
    if reduction == "mean":
        return loss.sum() / denom
    return _reduce(loss, reduction)


# (classes, label dtype, logits' ndim) -> the class indices _class_mask compares targets with.
_CLASSES: dict[tuple, np.ndarray] = {}


def _eager_targets(
    logp: Tensor, target: Tensor, ignore_index: int
) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """Eager mode, no class weights: the target side of ``_nll`` (class mask, ``valid``, each
    target's weight, their sum) computed directly with NumPy, the same values the ops give
    (comparisons, a cast of bools, ones gathered times ``valid``, the reference ``sum``). They
    need no gradient, so the tape holds them as leaves either way. None (the ops run) where a
    label is out of range, so the gather reports it as usual."""
    from graphc.eager import EagerValue, _type_of

    tv = target.value
    if type(tv) is not EagerValue or type(logp.value) is not EagerValue:
        return None
    labels = tv.data
    n_classes = logp.shape[1]
    if type(ignore_index) is not int or not -(2**31) <= ignore_index < 2**31:
        return None  # the ops path handles (and reports) any other ignore_index
    ignored = labels == ignore_index
    safe = labels if 0 <= ignore_index < n_classes else np.where(ignored, 0, labels)
    if safe.size and (safe.min() < 0 or safe.max() >= n_classes):
        return None
    key = (n_classes, labels.dtype, logp.ndim)
    classes = _CLASSES.get(key)
    if classes is None:
        shape = (1, n_classes) + (1,) * (logp.ndim - 2)
        classes = np.arange(n_classes, dtype=labels.dtype).reshape(shape)
        classes.flags.writeable = False
        if len(_CLASSES) >= 64:
            _CLASSES.clear()
        _CLASSES[key] = classes
    onehot = np.ascontiguousarray(labels.reshape(labels.shape[:1] + (1,) + labels.shape[1:]) == classes)
    valid = np.ascontiguousarray(~ignored, dtype=logp.value.type.np_dtype)
    w_target = valid * valid.dtype.type(1)  # the ones gathered, times valid
    # Tensor.sum() over all axes: the reference kernel's own call.
    denom = np.asarray(np.sum(w_target, axis=tuple(range(w_target.ndim)), keepdims=False))
    ctx = logp.ctx
    out = []
    for arr in (onehot, valid, w_target, denom.astype(w_target.dtype, copy=False)):
        out.append(Tensor(EagerValue(_type_of(arr), arr, False), ctx))
    return tuple(out)  # type: ignore[return-value]


@_eager
def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy of logits [N, C, ...] with int class targets [N, ...] or class probabilities."""
    x, target = _t(input), _t(target)
    if (
        x.ctx.eager
        and x.value.dtype in ("f32", "f64")
        and (weight is None or isinstance(weight, (Tensor, np.ndarray)))
    ):
        # Eager mode: the definition below traced once per signature, run as one tape entry.
        from graphc import eager_composite

        w = None if weight is None else _t(weight, like=x)
        static = {"ignore_index": ignore_index, "reduction": reduction, "label_smoothing": label_smoothing}
        out = eager_composite.run(_cross_entropy, (x, target, w), static)
        if out is not None:
            return out
    return _cross_entropy(x, target, weight, ignore_index, reduction, label_smoothing)


def _cross_entropy(
    x: Tensor, target: Tensor, weight: Any, ignore_index: int, reduction: str, label_smoothing: float
) -> Tensor:
    """``cross_entropy``'s definition (traced as is; eager mode runs it as one composite step)."""
    class_dim = 0 if x.ndim == 1 else 1
    logp = log_softmax(x, class_dim)
    if target.value.dtype in ("f32", "f64"):
        if target.shape != x.shape:
            raise GraphcError(
                f"{_at(user_source())}cross_entropy: targets must be integer class indices or float "
                f"probabilities of the input's shape {x.shape}, got {target.value.type}"
            )
        n_classes = x.shape[class_dim]
        if label_smoothing:
            target = target * (1.0 - label_smoothing) + label_smoothing / n_classes
        prod = logp * target
        if weight is not None:
            shape = (n_classes,) + (1,) * (x.ndim - class_dim - 1)
            prod = prod * _t(weight, like=logp).reshape(shape)
        loss = -prod.sum(class_dim)
        if reduction == "mean" and x.ndim > 1:
            return loss.sum() * (1.0 / (x.numel() // n_classes))
        return _reduce(loss, reduction)
    return _nll(logp, target, weight, ignore_index, reduction, label_smoothing)


@_eager
def mse_loss(
    input: Tensor, target: Tensor, size_average: Any = None, reduce: Any = None, reduction: str = "mean"
) -> Tensor:
    """Mean (or summed) squared error."""
    x = _t(input)
    d = x - _t(target, like=x)
    return _reduce(d * d, reduction)


@_eager
def l1_loss(
    input: Tensor, target: Tensor, size_average: Any = None, reduce: Any = None, reduction: str = "mean"
) -> Tensor:
    """Mean (or summed) absolute error."""
    x = _t(input)
    return _reduce((x - _t(target, like=x)).abs(), reduction)


@_eager
def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """Sigmoid + binary cross-entropy in the stable form max(x,0) - x*y + log(1 + exp(-|x|))."""
    x = _float(_t(input))
    y = _t(target, like=x).to(x.value.dtype)
    softplus_neg = (1.0 + (-x.abs()).exp()).log() + (-x).relu()  # log(1 + exp(-x))
    if pos_weight is not None:
        log_weight = (_t(pos_weight, like=x) - 1.0) * y + 1.0
        loss = (1.0 - y) * x + log_weight * softplus_neg
    else:
        loss = (1.0 - y) * x + softplus_neg
    if weight is not None:
        loss = loss * _t(weight, like=x)
    return _reduce(loss, reduction)


# ---------------------------------------------------------------------------- layers
@_eager
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias, weight [out, in]."""
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
    """Max over windows: pad with -inf (the lowest value for integers), then one max_pool2d op.

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
    if any(p) or any(extra):
        # -inf, as PyTorch: a window of -inf values gives -inf, not the padding's finite lowest
        low = -math.inf if x.dtype.kind == "f" else float(np.iinfo(x.dtype).min)
        pads = ((0, 0), (0, 0), (p[0], p[0] + extra[0]), (p[1], p[1] + extra[1]))
        x = x.ctx.op("pad", x, pads=pads, value=low)
    y = x.ctx.op("max_pool2d", x, kernel=k, stride=s, dilation=d)
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
from graphc.convolution_transpose import conv_transpose1d  # noqa: E402
from graphc.creation import tril, triu  # noqa: E402
from graphc.functional_extras import *  # noqa: E402, F403
from graphc.resize import interpolate, pixel_shuffle, pixel_unshuffle, upsample  # noqa: E402
from graphc.tensor_functions import *  # noqa: E402, F403

__all__ += [
    n
    for n in (*_activations.__all__, *_convolution.__all__, *_tensor_functions.__all__)
    if n != "grouped_conv2d"
]
__all__ += ["tril", "triu", "hardtanh_", "unsupported", "conv_transpose1d"]
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
