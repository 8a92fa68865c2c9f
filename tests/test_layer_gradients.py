"""Gradients of graphc.nn layers, graphc.functional losses and the example models.

1. Finite differences (float64, central, eps 1e-6) of ``loss = sum(layer(x) * W)`` with a fixed
   random W: ``graphc.trace`` a function of the data inputs, ``passes.autodiff.grad`` with respect
   to every parameter and the float data inputs, run the joint graph with the NumPy reference
   executor and compare with central differences of the traced forward graph.
2. The example models (mlp, cnn, transformer, nest_mlp, my_sequential) against torch autograd:
   the same weights in both, a scalar loss, float32 gradients compared per parameter name.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from graphc import functional as F
from graphc import nn
from graphc.ir import verify
from graphc.kernels.reference import execute
from graphc.passes.autodiff import grad
from graphc.tracing import trace

EPS = 1e-6
RTOL = 1e-5
ATOL = 1e-7
F64 = np.float64

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


# ---------------------------------------------------------------------------- data helpers
def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def normal(seed: int, *shape: int) -> np.ndarray:
    return _rng(seed).standard_normal(shape)


def away_from_zero(seed: int, *shape: int) -> np.ndarray:
    """|x| in [0.2, 1.5]: no element near the kink of relu/leaky_relu/abs."""
    r = _rng(seed)
    return r.uniform(0.2, 1.5, shape) * r.choice([-1.0, 1.0], shape)


def distinct(seed: int, *shape: int) -> np.ndarray:
    """Values at least 0.05 apart (a shuffled grid plus small noise): no max-pool ties."""
    r = _rng(seed)
    n = int(np.prod(shape))
    grid = (r.permutation(n) - n / 2) * 0.1 + r.uniform(-0.02, 0.02, n)
    return grid.reshape(shape)


def labels(seed: int, n_classes: int, *shape: int) -> np.ndarray:
    return _rng(seed).integers(0, n_classes, size=shape).astype(np.int64)


def probabilities(seed: int, *shape: int, axis: int = 1) -> np.ndarray:
    e = np.exp(normal(seed, *shape))
    return e / e.sum(axis, keepdims=True)


def with_state(module: nn.Module, seed: int, perturb: bool = True) -> nn.Module:
    """Fill every float parameter/buffer with random float64 values through load_state_dict.

    BatchNorm/LayerNorm start at weight 1, bias 0 and running stats 0/1: random values make the
    check see each term. Running variances stay positive.
    """
    if not perturb:
        return module
    r = _rng(seed)
    new = {}
    for key, arr in module.state_dict().items():
        if arr.dtype.kind != "f":
            new[key] = arr
        elif key.endswith("running_var"):
            new[key] = r.uniform(0.5, 2.0, arr.shape)
        else:
            new[key] = r.standard_normal(arr.shape)
    module.load_state_dict(new)
    for key, arr in module.state_dict().items():
        assert arr.dtype.kind != "f" or arr.dtype == F64, f"{key} is {arr.dtype}, not float64"
    return module


def _named(fn: Callable, names: tuple[str, ...]) -> Callable:
    """Give ``fn(*args)`` a signature with these argument names (trace names data inputs so)."""
    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    )
    return fn


# ---------------------------------------------------------------------------- the check
@dataclass
class Case:
    """``forward(*tensors)`` of one layer/functional on named float64 (or int) inputs.

    ``wrt_data`` are the data inputs to differentiate (default: every float one); every param
    input of the traced graph is differentiated too, plus the inputs named in ``wrt_extra``
    (e.g. BatchNorm's running statistics in eval mode, which are const inputs).
    """

    forward: Callable[..., Any]
    inputs: dict[str, np.ndarray]
    module: nn.Module | None = None
    wrt_data: tuple[str, ...] | None = None
    wrt_extra: tuple[str, ...] = ()
    expect_params: tuple[str, ...] | None = None
    check: Callable[..., None] | None = field(default=None)


def loss_graph(case: Case, seed: int = 7):
    """Trace ``(sum(forward(*inputs) * W), forward(*inputs))`` with W fixed random float64."""
    names = tuple(case.inputs)
    arrays = tuple(case.inputs.values())
    probe = trace(_named(lambda *a: case.forward(*a), names), *arrays, module=case.module)
    y_type = probe.outputs[0].type
    assert y_type.dtype == "f64", f"the layer's output is {y_type}, expected f64"
    weights = normal(seed, *y_type.shape)

    def fn(*args):
        y = case.forward(*args)
        return (y * weights).sum(), y

    return trace(_named(fn, names), *arrays, module=case.module), weights


def numeric_grad(graph, feeds: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Central differences of output 0 with respect to the float64 input ``name``."""
    base = feeds[name]
    out = np.zeros(base.shape, dtype=F64)
    flat = out.reshape(-1)
    for i in range(base.size):
        for sign in (1.0, -1.0):
            x = base.copy().reshape(-1)
            x[i] += sign * EPS
            flat[i] += sign * float(execute(graph, dict(feeds, **{name: x.reshape(base.shape)}))[0])
    return out / (2 * EPS)


def check_case(case: Case) -> None:
    graph, weights = loss_graph(case)
    kinds = graph.kinds
    params = [v.name for v in graph.inputs if kinds[v.name] == "param"]
    if case.expect_params is not None:
        assert sorted(params) == sorted(case.expect_params), params
    if case.wrt_data is None:
        data = [n for n, a in case.inputs.items() if a.dtype == F64]
    else:
        data = list(case.wrt_data)
    wrt = [*data, *params, *case.wrt_extra]
    assert wrt, "nothing to differentiate"
    feeds = {v.name: case.inputs[v.name] for v in graph.data_inputs}
    for name in [*params, *case.wrt_extra]:
        feeds[name] = np.array(graph.initializers[name], dtype=F64)  # a copy, float64
        assert graph.initializers[name].dtype == F64, f"{name} is {graph.initializers[name].dtype}"

    joint, index = grad(graph, 0, wrt)
    verify(joint)
    assert list(index) == wrt
    results = execute(joint, feeds)
    forward = execute(graph, feeds)
    np.testing.assert_allclose(results[0], forward[0], rtol=1e-12, err_msg="joint graph's loss")
    for name in wrt:
        analytic = results[index[name]]
        assert analytic.shape == feeds[name].shape, (name, analytic.shape)
        assert analytic.dtype == F64, (name, analytic.dtype)
        np.testing.assert_allclose(
            analytic, numeric_grad(graph, feeds, name), rtol=RTOL, atol=ATOL, err_msg=f"d loss / d {name}"
        )
    if case.check is not None:
        case.check(feeds=feeds, forward=forward, grads={n: results[index[n]] for n in wrt}, weights=weights)


# ---------------------------------------------------------------------------- cases
def module_case(module: nn.Module, *arrays: np.ndarray, seed: int = 3, perturb: bool = True, **kw) -> Case:
    names = ("x", "y", "z")[: len(arrays)]
    module = with_state(module, seed, perturb)
    return Case(lambda *a: module(*a), dict(zip(names, arrays)), module=module, **kw)


def fn_case(fn: Callable[..., Any], **inputs: np.ndarray) -> Case:
    return Case(fn, dict(inputs))


def _dropout_mask_check(p: float) -> Callable[..., None]:
    """The gradient of sum(dropout(x) * W) is W * mask / (1 - p), mask = (output != 0)."""

    def check(feeds, forward, grads, weights):
        x, y = feeds["x"], forward[1]
        mask = y != 0
        assert 0 < mask.mean() < 1, "the mask should keep some elements and drop others"
        np.testing.assert_allclose(y[mask], x[mask] / (1 - p), rtol=1e-12)
        np.testing.assert_allclose(grads["x"], weights * mask / (1 - p), rtol=1e-12, atol=0)

    return check


def _identity_check(feeds, forward, grads, weights):
    np.testing.assert_array_equal(forward[1], feeds["x"])
    np.testing.assert_array_equal(grads["x"], weights)


def _padding_row_check(pad: int) -> Callable[..., None]:
    def check(feeds, forward, grads, weights):
        assert np.all(grads["weight"][pad] == 0), "the padding row's gradient must be zero"

    return check


def _bn_train(cls, shape, seed, **kw):
    m = cls(shape[1], dtype=F64, **kw)
    m.train()
    return module_case(m, normal(seed, *shape), seed=seed)


def _bn_eval(cls, shape, seed):
    m = cls(shape[1], dtype=F64).eval()
    return module_case(m, normal(seed, *shape), seed=seed, wrt_extra=("running_mean", "running_var"))


def _loss_module(module: nn.Module, x: np.ndarray, target: np.ndarray, **kw) -> Case:
    return Case(lambda a, b: module(a, b), {"input": x, "target": target}, module=module, **kw)


LAYER_CASES: dict[str, Callable[[], Case]] = {
    # Linear
    "Linear": lambda: module_case(nn.Linear(4, 3, dtype=F64), normal(1, 2, 4)),
    "Linear/3d_input": lambda: module_case(nn.Linear(3, 2, dtype=F64), normal(2, 2, 3, 3)),
    "Linear/no_bias": lambda: module_case(
        nn.Linear(3, 2, bias=False, dtype=F64), normal(3, 2, 3), expect_params=("weight",)
    ),
    # Conv2d
    "Conv2d": lambda: module_case(nn.Conv2d(2, 3, 3, dtype=F64), normal(4, 2, 2, 5, 5)),
    "Conv2d/stride2_pad1": lambda: module_case(
        nn.Conv2d(2, 2, 3, stride=2, padding=1, dtype=F64), normal(5, 1, 2, 5, 6)
    ),
    "Conv2d/dilation2_pad2": lambda: module_case(
        nn.Conv2d(1, 2, 3, padding=2, dilation=2, dtype=F64), normal(6, 2, 1, 5, 5)
    ),
    "Conv2d/rect_kernel_stride_dilation": lambda: module_case(
        nn.Conv2d(2, 2, (2, 3), stride=(2, 1), padding=(1, 0), dilation=(1, 2), dtype=F64),
        normal(7, 1, 2, 5, 6),
    ),
    "Conv2d/same_even_kernel_no_bias": lambda: module_case(
        nn.Conv2d(2, 2, 2, padding="same", bias=False, dtype=F64), normal(8, 1, 2, 4, 4)
    ),
    "Conv2d/unbatched": lambda: module_case(nn.Conv2d(2, 2, 3, padding=1, dtype=F64), normal(9, 2, 4, 4)),
    # Pooling (MaxPool2d inputs without ties)
    "MaxPool2d": lambda: module_case(nn.MaxPool2d(2), distinct(10, 2, 2, 4, 4)),
    "MaxPool2d/k3_s2_pad1": lambda: module_case(
        nn.MaxPool2d(3, stride=2, padding=1), distinct(11, 1, 2, 5, 5)
    ),
    "MaxPool2d/overlap_s1": lambda: module_case(nn.MaxPool2d(2, stride=1), distinct(12, 1, 2, 4, 4)),
    "MaxPool2d/dilation2": lambda: module_case(
        nn.MaxPool2d(2, stride=1, dilation=2), distinct(13, 1, 1, 5, 5)
    ),
    "MaxPool2d/ceil_mode": lambda: module_case(nn.MaxPool2d(2, ceil_mode=True), distinct(14, 1, 2, 5, 5)),
    "AvgPool2d": lambda: module_case(nn.AvgPool2d(2), normal(15, 2, 2, 4, 4)),
    "AvgPool2d/k3_s2_pad1": lambda: module_case(nn.AvgPool2d(3, stride=2, padding=1), normal(16, 1, 2, 5, 5)),
    "AvgPool2d/no_count_pad": lambda: module_case(
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), normal(17, 1, 1, 5, 5)
    ),
    "AvgPool2d/ceil_mode": lambda: module_case(nn.AvgPool2d(2, ceil_mode=True), normal(18, 1, 2, 5, 5)),
    "AvgPool2d/divisor_override": lambda: module_case(
        nn.AvgPool2d(2, stride=1, divisor_override=3), normal(19, 1, 1, 4, 4)
    ),
    # BatchNorm: batch statistics in training, running statistics in eval
    "BatchNorm1d/train_2d": lambda: _bn_train(nn.BatchNorm1d, (4, 3), 20),
    "BatchNorm1d/train_3d": lambda: _bn_train(nn.BatchNorm1d, (3, 2, 4), 21),
    "BatchNorm1d/train_momentum_none": lambda: _bn_train(nn.BatchNorm1d, (4, 3), 22, momentum=None),
    "BatchNorm1d/train_no_affine": lambda: module_case(
        nn.BatchNorm1d(3, affine=False, dtype=F64).train(), normal(23, 4, 3), expect_params=()
    ),
    "BatchNorm1d/train_untracked": lambda: module_case(
        nn.BatchNorm1d(3, track_running_stats=False, dtype=F64).train(), normal(24, 4, 3)
    ),
    "BatchNorm1d/eval": lambda: _bn_eval(nn.BatchNorm1d, (4, 3), 25),
    "BatchNorm1d/eval_3d": lambda: _bn_eval(nn.BatchNorm1d, (2, 3, 2), 26),
    "BatchNorm2d/train": lambda: _bn_train(nn.BatchNorm2d, (2, 3, 3, 2), 27),
    "BatchNorm2d/eval": lambda: _bn_eval(nn.BatchNorm2d, (2, 3, 2, 2), 28),
    # LayerNorm
    "LayerNorm": lambda: module_case(nn.LayerNorm(4, dtype=F64), normal(30, 3, 4)),
    "LayerNorm/2d_shape": lambda: module_case(nn.LayerNorm((2, 3), dtype=F64), normal(31, 2, 2, 3)),
    "LayerNorm/no_bias": lambda: module_case(
        nn.LayerNorm(4, bias=False, dtype=F64), normal(32, 2, 4), expect_params=("weight",)
    ),
    "LayerNorm/no_affine": lambda: module_case(
        nn.LayerNorm(3, elementwise_affine=False, dtype=F64), normal(33, 2, 3), expect_params=()
    ),
    # Embedding (repeated indices: contributions add up)
    "Embedding": lambda: module_case(
        nn.Embedding(5, 3, dtype=F64), np.array([[0, 2, 2], [4, 2, 1]], dtype=np.int64), wrt_data=()
    ),
    "Embedding/padding_idx": lambda: module_case(
        nn.Embedding(4, 2, padding_idx=1, dtype=F64),
        np.array([1, 3, 1, 0, 3], dtype=np.int64),
        wrt_data=(),
        check=_padding_row_check(1),
    ),
    # Dropout
    "Dropout/eval": lambda: module_case(nn.Dropout(0.5).eval(), normal(40, 3, 4), check=_identity_check),
    "Dropout/train": lambda: module_case(
        nn.Dropout(0.4).train(), normal(41, 6, 5), check=_dropout_mask_check(0.4)
    ),
    "Dropout/train_p0": lambda: module_case(nn.Dropout(0.0).train(), normal(42, 3, 4), check=_identity_check),
    # Activations
    "ReLU": lambda: module_case(nn.ReLU(), away_from_zero(50, 3, 4)),
    "LeakyReLU": lambda: module_case(nn.LeakyReLU(0.1), away_from_zero(51, 3, 4)),
    "GELU/erf": lambda: module_case(nn.GELU(), normal(52, 3, 4) * 2),
    "GELU/tanh": lambda: module_case(nn.GELU(approximate="tanh"), normal(53, 3, 4) * 2),
    "SiLU": lambda: module_case(nn.SiLU(), normal(54, 3, 4) * 2),
    "Sigmoid": lambda: module_case(nn.Sigmoid(), normal(55, 3, 4) * 2),
    "Tanh": lambda: module_case(nn.Tanh(), normal(56, 3, 4)),
    "Softmax/dim1": lambda: module_case(nn.Softmax(dim=1), normal(57, 3, 4)),
    "Softmax/dim0_3d": lambda: module_case(nn.Softmax(dim=0), normal(58, 3, 2, 2)),
    "Softmax/dim-1": lambda: module_case(nn.Softmax(dim=-1), normal(59, 2, 2, 3)),
    "LogSoftmax": lambda: module_case(nn.LogSoftmax(dim=1), normal(60, 3, 4)),
    "Flatten": lambda: module_case(nn.Flatten(), normal(61, 2, 2, 3)),
    "Identity": lambda: module_case(nn.Identity(), normal(62, 2, 3), check=_identity_check),
    # Containers of layers
    "Sequential": lambda: module_case(
        nn.Sequential(
            nn.Linear(3, 4, dtype=F64), nn.Tanh(), nn.LayerNorm(4, dtype=F64), nn.Linear(4, 2, dtype=F64)
        ),
        normal(63, 2, 3),
    ),
    # Loss modules (scalar outputs)
    "CrossEntropyLoss": lambda: _loss_module(nn.CrossEntropyLoss(), normal(70, 4, 3), labels(70, 3, 4)),
    "CrossEntropyLoss/smoothing_sum": lambda: _loss_module(
        nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.2), normal(71, 4, 3), labels(71, 3, 4)
    ),
    "NLLLoss": lambda: _loss_module(nn.NLLLoss(), np.log(probabilities(72, 4, 3)), labels(72, 3, 4)),
    "CrossEntropyLoss/weight_ignore_index": lambda: _loss_module(
        nn.CrossEntropyLoss(weight=[0.5, 2.0, 1.0], ignore_index=1), normal(77, 5, 3), labels(77, 3, 5)
    ),
    "NLLLoss/weight_sum": lambda: _loss_module(
        nn.NLLLoss(weight=[0.5, 2.0, 1.0], reduction="sum"), np.log(probabilities(78, 4, 3)), labels(78, 3, 4)
    ),
    "MSELoss": lambda: _loss_module(nn.MSELoss(), normal(73, 3, 2), normal(74, 3, 2)),
    "L1Loss": lambda: _loss_module(
        nn.L1Loss(), normal(75, 3, 2), normal(75, 3, 2) + away_from_zero(76, 3, 2)
    ),
    # PyTorch-surface layers (graphc/nn/activation.py, conv.py, pooling.py, normalization.py, ...)
    "ReLU6": lambda: module_case(nn.ReLU6(), normal(200, 2, 5) * 4),
    "Hardtanh": lambda: module_case(nn.Hardtanh(-0.5, 0.7), normal(201, 2, 5)),
    "Hardswish": lambda: module_case(nn.Hardswish(), normal(202, 2, 5) * 3),
    "Hardsigmoid": lambda: module_case(nn.Hardsigmoid(), normal(203, 2, 5) * 3),
    "Mish": lambda: module_case(nn.Mish(), normal(204, 2, 5)),
    "ELU": lambda: module_case(nn.ELU(0.7), away_from_zero(205, 2, 5)),
    "CELU": lambda: module_case(nn.CELU(1.3), away_from_zero(206, 2, 5)),
    "SELU": lambda: module_case(nn.SELU(), away_from_zero(207, 2, 5)),
    "Softplus": lambda: module_case(nn.Softplus(beta=2.0, threshold=3.0), normal(208, 2, 5) * 2),
    "LogSigmoid": lambda: module_case(nn.LogSigmoid(), normal(209, 2, 5)),
    "Softsign": lambda: module_case(nn.Softsign(), normal(210, 2, 5)),
    "Conv1d": lambda: module_case(nn.Conv1d(4, 4, 3, padding=1, groups=2, dtype=F64), normal(211, 2, 4, 5)),
    "ConvTranspose2d": lambda: module_case(
        nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1, dtype=F64), normal(212, 1, 2, 3, 3)
    ),
    "Conv2d/depthwise": lambda: module_case(nn.Conv2d(3, 3, 3, groups=3, dtype=F64), normal(213, 1, 3, 4, 4)),
    "Conv2d/groups2": lambda: module_case(nn.Conv2d(4, 6, 3, groups=2, dtype=F64), normal(214, 1, 4, 4, 4)),
    "LazyLinear": lambda: module_case(nn.LazyLinear(3, dtype=F64), normal(215, 2, 4)),
    "LazyConv2d": lambda: module_case(nn.LazyConv2d(2, 3, dtype=F64), normal(216, 1, 2, 4, 4)),
    "AdaptiveAvgPool2d": lambda: module_case(nn.AdaptiveAvgPool2d((2, 3)), normal(217, 1, 2, 5, 4)),
    "AdaptiveMaxPool2d": lambda: module_case(nn.AdaptiveMaxPool2d((2, 3)), distinct(218, 1, 2, 5, 4)),
    "AdaptiveAvgPool1d": lambda: module_case(nn.AdaptiveAvgPool1d(3), normal(219, 1, 2, 5)),
    "AvgPool1d": lambda: module_case(nn.AvgPool1d(3, 2, 1, count_include_pad=False), normal(220, 1, 2, 6)),
    "MaxPool1d": lambda: module_case(nn.MaxPool1d(2, ceil_mode=True), distinct(221, 1, 2, 5)),
    "GroupNorm": lambda: module_case(nn.GroupNorm(2, 4, dtype=F64), normal(222, 2, 4, 3)),
    "InstanceNorm1d": lambda: module_case(nn.InstanceNorm1d(3, affine=True, dtype=F64), normal(223, 2, 3, 4)),
    "InstanceNorm2d": lambda: module_case(
        nn.InstanceNorm2d(2, dtype=F64), normal(224, 2, 2, 2, 3), expect_params=()
    ),
    "RMSNorm": lambda: module_case(nn.RMSNorm(4, dtype=F64), normal(225, 3, 4)),
    "Unflatten": lambda: module_case(nn.Unflatten(1, (2, 3)), normal(226, 2, 6)),
    "MultiheadAttention": lambda: Case(lambda x: _MHA(x, x, x)[0], {"x": normal(227, 3, 2, 4)}, module=_MHA),
    "TransformerEncoderLayer": lambda: module_case(_encoder_layer(), normal(228, 2, 3, 4)),
    "TransformerEncoder": lambda: module_case(
        nn.TransformerEncoder(_encoder_layer(), 2), normal(229, 2, 3, 4)
    ),
    "TransformerDecoderLayer": lambda: Case(
        lambda x, m: _DECODER(x, m), {"x": normal(230, 2, 3, 4), "m": normal(231, 3, 3, 4)}, module=_DECODER
    ),
    # issue 16's second sweep: transposed 1-D conv, padding, resizing, losses and distances
    "ConvTranspose1d": lambda: module_case(
        nn.ConvTranspose1d(2, 4, 3, stride=2, padding=1, groups=2, dtype=F64), normal(700, 2, 2, 4)
    ),
    "ConvTranspose3d": lambda: module_case(
        nn.ConvTranspose3d(2, 2, 2, stride=2, padding=(1, 0, 1), output_padding=1, dtype=F64),
        normal(750, 1, 2, 2, 3, 2),
    ),
    "Conv2d/padding_mode_reflect": lambda: module_case(
        nn.Conv2d(2, 2, 3, padding=(1, 2), padding_mode="reflect", dtype=F64), normal(701, 1, 2, 4, 5)
    ),
    "Upsample/bilinear": lambda: module_case(
        nn.Upsample(scale_factor=1.5, mode="bilinear"), normal(702, 1, 2, 3, 4)
    ),
    "UpsamplingNearest2d": lambda: module_case(nn.UpsamplingNearest2d(size=(5, 3)), normal(703, 1, 2, 3, 4)),
    "UpsamplingBilinear2d": lambda: module_case(
        nn.UpsamplingBilinear2d(scale_factor=2), normal(704, 1, 1, 3, 3)
    ),
    "PixelShuffle": lambda: module_case(nn.PixelShuffle(2), normal(705, 1, 8, 2, 3)),
    "PixelUnshuffle": lambda: module_case(nn.PixelUnshuffle(2), normal(706, 1, 2, 4, 2)),
    "Unfold": lambda: module_case(nn.Unfold(2, padding=1, stride=2), normal(707, 1, 2, 3, 4)),
    "Fold": lambda: module_case(nn.Fold((3, 4), 2), normal(708, 1, 8, 6)),
    "GLU": lambda: module_case(nn.GLU(), normal(709, 3, 4)),
    "Softmin": lambda: module_case(nn.Softmin(dim=1), normal(710, 3, 4)),
    "SmoothL1Loss": lambda: _loss_module(nn.SmoothL1Loss(beta=0.5), normal(711, 3, 4), normal(712, 3, 4)),
    "HuberLoss": lambda: _loss_module(nn.HuberLoss(delta=0.7), normal(713, 3, 4), normal(714, 3, 4)),
    "BCELoss": lambda: _loss_module(nn.BCELoss(), probabilities(715, 3, 4), probabilities(716, 3, 4)),
    "BCEWithLogitsLoss": lambda: _loss_module(
        nn.BCEWithLogitsLoss(pos_weight=np.full(4, 2.0)), normal(717, 3, 4), probabilities(718, 3, 4)
    ),
    "KLDivLoss": lambda: _loss_module(
        nn.KLDivLoss(reduction="batchmean"), np.log(probabilities(719, 3, 4)), probabilities(720, 3, 4)
    ),
    "CosineSimilarity": lambda: _loss_module(
        nn.CosineSimilarity(dim=1), normal(721, 3, 4), normal(722, 3, 4)
    ),
    "PairwiseDistance": lambda: _loss_module(nn.PairwiseDistance(), normal(723, 3, 4), normal(724, 3, 4)),
    **{
        f"{name}": (
            lambda name=name, args=args, shape=shape: module_case(
                getattr(nn, name)(*args), normal(725, *shape)
            )
        )
        for name, args, shape in [
            ("ZeroPad1d", ((1, 2),), (2, 3)),
            ("ZeroPad2d", (1,), (1, 2, 3)),
            ("ZeroPad3d", (1,), (1, 2, 2, 2)),
            ("ConstantPad1d", (2, 0.5), (2, 3)),
            ("ConstantPad2d", ((1, 0, 0, 2), -1.0), (1, 2, 3)),
            ("ConstantPad3d", (1, 2.0), (1, 2, 2, 2)),
            ("ReflectionPad1d", ((2, 1),), (2, 4)),
            ("ReflectionPad2d", (1,), (1, 3, 3)),
            ("ReflectionPad3d", (1,), (1, 2, 2, 3)),
            ("ReplicationPad1d", ((2, 3),), (2, 3)),
            ("ReplicationPad2d", ((1, 0, 2, 1),), (1, 2, 3)),
            ("ReplicationPad3d", (1,), (1, 2, 2, 2)),
            ("CircularPad1d", ((2, 1),), (2, 3)),
            ("CircularPad2d", (1,), (1, 3, 3)),
            ("CircularPad3d", (1,), (1, 2, 2, 2)),
        ]
    },
}

