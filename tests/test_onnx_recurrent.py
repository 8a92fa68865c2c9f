"""ONNX LSTM, GRU and RNN import (graphc/onnx/ops/recurrent.py), checked against ONNX Runtime, onnx's
NumPy reference (layout=1, which ONNX Runtime lacks; float64) and PyTorch (torch.onnx.export of
torch.nn.LSTM/GRU/RNN, and the gradients of a compile_train step)."""

import io
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import graphc  # noqa: E402
import graphc.onnx  # noqa: E402
from graphc.ir import GraphcError  # noqa: E402

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_ELEM = {
    np.float16: TensorProto.FLOAT16,
    np.float32: TensorProto.FLOAT,
    np.float64: TensorProto.DOUBLE,
    np.int32: TensorProto.INT32,
}


def rnn_model(op, graph_inputs, order, inits, n_out, opset=22, outputs=None, **attrs):
    """A one-node model: ``order`` names the node's inputs ("" = absent), ``graph_inputs`` and
    ``inits`` hold (name, array) of those given at run time and as initializers."""
    outs = outputs or ["Y", "Y_h", "Y_c"][:n_out]
    node = helper.make_node(op, order, outs, name="rnn", **attrs)
    elem = _ELEM[graph_inputs[0][1].dtype.type]
    graph = helper.make_graph(
        [node],
        "t",
        [helper.make_tensor_value_info(n, _ELEM[a.dtype.type], a.shape) for n, a in graph_inputs],
        [helper.make_tensor_value_info(n, elem, None) for n in outs if n],
        [numpy_helper.from_array(a, n) for n, a in inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def make_case(
    op,
    seed=0,
    steps=4,
    batch=3,
    features=2,
    hidden=3,
    direction="forward",
    bias=True,
    h0=False,
    c0=False,
    peepholes=False,
    lens=None,
    lens_at_run_time=False,
    layout=0,
    dtype=np.float32,
    opset=22,
    outputs=None,
    **attrs,
):
    """A random one-node model of ``op`` and its graph inputs (X first)."""
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1
    g = _GATES[op] * hidden

    def rand(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x = rand(batch, steps, features) if layout else rand(steps, batch, features)
    state = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
    optional = [
        ("B", rand(dirs, 2 * g) if bias else None),
        ("L", None if lens is None else np.array(lens, np.int32)),
        ("H0", rand(*state) if h0 else None),
    ]
    if op == "LSTM":
        optional += [
            ("C0", rand(*state) if c0 else None),
            ("P", rand(dirs, 3 * hidden) if peepholes else None),
        ]
    while optional and optional[-1][1] is None:
        optional.pop()
    graph_inputs = [("X", x)]
    inits = [("W", rand(dirs, g, features)), ("R", rand(dirs, g, hidden))]
    order = ["X", "W", "R"]
    for name, arr in optional:
        order.append("" if arr is None else name)
        if arr is not None:
            (graph_inputs if name == "L" and lens_at_run_time else inits).append((name, arr))
    if layout:
        attrs["layout"] = 1
    n_out = 3 if op == "LSTM" else 2
    model = rnn_model(
        op,
        graph_inputs,
        order,
        inits,
        n_out,
        opset,
        outputs,
        direction=direction,
        hidden_size=hidden,
        **attrs,
    )
    return model, [a for _, a in graph_inputs]


def ort_run(model, arrays):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), arrays)})


def graphc_run(model, arrays, backend="reference"):
    out = graphc.compile(graphc.onnx.load(model), *arrays, backend=backend)(*arrays)
    return [np.asarray(o) for o in out] if isinstance(out, (tuple, list)) else [np.asarray(out)]


def check_close(got, expected, tol=1e-5):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol)


