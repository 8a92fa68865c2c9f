"""Transposed convolution beyond conv_transpose2d: the 1-D and 3-D forms, and the output_padding
that an ``output_size`` asks for (PyTorch's ``_ConvTransposeNd._output_padding``).

The 3-D form is one matmul and two ``col2im`` scatters, so it differentiates like them: the
weight times the input gives every (kd, kh, kw) tap's contribution; a 2-D col2im sums the (kh, kw)
taps into each depth slice's (H, W) plane, and a second col2im with a (kd, 1) kernel over
(depth, H * W) sums the kd taps along the depth axis. Pads and output_padding then crop the full
result or extend it with zeros (``crop_transposed``), as in PyTorch and ONNX."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graphc.convolution import conv_transpose2d
from graphc.functional_base import _eager
from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, as_tensor, matmul, user_source

__all__ = ["conv_transpose1d", "conv_transpose3d"]


def _one(v: Any) -> int:
    return int(v if isinstance(v, int) else v[0])


@_eager
def conv_transpose1d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
) -> Tensor:
    """Transposed 1-D convolution of [N, C, L] (or [C, L]) with weight [C, O/groups, k]:
    conv_transpose2d of height 1."""
    x = as_tensor(input)
    w = as_tensor(weight, like=x)
    unbatched = x.ndim == 2
    if unbatched:
        x = x.unsqueeze(0)
    if x.ndim != 3 or w.ndim != 3:
        raise GraphcError(
            f"{_at(user_source())}conv_transpose1d: needs input [N, C, L] and weight [C, O, k], "
            f"got {x.shape} and {w.shape}"
        )
    out = conv_transpose2d(
        x.unsqueeze(2),
        w.unsqueeze(2),
        bias,
        (1, _one(stride)),
        (0, _one(padding)),
        (0, _one(output_padding)),
        groups,
        (1, _one(dilation)),
    ).squeeze(2)
    return out.squeeze(0) if unbatched else out


def output_padding(
    name: str,
    input_shape: Sequence[int],
    output_size: Any,
    stride: Sequence[int],
    padding: Sequence[int],
    kernel_size: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, ...]:
    """The output_padding that makes a transposed convolution of ``input_shape`` give ``output_size``
    (its spatial sizes, or the full shape), with PyTorch's error when no output_padding can."""
    spatial = len(kernel_size)
    lead = 2 if len(input_shape) == spatial + 2 else 1
    try:
        sizes = [int(s) for s in output_size]
    except TypeError:
        raise GraphcError(
            f"{_at(user_source())}{name}: output_size must be a sequence of ints, got {output_size!r}"
        ) from None
    if len(sizes) == lead + spatial:
        sizes = sizes[lead:]
    if len(sizes) != spatial:
        raise GraphcError(
            f"{_at(user_source())}{name}: for {len(input_shape)}D input, output_size must have {spatial} "
            f"or {lead + spatial} elements (got {len(sizes)})"
        )
    lows = [
        (input_shape[lead + d] - 1) * stride[d] - 2 * padding[d] + dilation[d] * (kernel_size[d] - 1) + 1
        for d in range(spatial)
    ]
    highs = [lo + s - 1 for lo, s in zip(lows, stride)]
    if any(not lo <= size <= hi for size, lo, hi in zip(sizes, lows, highs)):
        raise GraphcError(
            f"{_at(user_source())}{name}: requested an output size of {sizes}, but valid sizes range from "
            f"{lows} to {highs} (for an input of {list(input_shape[lead:])})"
        )
    return tuple(size - lo for size, lo in zip(sizes, lows))


def _triple(v: Any, name: str) -> tuple[int, int, int]:
    """An int or three ints (PyTorch's ``_triple``)."""
    vals = (v,) * 3 if isinstance(v, int) else tuple(v)
    if len(vals) != 3 or not all(isinstance(i, int) and not isinstance(i, bool) for i in vals):
        raise GraphcError(f"{_at(user_source())}conv_transpose3d: {name} must be an int or 3 ints, got {v!r}")
    return vals  # type: ignore[return-value]


def full_size(size: int, stride: int, dilation: int, kernel: int) -> int:
    """The length a transposed convolution spans along one axis before pads crop it."""
    return (size - 1) * stride + dilation * (kernel - 1) + 1


