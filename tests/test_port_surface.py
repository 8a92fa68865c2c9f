"""The PyTorch surface: the bugs of issue 16, and functions, methods, indexing and modules checked
against PyTorch (the oracle) with the same inputs and weights.

Plans run on the reference backend (NumPy kernels, no compile) to keep this file fast; the port
suite (tests/port/) also runs blocks on the numba backend.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import graphc
from graphc import nn
from graphc import nn as gnn
from graphc.ir import GraphcError
from graphc.nn import functional as F

RNG = np.random.default_rng(16)


def normal(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def run(model, *arrays):
    """Compile on the example arrays and run on them (reference kernels)."""
    return graphc.compile(model, *arrays, backend="reference")(*arrays)


def close(ours, theirs, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    expect = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert np.asarray(ours).dtype == expect.dtype, (np.asarray(ours).dtype, expect.dtype)
    np.testing.assert_allclose(ours, expect, rtol=rtol, atol=atol)


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a))


def copy_weights(ours: nn.Module, theirs: torch.nn.Module) -> None:
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


# ---------------------------------------------------------------------------- issue 16's bugs
def test_negative_index_list_compiles_and_runs():
    """Was: traced, then 'gather: index -1 out of range' at plan warm-up with no file:line."""
    x = normal(2, 3, 4)
    np.testing.assert_array_equal(run(lambda v: v[:, [-1], :], x), x[:, [-1], :])
    np.testing.assert_array_equal(run(lambda v: v[[-2, 0]], x), x[[-2, 0]])
    with pytest.raises(GraphcError, match=r"test_port_surface\.py:\d+: index -4 is out of range"):
        graphc.trace(lambda v: v[:, [-4]], x)


def test_plan_returns_the_structure_forward_returned():
    """Was: ``(logits, None)`` came back as a bare array and ``a, b = plan(x)`` unpacked rows."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x, targets=None):
            logits = self.fc(x)
            return logits, None

    net, x = Net(), normal(4, 3)
    logits, loss = graphc.compile(net, x, backend="reference")(x)
    assert loss is None and logits.shape == (4, 2)
    out = run(lambda v: {"a": v, "b": [v * 2, None, (v,)]}, x)
    assert list(out) == ["a", "b"] and isinstance(out["b"], list) and out["b"][1] is None
    assert isinstance(out["b"][2], tuple) and len(out["b"][2]) == 1
    np.testing.assert_array_equal(out["b"][0], x * 2)
    (single,) = run(lambda v: (v + 1,), x)  # a 1-tuple stays a tuple
    np.testing.assert_array_equal(single, x + 1)


def test_weight_data_and_detach_inside_forward():
    """Was: ``self.weight.data`` raised a bare AttributeError inside forward."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(np.arange(3, dtype=np.float32))

        def forward(self, x):
            return x * self.weight.data + self.weight.detach()

    x = normal(2, 3)
    np.testing.assert_allclose(run(Net(), x), x * np.arange(3) + np.arange(3), rtol=1e-6)


def test_float64_numpy_parameters_follow_the_default_dtype():
    """Was: Parameter(np.ones(d)) was float64 and turned the whole plan's output float64."""

    class Net(nn.Module):
        def __init__(self, **kw):
            super().__init__()
            self.scale = nn.Parameter(np.ones(3), **kw)
            self.shift = np.full(3, 0.5)  # a float64 NumPy constant
            self.register_buffer("offset", np.zeros(3))

        def forward(self, x):
            return x * self.scale + self.shift + self.offset + np.ones(3)

    x = normal(2, 3)
    net = Net()
    assert net.scale.dtype == np.float32 and net.shift.dtype == np.float32 and net.offset.dtype == np.float32
    assert run(net, x).dtype == np.float32
    assert Net(dtype=np.float64).scale.dtype == np.float64  # asked for explicitly
    graphc.set_default_dtype(np.float64)
    try:
        assert nn.Parameter(np.ones(2)).dtype == np.float64
        assert nn.Linear(2, 2).weight.dtype == np.float64
    finally:
        graphc.set_default_dtype(np.float32)
    assert graphc.get_default_dtype() == np.float32


