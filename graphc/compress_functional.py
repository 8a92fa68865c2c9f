"""Model-compression functionals: ONNX-style quantization ops and the distillation loss.

``quantize_linear``/``dequantize_linear`` are ONNX's QuantizeLinear/DequantizeLinear (opset 13):
the zero point's dtype (int8 or uint8; uint8 0 when omitted) is the quantized dtype, ``axis``
selects per-channel parameters (1-D scale/zero point along that axis), rounding is half to even
and the result saturates. ``fake_quantize`` is dequantize(quantize(x)) in one op whose gradient is
the straight-through estimator. Re-exported from ``graphc.functional``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, as_tensor, current_context, user_source

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["dequantize_linear", "distillation_loss", "fake_quantize", "quantize_linear"]


def _eager(fn: F) -> F:
    """Let ``fn`` run on NumPy arrays outside a trace (traced, then run by the reference kernels)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_context() is None and any(isinstance(a, np.ndarray) for a in (*args, *kwargs.values())):
            from graphc.tracing import run_eager_function

            return run_eager_function(fn, args, kwargs)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _param(value: Any, like: Tensor, what: str, op: str) -> Tensor:
    """A scale or zero point as a Tensor (lists and scalars become arrays of their own dtype)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.generic):
        value = np.asarray(value)
    elif isinstance(value, (list, tuple, int, float)):
        # A Python scale takes x's float dtype (float32 for an integer x); a Python zero point
        # is uint8 (ONNX's default) unless given as a typed array.
        dtype = like.value.type.np_dtype if like.value.dtype in ("f32", "f64") else np.dtype(np.float32)
        value = np.asarray(value, dtype=dtype if what == "scale" else np.uint8)
    if not isinstance(value, np.ndarray):
        raise GraphcError(
            f"{_at(user_source())}{op}: {what} must be an array or a Tensor, got {type(value).__name__}"
        )
    return like.ctx.array(value)  # an input of the array's own dtype (0-d arrays too)


def _per_axis(x: Tensor, p: Tensor, axis: int | None, what: str, op: str) -> Tensor:
    """Reshape a per-channel 1-D parameter so it broadcasts along ``axis`` of ``x``."""
    if axis is None or p.ndim == 0:
        if p.ndim == 1 and p.shape[0] == 1:
            return p.reshape(())
        if p.ndim != 0:
            raise GraphcError(
                f"{_at(user_source())}{op}: a per-tensor {what} must be a scalar, got shape {p.shape} "
                "(pass axis= for per-channel parameters)"
            )
        return p
    if not -x.ndim <= axis < x.ndim:
        raise GraphcError(f"{_at(user_source())}{op}: axis {axis} out of range for rank {x.ndim}")
    axis %= x.ndim
    if p.ndim != 1 or p.shape[0] != x.shape[axis]:
        raise GraphcError(
            f"{_at(user_source())}{op}: per-channel {what} must have shape ({x.shape[axis]},) "
            f"(x's axis {axis}), got {p.shape}"
        )
    return p.reshape((x.shape[axis],) + (1,) * (x.ndim - 1 - axis))


def _operands(
    op: str, x: Any, scale: Any, zero_point: Any, axis: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    x = as_tensor(x)
    s = _param(scale, x, "scale", op)
    if zero_point is None:
        zero_point = (
            np.zeros(s.shape, np.uint8)
            if x.value.dtype in ("f32", "f64")
            else np.zeros(s.shape, x.value.type.np_dtype)
        )
    z = _param(zero_point, x, "zero point", op)
    return x, _per_axis(x, s, axis, "scale", op), _per_axis(x, z, axis, "zero point", op)


@_eager
def quantize_linear(x: Tensor, scale: Any, zero_point: Any = None, axis: int | None = None) -> Tensor:
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point), zero point's dtype."""
    x, s, z = _operands("quantize_linear", x, scale, zero_point, axis)
    return x.ctx.op("quantize", x, s, z)


@_eager
def dequantize_linear(x: Tensor, scale: Any, zero_point: Any = None, axis: int | None = None) -> Tensor:
    """ONNX DequantizeLinear: (x - zero_point) * scale, in scale's dtype."""
    x, s, z = _operands("dequantize_linear", x, scale, zero_point, axis)
    return x.ctx.op("dequantize", x, s, z)


@_eager
def fake_quantize(x: Tensor, scale: Any, zero_point: Any = None, axis: int | None = None) -> Tensor:
    """dequantize_linear(quantize_linear(x, ...), ...) in x's dtype, with a straight-through gradient
    (passed where x / scale + zero_point rounds into the quantized range, zero elsewhere)."""
    x, s, z = _operands("fake_quantize", x, scale, zero_point, axis)
    return x.ctx.op("fake_quantize", x, s, z)


@_eager
def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> Tensor:
    """Hinton's knowledge-distillation loss for [batch, classes] logits and class-index targets:
    ``alpha * T**2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, target)``,
    the KL divergence summed over classes and averaged over the batch (PyTorch's ``batchmean``),
    the cross-entropy averaged. Freeze the teacher (``requires_grad_(False)``) to train the student only."""
    from graphc import functional as fn

    if not temperature > 0:
        raise GraphcError(
            f"{_at(user_source())}distillation_loss: temperature must be > 0, got {temperature}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise GraphcError(f"{_at(user_source())}distillation_loss: alpha must lie in [0, 1], got {alpha}")
    s = as_tensor(student_logits)
    t = as_tensor(teacher_logits, like=s)
    if s.ndim != 2 or s.shape != t.shape:
        raise GraphcError(
            f"{_at(user_source())}distillation_loss: student {s.shape} and teacher {t.shape} logits "
            "must both be [batch, classes]"
        )
    log_p_s = fn.log_softmax(s / temperature, dim=-1)
    log_p_t = fn.log_softmax(t / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum() / s.shape[0]
    return kl * (alpha * temperature * temperature) + fn.cross_entropy(s, target) * (1.0 - alpha)
