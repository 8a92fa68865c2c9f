"""compile_train, TrainStep and fit: one compiled step per call updates the module in place."""

from __future__ import annotations

import importlib.util
import io
import pathlib

import numpy as np
import pytest

import graphc.functional as F
import graphc.nn as nn
from graphc import optim
from graphc.data import DataLoader
from graphc.ir import GraphcError
from graphc.optim import lr_scheduler
from graphc.training import compile_train, evaluate, fit

BACKEND = "reference"  # NumPy kernels: no numba compiles in the unit tests


class MLP(nn.Module):
    def __init__(self, n_in=20, hidden=256, n_out=10):
        super().__init__()
        self.hidden = nn.Linear(n_in, hidden)
        self.out = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.out(F.relu(self.hidden(x)))


def _batch(n=64, n_in=20, n_out=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_in)).astype(np.float32)
    y = rng.integers(0, n_out, n).astype(np.int64)
    return x, y


def _copy_state(model):
    return {k: np.array(v, copy=True) for k, v in model.state_dict().items()}


def _example(name):
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"train_example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mlp_example_loss_decreases_and_params_update_in_place():
    mlp = _example("mlp")
    nn.init.manual_seed(0)
    model = mlp.model()
    (x,), y = mlp.example_inputs(), mlp.example_labels()
    arrays = dict(model.state_dict())
    before = _copy_state(model)
    step = compile_train(model, F.cross_entropy, optim.SGD(lr=0.1, momentum=0.9), x, y, backend=BACKEND)
    losses = [step(x, y) for _ in range(30)]
    assert isinstance(losses[0], float)
    assert losses[-1] < 0.7 * losses[0]
    after = model.state_dict()
    for k in before:
        # the same arrays, with new contents
        assert np.shares_memory(after[k], arrays[k])
        assert not np.array_equal(after[k], before[k]), k
    assert step.num_steps == 30


OPTIMIZERS = {
    "sgd_nesterov": (dict(lr=0.05, momentum=0.9, nesterov=True), "SGD"),
    "adam": (dict(lr=1e-3), "Adam"),
    "adamw": (dict(lr=1e-3, weight_decay=0.1), "AdamW"),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_end_to_end_matches_torch(name):
    kwargs, cls = OPTIMIZERS[name]
    torch = pytest.importorskip("torch")
    nn.init.manual_seed(1)
    model = MLP(20, 32, 10)
    tmodel = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    with torch.no_grad():
        for (_, ours), theirs in zip(model.state_dict().items(), tmodel.state_dict().values()):
            theirs.copy_(torch.from_numpy(np.array(ours)))
    x, y = _batch(16, 20, 10)
    step = compile_train(model, F.cross_entropy, getattr(optim, cls)(**kwargs), x, y, backend=BACKEND)
    topt = getattr(torch.optim, cls)(tmodel.parameters(), **kwargs)
    for t in range(10):
        xb, yb = _batch(16, 20, 10, seed=t)
        loss = step(xb, yb)
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(xb)), torch.from_numpy(yb))
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-4)
    for (k, ours), theirs in zip(model.state_dict().items(), tmodel.state_dict().values()):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-4, atol=1e-5, err_msg=k)


def test_learning_rate_is_an_input():
    model = MLP(4, 8, 3)
    x, y = _batch(8, 4, 3)
    opt = optim.SGD(lr=0.0)
    step = compile_train(model, F.cross_entropy, opt, x, y, backend=BACKEND)
    plan = step.plan
    before = _copy_state(model)
    step(x, y)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    sched = lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    opt.param_groups[0]["initial_lr"] = 0.5
    sched.base_lr = 0.5
    sched.step()
    assert opt.lr == 0.5
    step(x, y)
    assert step.plan is plan
    assert any(not np.array_equal(v, before[k]) for k, v in model.state_dict().items())