# ---------------------------------------------------------------------------- indexing
INDEX_CASES = [
    (slice(None), [-1], slice(None)),
    (Ellipsis, [0, -1]),
    (None, 1, Ellipsis, None),
    ([0, -1], [2, 0]),
    (np.array([True, False]),),
    (slice(None), np.array([True, False, True])),
    (np.array([[True, False, True], [False, False, True]]),),
    (-1, slice(1, None, 2)),
    (np.array([[1, 0], [0, 1]]),),
]


@pytest.mark.parametrize("key", INDEX_CASES, ids=range(len(INDEX_CASES)))
def test_indexing_as_torch(key):
    x = normal(2, 3, 4)
    tkey = tuple(torch.from_numpy(k) if isinstance(k, np.ndarray) else k for k in key)
    close(run(lambda v: v[key], x), t(x)[tkey])


def test_item_assignment_is_a_functional_update():
    x, row = normal(3, 4), normal(4)

    def fn(x, row, lib):
        y = x * 1
        y[0] = row
        y[:, 1] = 5.0
        y[:, 2] += x[:, 3]
        y[[-1, 0], [0, 3]] = -1.0
        y[y > 0.5] = 0.25  # a traced mask
        y[np.array([True, False, True]) if lib is np else torch.tensor([True, False, True]), 0] = 7.0
        return y

    close(run(lambda a, b: fn(a, b, np), x, row), fn(t(x), t(row), torch))


def test_item_assignment_into_an_input_or_parameter_raises():
    with pytest.raises(GraphcError, match="item assignment .* graph input"):
        graphc.trace(lambda v: v.__setitem__(0, 1.0), normal(3))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(np.zeros(3, dtype=np.float32))

        def forward(self, x):
            self.w[0] = 1.0
            return x

    with pytest.raises(GraphcError, match="parameter"):
        graphc.trace(Net(), normal(3))


# ---------------------------------------------------------------------------- functions / methods
FUNCTION_CASES = {
    "einsum_matmul": lambda L, a, b: L.einsum("bij,bjk->bik", a, b),
    "einsum_outer_sum": lambda L, a, b: L.einsum("bij,bkj->ik", a, b),
    "einsum_transpose": lambda L, a, b: L.einsum("bij->jib", a),
    "einsum_ellipsis": lambda L, a, b: L.einsum("...ij,...jk", a, b),
    "einsum_trace_free_sum": lambda L, a, b: L.einsum("bij,bjk->b", a, b),
    "bmm": lambda L, a, b: L.bmm(a, b),
    "baddbmm": lambda L, a, b: L.baddbmm(a @ b, a, b, beta=0.5, alpha=2.0),
    "cumsum": lambda L, a, b: L.cumsum(a, dim=1) + a.cumsum(-1),
    "sort": lambda L, a, b: L.sort(a, dim=-1, descending=True)[0],
    "sort_indices": lambda L, a, b: L.sort(a, dim=1)[1],
    "argsort": lambda L, a, b: a.argsort(dim=0),
    "topk": lambda L, a, b: L.topk(a, 2, dim=-1).values * 2,
    "topk_indices": lambda L, a, b: a.topk(2, dim=1, largest=False).indices,
    "argmax": lambda L, a, b: L.argmax(a, dim=1),
    "gather": lambda L, a, b: L.gather(a, 2, (b > 0).long()),
    "scatter": lambda L, a, b: L.zeros(2, 3, 4).scatter(2, L.argsort(b, dim=2), a),
    "scatter_add": lambda L, a, b: a.scatter_add(1, (b[:, :, :2].abs() * 2).long().clamp(0, 2), b[:, :, :2]),
    "index_select": lambda L, a, b: L.index_select(a, 1, L.tensor([2, 0, 2])),
    "repeat_interleave": lambda L, a, b: a.repeat_interleave(2, dim=1),
    "chunk_split_unbind": lambda L, a, b: (
        L.cat(a.chunk(2, dim=2), 2)
        + L.cat(L.split(a, [1, 2], dim=1), 1)
        + L.stack(a.unbind(0), 0)
        + L.cat(L.chunk(a, 3, 1), 1)
    ),
    "masked_fill": lambda L, a, b: a.masked_fill(b > 0, float("-inf")).clamp(min=-3.0),
    "clamp": lambda L, a, b: L.clamp(a, -0.5, 0.5) + a.clip(max=0.1),
    "pow_rsqrt": lambda L, a, b: L.rsqrt(a.pow(2) + 1) + a.abs().pow(1.5),
    "swapaxes": lambda L, a, b: a.swapaxes(0, 2) + L.swapaxes(a, 0, 2),
    "tril_triu": lambda L, a, b: L.tril(a) + a.triu(1),
    "casts": lambda L, a, b: (
        a.float() + a.long() + a.to(L.float64).float() + a.type_as(b) + a.to("cpu")
    ).cpu(),
    "creation_in_forward": lambda L, a, b: (
        a
        + L.arange(4)
        + L.ones(3, 4)
        + L.zeros_like(a)
        + L.full((4,), 2.0)
        + L.eye(3, 4)
        + L.linspace(0, 1, 4)
        + L.ones_like(b) * a.numel()
    ),
    "softmax_dtype_as_torch": lambda L, a, b: L.softmax(a, dim=-1).sum(-1),
    "repeat_movedim_new": lambda L, a, b: (
        a.repeat(1, 2, 1)[:, :3]
        + a.repeat(2, 1, 1, 1).sum(0)
        + a.movedim(0, 2).movedim(2, 0)
        + a.new_zeros(3, 4)
        + a.new_ones((4,))
    ),
}

