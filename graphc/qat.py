"""Quantization-aware training: ``prepare_qat`` inserts fake-quant, ``convert_qat`` makes the int8 plan.

PyTorch's prepare_qat/convert flow for ``nn.Linear`` and ``nn.Conv2d`` layers:

- ``prepare_qat(model)`` returns a copy of the model whose ``nn.Linear`` layers are ``QATLinear``
  and whose ``nn.Conv2d`` layers (groups 1) are ``QATConv2d``: the layer computes its float
  function of ``fake_quantize(x)`` and ``fake_quantize(weight)`` (and the float bias). The weight
  is fake-quantized as ``quantize_static`` quantizes it (int8, symmetric, per output channel:
  scale ``max|w| / 127`` of each output row or filter, recomputed from the current weight at every
  step). The activation is fake-quantized to uint8 with a zero point over the range an observer
  keeps in the layer's buffers ``act_min``/``act_max``: in training, the first batch's minimum
  and maximum, then a moving average (``averaging_constant`` 0.01, PyTorch's
  MovingAverageMinMaxObserver), updated inside the compiled train step like BatchNorm's running
  statistics; ``freeze_observers`` stops the updates (from the next ``compile_train``). In
  evaluation the stored range is used. Gradients pass through ``fake_quantize`` straight-through.
  Grouped and depthwise convolutions stay float (the int8 convolution kernel takes groups 1).
- ``convert_qat(model, *examples)`` returns the plan ``quantization.quantize_static`` makes for
  the same float model, with its activation ranges replaced by the observed ones: int8 weights
  in the plan and the ``qlinear``/``qconv2d`` kernels. It computes what the QAT model computes in
  evaluation up to float rounding (the int8 GEMM sums exactly; the float path rounds).

Other layers (grouped convolutions, attention) train and convert in float.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

import graphc.functional as F
from graphc import nn
from graphc.ir import Graph, GraphcError, Value
from graphc.padding import apply_padding_mode
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

__all__ = ["QATConv2d", "QATLinear", "convert_qat", "freeze_observers", "prepare_qat"]

AVERAGING_CONSTANT = 0.01
_TINY_SCALE = 1e-12


class FakeQuantizer:
    """What a QAT layer adds to its float layer (a mixin of ``nn.Module``s with a ``weight``): the
    input's observer (buffers ``act_min``, ``act_max``, ``observed``) and the fake-quantization of
    the input (uint8, observed range) and of the weight (int8, symmetric, per output channel)."""

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

    def fake_quant_input(self, input: Any) -> Any:
        """The input fake-quantized over the observed range (updated first in training while
        observing); unchanged in evaluation before any batch was observed."""
        x = F._t(input)
        if self.training and self.observe:
            scale, zero = self._observe(x)
            return F.fake_quantize(x, scale, zero)
        if self.has_observed:
            scale, zero = self.activation_params()
            return F.fake_quantize(x, scale, zero)
        return x

    def fake_quant_weight(self, like: Any) -> Any:
        """The weight fake-quantized to int8, symmetric, per output channel (axis 0):
        scale ``max|w| / 127`` over each channel's other axes (1 for an all-zero channel)."""
        w = F._t(self.weight, like=like)
        channels = w.shape[0]
        amax = w.abs().reshape(channels, -1).amax(dim=1)
        w_scale = F.where(amax > 0, amax / 127.0, amax * 0.0 + 1.0)
        return F.fake_quantize(w, w_scale, np.zeros(channels, np.int8), axis=0)


class QATLinear(FakeQuantizer, nn.Linear):
    """``nn.Linear`` with fake-quantized weight (int8 per row) and input (uint8, observed range)."""

    def forward(self, input: Any) -> Any:
        """``linear(fake_quantize(input), fake_quantize(weight), bias)``."""
        x = self.fake_quant_input(input)
        return F.linear(x, self.fake_quant_weight(x), self.bias)


