"""Layers: forward (traced, run by the reference kernels) against NumPy formulas and PyTorch;
Module bookkeeping (registration, sharing, state_dict with PyTorch's keys, in-place loading)."""

import math

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from graphc import nn
from graphc.ir import GraphcError
from graphc.kernels.reference import execute
from graphc.tracing import trace


def run_graph(graph, *arrays):
    """Execute a traced graph on data arrays (in data-input order) with the reference kernels."""
    outs = execute(graph, {v.name: np.asarray(a) for v, a in zip(graph.data_inputs, arrays)})
    return outs[0] if len(outs) == 1 else outs


RTOL = 1e-5


def close(a, b, rtol=RTOL, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def forward(module, *arrays):
    """Trace the module and execute the graph (explicit, not the eager shortcut)."""
    return run_graph(trace(module, *arrays), *arrays)


def torch_twin(torch, graphc_module, torch_module, *arrays):
    """Load graphc's state_dict into the torch module and run both."""
    torch_module.load_state_dict(
        {k: torch.from_numpy(np.array(v)) for k, v in graphc_module.state_dict().items()}
    )
    with torch.no_grad():
        ref = torch_module(*(torch.from_numpy(a) for a in arrays)).numpy()
    return forward(graphc_module, *arrays), ref


# ---------------------------------------------------------------------------- NumPy oracles
def np_conv2d(x, w, b, stride, padding, dilation):
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    o, c, kh, kw = w.shape
    win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # n, c, oh, ow, kh, kw
    out = np.einsum("nchwij,ocij->nohw", win.astype(np.float64), w.astype(np.float64))
    return (out + (0 if b is None else b[None, :, None, None])).astype(np.float32)


def np_pool(x, k, s, p, reduce, pad_value):
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=pad_value)
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    return reduce(win, axis=(-2, -1))


def np_layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


# ---------------------------------------------------------------------------- layers vs NumPy
def test_linear(rng):
    m = nn.Linear(6, 4)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    close(forward(m, x), x @ m.weight.T + m.bias)
    x3 = rng.standard_normal((2, 3, 6)).astype(np.float32)
    close(forward(m, x3), x3 @ m.weight.T + m.bias)
    nb = nn.Linear(6, 4, bias=False)
    assert nb.bias is None and [n for n, _ in nb.named_parameters()] == ["weight"]
    close(forward(nb, x), x @ nb.weight.T)


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=3, stride=2),
        dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), dilation=(2, 1)),
        dict(kernel_size=1, bias=False),
    ],
)
def test_conv2d(rng, kw):
    m = nn.Conv2d(3, 5, **kw)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    ref = np_conv2d(x, m.weight, m.bias, m.stride, m.padding, m.dilation)
    close(forward(m, x), ref, atol=1e-4)


def test_conv2d_same_padding_and_groups_error(rng):
    m = nn.Conv2d(2, 3, kernel_size=4, padding="same")
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    out = forward(m, x)
    assert out.shape == (1, 3, 6, 6)
    # PyTorch puts the odd extra padding on the high side
    xp = np.pad(x, ((0, 0), (0, 0), (1, 2), (1, 2)))
    close(out, np_conv2d(xp, m.weight, m.bias, (1, 1), (0, 0), (1, 1)), atol=1e-4)
    with pytest.raises(GraphcError, match="groups"):
        nn.Conv2d(4, 3, 3, groups=2)


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 1, 1), (3, 2, 1)])
def test_max_and_avg_pool(rng, k, s, p):
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    close(forward(nn.MaxPool2d(k, s, p), x), np_pool(x, k, s, p, np.max, -np.inf))
    close(forward(nn.AvgPool2d(k, s, p), x), np_pool(x, k, s, p, np.mean, 0.0))
    if p:
        counts = np_pool(np.ones((1, 1, 7, 7)), k, s, p, np.sum, 0.0)
        excl = np_pool(x, k, s, p, np.sum, 0.0) / counts
        close(forward(nn.AvgPool2d(k, s, p, count_include_pad=False), x), excl)


def test_pool_stride_defaults_to_kernel():
    assert nn.MaxPool2d(3).stride == 3 and nn.AvgPool2d(2).stride == 2