class Regularized(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(self.drop(F.relu(self.bn(self.fc1(x)))))


def test_batchnorm_stats_and_dropout_counter_advance():
    nn.init.manual_seed(0)
    model = Regularized()
    x, y = _batch(12, 6, 3)
    step = compile_train(model, F.cross_entropy, optim.Adam(lr=1e-2), x, y, backend=BACKEND)
    mean = model.bn.running_mean
    assert np.all(mean == 0)
    state = step.state_arrays
    assert "rng.offset" in state
    offset0 = int(state["rng.offset"])
    step(x, y)
    step(x, y)
    assert int(state["rng.offset"]) == offset0 + 2
    assert not np.all(model.bn.running_mean == 0)
    assert model.bn.running_mean is mean  # updated in place
    assert int(model.bn.num_batches_tracked) == 2 if hasattr(model.bn, "num_batches_tracked") else True
    assert model.training  # compile_train leaves the mode as it was


def test_frozen_parameters_are_not_updated():
    model = MLP(4, 8, 3)
    model.hidden.requires_grad_(False)
    x, y = _batch(8, 4, 3)
    before = _copy_state(model)
    opt = optim.Adam(lr=0.1)
    step = compile_train(model, F.cross_entropy, opt, x, y, backend=BACKEND)
    step(x, y)
    after = model.state_dict()
    np.testing.assert_array_equal(after["hidden.weight"], before["hidden.weight"])
    assert not np.array_equal(after["out.weight"], before["out.weight"])
    assert not any("hidden" in name for name in opt.state)
    model.requires_grad_(False)
    with pytest.raises(GraphcError, match="no trainable parameters"):
        compile_train(model, F.cross_entropy, opt, x, y, backend=BACKEND)


def test_bad_calls():
    model = MLP(4, 8, 3)
    x, y = _batch(8, 4, 3)
    with pytest.raises(GraphcError, match="target"):
        compile_train(model, F.cross_entropy, optim.SGD(lr=0.1), x, backend=BACKEND)
    with pytest.raises(GraphcError, match="optimizer"):
        compile_train(model, F.cross_entropy, object(), x, y, backend=BACKEND)
    with pytest.raises(GraphcError, match="scalar"):
        compile_train(model, lambda out, t: out, optim.SGD(lr=0.1), x, y, backend=BACKEND)
    step = compile_train(model, F.cross_entropy, optim.SGD(lr=0.1), x, y, backend=BACKEND)
    with pytest.raises(GraphcError, match="2 input"):
        step(x)


def test_fit_and_evaluate():
    nn.init.manual_seed(0)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 3, 200).astype(np.int64)
    data = (centers[labels] + rng.standard_normal((200, 5)).astype(np.float32)), labels
    train = DataLoader(data, batch_size=32, shuffle=True, drop_last=False)
    test = DataLoader(data, batch_size=48)  # 200 = 4 * 48 + 8: a padded last batch
    model = MLP(5, 16, 3)
    opt = optim.SGD(lr=0.1, momentum=0.9)
    step = compile_train(model, F.cross_entropy, opt, *train.example_batch(), backend=BACKEND)
    sched = lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    log = io.StringIO()
    history = fit(step, train, epochs=3, eval_loader=test, scheduler=sched, file=log, log_every=2)
    assert len(history) == 3
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["accuracy"] > 0.9
    assert opt.lr == pytest.approx(0.1 * 0.5**3)
    text = log.getvalue()
    assert "samples/s" in text and "epoch 3" in text and "short batch" in text
    # the default evaluation agrees with a direct computation
    model.eval()
    logits = model(data[0])
    model.train()
    expected = float(np.mean(np.argmax(logits, -1) == labels))
    assert evaluate(step, test)["accuracy"] == pytest.approx(expected)
    assert train.epoch == 3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_digits_example_reaches_95_percent(name):
    pytest.importorskip("sklearn")
    digits = _example("train_digits")
    assert digits.train(name, epochs=10, backend=BACKEND, verbose=False) >= 0.95


def test_cpu_backend_follows_the_reference_backend():
    """The numba-compiled train step (the default) gives the reference kernels' trajectory."""
    x, y = _batch(16, 20, 10)
    results = {}
    for backend in ("reference", "cpu"):
        nn.init.manual_seed(3)
        model = MLP(20, 32, 10)
        step = compile_train(model, F.cross_entropy, optim.Adam(lr=1e-2), x, y, backend=backend)
        losses = [step(*_batch(16, 20, 10, seed=t)) for t in range(5)]
        results[backend] = losses, _copy_state(model)
    np.testing.assert_allclose(results["cpu"][0], results["reference"][0], rtol=1e-5)
    for k, v in results["cpu"][1].items():
        np.testing.assert_allclose(v, results["reference"][1][k], rtol=1e-4, atol=1e-6, err_msg=k)