F_CASES = {
    "sdpa_causal": lambda F, a, b: F.scaled_dot_product_attention(a, b, b, is_causal=True),
    "sdpa_bool_mask": lambda F, a, b: F.scaled_dot_product_attention(a, b, b, attn_mask=(b[0] > -1.0).T[:3]),
    "normalize": lambda F, a, b: F.normalize(a, dim=-1) + F.normalize(a, p=1.0, dim=1),
    "activations": lambda F, a, b: (
        F.softplus(a, beta=2.0)
        + F.elu(a)
        + F.hardtanh(a)
        + F.relu6(a * 4)
        + F.hardswish(a)
        + F.mish(a)
        + F.logsigmoid(a)
        + F.gelu(a, approximate="tanh")
    ),
    "norms": lambda F, a, b: F.group_norm(a, 3) + F.rms_norm(a, (4,), eps=1e-6) + F.instance_norm(a),
    "conv1d_transpose": lambda F, a, b: (
        F.conv1d(a, b[:, :, :3].repeat(2, 1, 1)[:3], padding=1)
        + F.conv_transpose2d(a[:, None], b[:1, :2, None, :3], stride=2).sum((1, 2))[:, None, :4]
    ),
    "adaptive_and_pool1d": lambda F, a, b: (
        F.adaptive_avg_pool1d(a, 3).sum(-1, keepdim=True)
        + F.adaptive_max_pool2d(a[None], (2, 3)).amax()
        + F.max_pool1d(a, 2, 1, ceil_mode=True)[..., :1]
        + F.avg_pool1d(a, 3, 1, 1)
        + F.pad(a, (1, 0))[..., :4]
    ),
}