def test_batchnorm2d_train_updates_running_stats(rng):
    m = nn.BatchNorm2d(3)
    m.weight[:] = rng.standard_normal(3)
    m.bias[:] = rng.standard_normal(3)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32) * 2 + 1
    g = trace(m, x)
    assert g.kinds["running_mean"] == "state" and g.kinds["running_var"] == "state"
    assert set(g.updates) == {"running_mean", "running_var", "num_batches_tracked"}
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
    ref = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    ref = ref * m.weight[None, :, None, None] + m.bias[None, :, None, None]
    rm, rv = m.running_mean.copy(), m.running_var.copy()
    out = m(x)  # eager: runs the graph and writes the updates back into the buffers
    close(out, ref, atol=1e-4)
    n = x.size / 3
    close(m.running_mean, 0.9 * rm + 0.1 * mean)
    close(m.running_var, 0.9 * rv + 0.1 * var * n / (n - 1))
    assert int(m.num_batches_tracked) == 1


def test_batchnorm_eval_uses_running_stats(rng):
    m = nn.BatchNorm1d(4).eval()
    m.running_mean[:] = rng.standard_normal(4)
    m.running_var[:] = rng.random(4) + 0.5
    x = rng.standard_normal((3, 4)).astype(np.float32)
    g = trace(m, x)
    assert not g.updates and g.kinds["running_mean"] == "const"
    ref = (x - m.running_mean) / np.sqrt(m.running_var + 1e-5) * m.weight + m.bias
    close(run_graph(g, x), ref)


def test_batchnorm1d_3d_input_and_cumulative_momentum(rng):
    m = nn.BatchNorm1d(2, momentum=None, affine=False)
    x = rng.standard_normal((3, 2, 4)).astype(np.float32)
    m(x)
    m(x)
    close(m.running_mean, x.mean((0, 2)))  # cumulative average of two equal batches
    assert int(m.num_batches_tracked) == 2
    with pytest.raises(GraphcError, match="rank"):
        trace(m, rng.standard_normal((2, 2, 2, 2)).astype(np.float32))


def test_layer_norm(rng):
    m = nn.LayerNorm(6)
    m.weight[:] = rng.standard_normal(6)
    m.bias[:] = rng.standard_normal(6)
    x = rng.standard_normal((2, 3, 6)).astype(np.float32) * 3
    close(forward(m, x), np_layer_norm(x, m.weight, m.bias), atol=1e-4)
    m2 = nn.LayerNorm((3, 6), elementwise_affine=False)
    flat = x.reshape(2, 18)
    ref = (flat - flat.mean(1, keepdims=True)) / np.sqrt(flat.var(1, keepdims=True) + 1e-5)
    close(forward(m2, x), ref.reshape(x.shape), atol=1e-4)


def test_embedding(rng):
    m = nn.Embedding(10, 3, padding_idx=0)
    assert np.all(m.weight[0] == 0)
    idx = np.array([[1, 0, 9], [4, 4, 2]], dtype=np.int64)
    close(forward(m, idx), m.weight[idx])


def test_dropout(rng):
    m = nn.Dropout(0.25)
    x = np.ones((200, 50), dtype=np.float32)
    g = trace(m, x)
    assert g.kinds["rng.offset"] == "state" and "rng.offset" in g.updates
    out = run_graph(g, x)[0]
    kept = out != 0
    assert 0.7 < kept.mean() < 0.8
    close(out[kept], 1 / 0.75)
    again = run_graph(g, x)[0]
    np.testing.assert_array_equal(out, again)  # same offset, same mask: deterministic
    m.eval()
    close(forward(m, x), x)