FUNCTIONAL_CASES: dict[str, Callable[[], Case]] = {
    # cross_entropy with class indices
    "cross_entropy/mean": lambda: fn_case(
        lambda x, t: F.cross_entropy(x, t), x=normal(80, 5, 4), t=labels(80, 4, 5)
    ),
    "cross_entropy/sum": lambda: fn_case(
        lambda x, t: F.cross_entropy(x, t, reduction="sum"), x=normal(81, 5, 4), t=labels(81, 4, 5)
    ),
    "cross_entropy/none": lambda: fn_case(
        lambda x, t: F.cross_entropy(x, t, reduction="none"), x=normal(82, 5, 4), t=labels(82, 4, 5)
    ),
    "cross_entropy/weight_ignore_index": lambda: fn_case(
        lambda x, t, w: F.cross_entropy(x, t, w, ignore_index=2),
        x=normal(83, 6, 4),
        t=np.array([0, 2, 1, 3, 2, 1], dtype=np.int64),
        w=np.array([0.5, 2.0, 1.0, 1.5]),
    ),
    "cross_entropy/label_smoothing": lambda: fn_case(
        lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1), x=normal(84, 5, 4), t=labels(84, 4, 5)
    ),
    "cross_entropy/spatial": lambda: fn_case(
        lambda x, t: F.cross_entropy(x, t), x=normal(85, 2, 3, 2, 2), t=labels(85, 3, 2, 2, 2)
    ),
    "cross_entropy/unbatched": lambda: fn_case(
        lambda x, t: F.cross_entropy(x, t), x=normal(86, 4), t=np.array(2, dtype=np.int64)
    ),
    # cross_entropy with class probabilities: differentiable in both
    "cross_entropy/probabilities": lambda: fn_case(
        lambda x, t: F.cross_entropy(x, t), x=normal(87, 3, 4), t=probabilities(87, 3, 4)
    ),
    "cross_entropy/probabilities_smoothing_weight": lambda: fn_case(
        lambda x, t, w: F.cross_entropy(x, t, w, label_smoothing=0.2),
        x=normal(88, 3, 4),
        t=probabilities(88, 3, 4),
        w=np.array([1.0, 0.5, 2.0, 1.5]),
    ),
    "log_softmax/dim1": lambda: fn_case(lambda x: F.log_softmax(x, dim=1), x=normal(90, 3, 4)),
    "log_softmax/dim0": lambda: fn_case(lambda x: F.log_softmax(x, dim=0), x=normal(91, 3, 4)),
    "log_softmax/dim-1_3d": lambda: fn_case(lambda x: F.log_softmax(x, dim=-1), x=normal(92, 2, 2, 3) * 3),
    "softmax/large_logits": lambda: fn_case(lambda x: F.softmax(x, dim=-1), x=normal(93, 2, 4) * 5 + 50),
    "mse_loss/mean": lambda: fn_case(lambda x, t: F.mse_loss(x, t), x=normal(94, 3, 4), t=normal(95, 3, 4)),
    "mse_loss/sum": lambda: fn_case(
        lambda x, t: F.mse_loss(x, t, reduction="sum"), x=normal(96, 3, 4), t=normal(97, 3, 4)
    ),
    "mse_loss/none": lambda: fn_case(
        lambda x, t: F.mse_loss(x, t, reduction="none"), x=normal(98, 2, 3), t=normal(99, 2, 3)
    ),
    "nll_loss": lambda: fn_case(
        lambda x, t: F.nll_loss(x, t), x=np.log(probabilities(100, 4, 3)), t=labels(100, 3, 4)
    ),
    "l1_loss": lambda: fn_case(
        lambda x, t: F.l1_loss(x, t), x=normal(101, 3, 2), t=normal(101, 3, 2) + away_from_zero(102, 3, 2)
    ),
    "binary_cross_entropy_with_logits": lambda: fn_case(
        lambda x, t: F.binary_cross_entropy_with_logits(x, t),
        x=away_from_zero(103, 3, 4) * 3,
        t=_rng(103).uniform(0, 1, (3, 4)),
    ),
    "binary_cross_entropy_with_logits/pos_weight": lambda: fn_case(
        lambda x, t, pw: F.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction="sum"),
        x=away_from_zero(104, 3, 4) * 3,
        t=_rng(104).uniform(0, 1, (3, 4)),
        pw=np.array([0.5, 1.0, 2.0, 3.0]),
    ),
    "linear": lambda: fn_case(
        lambda x, w, b: F.linear(x, w, b), x=normal(105, 2, 3), w=normal(106, 4, 3), b=normal(107, 4)
    ),
    "conv2d": lambda: fn_case(
        lambda x, w: F.conv2d(x, w, stride=2, padding=1, dilation=2),
        x=normal(108, 1, 2, 6, 6),
        w=normal(109, 2, 2, 2, 2),
    ),
    "embedding": lambda: fn_case(
        lambda i, w: F.embedding(i, w), i=np.array([3, 0, 3, 3], dtype=np.int64), w=normal(110, 4, 2)
    ),
}