# (op, make_case keyword arguments)
ORT_CASES = [
    ("LSTM", dict(direction="bidirectional", h0=True, c0=True, peepholes=True)),
    ("LSTM", dict(direction="reverse", h0=True, lens=[4, 2, 1], peepholes=True)),
    ("LSTM", dict(input_forget=1, clip=0.4, peepholes=True, c0=True)),
    ("LSTM", dict(direction="bidirectional", bias=False, lens=[3, 4, 0], lens_at_run_time=True, h0=True)),
    (
        "LSTM",
        dict(
            activations=["HardSigmoid", "Elu", "Softsign", "Sigmoid", "Affine", "Relu"],
            activation_alpha=[0.3, 0.5, 2.0],
            activation_beta=[0.4, 0.1],
            direction="bidirectional",
        ),
    ),
    ("GRU", dict(direction="bidirectional", h0=True)),
    ("GRU", dict(direction="bidirectional", h0=True, linear_before_reset=1, lens=[1, 4, 2])),
    ("GRU", dict(direction="reverse", bias=False, clip=0.5, linear_before_reset=1)),
    (
        "GRU",
        dict(activations=["ScaledTanh", "LeakyRelu"], activation_alpha=[0.9, 0.2], activation_beta=[0.7]),
    ),
    ("RNN", dict(direction="bidirectional", h0=True, lens=[2, 4, 3], lens_at_run_time=True)),
    ("RNN", dict(direction="reverse", activations=["Relu"], clip=1.5)),
    ("RNN", dict(activations=["ThresholdedRelu"], activation_alpha=[0.2], h0=True)),
    ("RNN", dict(activations=["Softplus"], h0=True, opset=7)),
    ("LSTM", dict(direction="bidirectional", h0=True, opset=14, outputs=["", "Y_h"])),
    ("GRU", dict(opset=7, outputs=["", "Y_h"], h0=True)),
]


@pytest.mark.parametrize("op, kw", ORT_CASES, ids=[f"{op}-{i}" for i, (op, _) in enumerate(ORT_CASES)])
def test_matches_onnxruntime(op, kw):
    model, arrays = make_case(op, seed=len(kw), **kw)
    check_close(graphc_run(model, arrays), ort_run(model, arrays))


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_layout_1_and_float64_match_the_onnx_reference(op):
    """layout=1 (batch first; ONNX Runtime's CPU kernels refuse it) and float64, vs onnx's NumPy
    reference implementation; the run-time initial_h is laid out [batch, dirs, hidden] too."""
    for dtype in (np.float32, np.float64):
        model, arrays = make_case(op, direction="bidirectional", h0=True, c0=True, layout=1, dtype=dtype)
        expected = ReferenceEvaluator(model).run(None, {"X": arrays[0]})
        check_close(graphc_run(model, arrays), [np.asarray(e) for e in expected], 1e-5)


def test_float16_is_computed_in_float32_and_rounded_once():
    model, arrays = make_case("LSTM", direction="bidirectional", h0=True, c0=True, dtype=np.float16)
    model32, arrays32 = make_case("LSTM", direction="bidirectional", h0=True, c0=True, dtype=np.float32)
    # the float32 model with the float16 model's values
    for init, init16 in zip(model32.graph.initializer, model.graph.initializer):
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init16).astype(np.float32), init.name))
    expected = ort_run(model32, [arrays[0].astype(np.float32)])
    got = graphc_run(model, arrays)
    for g, e in zip(got, expected):
        assert g.dtype == np.float16
        np.testing.assert_allclose(g.astype(np.float32), e.astype(np.float16).astype(np.float32), atol=2e-3)


def test_each_direction_is_one_scan_whatever_the_length():
    model, arrays = make_case("LSTM", steps=40, direction="bidirectional", h0=True)
    ops = [n.op for n in graphc.trace(graphc.onnx.load(model), *arrays).nodes]
    assert ops.count("scan") == 2
    assert len(ops) < 60  # not unrolled


def test_cpu_backend_matches_onnxruntime():
    model, arrays = make_case(
        "GRU", direction="bidirectional", h0=True, lens=[4, 1, 3], linear_before_reset=1
    )
    check_close(graphc_run(model, arrays, backend="cpu"), ort_run(model, arrays))


