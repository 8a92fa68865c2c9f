"""Quantization-aware training: ``prepare_qat`` inserts fake-quant, ``convert_qat`` makes the int8 plan.

PyTorch's prepare_qat/convert flow for ``nn.Linear`` layers:

- ``prepare_qat(model)`` returns a copy of the model whose ``nn.Linear`` layers are
  ``QATLinear``: the layer computes ``linear(fake_quantize(x), fake_quantize(weight), bias)``.
  The weight is fake-quantized as ``quantize_static`` quantizes it (int8, symmetric, per output
  channel: scale ``max|w| / 127`` of each row, recomputed from the current weight at every step).
  The activation is fake-quantized to uint8 with a zero point over the range an observer keeps
  in the layer's buffers ``act_min``/``act_max``: in training, the first batch's minimum and
  maximum, then a moving average (``averaging_constant`` 0.01, PyTorch's
  MovingAverageMinMaxObserver), updated inside the compiled train step like BatchNorm's running
  statistics; ``freeze_observers`` stops the updates (from the next ``compile_train``). In
  evaluation the stored range is used. Gradients pass through ``fake_quantize`` straight-through.
- ``convert_qat(model, *examples)`` returns the plan ``quantization.quantize_static`` makes for
  the same float model, with its activation ranges replaced by the observed ones: int8 weights
  in the plan and the ``qlinear`` kernels. It computes what the QAT model computes in
  evaluation up to float rounding (the int8 GEMM sums exactly; the float path rounds).

Other layers (convolutions, attention) train and convert in float.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

import graphc.functional as F
from graphc import nn
from graphc.ir import Graph, GraphcError, Value
from graphc.quantization import (
    _batches,
    _calibrate,
    _compile,
    _insert_qdq,
    _range_params,
    find_linear_sites,
    fixed_params,
    quantize_weights,
)
from graphc.tracing import trace

__all__ = ["QATLinear", "convert_qat", "freeze_observers", "prepare_qat"]

AVERAGING_CONSTANT = 0.01
_TINY_SCALE = 1e-12


class QATLinear(nn.Linear):
    """``nn.Linear`` with fake-quantized weight (int8 per row) and input (uint8, observed range)."""

    averaging_constant: float = AVERAGING_CONSTANT
    observe: bool = True

    def _init_observer(self) -> None:
        dt = self.weight.dtype
        self.register_buffer("act_min", np.zeros(1, dt), dtype=dt)
        self.register_buffer("act_max", np.zeros(1, dt), dtype=dt)
        self.register_buffer("observed", np.zeros(1, dt), dtype=dt)

    def _buffer(self, name: str) -> np.ndarray:
        """A buffer's array (also while tracing, where the attribute is a Tensor)."""
        return self.__dict__["_buffers"][name]

    @property
    def has_observed(self) -> bool:
        """Whether the observer has seen at least one training batch."""
        return bool(self._buffer("observed")[0] > 0)

    def activation_params(self) -> tuple[np.ndarray, np.ndarray]:
        """The activation's uint8 (scale, zero point) from the observed range, as ``quantize_static``
        computes them from a calibrated range."""
        lo, hi = self._buffer("act_min")[0], self._buffer("act_max")[0]
        return _range_params(lo, hi, self._buffer("act_min").dtype)

    def _observe(self, x: Any) -> tuple[Any, Any]:
        """Update the observer from the batch ``x`` (in the trace) and return the in-graph
        (scale, zero point) of the new range."""
        ctx = x.ctx
        mn, mx, seen = (F._t(a, like=x) for a in (self.act_min, self.act_max, self.observed))
        c = self.averaging_constant
        batch_min, batch_max = x.min().reshape(1), x.max().reshape(1)
        new_min = seen * (mn * (1.0 - c) + batch_min * c) + (1.0 - seen) * batch_min
        new_max = seen * (mx * (1.0 - c) + batch_max * c) + (1.0 - seen) * batch_max
        ctx.assign(mn, new_min)
        ctx.assign(mx, new_max)
        ctx.assign(seen, seen * 0.0 + 1.0)
        lo, hi = new_min.clamp(max=0.0).reshape(()), new_max.clamp(min=0.0).reshape(())
        scale = ((hi - lo) / 255.0).clamp(min=_TINY_SCALE)
        zero = F.quantize_linear(-lo, scale, np.zeros((), np.uint8))
        return scale, zero

    def forward(self, input: Any) -> Any:
        """``linear(fake_quantize(input), fake_quantize(weight), bias)``."""
        x = F._t(input)
        if self.training and self.observe:
            scale, zero = self._observe(x)
            x = F.fake_quantize(x, scale, zero)
        elif self.has_observed:
            scale, zero = self.activation_params()
            x = F.fake_quantize(x, scale, zero)
        w = F._t(self.weight, like=x)
        amax = w.abs().amax(dim=1)
        w_scale = F.where(amax > 0, amax / 127.0, amax * 0.0 + 1.0)
        zeros = np.zeros(self.out_features, np.int8)
        return F.linear(x, F.fake_quantize(w, w_scale, zeros, axis=0), self.bias)