@pytest.mark.parametrize("name", list(F_CASES))
def test_nn_functional_as_torch(name):
    fn = F_CASES[name]
    a, b = normal(2, 3, 4), normal(2, 3, 4)
    close(run(lambda x, y: fn(F, x, y), a, b), fn(torch.nn.functional, t(a), t(b)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(FUNCTION_CASES))
def test_function_as_torch(name):
    fn = FUNCTION_CASES[name]
    a, b = normal(2, 3, 4), normal(2, 4, 3) if "mm" in name or name.startswith("einsum") else normal(2, 3, 4)
    if name in ("einsum_outer_sum",):
        b = normal(2, 5, 4)
    ours = run(lambda x, y: fn(graphc, x, y), a, b)
    close(ours, fn(torch, t(a), t(b)), rtol=1e-5, atol=1e-5)


def test_creation_outside_a_trace_gives_arrays_with_torch_methods():
    m = graphc.tril(graphc.ones(3, 3)).view(1, 1, 3, 3)
    assert np.asarray(m).shape == (1, 1, 3, 3) and np.asarray(m).dtype == np.float32
    np.testing.assert_array_equal(np.asarray(graphc.arange(4)), np.arange(4))
    assert (
        np.asarray(graphc.arange(4)).dtype == np.int64
        and np.asarray(graphc.arange(0.0, 1.0, 0.5)).dtype == np.float32
    )
    graphc.manual_seed(3)
    r1 = np.asarray(graphc.randn(2, 3))
    graphc.manual_seed(3)
    np.testing.assert_array_equal(r1, np.asarray(graphc.randn(2, 3)))
    assert np.asarray(graphc.randint(0, 5, (10,))).max() < 5


def test_random_creation_inside_forward_is_an_op():
    x = np.zeros((2000,), dtype=np.float32)
    plan = graphc.compile(
        lambda v: (v + graphc.rand(2000), v + graphc.randn(2000), graphc.randint(2, 5, (2000,))), x
    )
    u, n, i = plan(x)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.05
    assert abs(n.mean()) < 0.1 and abs(n.std() - 1) < 0.1
    assert i.dtype == np.int64 and set(np.unique(i)) == {2, 3, 4}
    assert not np.array_equal(plan(x)[0], u)  # a new draw each call


def test_tensor_metadata_methods():
    def fn(x):
        assert x.device == "cpu" and x.numel() == 6 and x.type() == "torch.FloatTensor"
        assert x.is_floating_point() and x.dim() == 2
        return x.to(graphc.long).to(dtype=graphc.float32, device="cpu")

    np.testing.assert_array_equal(
        run(fn, np.array([[1.5, 2.0, 3.0]] * 2, dtype=np.float32)), [[1.0, 2.0, 3.0]] * 2
    )


# ---------------------------------------------------------------------------- modules
def _module_case(make, shape, rtol=1e-5, atol=1e-5, train=False):
    torch.manual_seed(0)
    theirs = make(torch.nn)
    ours = make(gnn)
    copy_weights(ours, theirs)
    theirs.train(train)
    ours.train(train)
    x = normal(*shape)
    with torch.no_grad():
        expect = theirs(t(x))
    got = run(ours, x)
    if isinstance(expect, tuple):
        for g, e in zip(got, expect):
            close(g, e, rtol, atol)
    else:
        close(got, expect, rtol, atol)


MODULE_CASES = {
    "conv2d_groups": (lambda n: n.Conv2d(6, 4, 3, padding=1, groups=2), (2, 6, 5, 5)),
    "conv2d_depthwise_stride": (lambda n: n.Conv2d(4, 4, 3, stride=2, groups=4, bias=False), (2, 4, 7, 7)),
    "conv2d_depthwise_multiplier": (lambda n: n.Conv2d(3, 6, 3, padding="same", groups=3), (1, 3, 5, 5)),
    "conv1d": (lambda n: n.Conv1d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2), (2, 4, 9)),
    "conv_transpose2d": (
        lambda n: n.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
        (2, 3, 4, 4),
    ),
    "conv_transpose2d_groups_dilation": (
        lambda n: n.ConvTranspose2d(4, 6, 3, groups=2, dilation=2),
        (1, 4, 3, 3),
    ),
    "adaptive_avg_odd": (lambda n: n.AdaptiveAvgPool2d((3, 2)), (2, 3, 7, 5)),
    "adaptive_avg_none": (lambda n: n.AdaptiveAvgPool2d((None, 3)), (1, 2, 4, 7)),
    "adaptive_max_odd": (lambda n: n.AdaptiveMaxPool2d((3, 4)), (2, 3, 7, 5)),
    "adaptive_avg_1d": (lambda n: n.AdaptiveAvgPool1d(4), (2, 3, 7)),
    "maxpool_ceil": (lambda n: n.MaxPool2d(3, 2, padding=1, ceil_mode=True), (1, 2, 8, 8)),
    "avgpool_ceil_no_pad_count": (
        lambda n: n.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False),
        (1, 2, 8, 8),
    ),
    "pool1d": (lambda n: n.Sequential(n.MaxPool1d(2, ceil_mode=True), n.AvgPool1d(2)), (1, 2, 9)),
    "activations": (
        lambda n: n.Sequential(
            n.Linear(5, 5),
            n.ReLU6(),
            n.Linear(5, 5),
            n.Hardswish(),
            n.Hardsigmoid(),
            n.SiLU(),
            n.Mish(),
            n.LeakyReLU(0.2),
            n.ELU(0.5),
            n.Softplus(2.0, 1.0),
            n.GELU(approximate="tanh"),
            n.CELU(),
            n.SELU(),
            n.Hardtanh(-0.3, 0.3),
            n.LogSigmoid(),
            n.Softsign(),
        ),
        (3, 5),
    ),
    "group_norm": (lambda n: n.GroupNorm(2, 4), (2, 4, 3, 3)),
    "instance_norm": (lambda n: n.InstanceNorm2d(3, affine=True), (2, 3, 4, 4)),
    "rms_norm": (lambda n: n.RMSNorm([3, 4], eps=1e-5), (2, 3, 4)),
    "rms_norm_default_eps": (lambda n: n.RMSNorm(4), (2, 4)),
    "layer_norm_no_bias": (lambda n: n.LayerNorm(4, bias=False), (2, 4)),
    "flatten_unflatten_identity": (
        lambda n: n.Sequential(n.Flatten(), n.Unflatten(1, (4, 3)), n.Identity()),
        (2, 3, 4),
    ),
    "mha_batch_first": (lambda n: n.MultiheadAttention(8, 2, batch_first=True), (2, 5, 8)),
    "encoder_layer": (lambda n: n.TransformerEncoderLayer(8, 2, 12, dropout=0.0), (5, 2, 8)),
}