# ---------------------------------------------------------------------------- torch.onnx.export
class _Wrap(torch.nn.Module):
    """torch's recurrent layer with every output flattened (LSTM's (h, c) too)."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, h0, *c0):
        state = (h0, c0[0]) if c0 else h0
        out, state = self.rnn(x, state)
        return (out, *state) if c0 else (out, state)


def _export(module, args):
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, f, dynamo=False, opset_version=14)
    return onnx.load_from_string(f.getvalue())


@pytest.mark.parametrize("cls", [torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN])
def test_torch_export_imports(cls):
    """torch.nn.LSTM/GRU/RNN (2 layers, bidirectional, batch_first), exported with initial states
    as graph inputs, give torch's outputs."""
    torch.manual_seed(0)
    kw = dict(nonlinearity="relu") if cls is torch.nn.RNN else {}
    rnn = cls(3, 4, num_layers=2, bidirectional=True, batch_first=True, **kw).eval()
    x, h0 = torch.randn(2, 5, 3), torch.randn(4, 2, 4)
    args = (x, h0, torch.randn(4, 2, 4)) if cls is torch.nn.LSTM else (x, h0)
    model = _export(_Wrap(rnn), args)
    assert {n.op_type for n in model.graph.node} & {"LSTM", "GRU", "RNN"}
    with torch.no_grad():
        expected = [t.numpy() for t in _Wrap(rnn)(*args)]
    check_close(graphc_run(model, [a.numpy() for a in args]), expected, 1e-5)


def _onnx_layout(mode, rnn, name, suffixes):
    """torch's layer-0 tensor ``name`` (weight_ih, weight_hh, bias) in ONNX's W/R/B layout: gates
    reordered (LSTM i f g o -> i o f c, GRU r z n -> z r h), the directions stacked."""
    order = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2]}[mode]

    def gates(t):
        blocks = t.chunk(len(order), 0)
        return torch.cat([blocks[i] for i in order], 0)

    per_dir = []
    for sfx in suffixes:
        if name == "bias":
            per_dir.append(
                torch.cat([gates(getattr(rnn, f"bias_ih{sfx}")), gates(getattr(rnn, f"bias_hh{sfx}"))])
            )
        else:
            per_dir.append(gates(getattr(rnn, f"{name}{sfx}")))
    return torch.stack(per_dir)


