"""``torch.nn.functional.pad`` in all four modes, and the padding a conv module's ``padding_mode`` applies.

"constant" is one ``pad`` op (negative amounts crop, as in PyTorch). "reflect", "replicate" and
"circular" gather each padded dim from a constant index vector (one ``gather`` op per dim), so the
gradient is the gather's VJP: every padded copy of an element adds its gradient to that element.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, as_tensor, user_source

MODES = ("constant", "reflect", "replicate", "circular")
CONV_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def _source_index(mode: str, size: int, lo: int, hi: int) -> np.ndarray:
    """For each position of the padded dim (``lo`` before, ``hi`` after), the input position it copies."""
    j = np.arange(-lo, size + hi)
    if mode == "replicate":
        return np.clip(j, 0, size - 1)
    if mode == "circular":
        return np.mod(j, size)
    period = 2 * (size - 1)  # reflect: ... 2 1 | 0 1 2 ... n-1 | n-2 n-3 ...
    m = np.mod(j, period) if period else np.zeros_like(j)
    return np.where(m < size, m, period - m)


def _check_amounts(mode: str, size: int, lo: int, hi: int, dim: int, shape: tuple[int, ...]) -> None:
    where = f"{_at(user_source())}pad(mode={mode!r})"
    if mode == "reflect" and (lo >= size or hi >= size):
        raise GraphcError(
            f"{where}: padding ({lo}, {hi}) of dim {dim} must be below its size {size} (input shape {shape})"
        )
    if mode == "circular" and (lo > size or hi > size):
        raise GraphcError(
            f"{where}: padding ({lo}, {hi}) of dim {dim} wraps around more than once (size {size})"
        )
    if mode == "replicate" and size == 0 and (lo or hi):
        raise GraphcError(f"{where}: cannot replicate dim {dim} of size 0")
    if size + lo + hi < 0:
        raise GraphcError(f"{where}: padding ({lo}, {hi}) crops more than dim {dim}'s size {size}")


def pad(input: Any, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:
    """PyTorch's F.pad: ``pad`` lists (low, high) amounts from the last dim backwards; ``mode`` is
    "constant" (``value``), "reflect", "replicate" or "circular". Negative amounts crop (circular
    crops first, then wraps the cropped tensor around), as in PyTorch."""
    x = as_tensor(input)
    if mode not in MODES:
        raise GraphcError(f"{_at(user_source())}pad: mode must be one of {MODES}, got {mode!r}")
    amounts = [int(p) for p in pad]
    if len(amounts) % 2 or len(amounts) // 2 > x.ndim:
        raise GraphcError(f"{_at(user_source())}pad: bad pad {tuple(pad)} for a tensor of rank {x.ndim}")
    if mode != "constant" and value:
        raise GraphcError(f"{_at(user_source())}pad: mode={mode!r} takes no value (got {value})")
    k = len(amounts) // 2
    if mode != "constant" and x.ndim not in (k + 1, k + 2):
        raise GraphcError(
            f"{_at(user_source())}pad(mode={mode!r}): padding {k} dims needs a {k + 1}-D or {k + 2}-D input "
            f"(batch and channel dims before them), got shape {x.shape}"
        )
    pairs = [(0, 0)] * x.ndim
    for i in range(len(amounts) // 2):
        pairs[x.ndim - 1 - i] = (amounts[2 * i], amounts[2 * i + 1])
    if mode == "constant":
        return _constant(x, pairs, float(value or 0.0))
    if mode == "circular":  # crops, then wraps the cropped tensor around (as PyTorch)
        x, pairs = _crop(x, pairs)
    for d, (lo, hi) in enumerate(pairs):
        if lo == 0 and hi == 0:
            continue
        _check_amounts(mode, x.shape[d], lo, hi, d, x.shape)
        index = x.ctx.array(_source_index(mode, x.shape[d], lo, hi).astype(np.int64), name="pad_index")
        x = x.ctx.op("gather", x, index, axis=d)
    return x


def _crop(x: Tensor, pairs: list[tuple[int, int]]) -> tuple[Tensor, list[tuple[int, int]]]:
    """Negative amounts cut that many elements off (PyTorch crops before it pads)."""
    if not any(lo < 0 or hi < 0 for lo, hi in pairs):
        return x, pairs
    key = tuple(slice(max(-lo, 0), x.shape[d] - max(-hi, 0)) for d, (lo, hi) in enumerate(pairs))
    if any(s.stop < s.start for s in key):
        raise GraphcError(
            f"{_at(user_source())}pad: negative padding {pairs} crops more than the input {x.shape} holds"
        )
    return x[key], [(max(lo, 0), max(hi, 0)) for lo, hi in pairs]


def _constant(x: Tensor, pairs: list[tuple[int, int]], value: float) -> Tensor:
    x, pairs = _crop(x, pairs)
    if not any(lo or hi for lo, hi in pairs):
        return x
    return x.ctx.op("pad", x, pads=tuple(pairs), value=value)


def conv_padding(name: str, padding: Any, kernel: Sequence[int], dilation: Sequence[int]) -> list[int]:
    """The F.pad amounts a conv module with a non-"zeros" ``padding_mode`` applies before convolving
    with padding 0: PyTorch's ``_reversed_padding_repeated_twice`` (``'same'`` puts an odd extra after)."""
    if isinstance(padding, str):
        if padding == "valid":
            return []
        if padding != "same":
            raise GraphcError(
                f"{_at(user_source())}{name}: padding must be 'same', 'valid' or ints, got {padding!r}"
            )
        amounts: list[int] = []
        for k, d in reversed(list(zip(kernel, dilation))):
            total = d * (k - 1)
            amounts += [total // 2, total - total // 2]
        return amounts
    amounts = []
    for p in reversed(list(padding)):
        amounts += [int(p), int(p)]
    return amounts


def check_padding_mode(name: str, padding_mode: str) -> None:
    """A GraphcError unless ``padding_mode`` is one of PyTorch's four."""
    if padding_mode not in CONV_MODES:
        raise GraphcError(f"{name}: padding_mode must be one of {tuple(CONV_MODES)}, got {padding_mode!r}")


def apply_padding_mode(
    input: Any, padding_mode: str, padding: Any, kernel: Sequence[int], dilation: Sequence[int], name: str
) -> tuple[Any, Any]:
    """(input, padding) for a conv module to convolve: unchanged for "zeros", else the input padded in
    that mode (as PyTorch's ``_conv_forward``) and padding 0."""
    if padding_mode == "zeros":
        return input, padding
    amounts = conv_padding(name, padding, kernel, dilation)
    if not any(amounts):
        return input, 0
    return pad(input, amounts, CONV_MODES[padding_mode]), 0