@pytest.mark.parametrize("name", list(MODULE_CASES))
def test_module_as_torch(name):
    make, shape = MODULE_CASES[name]
    if name.startswith("mha"):
        base = make

        def make(n):
            class Wrap(n.Module):
                def __init__(self):
                    super().__init__()
                    self.attn = base(n)

                def forward(self, x):
                    return self.attn(x, x, x, need_weights=True)

            return Wrap()

    _module_case(make, shape)


def test_multihead_attention_masks_and_decoder_layer():
    torch.manual_seed(1)
    theirs = torch.nn.TransformerDecoderLayer(8, 2, 10, dropout=0.0)
    ours = gnn.TransformerDecoderLayer(8, 2, 10, dropout=0.0)
    copy_weights(ours, theirs)
    tgt, mem = normal(4, 2, 8), normal(5, 2, 8)
    causal = np.triu(np.ones((4, 4), dtype=bool), 1)
    padding = np.array([[False] * 4 + [True], [False] * 5])

    def fn(lib, layer, a, b):
        return layer(
            a,
            b,
            tgt_mask=causal if lib is np else t(causal),
            memory_key_padding_mask=padding if lib is np else t(padding),
        )

    with torch.no_grad():
        expect = fn(torch, theirs.eval(), t(tgt), t(mem))
    close(run(lambda a, b: fn(np, ours.eval(), a, b), tgt, mem), expect, 1e-5, 1e-5)


def _container_net(n):
    class Net(n.Module):
        def __init__(self):
            super().__init__()
            self.blocks = n.ModuleDict({"a": n.Linear(4, 4), "b": n.Linear(4, 2)})
            self.scales = n.ParameterList(
                [n.Parameter(torch.ones(4) * 2 if n is torch.nn else np.full(4, 2.0))]
            )
            self.extra = n.ParameterDict(
                {"bias": n.Parameter(torch.zeros(2) if n is torch.nn else np.zeros(2))}
            )

        def forward(self, x):
            for key in ["a", "b"]:
                x = self.blocks[key](x * self.scales[0]) if key == "a" else self.blocks[key](x)
            return x + self.extra["bias"]

    return Net()


def test_containers_and_lazy_modules():
    torch.manual_seed(2)
    theirs, ours = _container_net(torch.nn), _container_net(gnn)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    copy_weights(ours, theirs)
    x = normal(3, 4)
    close(run(ours, x), theirs(t(x)).detach())

    lazy = gnn.Sequential(gnn.LazyConv2d(4, 3), gnn.ReLU(), gnn.Flatten(), gnn.LazyLinear(5))
    x = normal(2, 3, 6, 6)
    graph = graphc.trace(lazy, x)
    assert [v.name for v in graph.inputs if graph.kinds[v.name] == "param"] == [
        "0.weight",
        "0.bias",
        "3.weight",
        "3.bias",
    ]
    assert lazy[0].weight.shape == (4, 3, 3, 3) and lazy[3].weight.shape == (5, 64)
    assert type(lazy[3]) is gnn.Linear and type(lazy[0]) is gnn.Conv2d