def prepare_qat(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The model (a copy unless ``inplace``) with every ``nn.Linear`` turned into a ``QATLinear``
    (same weights, an unobserved activation range), ready for ``compile_train``."""
    if not isinstance(model, nn.Module):
        raise GraphcError(f"prepare_qat: model must be a graphc.nn.Module, got {type(model).__name__}")
    out = model if inplace else copy.deepcopy(model)
    count = 0
    for _, m in out.named_modules():
        if type(m) is nn.Linear:
            m.__class__ = QATLinear
            m._init_observer()
            count += 1
    if count == 0 and not any(isinstance(m, QATLinear) for m in out.modules()):
        raise GraphcError("prepare_qat: the model has no nn.Linear layer to train quantization-aware")
    return out


def freeze_observers(model: nn.Module, frozen: bool = True) -> None:
    """Stop (or restart) the activation observers' updates; a train step compiled afterwards
    fake-quantizes with the ranges observed so far."""
    for m in model.modules():
        if isinstance(m, QATLinear):
            m.observe = not frozen


def _qat_layers(model: nn.Module) -> dict[str, QATLinear]:
    """{weight parameter name: layer} of the QAT layers."""
    return {
        f"{name}.weight" if name else "weight": m
        for name, m in model.named_modules()
        if isinstance(m, QATLinear)
    }


def convert_qat(
    model: nn.Module,
    *examples: np.ndarray,
    per_channel: bool = True,
    calibration_batches: Any = None,
) -> Any:
    """The int8 plan of a QAT model (``prepare_qat``, then trained): ``quantize_static``'s plan of
    the float model with the observed activation ranges. ``per_channel=False`` quantizes the
    weights per tensor (not what training simulated). Layers QAT does not cover (convolutions)
    are quantized too when ``calibration_batches`` are given, their activation ranges by min-max
    over them as ``quantize_static`` does."""
    layers = _qat_layers(model)
    if not layers:
        raise GraphcError("convert_qat: the model has no QATLinear layer; call graphc.prepare_qat first")
    unseen = [name for name, m in layers.items() if not m.has_observed]
    if unseen:
        raise GraphcError(
            f"convert_qat: the activation observer of {', '.join(n.rsplit('.', 1)[0] for n in unseen)} has "
            "seen no batch; train the prepared model (compile_train) before converting"
        )
    float_model = copy.deepcopy(model)
    by_weight = {}
    for name, m in _qat_layers(float_model).items():
        by_weight[id(m.weight)] = layers[name]
        m.__class__ = nn.Linear
    was_training = float_model.training
    float_model.eval()
    try:
        graph = trace(float_model, *examples)
    finally:
        float_model.train(was_training)
    sites = find_linear_sites(graph)
    owners = [_owner(graph, site.weight, float_model, by_weight) for site in sites]
    calibrated: list[np.ndarray] = []
    if any(layer is None for layer in owners):
        if calibration_batches is None:
            name = next(site.weight.name for site, layer in zip(sites, owners) if layer is None)
            raise GraphcError(
                f"convert_qat: the layer reading %{name} is not a QATLinear (prepare_qat covers nn.Linear); "
                "give calibration_batches= to quantize it with ranges calibrated as quantize_static does"
            )
        batches = _batches(calibration_batches, len(graph.data_inputs))
        calibrated = _calibrate(float_model, len(sites), batches)
    quantize_weights(graph, per_channel)
    for i, (site, layer) in enumerate(zip(sites, owners)):
        if layer is None:
            finite = calibrated[i][np.isfinite(calibrated[i])]
            lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
            scale, zero = _range_params(lo, hi, site.activation.type.np_dtype)
        else:
            scale, zero = layer.activation_params()
        _insert_qdq(graph, site, fixed_params(scale, zero))
    return _compile(graph)


def _owner(graph: Graph, weight: Value, model: nn.Module, by_weight: dict) -> QATLinear | None:
    """The QAT layer whose weight the traced param ``weight`` is (matched by its array)."""
    arr = graph.initializers.get(weight.name)
    for p in model.parameters():
        if id(p) in by_weight and arr is not None and np.shares_memory(np.asarray(p), np.asarray(arr)):
            return by_weight[id(p)]
    return None