@pytest.mark.parametrize("cls", [torch.nn.LSTM, torch.nn.GRU])
def test_compile_train_gradients_match_torch_autograd(cls):
    """One SGD step (lr 1) of compile_train on an imported bidirectional layer changes W, R and B by
    minus torch's gradients of the same MSE loss."""
    torch.manual_seed(1)
    rnn = cls(3, 4, bidirectional=True, batch_first=True)

    class Out(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn

        def forward(self, x):
            return self.rnn(x)[0]

    x, target = torch.randn(2, 5, 3), torch.randn(2, 5, 8)
    model = _export(Out(), (x,))
    node = next(n for n in model.graph.node if n.op_type == cls.__name__)
    m = graphc.onnx.load(model)
    pname = {onnx_name: p for p, onnx_name in m.onnx_names.items()}
    before = {k: np.array(getattr(m, pname[node.input[k]]).numpy()) for k in (1, 2, 3)}
    step = graphc.compile_train(
        m,
        graphc.functional.mse_loss,
        graphc.optim.SGD(lr=1.0),
        x.numpy(),
        target.numpy(),
        backend="reference",
    )
    step(x.numpy(), target.numpy())
    torch.nn.functional.mse_loss(rnn(x)[0], target).backward()
    mode = cls.__name__
    for k, name in ((1, "weight_ih_l0"), (2, "weight_hh_l0"), (3, "bias")):
        base = name if name == "bias" else name[: -len("_l0")]
        sfx = ["_l0", "_l0_reverse"]
        with torch.no_grad():
            np.testing.assert_allclose(before[k], _onnx_layout(mode, rnn, base, sfx).numpy(), atol=1e-7)
        grads = _onnx_layout(mode, _Grads(rnn), base, sfx).numpy()  # in ONNX's layout
        delta = np.array(getattr(m, pname[node.input[k]]).numpy()) - before[k]
        np.testing.assert_allclose(delta, -grads, atol=2e-5, rtol=1e-4)


def test_masked_lstm_gradients_match_torch_per_sequence():
    """With sequence_lens [4, 2], compile_train's gradients equal torch's of each entry run on its
    own prefix (Y zero past it): the masks inside the scan pass the gradient only where they should."""
    torch.manual_seed(2)
    rnn = torch.nn.LSTM(2, 3)
    x, target, lens = torch.randn(4, 2, 2), torch.randn(4, 1, 2, 3), [4, 2]
    with torch.no_grad():
        w, r, b = (
            _onnx_layout("LSTM", rnn, name, ["_l0"]).numpy() for name in ("weight_ih", "weight_hh", "bias")
        )
    inits = [("W", w), ("R", r), ("B", b), ("L", np.array(lens, np.int32))]
    model = rnn_model("LSTM", [("X", x.numpy())], ["X", "W", "R", "B", "L"], inits, 1, hidden_size=3)
    m = graphc.onnx.load(model)
    pname = {onnx_name: p for p, onnx_name in m.onnx_names.items()}
    before = {k: np.array(getattr(m, pname[k]).numpy()) for k in ("W", "R", "B")}
    step = graphc.compile_train(
        m,
        graphc.functional.mse_loss,
        graphc.optim.SGD(lr=1.0),
        x.numpy(),
        target.numpy(),
        backend="reference",
    )
    step(x.numpy(), target.numpy())
    ys = []
    for i, n in enumerate(lens):
        y = rnn(x[:n, i : i + 1])[0]
        ys.append(torch.cat([y, torch.zeros(4 - n, 1, 3)]))
    torch.nn.functional.mse_loss(torch.cat(ys, 1).unsqueeze(1), target).backward()
    for k, name in (("W", "weight_ih"), ("R", "weight_hh"), ("B", "bias")):
        grads = _onnx_layout("LSTM", _Grads(rnn), name, ["_l0"]).numpy()
        delta = np.array(getattr(m, pname[k]).numpy()) - before[k]
        np.testing.assert_allclose(delta, -grads, atol=2e-5, rtol=1e-4)


class _Grads:
    """A torch module's parameters' ``.grad`` under the parameters' names."""

    def __init__(self, module):
        self.module = module

    def __getattr__(self, name):
        return getattr(self.module, name).grad


# ---------------------------------------------------------------------------- errors
ERROR_CASES = [
    ("LSTM", dict(direction="sideways"), "attribute 'direction' must be one of"),
    ("GRU", dict(activations=["Sigmoid", "Gelu"]), "activation 'Gelu' is not supported"),
    (
        "RNN",
        dict(activations=["Tanh", "Tanh"], direction="bidirectional", activation_alpha=[1.0]),
        "take 0/0",
    ),
    ("LSTM", dict(activations=["Sigmoid", "Tanh"]), "must name 3 function"),
    ("RNN", dict(activations=["ScaledTanh"], activation_alpha=[1.0]), "ScaledTanh needs its alpha and beta"),
    ("LSTM", dict(clip=-1.0), "'clip' must be positive"),
    ("GRU", dict(linear_before_reset=2), "'linear_before_reset' must be in"),
    ("RNN", dict(input_forget=1), "unknown attribute"),
    ("LSTM", dict(layout=1, opset=7), "'layout' exists from opset 14"),
    ("LSTM", dict(lens=[4, 5, 1]), r"sequence_lens\) must lie in \[0, 4\]"),
]


@pytest.mark.parametrize("op, kw, match", ERROR_CASES, ids=[m[:24] for _, _, m in ERROR_CASES])
def test_bad_attributes_are_graphc_errors_naming_the_node(op, kw, match):
    model, arrays = make_case(op, **kw)
    with pytest.raises(GraphcError, match=match) as err:
        graphc_run(model, arrays)
    assert "ONNX node 'rnn'" in str(err.value)


def test_hidden_size_must_match_r():
    model, arrays = make_case("LSTM", hidden=3)
    attr = next(a for a in model.graph.node[0].attribute if a.name == "hidden_size")
    attr.i = 5
    with pytest.raises(GraphcError, match=r"ONNX node 'rnn' \(LSTM\): hidden_size=5 does not match input 2"):
        graphc_run(model, arrays)


def test_w_of_the_wrong_shape_is_a_graphc_error():
    model, arrays = make_case("GRU", direction="bidirectional")
    w = model.graph.initializer[0]
    w.CopyFrom(numpy_helper.from_array(np.zeros((1, 9, 2), np.float32), "W"))
    with pytest.raises(GraphcError, match=r"input 1 \(W\) must have shape \[2, 9, 2\]"):
        graphc_run(model, arrays)