def transposed_volume(
    x: Tensor, w: Tensor, groups: int, stride: Sequence[int], dilation: Sequence[int]
) -> Tensor:
    """The uncropped transposed 3-D convolution of x [N, C, D, H, W] with w [C, O/groups, kd, kh, kw]:
    [N, O, FD, FH, FW] with F = full_size(...) per axis (the module docstring's two col2im)."""
    n, c, d, h, wd = x.shape
    _, og, kd, kh, kw = w.shape
    cg = c // groups
    fd, fh, fw = (full_size(i, s, dl, k) for i, s, dl, k in zip((d, h, wd), stride, dilation, (kd, kh, kw)))
    wt = w.reshape(groups, cg, og * kd * kh * kw).transpose(1, 2)  # [G, og*kd*kh*kw, C/G]
    cols = matmul(wt, x.reshape(n, groups, cg, d * h * wd))  # [N, G, og*kd*kh*kw, D*H*W]
    cols = cols.reshape(n, groups * og * kd, kh * kw, d, h * wd).transpose(2, 3)
    planes = x.ctx.op(
        "col2im",
        cols.reshape(n, groups * og * kd * d * kh * kw, h * wd),
        kernel=(kh, kw),
        stride=(stride[1], stride[2]),
        padding=(0, 0),
        dilation=(dilation[1], dilation[2]),
        image_shape=(n, groups * og * kd * d, fh, fw),
    )  # [N, O*kd*D, FH, FW]: the (kh, kw) taps summed
    vol = x.ctx.op(
        "col2im",
        planes.reshape(n, groups * og * kd, d * fh * fw),
        kernel=(kd, 1),
        stride=(stride[0], 1),
        padding=(0, 0),
        dilation=(dilation[0], 1),
        image_shape=(n, groups * og, fd, fh * fw),
    )  # the kd taps summed along depth
    return vol.reshape(n, groups * og, fd, fh, fw)


def crop_transposed(
    t: Tensor, full: Sequence[int], outpad: Sequence[int], pads: Sequence[tuple[int, int]]
) -> Tensor:
    """The spatial axes of an uncropped transposed convolution ``t`` [N, C, *full] cut to
    [begin, full + outpad - end) each (``pads`` gives (begin, end); a negative begin, from ONNX's
    auto_pad where the kernel spans less than the stride, reaches before the result): zeros where
    that range leaves [0, full). The caller checks that no range is empty."""
    starts, stops, grow = [0, 0], list(t.shape[:2]), [(0, 0), (0, 0)]
    for f, extra, (lo, hi) in zip(full, outpad, pads):
        end = f + extra - hi
        before = max(0, -lo)
        grow.append((before, max(0, end - f)))
        starts.append(lo + before)
        stops.append(end + before)
    if any(g != (0, 0) for g in grow):
        t = t.ctx.op("pad", t, pads=tuple(grow), value=0.0)
    if starts != [0] * t.ndim or stops != list(t.shape):
        t = t.ctx.op("slice", t, starts=tuple(starts), stops=tuple(stops), steps=(1,) * t.ndim)
    return t


@_eager
def conv_transpose3d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
) -> Tensor:
    """Transposed 3-D convolution (PyTorch's F.conv_transpose3d) of [N, C, D, H, W] (or [C, D, H, W])
    with weight [C, O/groups, kd, kh, kw]: one matmul and two col2im (module docstring)."""
    x = as_tensor(input)
    w = as_tensor(weight, like=x)
    unbatched = x.ndim == 4
    if unbatched:
        x = x.unsqueeze(0)
    where = f"{_at(user_source())}conv_transpose3d"
    if x.ndim != 5 or w.ndim != 5 or x.shape[1] != w.shape[0]:
        raise GraphcError(
            f"{where}: needs input [N, C, D, H, W] and weight [C, O, kd, kh, kw], got {x.shape} and {w.shape}"
        )
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or x.shape[1] % groups:
        raise GraphcError(f"{where}: {x.shape[1]} channels do not split into {groups!r} groups")
    s, p = _triple(stride, "stride"), _triple(padding, "padding")
    op, d = _triple(output_padding, "output_padding"), _triple(dilation, "dilation")
    if min(s) < 1 or min(d) < 1 or min(p) < 0 or min(op) < 0:
        raise GraphcError(f"{where}: stride {s} and dilation {d} must be positive, padding {p} not negative")
    if any(o >= max(si, di) for o, si, di in zip(op, s, d)):
        raise GraphcError(f"{where}: output_padding {op} must be below stride or dilation")
    full = [full_size(i, si, di, k) for i, si, di, k in zip(x.shape[2:], s, d, w.shape[2:])]
    if any(f + o - 2 * pi <= 0 for f, o, pi in zip(full, op, p)):
        raise GraphcError(f"{where}: padding {p} leaves an empty output (input {x.shape})")
    out = crop_transposed(transposed_volume(x, w, groups, s, d), full, op, [(pi, pi) for pi in p])
    if bias is not None:
        out = out + as_tensor(bias, like=out).reshape(1, out.shape[1], 1, 1, 1)
    return out.squeeze(0) if unbatched else out