_MHA = with_state(nn.MultiheadAttention(4, 2, dtype=F64), 232)


def _encoder_layer() -> nn.Module:
    layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0, batch_first=True, dtype=F64)
    return with_state(layer, 233)


_DECODER = with_state(nn.TransformerDecoderLayer(4, 2, dim_feedforward=5, dropout=0.0, dtype=F64), 234)


@pytest.mark.parametrize("name", list(LAYER_CASES))
def test_layer_gradient(name):
    check_case(LAYER_CASES[name]())


@pytest.mark.parametrize("name", list(FUNCTIONAL_CASES))
def test_functional_gradient(name):
    check_case(FUNCTIONAL_CASES[name]())


def test_every_differentiable_layer_is_covered():
    """A layer added to graphc.nn without a gradient check here fails this test."""
    not_layers = {"Module", "ModuleList", "Parameter", "functional", "init", "manual_seed"}
    not_layers |= {
        "ModuleDict",
        "ParameterDict",
        "ParameterList",
        "LazyModuleMixin",
        "UninitializedParameter",
    }
    layers = {n for n in nn.__all__ if n not in not_layers}
    covered = {name.split("/")[0] for name in LAYER_CASES}
    assert layers - covered == set()


# ---------------------------------------------------------------------------- example models vs torch
def _example(name: str):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    import importlib

    return importlib.import_module(name)


