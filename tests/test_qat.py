"""Quantization-aware training: prepare_qat -> compile_train -> convert_qat on a small MLP.

The fake-quant model is checked against a NumPy fake-quant forward (float64), its observer
against the batches' moving-average range, and the converted int8 plan against the fake-quant
model (tolerance: 1e-4 of the logits' scale; the int8 GEMM sums exactly where float32 rounds).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import graphc
import graphc.functional as F
from graphc import nn, optim, quantization
from graphc.ir import GraphcError
from graphc.qat import QATLinear, convert_qat, freeze_observers, prepare_qat


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 3)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def _data(n=192, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((3, 16)) * 1.5
    y = rng.integers(0, 3, n)
    x = (centers[y] + rng.standard_normal((n, 16))).astype(np.float32)
    return x, y.astype(np.int64)


def _np_fake_quant(x, scale, zero, lo, hi):
    return (np.clip(np.rint(x / scale) + zero, lo, hi) - zero) * scale


def _np_forward(model, x):
    """The QAT model's evaluation forward in float64 NumPy, from its weights and observed ranges."""
    h = x.astype(np.float64)
    for i, layer in enumerate((model.fc1, model.fc2)):
        s, z = layer.activation_params()
        h = _np_fake_quant(h, float(s), float(z), 0, 255)
        w = np.asarray(layer.weight, np.float64)
        amax = np.abs(np.asarray(layer.weight)).max(axis=1, keepdims=True)
        ws = np.where(amax > 0, amax / np.float32(127.0), 1.0).astype(np.float64)
        h = h @ _np_fake_quant(w, ws, 0, -128, 127).T + np.asarray(layer.bias, np.float64)
        if i == 0:
            h = np.maximum(h, 0)
    return h


@pytest.fixture(scope="module")
def trained():
    graphc.manual_seed(0)
    x, y = _data()
    qat = prepare_qat(MLP())
    assert isinstance(qat.fc1, QATLinear) and isinstance(qat.fc2, QATLinear)
    step = graphc.compile_train(qat, F.cross_entropy, optim.Adam(lr=1e-2), x[:64], y[:64])
    first_batch = x[:64]
    losses = []
    for epoch in range(8):
        for i in range(0, len(x), 64):
            losses.append(float(step(x[i : i + 64], y[i : i + 64])))
            if epoch == 0 and i == 0:
                # The observer starts at the first batch's own range.
                assert qat.fc1.act_min[0] == pytest.approx(first_batch.min())
                assert qat.fc1.act_max[0] == pytest.approx(first_batch.max())
    return qat, x, y, losses


def test_qat_trains_and_observes(trained):
    qat, x, y, losses = trained
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    # The observers moved toward the data's range: the input layer's lies within the data's.
    assert x.min() <= qat.fc1.act_min[0] < 0 < qat.fc1.act_max[0] <= x.max()
    assert qat.fc2.act_min[0] >= -1e-6  # after a ReLU
    assert qat.fc1.has_observed and qat.fc2.has_observed


