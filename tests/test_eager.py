"""Eager mode (graphc/eager.py): values op by op, Python control flow, backward, optimizers.

Every value and gradient is checked against PyTorch eager (the independent oracle) on the same
weights and inputs.
"""

from __future__ import annotations

import gc
import importlib.util
import pathlib
import weakref

import numpy as np
import pytest
import torch

import graphc
import graphc.functional as F
from graphc import GraphcError, nn, optim
from graphc.data import DataLoader
from graphc.tracing import trace
from graphc.training import compile_train

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _example(name):
    spec = importlib.util.spec_from_file_location(f"eager_example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _twin(model, twin):
    """Load graphc's weights into the torch twin (same state_dict keys)."""
    twin.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    return twin


def close(a, b, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------------------- values
def test_layers_and_functions_compute_values_like_torch(rng):
    nn.init.manual_seed(0)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(36, 5),
        nn.LayerNorm(5),
    )
    twin = _twin(
        model,
        torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(36, 5),
            torch.nn.LayerNorm(5),
        ),
    )
    out = model(x)
    assert isinstance(out, graphc.Tensor) and out.shape == (2, 5) and out.dtype == np.float32
    with torch.no_grad():
        want = twin(torch.tensor(x)).numpy()
    close(out.numpy(), want)
    close(np.asarray(out), want)
    # Eager tensors compose with further ops, NumPy ufuncs and functionals, outside any call.
    y = F.softmax(out * 2 - 1, dim=-1)
    close(y, torch.softmax(torch.tensor(want) * 2 - 1, -1).numpy())
    close(np.exp(out), np.exp(want))
    close(F.gelu(x[0, 0]), torch.nn.functional.gelu(torch.tensor(x[0, 0])).numpy())
    assert isinstance(F.relu(x), graphc.Tensor)


def test_batch_norm_updates_running_stats_at_once_like_torch(rng):
    x = rng.standard_normal((8, 3)).astype(np.float32) * 2 + 1
    bn, tbn = nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    for _ in range(2):
        out = bn(x)
        want = tbn(torch.tensor(x)).detach().numpy()
        close(out, want)
    close(bn.running_mean, tbn.running_mean.numpy())
    close(bn.running_var, tbn.running_var.numpy())
    bn.eval()
    tbn.eval()
    close(bn(x), tbn(torch.tensor(x)).detach().numpy())


def test_python_control_flow_on_values():
    x = np.array([[1.0, -2.0], [3.0, 0.5]], np.float32)

    def fn(t):
        s = t.abs().sum()
        if s > 5:  # bool() of a value
            t = t * 0.5
        steps = 0
        while t.max() > 0.6:  # while on a value
            t = t - 0.25
            steps += 1
        return t, steps

    t, steps = graphc.tracing.run_eager(fn, x)
    want, n = x * 0.5, 0
    while want.max() > 0.6:
        want, n = want - 0.25, n + 1
    assert steps == n > 0
    close(t, want)
    s = t.sum()
    assert float(s) == pytest.approx(float(want.sum()))
    assert s.item() == pytest.approx(float(want.sum())) and isinstance(s.item(), float)
    assert f"{s:.3f}" == f"{float(want.sum()):.3f}"
    assert t.tolist() == want.tolist()
    assert "tensor(" in repr(t)
    idx = F.relu(np.array([1], np.int64)).sum()
    assert [10, 20, 30][idx] == 20  # __index__
    with pytest.raises(GraphcError, match="ambiguous"):
        bool(t > 0)
    # While tracing, the same code still raises the tracer's error naming the line.
    with pytest.raises(GraphcError, match="control flow"):
        trace(fn, x)


def test_inplace_on_arguments_raises_and_arguments_are_untouched():
    x = np.ones((2, 2), np.float32)

    def fn(t):
        t += 1
        return t

    with pytest.raises(GraphcError, match="graph input"):
        graphc.tracing.run_eager(fn, x)
    np.testing.assert_array_equal(x, 1)


def test_cpu_backend_kernels_give_the_same_values_and_gradients(rng):
    """set_backend("cpu") runs graphc's compiled CPU kernels (a tiny model: few compiles)."""
    import graphc.eager as eager

    x = rng.standard_normal((3, 4)).astype(np.float32)
    w = nn.Parameter(rng.standard_normal((4, 2)).astype(np.float32))

    def run():
        w.grad = None
        out = F.relu(F.matmul(x, w) + 0.5).sum()  # a Parameter argument requires grad
        out.backward()
        return float(out), w.grad.copy()

    want = run()
    assert eager.get_backend() == "reference"
    eager.set_backend("cpu")
    try:
        got = run()
    finally:
        eager.set_backend("reference")
    assert any(fn is not None for fn in eager._CPU_KERNELS.values())
    assert got[0] == pytest.approx(want[0], rel=1e-6)
    close(got[1], want[1], atol=1e-6)
    tw = torch.tensor(np.array(w), requires_grad=True)
    torch.relu(torch.tensor(x) @ tw + 0.5).sum().backward()
    close(got[1], tw.grad.numpy(), atol=1e-6)
    with pytest.raises(GraphcError, match="backend"):
        eager.set_backend("gpu")


