"""Convolutions and poolings beyond ``conv2d``/``max_pool2d``/``avg_pool2d``: grouped and depthwise
convolution, 1-D forms, transposed convolution and adaptive pooling, as composites.

A grouped convolution is one ``im2col`` and ONE batched matmul with the groups as a batch
dimension (``[g, O/g, C/g*k] @ [N, g, C/g*k, L]``); a depthwise one (one filter per channel, float)
is one ``depthwise_conv2d`` op, a direct kernel that reads the input through the window instead of
materializing its ``kh*kw`` columns (integer ones take im2col, a broadcast multiply and a sum). A transposed
convolution is a matmul followed by ``col2im`` (the adjoint of ``im2col``). Adaptive average
pooling multiplies by PyTorch's averaging matrices (exact for any output size); adaptive max
pooling is separable, so it takes row maxima, then column maxima, of PyTorch's windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.functional import _eager
from graphc.ir import GraphcError
from graphc.ir.ops import conv_output_size
from graphc.ir.types import FLOAT_DTYPES
from graphc.tensor import Tensor, _at, as_tensor, matmul, user_source

__all__ = [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "avg_pool1d",
    "conv1d",
    "conv_transpose2d",
    "grouped_conv2d",
    "max_pool1d",
]


def _pair(v: Any, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(i) for i in v)
    if len(v) == 1:
        return (v[0], v[0])
    if len(v) != 2:
        raise GraphcError(f"{_at(user_source())}{name} needs one or two ints, got {v}")
    return v  # type: ignore[return-value]


def is_depthwise(x: Tensor, w: Tensor, groups: int) -> bool:
    """Whether conv2d of ``x`` [N, C, H, W] by ``w`` is depthwise: one filter per channel (groups ==
    C == O), float operands of one dtype."""
    c, o = x.shape[1], w.shape[0]
    same_float = x.value.dtype in FLOAT_DTYPES and w.value.dtype == x.value.dtype
    return groups > 1 and groups == c == o and same_float


def depthwise_conv2d(
    x: Tensor, w: Tensor, stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int]
) -> Tensor:
    """Depthwise convolution of [N, C, H, W] with weight [C, 1, kh, kw] (symmetric padding): one
    ``depthwise_conv2d`` op, a direct kernel that reads the input through the window (no im2col)."""
    return x.ctx.op("depthwise_conv2d", x, w, stride=stride, padding=padding, dilation=dilation)


def grouped_conv2d(cols: Tensor, w: Tensor, n: int, groups: int, oh: int, ow: int) -> Tensor:
    """The convolution of ``groups`` groups from im2col columns [N, C*kh*kw, L] and weight
    [O, C/groups, kh, kw]: one batched matmul (or, depthwise, one multiply-and-sum)."""
    o, cg, kh, kw = w.shape
    k = cg * kh * kw
    og = o // groups
    cols = cols.reshape(n, groups, k, oh * ow)
    if og == 1:  # depthwise: each output channel reads one group's window
        wd = w.reshape(1, groups, k, 1)
        return (cols * wd).sum(2).reshape(n, o, oh, ow)
    out = matmul(w.reshape(groups, og, k), cols)  # [N, g, O/g, L]
    return out.reshape(n, o, oh, ow)


def conv1d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> Tensor:
    """1-D convolution of [N, C, L] (or [C, L]) with weight [O, C/groups, k]: conv2d of height 1."""
    from graphc.functional import conv2d

    x = as_tensor(input)
    w = as_tensor(weight, like=x)
    unbatched = x.ndim == 2
    if unbatched:
        x = x.unsqueeze(0)
    if x.ndim != 3 or w.ndim != 3:
        raise GraphcError(
            f"{_at(user_source())}conv1d: needs input [N, C, L] and weight [O, C, k], "
            f"got {x.shape} and {w.shape}"
        )
    one = lambda v: int(v if isinstance(v, int) else v[0])  # noqa: E731
    pad = padding if isinstance(padding, str) else (0, one(padding))
    out = conv2d(
        x.unsqueeze(2), w.unsqueeze(2), bias, (1, one(stride)), pad, (1, one(dilation)), groups
    ).squeeze(2)
    return out.squeeze(0) if unbatched else out


def conv_transpose2d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
) -> Tensor:
    """Transposed 2-D convolution (NCHW, weight [C_in, C_out/groups, kh, kw]): matmul then col2im."""
    x = as_tensor(input)
    w = as_tensor(weight, like=x)
    unbatched = x.ndim == 3
    if unbatched:
        x = x.unsqueeze(0)
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[0]:
        raise GraphcError(
            f"{_at(user_source())}conv_transpose2d: needs input [N, C, H, W] and weight [C, O, kh, kw], "
            f"got {x.shape} and {w.shape}"
        )
    s, p = _pair(stride, "stride"), _pair(padding, "padding")
    op, d = _pair(output_padding, "output_padding"), _pair(dilation, "dilation")
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    if c % groups:
        raise GraphcError(
            f"{_at(user_source())}conv_transpose2d: {c} channels do not split into {groups} groups"
        )
    if any(o >= max(si, di) for o, si, di in zip(op, s, d)):
        raise GraphcError(
            f"{_at(user_source())}conv_transpose2d: output_padding {op} must be below stride or dilation"
        )
    oh = (h - 1) * s[0] - 2 * p[0] + d[0] * (kh - 1) + op[0] + 1
    ow = (wd - 1) * s[1] - 2 * p[1] + d[1] * (kw - 1) + op[1] + 1
    k = og * kh * kw
    cg = c // groups
    wg = w.reshape(groups, cg, k).transpose(1, 2)  # [g, O/g*k, C/g]
    cols = matmul(wg, x.reshape(n, groups, cg, h * wd))  # [N, g, O/g*k, L]
    cols = cols.reshape(n, groups * k, h * wd)
    # col2im inverts im2col on an image whose convolution gives h x w; output_padding rows that no
    # window reaches stay zero (they get only the bias), as in PyTorch.
    if conv_output_size(oh, kh, s[0], p[0], d[0]) != h or conv_output_size(ow, kw, s[1], p[1], d[1]) != wd:
        raise GraphcError(f"{_at(user_source())}conv_transpose2d: these sizes give no consistent output")
    out = x.ctx.op(
        "col2im", cols, kernel=(kh, kw), stride=s, padding=p, dilation=d, image_shape=(n, groups * og, oh, ow)
    )
    if bias is not None:
        out = out + as_tensor(bias, like=out).reshape(1, groups * og, 1, 1)
    return out.squeeze(0) if unbatched else out


def _adaptive_bounds(size: int, out: int) -> list[tuple[int, int]]:
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _averaging(size: int, out: int, dtype: np.dtype) -> np.ndarray:
    m = np.zeros((out, size), dtype=np.float64)
    for i, (a, b) in enumerate(_adaptive_bounds(size, out)):
        m[i, a:b] = 1.0 / (b - a)
    return m.astype(dtype)


def _out_size(output_size: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    sizes = (
        (output_size,) * len(shape) if isinstance(output_size, int) or output_size is None else output_size
    )
    return tuple(n if o is None else int(o) for o, n in zip(sizes, shape))


def adaptive_avg_pool2d(input: Any, output_size: Any) -> Tensor:
    """Average over PyTorch's adaptive windows, to any output size."""
    x = as_tensor(input)
    if x.value.dtype not in ("f32", "f64"):
        x = x.to("f32")
    if x.ndim not in (3, 4):
        raise GraphcError(f"{_at(user_source())}adaptive_avg_pool2d: needs [N, C, H, W], got {x.shape}")
    oh, ow = _out_size(output_size, x.shape[-2:])
    h, w = x.shape[-2:]
    if (oh, ow) == (1, 1):
        return x.mean((-2, -1), keepdim=True)
    if (oh, ow) == (h, w):
        return x
    if h % oh == 0 and w % ow == 0:
        from graphc.functional import avg_pool2d

        kernel = (h // oh, w // ow)
        lead = x.unsqueeze(0) if x.ndim == 3 else x
        out = avg_pool2d(lead, kernel, kernel)
        return out.squeeze(0) if x.ndim == 3 else out
    ah = x.ctx.array(_averaging(h, oh, x.dtype), name="adaptive_rows")
    aw = x.ctx.array(_averaging(w, ow, x.dtype).T.copy(), name="adaptive_cols")
    return matmul(ah, matmul(x, aw))


def adaptive_avg_pool1d(input: Any, output_size: Any) -> Tensor:
    """Average over PyTorch's adaptive windows of the last dim."""
    x = as_tensor(input)
    return adaptive_avg_pool2d(x.unsqueeze(-2), (1, _out_size(output_size, x.shape[-1:])[0])).squeeze(-2)


def adaptive_max_pool2d(input: Any, output_size: Any, return_indices: bool = False) -> Tensor:
    """Maximum over PyTorch's adaptive windows, to any output size."""
    from graphc.functional import cat

    if return_indices:
        raise GraphcError(f"{_at(user_source())}adaptive_max_pool2d: return_indices is not supported")
    x = as_tensor(input)
    oh, ow = _out_size(output_size, x.shape[-2:])
    h, w = x.shape[-2:]
    if h % oh == 0 and w % ow == 0 and x.ndim == 4:
        from graphc.functional import max_pool2d

        kernel = (h // oh, w // ow)
        return max_pool2d(x, kernel, kernel)
    rows = [x[..., a:b, :].amax(-2, keepdim=True) for a, b in _adaptive_bounds(h, oh)]
    y = cat(rows, -2) if len(rows) > 1 else rows[0]
    cols = [y[..., a:b].amax(-1, keepdim=True) for a, b in _adaptive_bounds(w, ow)]
    return cat(cols, -1) if len(cols) > 1 else cols[0]


def max_pool1d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
) -> Tensor:
    """Max over windows of the last dim of [N, C, L]."""
    from graphc.functional import max_pool2d

    x = as_tensor(input)
    one = lambda v: int(v if isinstance(v, int) else v[0])  # noqa: E731
    stride = kernel_size if stride is None else stride
    k, s, p, d = one(kernel_size), one(stride), one(padding), one(dilation)
    return max_pool2d(x.unsqueeze(2), (1, k), (1, s), (0, p), (1, d), ceil_mode).squeeze(2)


def avg_pool1d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> Tensor:
    """Mean over windows of the last dim of [N, C, L]."""
    from graphc.functional import avg_pool2d

    x = as_tensor(input)
    one = lambda v: int(v if isinstance(v, int) else v[0])  # noqa: E731
    stride = kernel_size if stride is None else stride
    k, s, p = one(kernel_size), one(stride), one(padding)
    return avg_pool2d(x.unsqueeze(2), (1, k), (1, s), (0, p), ceil_mode, count_include_pad).squeeze(2)


# Outside a trace, NumPy arguments run the function in eager mode (graphc/eager.py).
for _name in __all__:
    if _name != "grouped_conv2d":
        globals()[_name] = _eager(globals()[_name])