def test_grouped_conv_is_one_batched_matmul():
    graph = graphc.trace(gnn.Conv2d(8, 8, 3, groups=4), normal(1, 8, 6, 6))
    assert [n.op for n in graph.nodes].count("matmul") == 1
    graph = graphc.trace(gnn.Conv2d(8, 8, 3, groups=8), normal(1, 8, 6, 6))  # depthwise: multiply and sum
    assert [n.op for n in graph.nodes].count("matmul") == 0


# ---------------------------------------------------------------------------- state dicts and errors
def test_load_state_dict_reports_keys_as_torch():
    ours, theirs = gnn.Linear(3, 2), torch.nn.Linear(3, 2)
    state = {"weight": np.zeros((2, 3), np.float32), "extra": np.zeros(1, np.float32)}
    result = ours.load_state_dict(state, strict=False)
    expect = theirs.load_state_dict({k: t(v) for k, v in state.items()}, strict=False)
    assert result.missing_keys == expect.missing_keys == ["bias"]
    assert result.unexpected_keys == expect.unexpected_keys == ["extra"]
    before = ours.weight.copy()
    ours.weight[...] = 1.0
    with pytest.raises(GraphcError) as err:
        ours.load_state_dict(state)
    with pytest.raises(RuntimeError) as terr:
        theirs.load_state_dict({k: t(v) for k, v in state.items()})
    for line in ('Missing key(s) in state_dict: "bias"', 'Unexpected key(s) in state_dict: "extra"'):
        assert line in str(err.value) and line in str(terr.value)
    assert np.all(ours.weight == 1.0) and before.shape == (2, 3)  # strict failure copies nothing
    with pytest.raises(GraphcError, match="size mismatch for weight"):
        ours.load_state_dict({"weight": np.zeros((3, 3), np.float32)}, strict=False)


def test_missing_torch_api_is_a_graphc_error_naming_it():
    here = re.escape("test_port_surface.py:")
    with pytest.raises(GraphcError, match=r"torch\.nn\.Transformer3000 is not implemented"):
        gnn.Transformer3000  # noqa: B018
    with pytest.raises(GraphcError, match=r"torch\.nn\.functional\.fancy_op is not implemented"):
        F.fancy_op  # noqa: B018
    with pytest.raises(GraphcError, match=r"torch\.nn\.functional\.fancy_op is not implemented"):
        graphc.functional.fancy_op  # noqa: B018
    with pytest.raises(GraphcError, match=r"torch\.fancy_fn is not implemented"):
        graphc.fancy_fn  # noqa: B018
    with pytest.raises(
        GraphcError, match=here + r"\d+: Tensor\.stft \(torch\.Tensor\.stft\) is not implemented"
    ):
        graphc.trace(lambda v: v.stft(4), normal(8))
    with pytest.raises(AttributeError):  # hasattr() keeps working
        graphc.trace(lambda v: v.no_such_method, normal(2))
    assert not hasattr(gnn, "__wrapped__")