@pytest.mark.parametrize(
    "module,formula",
    [
        (nn.ReLU(), lambda x: np.maximum(x, 0)),
        (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
        (nn.Tanh(), np.tanh),
        (nn.GELU(), lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
        (
            nn.GELU(approximate="tanh"),
            lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
        ),
        (nn.Softmax(dim=1), lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
        (nn.LogSoftmax(dim=-1), lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))),
        (nn.Flatten(), lambda x: x.reshape(x.shape[0], -1)),
        (nn.Identity(), lambda x: x),
        (nn.LeakyReLU(0.1), lambda x: np.where(x >= 0, x, 0.1 * x)),
    ],
)
def test_activations(rng, module, formula):
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    close(forward(module, x), formula(x.astype(np.float64)).astype(np.float32))


def test_sequential_and_modulelist(rng):
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear) and len(seq[:2]) == 2
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = rng.standard_normal((5, 3)).astype(np.float32)
    ref = np.maximum(x @ seq[0].weight.T + seq[0].bias, 0) @ seq[2].weight.T + seq[2].bias
    close(forward(seq, x), ref)

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(3, 3) for _ in range(2)])
            self.layers.append(nn.Tanh())

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    s = Stack()
    assert list(dict(s.named_parameters())) == [
        "layers.0.weight",
        "layers.0.bias",
        "layers.1.weight",
        "layers.1.bias",
    ]
    l0, l1 = s.layers[0], s.layers[1]
    close(forward(s, x), np.tanh((x @ l0.weight.T + l0.bias) @ l1.weight.T + l1.bias))


# ---------------------------------------------------------------------------- Module bookkeeping
def test_parameter_is_a_shareable_array():
    p = nn.Parameter(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert isinstance(p, np.ndarray) and p.dtype == np.float32 and p.requires_grad
    assert type(p * 2) is np.ndarray  # arithmetic gives plain arrays
    assert type(p.data) is np.ndarray and np.shares_memory(p.data, p)
    p.data = np.ones((2, 3))
    assert np.all(p == 1)
    assert nn.Parameter([1.0, 2.0]).dtype == np.float32


def test_registration_and_module_traversal():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.bn = nn.BatchNorm1d(2)
            self.scale = nn.Parameter(np.ones(1, dtype=np.float32))
            self.note = "not registered"

    b = Block()
    assert [n for n, _ in b.named_children()] == ["fc", "bn"]
    assert [n for n, _ in b.named_parameters()] == ["scale", "fc.weight", "fc.bias", "bn.weight", "bn.bias"]
    assert [n for n, _ in b.named_buffers()] == [
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
    ]
    assert len(list(b.modules())) == 3
    assert b.train() is b and all(m.training for m in b.modules())
    b.eval()
    assert not any(m.training for m in b.modules())
    with pytest.raises(AttributeError, match="before Module.__init__"):

        class Bad(nn.Module):
            def __init__(self):
                self.w = nn.Parameter(np.zeros(1))
                super().__init__()

        Bad()


def test_state_dict_round_trip_and_in_place_load(rng):
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    keys = list(m.state_dict())
    assert keys == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "3.weight",
        "3.bias",
    ]
    x = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    m.eval()
    g = trace(m, x)
    before = run_graph(g, x)
    new = {
        k: (rng.standard_normal(v.shape).astype(v.dtype) if v.dtype.kind == "f" else v + 3)
        for k, v in m.state_dict().items()
    }
    new["1.running_var"] = np.abs(new["1.running_var"]) + 0.1
    weight_obj = m[0].weight
    m.load_state_dict(new)
    assert m[0].weight is weight_obj  # loaded in place
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, new[k])
    after = run_graph(g, x)  # the graph traced before the load sees the new values
    assert not np.allclose(before, after)
    close(after, forward(m, x))
    with pytest.raises(GraphcError, match="Missing key"):
        m.load_state_dict({k: v for k, v in new.items() if k != "3.bias"})
    with pytest.raises(GraphcError, match="size mismatch"):
        m.load_state_dict({**new, "3.bias": np.zeros(4, np.float32)})
    res = m.load_state_dict({**new, "extra": np.zeros(1)}, strict=False)
    assert res.unexpected_keys == ["extra"]


def test_manual_seed_makes_init_reproducible():
    nn.manual_seed(7)
    a = nn.Linear(5, 3)
    nn.manual_seed(7)
    b = nn.Linear(5, 3)
    np.testing.assert_array_equal(a.weight, b.weight)
    bound = 1 / math.sqrt(5)
    assert np.abs(a.weight).max() <= bound and np.abs(a.bias).max() <= bound
    c = nn.Conv2d(2, 4, 3)
    assert np.abs(c.weight).max() <= 1 / math.sqrt(18)
    assert a.weight.std() > bound / 4  # not degenerate