def _graphc_grads(model: nn.Module, loss_fn: Callable, *arrays: np.ndarray) -> dict[str, np.ndarray]:
    graph = trace(loss_fn, *arrays, module=model)
    joint, index = grad(graph)
    feeds = {v.name: a for v, a in zip(graph.data_inputs, arrays)}
    results = execute(joint, feeds)
    return {"<loss>": results[0], **{name: results[i] for name, i in index.items()}}


def _torch_grads(torch, model, loss_fn: Callable, *arrays: np.ndarray) -> dict[str, np.ndarray]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
    loss.backward()
    out = {"<loss>": loss.detach().numpy()}
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        out[name] = p.grad.numpy().copy()
    return out


def _share_weights(torch, torch_model, graphc_model: nn.Module) -> None:
    """torch's default initialization, loaded into graphc (the same arrays in both)."""
    state = torch_model.state_dict()
    assert set(state) == set(graphc_model.state_dict()), (sorted(state), sorted(graphc_model.state_dict()))
    graphc_model.load_state_dict({k: v.detach().numpy().copy() for k, v in state.items()})


def _compare(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
    assert set(ours) == set(theirs), (sorted(ours), sorted(theirs))
    failures = []
    for name in theirs:
        a, b = ours[name], theirs[name]
        assert a.shape == b.shape, (name, a.shape, b.shape)
        assert a.dtype == np.float32, (name, a.dtype)
        if not np.allclose(a, b, rtol=1e-4, atol=1e-5):
            err = np.abs(a - b)
            failures.append(
                f"{name}: max abs err {err.max():.3g} (at {np.unravel_index(err.argmax(), err.shape)}), "
                f"max |torch grad| {np.abs(b).max():.3g}"
            )
    assert not failures, "gradients differ from torch:\n" + "\n".join(failures)


def _classifier_check(torch, graphc_model, torch_model, x, y):
    _share_weights(torch, torch_model, graphc_model)
    ours = _graphc_grads(graphc_model, lambda x, labels: F.cross_entropy(graphc_model(x), labels), x, y)
    theirs = _torch_grads(
        torch, torch_model, lambda x, labels: torch.nn.functional.cross_entropy(torch_model(x), labels), x, y
    )
    _compare(ours, theirs)


def test_mlp_gradients_match_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    mlp = _example("mlp")
    _classifier_check(torch, mlp.model(), mlp.torch_model(), mlp.example_inputs()[0], mlp.example_labels())


def test_cnn_gradients_match_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    cnn = _example("cnn")
    _classifier_check(torch, cnn.model(), cnn.torch_model(), cnn.example_inputs()[0], cnn.example_labels())


def test_my_sequential_gradients_match_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    ex = _example("my_sequential")
    twin = torch.nn.Sequential(torch.nn.Linear(20, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    x = np.random.default_rng(5).random((8, 20), dtype=np.float32)
    _classifier_check(torch, ex.model(), twin, x, labels(6, 10, 8))


def test_nest_mlp_gradients_match_torch():
    """The chimera: nested Sequential, a shared Linear applied twice, a constant weight; its
    output is already a scalar (x.sum()), used as the loss."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    ex = _example("nest_mlp")
    model = ex.model()
    rand_weight = torch.from_numpy(model[2].rand_weight.copy())

    class FixedHidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(20, 20)

        def forward(self, x):
            x = self.linear(x)
            x = torch.relu(x @ rand_weight + 1)
            return self.linear(x).sum()

    class Nest(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32), torch.nn.ReLU()
            )
            self.linear = torch.nn.Linear(32, 16)

        def forward(self, x):
            return self.linear(self.net(x))

    twin = torch.nn.Sequential(Nest(), torch.nn.Linear(16, 20), FixedHidden())
    _share_weights(torch, twin, model)
    x = np.random.default_rng(7).random((4, 20), dtype=np.float32)
    ours = _graphc_grads(model, lambda x: model(x), x)
    theirs = _torch_grads(torch, twin, lambda x: twin(x), x)
    assert "2.linear.weight" in ours  # the shared layer: one parameter set, two uses
    _compare(ours, theirs)


def _transformer_grads(torch, model, twin, x):
    """graphc's and torch's float32 gradients of sum(layer(x) * W), the same weights in both."""
    assert not model.training and not twin.training  # eval: dropout off in both
    _share_weights(torch, twin, model)
    w = np.random.default_rng(8).standard_normal(x.shape).astype(np.float32)
    w_t = torch.from_numpy(w)
    ours = _graphc_grads(model, lambda x: (model(x) * w).sum(), x)
    theirs = _torch_grads(torch, twin, lambda x: (twin(x) * w_t).sum(), x)
    return ours, theirs, w


def test_transformer_gradients_match_torch():
    """The example's encoder layer at reduced size (d 64, 4 heads, ff 128, seq 16, batch 2),
    where float32 rounding stays far inside rtol 1e-4 / atol 1e-5."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(4)
    ex = _example("transformer")
    model = ex.EncoderLayer(64, 4, 128).eval()
    twin = torch.nn.TransformerEncoderLayer(64, 4, 128, batch_first=True).eval()
    x = np.random.default_rng(9).random((2, 16, 64), dtype=np.float32)
    ours, theirs, _ = _transformer_grads(torch, model, twin, x)
    _compare(ours, theirs)


def test_transformer_example_size_gradients_match_torch():
    """At the example size (d 256, seq 128, batch 8) gradients reach |g| ~ 450 and sum over
    1024 tokens, so float32 rounding alone (torch's own float32 result is off its float64 one
    by up to 2e-4) exceeds atol 1e-5 on large entries. Compare both against torch in float64:
    graphc's error must be of float32 size, a millionth of the gradient's scale."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(4)
    ex = _example("transformer")
    model, twin = ex.model(), ex.torch_model()
    x = ex.example_inputs()[0]
    ours, theirs, w = _transformer_grads(torch, model, twin, x)
    twin64 = twin.double()
    exact = _torch_grads(
        torch, twin64, lambda x: (twin64(x.double()) * torch.from_numpy(w).double()).sum(), x
    )
    failures = []
    for name, ref in exact.items():
        scale = np.abs(ref).max()
        ours_err, torch_err = np.abs(ours[name] - ref).max(), np.abs(theirs[name] - ref).max()
        if ours_err > 4e-6 * scale:
            failures.append(
                f"{name}: graphc float32 is off float64 by {ours_err:.3g} (torch float32: "
                f"{torch_err:.3g}), max |grad| {scale:.3g}"
            )
    assert not failures, "\n".join(failures)


def test_relu_gradient_at_zero_is_zero_as_in_torch():
    x = np.array([-1.0, 0.0, 2.0], dtype=np.float64)
    from graphc import trace

    graph = trace(lambda x: F.relu(x).sum(), x)
    joint, index = grad(graph, wrt=["x"])
    (dx,) = [execute(joint, {"x": x})[i] for i in index.values()]
    np.testing.assert_array_equal(dx, [0.0, 0.0, 1.0])