# ---------------------------------------------------------------------------- FixedHiddenMLP
class _TorchFixedHiddenMLP(torch.nn.Module):
    """d2l's FixedHiddenMLP in PyTorch, as the book writes it."""

    def __init__(self, rand_weight):
        super().__init__()
        self.rand_weight = torch.tensor(rand_weight)
        self.linear = torch.nn.Linear(20, 20)

    def forward(self, x):
        x = self.linear(x)
        x = torch.relu(x @ self.rand_weight + 1)
        x = self.linear(x)
        while x.abs().sum() > 1:
            x /= 2
        return x.sum()


def test_fixed_hidden_mlp_while_loop_matches_torch_eager(rng):
    mod = _example("nest_mlp")
    nn.init.manual_seed(1)
    net = mod.FixedHiddenMLP()
    twin = _twin(net, _TorchFixedHiddenMLP(net.rand_weight))
    x = rng.random((2, 20), dtype=np.float32)
    out = net(x)
    xt = torch.tensor(x)
    want = twin(xt)
    assert out.shape == ()
    close(out, want.detach().numpy(), rtol=1e-5, atol=1e-7)
    # The loop really ran: without it the sum is far above 1.
    no_loop = mod.FixedHiddenMLP(halve=False)
    no_loop.load_state_dict(net.state_dict())
    assert abs(float(no_loop(x))) > 2 * abs(float(out))
    out.backward()
    want.backward()
    close(net.linear.weight.grad, twin.linear.weight.grad.numpy(), rtol=1e-5, atol=1e-7)
    close(net.linear.bias.grad, twin.linear.bias.grad.numpy(), rtol=1e-5, atol=1e-7)
    # The chimera built for compiling leaves the loop out, and still traces.
    trace(mod.model(), *mod.example_inputs())


# ---------------------------------------------------------------------------- backward
def _mlp():
    nn.init.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    twin = _twin(model, torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)))
    return model, twin


def test_backward_of_mlp_cross_entropy_matches_torch_autograd(rng):
    model, twin = _mlp()
    x = rng.standard_normal((5, 6)).astype(np.float32)
    y = np.array([0, 3, 1, 2, 3])
    loss = F.cross_entropy(model(x), y)
    tloss = torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(y))
    close(loss, tloss.item())
    assert all(p.grad is None for p in model.parameters())
    loss.backward()
    tloss.backward()
    for p, tp in zip(model.parameters(), twin.parameters()):
        assert isinstance(p.grad, np.ndarray) and p.grad.dtype == np.float32
        close(p.grad, tp.grad.numpy(), atol=1e-6)
    # A second backward through the freed record raises, as in torch.
    with pytest.raises(GraphcError, match="freed"):
        loss.backward()
    # Gradients accumulate over backward calls until zeroed.
    F.cross_entropy(model(x), y).backward()
    torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(y)).backward()
    for p, tp in zip(model.parameters(), twin.parameters()):
        close(p.grad, tp.grad.numpy(), atol=1e-6)


def test_backward_errors():
    model, _ = _mlp()
    x = np.ones((2, 6), np.float32)
    with pytest.raises(GraphcError, match="scalar"):
        model(x).backward()
    with pytest.raises(GraphcError, match="does not depend"):
        F.relu(x).sum().backward()
    out = model(x)
    out.backward(np.ones(out.shape, np.float32))  # a given gradient weights the outputs
    want = 2 * np.ones((1, 4), np.float32)  # d(sum over the batch)/d bias
    close(model[2].bias.grad, want[0])


def test_detach_and_no_grad_stop_the_gradient_like_torch(rng):
    model, twin = _mlp()
    x = rng.standard_normal((3, 6)).astype(np.float32)
    h = model[0](x)
    assert h.requires_grad and not F.relu(x).requires_grad
    with graphc.no_grad():
        out = model(x)
    assert not out.requires_grad
    close(out, model(x))
    with pytest.raises(GraphcError, match="does not depend"):
        out.sum().backward()
    (model[2](F.relu(h).detach()) ** 2).sum().backward()
    th = twin[0](torch.tensor(x))
    (twin[2](torch.relu(th).detach()) ** 2).sum().backward()
    assert model[0].weight.grad is None and twin[0].weight.grad is None
    close(model[2].weight.grad, twin[2].weight.grad.numpy(), atol=1e-5)


def test_the_record_is_freed_with_its_tensors(rng):
    """The ops a gradient needs live on the tensors: nothing grows across calls."""
    model, _ = _mlp()
    x = rng.standard_normal((3, 6)).astype(np.float32)
    out = model(x)
    first = weakref.ref(out.value)
    hidden = weakref.ref(out.value.inputs[0])  # an intermediate of the first call
    for _ in range(3):
        out = model(x)  # an inference loop: each call's record dies with its output
    gc.collect()
    assert first() is None and hidden() is None
    loss = out.sum()
    inner = weakref.ref(loss.value.inputs[0].inputs[0])
    loss.backward()
    gc.collect()
    assert inner() is None  # freed by backward although loss and out are still alive
    close(out, model(x))