def test_detach_stops_the_gradient_as_in_torch():
    """``x + (q - x).detach()`` (straight-through) and ``.data``: gradients as PyTorch's."""

    def build(n):
        class Net(n.Module):
            def __init__(self):
                super().__init__()
                self.fc = n.Linear(3, 3)
                self.scale = n.Parameter(torch.full((3,), 0.5) if n is torch.nn else np.full(3, 0.5))

            def forward(self, x):
                h = self.fc(x)
                return h + (h * h - h).detach() + self.scale.data * h

        return Net()

    torch.manual_seed(5)
    theirs, ours = build(torch.nn), build(gnn)
    copy_weights(ours, theirs)
    x, y = normal(4, 3), normal(4, 3)
    step = graphc.compile_train(ours, F.mse_loss, graphc.optim.SGD(lr=0.5), x, y, backend="reference")
    opt = torch.optim.SGD(theirs.parameters(), lr=0.5)
    for _ in range(2):
        loss = step(x, y)
        opt.zero_grad()
        tloss = torch.nn.functional.mse_loss(theirs(t(x)), t(y))
        tloss.backward()
        opt.step()
        np.testing.assert_allclose(loss, tloss.item(), rtol=1e-5)
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[key], value.detach().numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- the second sweep (issue 16)
EXTRA_CASES = {
    "outer": lambda L, a, b: L.outer(a[0, 0], b[0, 1]) + a[0, 0].outer(b[0, 0]),
    "addmm": lambda L, a, b: (
        L.addmm(b[0, 0, :3], a[0], b[0].T) + L.addmm(b[0, 0, :3], a[0], b[0].T, beta=0.5, alpha=2)
    ),
    "lerp": lambda L, a, b: L.lerp(a, b, 0.3) + a.lerp(b, 0.5),
    "logsumexp": lambda L, a, b: (
        L.logsumexp(a, dim=-1) + a.logsumexp((0, 2)).sum() + L.logsumexp(a, 2, True).sum(2)
    ),
    "logsumexp_all_inf": lambda L, a, b: L.logsumexp(a.masked_fill(b > -10, float("-inf")), -1),
    "flip": lambda L, a, b: L.flip(a, dims=[0, 2]) + a.flip(1).flip(-1, 0),
    "roll": lambda L, a, b: L.roll(a, 1, 2) + a.roll((1, -2), (0, 1)) + L.roll(a, 5),
    "diagonal": lambda L, a, b: (
        L.diagonal(a, dim1=1, dim2=2).sum() + a.diagonal(1, 1, 2).sum() + a.diagonal(-1, -1, 1).sum()
    ),
    "diag": lambda L, a, b: (
        L.diag(a[0, 0]).sum(0)
        + L.diag(a[0, 0], 1)[:4, :4].sum(1)
        + L.diag(a[0, 0], -2).sum(0)[:4]
        + L.diag(a[0]).sum()
    ),
    "tensordot": lambda L, a, b: (
        L.tensordot(a, b, dims=([1, 2], [1, 2])) + L.tensordot(a, b.transpose(0, 2), 1).sum((0, 1, 2, 3))
    ),
    "hstack_vstack": lambda L, a, b: (
        L.hstack([a[0], b[0]]).sum() + L.vstack([a[0, 0], b[0, 0]]).sum() + L.hstack([a[0, 0], b[0, 0]]).sum()
    ),
    "clamp_min_max": lambda L, a, b: a.clamp_min(0.1) + L.clamp_max(a, 0.2) + L.clamp_min(a, b),
    "any_all": lambda L, a, b: (
        L.any(a > 1, dim=1).long() + (a > -1).all(1).long() + (a > 0).any().long() + L.all(a > -5).long()
    ),
    "norm": lambda L, a, b: (
        a.norm(dim=-1)
        + L.norm(a, p=1, dim=2)
        + a.norm()
        + a.norm(p=float("inf"), dim=-1)
        + a.norm(3, -1, True).sum(-1)
    ),
    "new_tensor": lambda L, a, b: a + a.new_tensor([1.0, 2.0, 3.0, 4.0]),
    "erf": lambda L, a, b: L.erf(a),
    "max_dim_is_a_tuple": lambda L, a, b: (
        L.max(a, dim=1)[0]
        + a.max(1, keepdim=True)[1].float()
        + a.min(-2)[1].float()
        + a.max(-1)[-2].sum(-1, True)
    ),
    "range_and_tensor_index": lambda L, a, b: (
        a[range(2), (b[:, 0, 0] > 0).long()] + a[:, (b[0, 0] > 0).long(), 1]
    ),
    "tensor_index_pair": lambda L, a, b: a[(b[:, 0, 0] > 0).long(), :, (b[:, 1, 0] > 0).long() + 1],
    "index_fill_add_take": lambda L, a, b: (
        a.index_fill(1, L.tensor([0, 2]), -1.0)
        + a.index_fill(2, (b[0, 0, :2] > 0).long(), 2.0)
        + a.index_add(2, L.tensor([3, 0, 3, 1]), b * 2)
        + L.take_along_dim(a, b.argsort(-1)[:, :1], dim=2)
    ),
    "scatter_inplace": lambda L, a, b: (
        L.zeros(2, 3, 4).scatter_(2, b.argmax(-1, keepdim=True), 1.0)
        + (a * 1).scatter_add_(1, (b > 0).long(), b)
    ),
    "sum_mean_dtype": lambda L, a, b: (
        a.sum(1, dtype=L.float64) + a.mean(dtype=L.float64) + L.sum(a, 1, dtype=L.float64)
    ),
    "int_then_tensor_index": lambda L, a, b: a[1, :, (b[0, :2, 0] > 0).long()],
}