def test_fake_quant_forward_matches_numpy(trained):
    qat, x, _, _ = trained
    qat.eval()
    try:
        got = graphc.compile(qat, x, backend="reference")(x)
    finally:
        qat.train()
    want = _np_forward(qat, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_converted_int8_plan_matches_fake_quant_model(trained, tmp_path):
    qat, x, y, _ = trained
    plan = convert_qat(qat, x)
    qat.eval()
    try:
        fake = graphc.compile(qat, x)(x)
    finally:
        qat.train()
    got = plan(x)
    # Tolerance: 1e-4 of the largest logit (seen: ~1e-7; the float model, or min-max ranges
    # instead of the observed ones, differ by ~7e-2 of it).
    np.testing.assert_allclose(got, fake, atol=1e-4 * np.abs(fake).max())
    assert (np.argmax(got, 1) == y).mean() > 0.9
    # The same integer plan quantize_static makes of the float model.
    float_model = MLP()
    float_model.load_state_dict({k: v for k, v in qat.state_dict().items() if k.endswith(("weight", "bias"))})
    static = quantization.quantize_static(float_model, [x], x)
    assert plan.graph.op_counts() == static.graph.op_counts()
    assert plan.graph.op_counts().get("qlinear") == 2
    # The plan file stores int8 weights, not the float ones.
    path = os.path.join(tmp_path, "qat.gcp")
    plan.save(path)
    loaded = graphc.load_plan(path)
    arrays = list(loaded.graph.initializers.values())
    int8_shapes = {a.shape for a in arrays if a.dtype == np.int8}
    assert {(32, 16), (3, 32)} <= int8_shapes
    assert not any(a.dtype.kind == "f" and a.shape in ((32, 16), (16, 32), (3, 32), (32, 3)) for a in arrays)
    np.testing.assert_array_equal(loaded(x), got)


def test_frozen_observers_keep_their_range(trained):
    qat, x, y, _ = trained
    freeze_observers(qat)
    try:
        before = (qat.fc1.act_min.copy(), qat.fc1.act_max.copy())
        step = graphc.compile_train(qat, F.cross_entropy, optim.SGD(lr=1e-3), x[:64] * 3, y[:64])
        step(x[:64] * 3, y[:64])
        np.testing.assert_array_equal(qat.fc1.act_min, before[0])
        np.testing.assert_array_equal(qat.fc1.act_max, before[1])
    finally:
        freeze_observers(qat, False)


def test_one_qat_step_matches_torch_fake_quant():
    """One SGD step of a fresh QAT model against torch's fake_quantize ops (straight-through)."""
    torch = pytest.importorskip("torch")
    graphc.manual_seed(1)
    qat = prepare_qat(MLP())
    x, y = _data(32, seed=1)
    before = {n: np.array(p) for n, p in qat.named_parameters()}
    step = graphc.compile_train(qat, F.cross_entropy, optim.SGD(lr=0.1), x, y)
    loss = float(step(x, y))

    t = {n: torch.tensor(v, requires_grad=True) for n, v in before.items()}

    def layer(h, name):
        lo, hi = min(float(h.detach().min()), 0.0), max(float(h.detach().max()), 0.0)  # 1st batch
        s, z = quantization._range_params(lo, hi, np.float32)
        h = torch.fake_quantize_per_tensor_affine(h, float(s), int(z), 0, 255)
        w = t[f"{name}.weight"]
        ws = torch.tensor(np.abs(before[f"{name}.weight"]).max(1) / np.float32(127.0))
        wq = torch.fake_quantize_per_channel_affine(
            w, ws, torch.zeros(len(ws), dtype=torch.int32), 0, -128, 127
        )
        return h @ wq.T + t[f"{name}.bias"]

    logits = layer(torch.relu(layer(torch.tensor(x), "fc1")), "fc2")
    want = torch.nn.functional.cross_entropy(logits, torch.tensor(y))
    want.backward()
    assert loss == pytest.approx(want.item(), rel=1e-5)
    for name, p in qat.named_parameters():
        np.testing.assert_allclose(p, (t[name] - 0.1 * t[name].grad).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert qat.fc2.act_min[0] == 0.0 and qat.fc2.observed[0] == 1.0


def test_errors():
    with pytest.raises(GraphcError, match="no nn.Linear"):
        prepare_qat(nn.ReLU())
    with pytest.raises(GraphcError, match="no QATLinear"):
        convert_qat(MLP(), np.zeros((2, 16), np.float32))
    with pytest.raises(GraphcError, match="seen no batch"):
        convert_qat(prepare_qat(MLP()), np.zeros((2, 16), np.float32))


def test_uncovered_layers_quantize_from_calibration():
    """A conv of a bare parameter (``F.conv2d``, no nn.Conv2d for prepare_qat to wrap): convert_qat
    refuses it without calibration batches, and with them gives one int8 plan (no float conv left)
    close to the float model."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.kernel = nn.Parameter(
                np.random.default_rng(3).standard_normal((8, 1, 3, 3)).astype(np.float32)
            )
            self.fc = nn.Linear(8 * 4 * 4, 5)

        def forward(self, x):
            return self.fc(F.max_pool2d(F.relu(F.conv2d(x, self.kernel, padding=1)), 2).flatten(1))

    graphc.manual_seed(3)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 5, 16)
    model = prepare_qat(Net())
    step = graphc.compile_train(model, F.cross_entropy, optim.SGD(lr=0.01), x, y)
    for _ in range(3):
        step(x, y)
    with pytest.raises(GraphcError, match="kernel.*calibration_batches"):
        convert_qat(model, x)
    plan = convert_qat(model, x, calibration_batches=[x[:8], x[8:]])
    counts = plan.graph.op_counts()
    assert counts.get("qconv2d", 0) == 1 and counts.get("qlinear", 0) == 1 and "matmul" not in counts
    float_model = Net()
    names = float_model.state_dict()
    float_model.load_state_dict({k: v for k, v in model.state_dict().items() if k in names})
    want = graphc.compile(float_model, x)(x)
    assert np.abs(plan(x) - want).max() < 0.05 * np.abs(want).max()