# ---------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("SGD", dict(lr=0.1, momentum=0.9)),
        ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
        ("Adam", dict(lr=0.01)),
        ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ],
)
def test_optimizer_step_and_zero_grad_match_torch_optim(rng, name, kwargs):
    model, twin = _mlp()
    opt = getattr(optim, name)(model.parameters(), **kwargs)
    topt = getattr(torch.optim, name)(twin.parameters(), **kwargs)
    x = rng.standard_normal((8, 6)).astype(np.float32)
    y = rng.integers(0, 4, 8)
    params = list(model.parameters())
    before = [np.array(p) for p in params]
    for _ in range(3):
        opt.zero_grad()
        topt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        tloss = torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(y))
        close(loss, tloss.item())
        loss.backward()
        tloss.backward()
        opt.step()
        topt.step()
    for p, tp, b in zip(params, twin.parameters(), before):
        close(p, tp.detach().numpy(), atol=1e-6)
        assert not np.array_equal(p, b)
    assert all(p is q for p, q in zip(params, model.parameters()))  # updated in place
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_optimizer_state_dict_resumes_eager_training(rng):
    x = rng.standard_normal((8, 6)).astype(np.float32)
    y = rng.integers(0, 4, 8)

    def step(model, opt):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    a, _ = _mlp()
    opt_a = optim.Adam(a.parameters(), lr=0.01)
    step(a, opt_a)
    b, _ = _mlp()
    b.load_state_dict(a.state_dict())
    opt_b = optim.Adam(b.parameters(), lr=0.01)
    opt_b.load_state_dict(opt_a.state_dict())
    assert any(k.startswith("optim.exp_avg") for k in opt_a.state_dict()["state"])
    step(a, opt_a)
    step(b, opt_b)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p, q)


def test_optimizer_arguments():
    model, _ = _mlp()
    assert optim.SGD(0.1).lr == 0.1 and optim.SGD(lr=0.2).lr == 0.2  # as before: no parameters
    assert optim.Adam(model.parameters()).lr == 1e-3
    with pytest.raises(GraphcError, match="needs the parameters"):
        optim.SGD(lr=0.1).step()
    with pytest.raises(GraphcError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(GraphcError, match="twice"):
        optim.SGD(0.1, lr=0.2)


def test_compile_train_takes_an_optimizer_built_with_parameters(rng):
    """One step compiled and one step eager from the same weights give the same weights."""
    x = rng.standard_normal((8, 6)).astype(np.float32)
    y = rng.integers(0, 4, 8)
    compiled, _ = _mlp()
    step = compile_train(
        compiled,
        F.cross_entropy,
        optim.SGD(compiled.parameters(), lr=0.1, momentum=0.9),
        x,
        y,
        backend="reference",
    )
    eager, _ = _mlp()
    opt = optim.SGD(eager.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        loss_c = step(x, y)
        opt.zero_grad()
        loss_e = F.cross_entropy(eager(x), y)
        loss_e.backward()
        opt.step()
        close(loss_e, loss_c)
    for a, b in zip(compiled.parameters(), eager.parameters()):
        close(a, b, atol=1e-6)


# ---------------------------------------------------------------------------- digits
def test_eager_training_on_digits_reaches_compiled_accuracy():
    pytest.importorskip("sklearn")
    digits = _example("train_digits")
    (x_train, y_train), (x_test, y_test) = digits.load_digits(0)

    def run(eager: bool) -> tuple[float, list[float]]:
        nn.init.manual_seed(0)
        net = digits.MLP()
        loader = DataLoader((x_train, y_train), batch_size=64, shuffle=True, seed=0, drop_last=True)
        losses = []
        if eager:
            opt = optim.Adam(net.parameters(), lr=2e-3)
            for _ in range(3):
                for xb, yb in loader:
                    opt.zero_grad()
                    loss = F.cross_entropy(net(xb), yb)
                    loss.backward()
                    opt.step()
                    losses.append(float(loss))
        else:
            step = compile_train(
                net, F.cross_entropy, optim.Adam(lr=2e-3), *loader.example_batch(), backend="reference"
            )
            for _ in range(3):
                losses.extend(float(step(xb, yb)) for xb, yb in loader)
        logits = net(x_test)  # eager inference on the trained parameters
        return float((logits.numpy().argmax(1) == y_test).mean()), losses

    acc_eager, losses_eager = run(True)
    acc_compiled, losses_compiled = run(False)
    assert acc_eager >= 0.9 and losses_eager[-1] < losses_eager[0] / 3
    assert abs(acc_eager - acc_compiled) <= 0.01
    close(losses_eager, losses_compiled, rtol=1e-3, atol=1e-4)