# ---------------------------------------------------------------------------- against PyTorch
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_layers_match_torch(rng):
    torch = pytest.importorskip("torch")
    x4 = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    x2 = rng.standard_normal((4, 6)).astype(np.float32)
    cases = [
        (nn.Linear(6, 5), torch.nn.Linear(6, 5), x2),
        (nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), x4),
        (nn.Conv2d(3, 4, 3, dilation=2, bias=False), torch.nn.Conv2d(3, 4, 3, dilation=2, bias=False), x4),
        (nn.Conv2d(3, 2, 4, padding="same"), torch.nn.Conv2d(3, 2, 4, padding="same"), x4),
        (nn.MaxPool2d(3, 2, 1), torch.nn.MaxPool2d(3, 2, 1), x4),
        (nn.MaxPool2d(3, 2, ceil_mode=True), torch.nn.MaxPool2d(3, 2, ceil_mode=True), x4),
        (nn.MaxPool2d(2, dilation=2), torch.nn.MaxPool2d(2, dilation=2), x4),
        (nn.AvgPool2d(3, 2, 1), torch.nn.AvgPool2d(3, 2, 1), x4),
        (
            nn.AvgPool2d(3, 2, 1, count_include_pad=False),
            torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False),
            x4,
        ),
        (nn.AvgPool2d(3, 2, 1, ceil_mode=True), torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True), x4),
        (
            nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
            torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
            x4,
        ),
        (nn.AvgPool2d(2, divisor_override=3), torch.nn.AvgPool2d(2, divisor_override=3), x4),
        (nn.LayerNorm(6), torch.nn.LayerNorm(6), x2),
        (nn.LayerNorm([8, 8]), torch.nn.LayerNorm([8, 8]), x4),
        (nn.BatchNorm2d(3).eval(), torch.nn.BatchNorm2d(3).eval(), x4),
        (nn.GELU(), torch.nn.GELU(), x2),
        (nn.GELU("tanh"), torch.nn.GELU("tanh"), x2),
        (nn.Softmax(1), torch.nn.Softmax(1), x2),
        (nn.Sigmoid(), torch.nn.Sigmoid(), x2),
        (nn.Flatten(), torch.nn.Flatten(), x4),
    ]
    for ours, theirs, x in cases:
        got, ref = torch_twin(torch, ours, theirs, x)
        assert got.shape == ref.shape, (ours, got.shape, ref.shape)
        close(got, ref, atol=1e-5)


def test_batchnorm_training_matches_torch(rng):
    torch = pytest.importorskip("torch")
    for ours, theirs, shape in [
        (nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3), (4, 3, 5, 5)),
        (nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3), (6, 3)),
        (nn.BatchNorm1d(3, momentum=None), torch.nn.BatchNorm1d(3, momentum=None), (6, 3, 2)),
    ]:
        theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
        for _ in range(2):
            x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
            got = ours(x)
            ref = theirs(torch.from_numpy(x)).detach().numpy()
            close(got, ref, atol=1e-4)
        for k, v in theirs.state_dict().items():
            close(ours.state_dict()[k], v.numpy(), atol=1e-5)


def test_torch_state_dict_loads_unchanged(rng):
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 5),
        torch.nn.LayerNorm(5),
        torch.nn.Identity(),
    )
    ours = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
        nn.LayerNorm(5),
        nn.Identity(),
    )
    theirs.train()
    theirs(torch.randn(4, 3, 8, 8))  # move the running stats away from their defaults
    theirs.eval()
    ours.eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())  # torch tensors are accepted as they are
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = theirs(torch.from_numpy(x)).numpy()
    close(forward(ours, x), ref, atol=1e-4)
    emb_t, emb = torch.nn.Embedding(7, 3, padding_idx=2), nn.Embedding(7, 3, padding_idx=2)
    emb.load_state_dict({k: v.detach().numpy() for k, v in emb_t.state_dict().items()})
    idx = np.array([[0, 2, 6]], dtype=np.int64)
    close(forward(emb, idx), emb_t(torch.from_numpy(idx)).detach().numpy())


def test_init_matches_torch_distribution_bounds():
    torch = pytest.importorskip("torch")
    t = torch.nn.Linear(100, 50)
    ours = nn.Linear(100, 50)
    tw = t.weight.detach().numpy()
    assert abs(np.abs(ours.weight).max() - np.abs(tw).max()) < 0.01
    assert abs(ours.weight.std() - tw.std()) < 0.005