@pytest.mark.parametrize("name", list(EXTRA_CASES))
def test_more_functions_as_torch(name):
    """Values of a compiled plan, and (for float results) eager float64 gradients, as PyTorch's."""
    fn = EXTRA_CASES[name]
    a, b = normal(2, 3, 4), normal(2, 3, 4)
    close(run(lambda x, y: fn(graphc, x, y), a, b), fn(torch, t(a), t(b)), rtol=1e-5, atol=1e-5)
    ta, tb = (torch.tensor(v.astype(np.float64), requires_grad=True) for v in (a, b))
    expect = fn(torch, ta, tb)
    if not expect.dtype.is_floating_point or not expect.requires_grad:
        return
    w = RNG.standard_normal(expect.shape)
    (expect * torch.tensor(w)).sum().backward()

    class Net(gnn.Module):
        def __init__(self):
            super().__init__()
            self.a = gnn.Parameter(a.astype(np.float64), dtype=np.float64)
            self.b = gnn.Parameter(b.astype(np.float64), dtype=np.float64)

        def forward(self, weights):
            return (fn(graphc, self.a, self.b) * weights).sum()

    net = Net()
    net(w).backward()
    np.testing.assert_allclose(net.a.grad, ta.grad.numpy(), rtol=1e-9, atol=1e-12)
    if tb.grad is not None and tb.grad.any():
        np.testing.assert_allclose(net.b.grad, tb.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_item_assignment_with_traced_indices_and_into_a_clone():
    """``x.clone()[...] = v`` on an input (was: 'in-place operation on graph input'), ``x[idx] = v`` with a
    traced index (was: not supported), and ``logits[logits < kth] = -inf`` (nanoGPT's top-k)."""

    def fn(L, x, y):
        out = x.clone()
        out[:, 1:] = x[:, :-1] * 2
        out[(y > 0).long().sum(-1)] = 0.5  # repeated rows: the same value either way
        out[range(4), (y[:, 0] > 0).long() + 1] = y[:, 1]
        kth, _ = L.topk(x, 2)
        top = x.clone()
        top[top < kth[:, [-1]]] = -float("Inf")
        return out, top

    x, y = normal(4, 3), normal(4, 3)
    before = x.copy()
    for ours, theirs in zip(run(lambda a, b: fn(graphc, a, b), x, y), fn(torch, t(x), t(y))):
        close(ours, theirs)
    np.testing.assert_array_equal(x, before)  # the caller's input is unchanged


def test_writing_into_a_reshape_view_changes_its_base():
    """d2l's masked_softmax: ``X.reshape(-1, n)[~mask] = v`` (was: 'in-place operation on a view');
    as in PyTorch the base sees the write too."""

    def fn(L, scores, valid_lens):
        shape = scores.shape
        flat = scores.reshape(-1, shape[-1])
        mask = L.arange(shape[-1], dtype=L.float32)[None, :] < valid_lens.repeat_interleave(shape[1])[:, None]
        flat[~mask] = -1e6
        return L.softmax(flat.reshape(shape), dim=-1), scores.sum(-1)

    scores, lens = normal(2, 3, 4), np.array([2, 3], dtype=np.float32)
    for ours, theirs in zip(
        run(lambda s, v: fn(graphc, s * 1, v), scores, lens), fn(torch, t(scores) * 1, t(lens))
    ):
        close(ours, theirs)


def test_trunc_normal_init_stays_in_bounds():
    w = gnn.Parameter(np.zeros((64, 64), dtype=np.float32))
    gnn.init.trunc_normal_(w, std=0.02, a=-0.03, b=0.03)
    assert np.abs(np.asarray(w)).max() <= 0.03 and 0.01 < np.asarray(w).std() < 0.02
