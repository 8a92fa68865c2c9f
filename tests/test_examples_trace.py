"""Every example traces into a verified graph; outputs match NumPy formulas and PyTorch twins."""

import importlib.util
import pathlib

import numpy as np
import pytest

from graphc import ir
from graphc.kernels.reference import execute
from graphc.tracing import trace


def run_graph(graph, *arrays):
    """Execute a traced graph on data arrays (in data-input order) with the reference kernels."""
    outs = execute(graph, {v.name: np.asarray(a) for v, a in zip(graph.data_inputs, arrays)})
    return outs[0] if len(outs) == 1 else outs


EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
NAMES = ["mlp", "my_sequential", "nest_mlp", "cnn", "transformer"]


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def close(a, b, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", NAMES)
def test_example_traces_and_verifies(name):
    mod = load(name)
    model, inputs = mod.model(), mod.example_inputs()
    assert isinstance(inputs, tuple) and all(isinstance(a, np.ndarray) for a in inputs)
    g = trace(model, *inputs)
    ir.verify(g)
    assert [v.name for v in g.inputs_of_kind("param")] == [n for n, _ in model.named_parameters()]
    assert all(n.source and ".py:" in n.source for n in g.nodes)
    # sources are user lines (the example, or this file for layers inside nn.Sequential)
    assert not any("graphc/" in n.source for n in g.nodes)
    text = ir.print_graph(g)
    assert ir.print_graph(ir.parse_graph(text)) == text
    # inputs are fixed by a seed
    for a, b in zip(inputs, mod.example_inputs()):
        np.testing.assert_array_equal(a, b)


def test_mlp_matches_numpy():
    mod = load("mlp")
    m = mod.model()
    (x,) = mod.example_inputs()
    assert x.shape == (64, 20)
    ref = np.maximum(x @ m.hidden.weight.T + m.hidden.bias, 0) @ m.out.weight.T + m.out.bias
    close(run_graph(trace(m, x), x), ref)


def test_my_sequential_matches_numpy():
    mod = load("my_sequential")
    m = mod.model()
    (x,) = mod.example_inputs()
    l0, l2 = m._modules["0"], m._modules["2"]
    ref = np.maximum(x @ l0.weight.T + l0.bias, 0) @ l2.weight.T + l2.bias
    close(run_graph(trace(m, x), x), ref)
    assert list(m.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_nest_mlp_chimera_sharing_and_constant():
    mod = load("nest_mlp")
    m = mod.model()
    (x,) = mod.example_inputs()
    g = trace(m, x)
    params = [v.name for v in g.inputs_of_kind("param")]
    assert params.count("2.linear.weight") == 1 and "2.rand_weight" not in params
    assert g.kinds["2.rand_weight"] == "const"
    assert len(params) == 10  # NestMLP 6, Linear 2, FixedHiddenMLP's one shared Linear 2
    nest, lin, fixed = m[0], m[1], m[2]

    def aff(layer, h):
        return h @ layer.weight.T + layer.bias

    h = np.maximum(aff(nest.net[0], x), 0)
    h = np.maximum(aff(nest.net[2], h), 0)
    h = aff(lin, aff(nest.linear, h))
    h = aff(fixed.linear, h)
    h = np.maximum(h @ fixed.rand_weight + 1, 0)
    ref = aff(fixed.linear, h).sum()
    close(run_graph(g, x), ref, rtol=1e-4)


def test_cnn_shapes():
    mod = load("cnn")
    m = mod.model()
    (x,) = mod.example_inputs()
    assert x.shape == (32, 3, 32, 32)
    g = trace(m, x)
    assert g.outputs[0].shape == (32, 10)
    assert [n for n, _ in m.named_parameters()] == [
        "0.weight",
        "0.bias",
        "3.weight",
        "3.bias",
        "7.weight",
        "7.bias",
    ]
    assert m[7].weight.shape == (10, 4096)


def test_transformer_attention_uses_matmuls():
    mod = load("transformer")
    m = mod.model()
    (x,) = mod.example_inputs()
    assert x.shape == (8, 128, 256)
    g = trace(m, x)
    assert g.outputs[0].shape == (8, 128, 256)
    assert not g.updates  # eval mode: no dropout state
    assert g.op_counts()["matmul"] == 6  # qkv, scores, attn @ v, out_proj, linear1, linear2


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_examples_match_torch_twins(name):
    torch = pytest.importorskip("torch")
    mod = load(name)
    m, tm = mod.model(), mod.torch_model()
    assert list(m.state_dict()) == list(tm.state_dict())
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in m.state_dict().items()})
    inputs = mod.example_inputs()
    if name == "transformer":  # keep the test small: the same layer on a shorter batch
        inputs = (inputs[0][:2, :16],)
    with torch.no_grad():
        ref = tm(*(torch.from_numpy(a) for a in inputs)).numpy()
    close(run_graph(trace(m, *inputs), *inputs), ref, rtol=1e-4, atol=1e-4)


def test_transformer_matches_torchs_own_encoder_layer():
    # The twin above is the same code in torch; torch.nn.TransformerEncoderLayer is torch's own
    # implementation, and the example's parameter names load into it unchanged.
    torch = pytest.importorskip("torch")
    mod = load("transformer")
    m = mod.model()
    ref_layer = torch.nn.TransformerEncoderLayer(
        mod.D_MODEL, mod.N_HEADS, mod.D_FF, batch_first=True, dtype=torch.float64
    ).eval()
    ref_layer.load_state_dict(
        {k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in m.state_dict().items()}
    )
    (x,) = mod.example_inputs()
    x = x[:2, :16]
    with torch.no_grad():
        ref = ref_layer(torch.from_numpy(x.astype(np.float64))).numpy()
    close(run_graph(trace(m, x), x), ref, rtol=1e-4, atol=1e-4)


def test_mlp_builder_names_deeper_layers():
    mod = load("mlp")
    from graphc import functional as F
    from graphc import nn

    m = mod.build(nn, F, (8, 16, 16, 4))
    assert [n for n, _ in m.named_parameters()] == [
        f"{layer}.{p}" for layer in ("hidden", "hidden2", "out") for p in ("weight", "bias")
    ]
    x = np.random.default_rng(0).random((3, 8), dtype=np.float32)

    def aff(layer, h):
        return h @ layer.weight.T + layer.bias

    ref = aff(m.out, np.maximum(aff(m.hidden2, np.maximum(aff(m.hidden, x), 0)), 0))
    close(run_graph(trace(m, x), x), ref)
