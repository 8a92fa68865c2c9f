"""F.distillation_loss against PyTorch (value and gradient), and one compiled training step of a
student with its teacher frozen inside the same graph."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import functional as F
from graphc import nn
from graphc.ir import GraphcError
from graphc.passes.autodiff import grad

torch = pytest.importorskip("torch")
tF = torch.nn.functional


def _torch_loss(s, t, y, temperature, alpha):
    kl = tF.kl_div(
        tF.log_softmax(s / temperature, -1),
        tF.log_softmax(t / temperature, -1),
        log_target=True,
        reduction="batchmean",
    )
    return alpha * temperature**2 * kl + (1 - alpha) * tF.cross_entropy(s, y)


@pytest.mark.parametrize("temperature,alpha", [(4.0, 0.9), (1.0, 0.5), (2.5, 0.0), (7.0, 1.0)])
def test_distillation_loss_and_gradient_match_torch(temperature, alpha):
    rng = np.random.default_rng(int(temperature * 10))
    s = (rng.standard_normal((6, 5)) * 3).astype(np.float32)
    t = (rng.standard_normal((6, 5)) * 3).astype(np.float32)
    y = rng.integers(0, 5, 6)
    g = graphc.trace(
        lambda s, t, y: F.distillation_loss(s, t, y, temperature=temperature, alpha=alpha), s, t, y
    )
    joint, index = grad(g, 0, ["s", "t"])
    # The CPU backend once; the NumPy reference for the other cases (no numba compile).
    out = graphc.compile_graph(joint, backend="cpu" if temperature == 4.0 else "reference")(s, t, y)
    ts, tt = torch.tensor(s, requires_grad=True), torch.tensor(t, requires_grad=True)
    want = _torch_loss(ts, tt, torch.tensor(y), temperature, alpha)
    want.backward()
    np.testing.assert_allclose(out[0], want.item(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[index["s"]], ts.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out[index["t"]], tt.grad.numpy(), rtol=1e-4, atol=1e-6)
    # Eager (NumPy arrays outside a trace) gives the same value.
    np.testing.assert_allclose(F.distillation_loss(s, t, y, temperature, alpha), want.item(), rtol=1e-5)


class Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.student = nn.Linear(6, 4)
        self.teacher = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x):
        return self.student(x), self.teacher(x)


def test_one_training_step_with_a_frozen_teacher_matches_torch():
    graphc.manual_seed(3)
    model = Pair()
    model.teacher.requires_grad_(False)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 6)).astype(np.float32)
    y = rng.integers(0, 4, 8)
    before = {n: np.array(p) for n, p in model.named_parameters()}

    def loss_fn(out, target):
        return F.distillation_loss(out[0], out[1], target, temperature=3.0, alpha=0.7)

    step = graphc.compile_train(model, loss_fn, graphc.optim.SGD(lr=0.5), x, y)
    loss = step(x, y)

    ws = torch.tensor(before["student.weight"], requires_grad=True)
    bs = torch.tensor(before["student.bias"], requires_grad=True)
    tx = torch.tensor(x)
    t_hidden = torch.relu(
        tx @ torch.tensor(before["teacher.0.weight"]).T + torch.tensor(before["teacher.0.bias"])
    )
    t_logits = t_hidden @ torch.tensor(before["teacher.2.weight"]).T + torch.tensor(before["teacher.2.bias"])
    want = _torch_loss(tx @ ws.T + bs, t_logits, torch.tensor(y), 3.0, 0.7)
    want.backward()
    np.testing.assert_allclose(loss, want.item(), rtol=1e-5)
    after = dict(model.named_parameters())
    np.testing.assert_allclose(
        after["student.weight"], (ws - 0.5 * ws.grad).detach().numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        after["student.bias"], (bs - 0.5 * bs.grad).detach().numpy(), rtol=1e-5, atol=1e-6
    )
    for name in before:
        if name.startswith("teacher."):
            np.testing.assert_array_equal(after[name], before[name])  # frozen
    assert not np.array_equal(after["student.weight"], before["student.weight"])


def test_bad_arguments_are_graphc_errors():
    s = np.zeros((2, 3), np.float32)
    y = np.zeros(2, np.int64)
    with pytest.raises(GraphcError, match="temperature must be > 0"):
        F.distillation_loss(s, s, y, temperature=0.0)
    with pytest.raises(GraphcError, match=r"alpha must lie in \[0, 1\]"):
        F.distillation_loss(s, s, y, alpha=1.5)
    with pytest.raises(GraphcError, match="must both be"):
        F.distillation_loss(s, np.zeros((2, 4), np.float32), y)


def test_compress_digits_example_quick():
    """examples/compress_digits.py --quick: 3 seeds of both students, every compression row."""
    pytest.importorskip("sklearn")
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "compress_digits.py"
    spec = importlib.util.spec_from_file_location("example_compress_digits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.run(quick=True)
    assert [len(v) for v in out["students"].values()] == [3, 3]
    assert out["means"]["alone"] == pytest.approx(np.mean(out["students"]["alone"]))
    rows = out["rows"]
    assert len(rows) == 7 and {"float", "QAT int8 (+ calibrated convs)", "static int8 (entropy)"} <= set(rows)
    float_acc, float_bytes, _ = rows["float"]
    for name, (acc, size, seconds) in rows.items():
        assert acc > 0.75 and seconds > 0, (name, acc)
        if "int8" in name:
            assert size < 0.4 * float_bytes, (name, size, float_bytes)
    assert rows["QAT int8 (+ calibrated convs)"][0] > float_acc - 0.05