class QATConv2d(FakeQuantizer, nn.Conv2d):
    """``nn.Conv2d`` (groups 1) with fake-quantized weight (int8 per output channel) and input
    (uint8, observed range, quantized before any padding: padding copies values or adds zeros,
    which the range holds exactly)."""

    def forward(self, input: Any) -> Any:
        """``conv2d(fake_quantize(input), fake_quantize(weight), bias)``."""
        x = self.fake_quant_input(input)
        w = self.fake_quant_weight(x)
        x, pad = apply_padding_mode(
            x, self.padding_mode, self.padding, self.kernel_size, self.dilation, "QATConv2d"
        )
        return F.conv2d(x, w, self.bias, self.stride, pad, self.dilation, self.groups)


# float layer -> its QAT layer (prepare_qat), and back (convert_qat)
_QAT_OF: dict[type, type] = {nn.Linear: QATLinear, nn.Conv2d: QATConv2d}
_FLOAT_OF: dict[type, type] = {q: f for f, q in _QAT_OF.items()}


def _coverable(m: nn.Module) -> bool:
    """Whether ``m`` is a float layer prepare_qat turns into a QAT layer (convs: groups 1 only)."""
    return type(m) in _QAT_OF and getattr(m, "groups", 1) == 1


def prepare_qat(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The model (a copy unless ``inplace``) with every ``nn.Linear`` turned into a ``QATLinear``
    and every ``nn.Conv2d`` of groups 1 into a ``QATConv2d`` (same weights, an unobserved
    activation range), ready for ``compile_train``. Grouped and depthwise convolutions stay float."""
    if not isinstance(model, nn.Module):
        raise GraphcError(f"prepare_qat: model must be a graphc.nn.Module, got {type(model).__name__}")
    out = model if inplace else copy.deepcopy(model)
    count = 0
    for _, m in out.named_modules():
        if _coverable(m):
            m.__class__ = _QAT_OF[type(m)]
            m._init_observer()
            count += 1
    if count == 0 and not any(isinstance(m, FakeQuantizer) for m in out.modules()):
        raise GraphcError(
            "prepare_qat: the model has no nn.Linear or nn.Conv2d (groups 1) layer to train "
            "quantization-aware"
        )
    return out


def freeze_observers(model: nn.Module, frozen: bool = True) -> None:
    """Stop (or restart) the activation observers' updates; a train step compiled afterwards
    fake-quantizes with the ranges observed so far."""
    for m in model.modules():
        if isinstance(m, FakeQuantizer):
            m.observe = not frozen


def _qat_layers(model: nn.Module) -> dict[str, FakeQuantizer]:
    """{weight parameter name: layer} of the QAT layers."""
    return {
        f"{name}.weight" if name else "weight": m
        for name, m in model.named_modules()
        if isinstance(m, FakeQuantizer)
    }


def convert_qat(
    model: nn.Module,
    *examples: np.ndarray,
    per_channel: bool = True,
    calibration_batches: Any = None,
) -> Any:
    """The int8 plan of a QAT model (``prepare_qat``, then trained): ``quantize_static``'s plan of
    the float model with the observed activation ranges. ``per_channel=False`` quantizes the
    weights per tensor (not what training simulated). Linear layers and convolutions QAT does not
    cover (``F.linear``/``F.conv2d`` of a bare parameter, layers added after ``prepare_qat``) are
    quantized too when ``calibration_batches`` are given, their activation ranges by min-max over
    them as ``quantize_static`` does."""
    layers = _qat_layers(model)
    if not layers:
        raise GraphcError(
            "convert_qat: the model has no QATLinear or QATConv2d layer; call graphc.prepare_qat first"
        )
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
        m.__class__ = _FLOAT_OF[type(m)]
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
                f"convert_qat: the layer reading %{name} is not a QAT layer (prepare_qat covers nn.Linear "
                "and nn.Conv2d); give calibration_batches= to quantize it with ranges calibrated as "
                "quantize_static does"
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


def _owner(graph: Graph, weight: Value, model: nn.Module, by_weight: dict) -> FakeQuantizer | None:
    """The QAT layer whose weight the traced param ``weight`` is (matched by its array)."""
    arr = graph.initializers.get(weight.name)
    for p in model.parameters():
        if id(p) in by_weight and arr is not None and np.shares_memory(np.asarray(p), np.asarray(arr)):
            return by_weight[id(p)]
    return None
