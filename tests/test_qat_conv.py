"""Quantization-aware training of convolutions: QATConv2d (prepare_qat) -> compile_train -> convert_qat.

Oracles: torch's fake-quant ops (``fake_quantize_per_tensor_affine`` for the uint8 activation over
the observed range, ``fake_quantize_per_channel_affine`` for the int8 per-filter weight) with
torch's convolution and autograd (straight-through gradients); the converted int8 plan is checked
against the fake-quant model it came from.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
import graphc.functional as F
from graphc import nn, optim, quantization
from graphc.ir import GraphcError
from graphc.qat import QATConv2d, QATLinear, convert_qat, freeze_observers, prepare_qat

torch = pytest.importorskip("torch")


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2)
        self.fc = nn.Linear(6 * 3 * 3, 3)

    def forward(self, x):
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(h.flatten(1))


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    patterns = rng.standard_normal((3, 2, 8, 8))
    x = (patterns[y] + 0.5 * rng.standard_normal((n, 2, 8, 8))).astype(np.float32)
    return x, y.astype(np.int64)


def _act_params(lo, hi):
    """uint8 (scale, zero point) of the range [lo, hi] widened to 0, in float32 as the train step."""
    lo, hi = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
    scale = np.float32(hi - lo) / np.float32(255.0)
    return float(scale), int(np.clip(np.rint(-lo / scale), 0, 255))


def _torch_weight(w):
    """torch's per-output-channel int8 fake-quant of a weight (scale from its current values)."""
    amax = w.detach().abs().reshape(w.shape[0], -1).amax(1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    zeros = torch.zeros(w.shape[0], dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zeros, 0, -128, 127)


def _torch_forward(t, x, ranges):
    """The CNN's fake-quant forward in torch; ``ranges[name]`` is the layer's (lo, hi), or None for
    the batch's own range (a first training step). Returns the logits and the ranges used."""
    used = {}

    def quant_input(h, name):
        lo, hi = ranges.get(name) or (float(h.detach().min()), float(h.detach().max()))
        used[name] = (lo, hi)
        return torch.fake_quantize_per_tensor_affine(h, *_act_params(lo, hi), 0, 255)

    tf = torch.nn.functional
    h = tf.conv2d(quant_input(x, "conv1"), _torch_weight(t["conv1.weight"]), t["conv1.bias"], padding=1)
    h = tf.conv2d(quant_input(torch.relu(h), "conv2"), _torch_weight(t["conv2.weight"]), t["conv2.bias"], 2)
    h = quant_input(torch.relu(h).flatten(1), "fc")
    return h @ _torch_weight(t["fc.weight"]).T + t["fc.bias"], used


def _ranges(model):
    return {n: (float(m.act_min[0]), float(m.act_max[0])) for n, m in model.named_modules() if n}


def test_prepare_wraps_convs():
    model = prepare_qat(CNN())
    assert type(model.conv1) is QATConv2d and type(model.conv2) is QATConv2d and type(model.fc) is QATLinear
    assert not model.conv1.has_observed


def test_one_step_matches_torch_fake_quant():
    """One SGD step of a fresh QAT CNN: the loss, the updated weights (straight-through gradients
    through the fake-quantized activations and weights) and the observed ranges equal torch's."""
    graphc.manual_seed(1)
    qat = prepare_qat(CNN())
    x, y = _data(16, seed=1)
    before = {n: np.array(p) for n, p in qat.named_parameters()}
    step = graphc.compile_train(qat, F.cross_entropy, optim.SGD(lr=0.1), x, y)
    loss = float(step(x, y))

    t = {n: torch.tensor(v, requires_grad=True) for n, v in before.items()}
    logits, used = _torch_forward(t, torch.tensor(x), {})
    want = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
    want.backward()
    assert loss == pytest.approx(want.item(), rel=1e-5)
    for name, p in qat.named_parameters():
        grad = t[name].grad.numpy()
        assert np.abs(grad).max() > 0, name
        np.testing.assert_allclose(p, before[name] - 0.1 * grad, rtol=1e-5, atol=1e-6, err_msg=name)
    for name, (lo, hi) in _ranges(qat).items():
        assert (lo, hi) == pytest.approx(used[name], rel=1e-6), name


def test_eval_forward_matches_torch_with_padding_modes():
    """A QATConv2d in evaluation (stored range) with reflect padding, dilation and stride against
    torch; unobserved, only its weight is fake-quantized."""
    graphc.manual_seed(2)
    conv = prepare_qat(nn.Conv2d(3, 5, 3, stride=2, padding=2, dilation=2, padding_mode="reflect"))
    x = np.random.default_rng(2).standard_normal((2, 3, 9, 9)).astype(np.float32)
    conv.eval()
    w, b = torch.tensor(np.asarray(conv.weight)), torch.tensor(np.asarray(conv.bias))
    tx = torch.nn.functional.pad(torch.tensor(x), (2, 2, 2, 2), mode="reflect")
    plain = torch.nn.functional.conv2d(tx, _torch_weight(w), b, stride=2, dilation=2).numpy()
    np.testing.assert_allclose(graphc.compile(conv, x, backend="reference")(x), plain, rtol=1e-5, atol=1e-5)
    conv.act_min[0], conv.act_max[0], conv.observed[0] = -1.5, 2.0, 1.0
    got = graphc.compile(conv, x, backend="reference")(x)
    tq = torch.fake_quantize_per_tensor_affine(tx, *_act_params(-1.5, 2.0), 0, 255)
    want = torch.nn.functional.conv2d(tq, _torch_weight(w), b, stride=2, dilation=2).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(got - plain).max() > 1e-3  # the fake-quant is there


@pytest.fixture(scope="module")
def trained():
    graphc.manual_seed(0)
    x, y = _data()
    qat = prepare_qat(CNN())
    step = graphc.compile_train(qat, F.cross_entropy, optim.Adam(lr=1e-2), x[:16], y[:16])
    for _ in range(2):
        for i in range(0, len(x), 16):
            step(x[i : i + 16], y[i : i + 16])
    return qat, x, y


def test_converted_plan_runs_int8_convs_with_the_qat_ranges(trained):
    qat, x, y = trained
    plan = convert_qat(qat, x)  # no calibration: the QAT layers bring their ranges
    counts = plan.graph.op_counts()
    assert counts.get("qconv2d") == 2 and counts.get("qlinear") == 1, counts
    assert not {"matmul", "im2col", "conv2d"} & set(counts), counts
    qat.eval()
    try:
        fake = graphc.compile(qat, x)(x)
    finally:
        qat.train()
    # The fake-quant model in eval equals torch's fake-quant forward with the observed ranges.
    t = {n: torch.tensor(np.asarray(p)) for n, p in qat.named_parameters()}
    want = _torch_forward(t, torch.tensor(x), _ranges(qat))[0].numpy()
    np.testing.assert_allclose(fake, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # The int8 plan computes the fake-quant model up to float rounding (which may move an
    # intermediate value across a rounding boundary: one quantization step of the fc's input).
    fc_scale = float(qat.fc.activation_params()[0])
    step = fc_scale * np.abs(np.asarray(qat.fc.weight)).sum(1).max()
    got = plan(x)
    np.testing.assert_allclose(got, fake, atol=step)
    # Ranges recalibrated by min-max (what QAT must not do) give another plan, outside that bound.
    float_model = CNN()
    float_model.load_state_dict({k: v for k, v in qat.state_dict().items() if k.endswith(("weight", "bias"))})
    static = quantization.quantize_static(float_model, [x], x)
    assert static.graph.op_counts() == counts
    assert np.abs(static(x) - fake).max() > step


def test_grouped_convs_stay_float():
    """prepare_qat leaves grouped and depthwise convs float (the int8 conv kernel takes groups 1);
    the converted plan runs the groups-1 conv in int8 and the others in float."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.depthwise = nn.Conv2d(4, 4, 3, groups=4)
            self.grouped = nn.Conv2d(4, 2, 1, groups=2)

        def forward(self, x):
            return self.grouped(self.depthwise(F.relu(self.conv(x))))

    x = _data(8)[0]
    target = np.zeros((8, 2, 6, 6), np.float32)
    graphc.manual_seed(4)
    model = prepare_qat(Net())
    assert type(model.conv) is QATConv2d
    assert type(model.depthwise) is nn.Conv2d and type(model.grouped) is nn.Conv2d
    step = graphc.compile_train(model, F.mse_loss, optim.SGD(lr=0.01), x, target)
    step(x, target)
    plan = convert_qat(model, x)
    assert plan.graph.op_counts().get("qconv2d") == 1, plan.graph.op_counts()
    model.eval()
    want = graphc.compile(model, x)(x)
    np.testing.assert_allclose(plan(x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_frozen_conv_observers_keep_their_range(trained):
    qat, x, y = trained
    freeze_observers(qat)
    try:
        before = _ranges(qat)
        step = graphc.compile_train(qat, F.cross_entropy, optim.SGD(lr=1e-3), x[:16] * 3, y[:16])
        step(x[:16] * 3, y[:16])
        assert _ranges(qat) == before
    finally:
        freeze_observers(qat, False)


def test_errors():
    with pytest.raises(GraphcError, match="no nn.Linear or nn.Conv2d"):
        prepare_qat(nn.Sequential(nn.Conv2d(4, 4, 3, groups=4)))
    with pytest.raises(GraphcError, match="conv1, conv2, fc has seen no batch"):
        convert_qat(prepare_qat(CNN()), np.zeros((2, 2, 8, 8), np.float32))
    with pytest.raises(GraphcError, match="no QATLinear or QATConv2d"):
        convert_qat(CNN(), np.zeros((2, 2, 8, 8), np.float32))
