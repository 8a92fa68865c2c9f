"""Transposed convolution beyond conv_transpose2d: the 1-D form, and the output_padding that an
``output_size`` asks for (PyTorch's ``_ConvTransposeNd._output_padding``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graphc.convolution import conv_transpose2d
from graphc.functional import _eager
from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, as_tensor, user_source

__all__ = ["conv_transpose1d"]


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
