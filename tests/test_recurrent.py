"""nn.RNN / nn.LSTM / nn.GRU and their cells against PyTorch with the same weights."""

import numpy as np
import pytest
import torch

import graphc
from graphc import nn
from graphc.passes.autodiff import grad

PAIRS = [(nn.LSTM, torch.nn.LSTM), (nn.GRU, torch.nn.GRU)]


def _twin(cls, tcls, *args, **kwargs):
    torch.manual_seed(0)
    ref = tcls(*args, **kwargs)
    mine = cls(*args, **kwargs)
    mine.load_state_dict(ref.state_dict())  # PyTorch's names and shapes: loads unchanged
    return mine, ref


def _flat(result):
    out, h = result
    return [out, *h] if isinstance(h, tuple) else [out, h]


def test_parameter_names_and_shapes_are_pytorchs():
    for cls, tcls in [*PAIRS, (nn.RNN, torch.nn.RNN)]:
        mine, ref = _twin(cls, tcls, 4, 6, num_layers=2, bidirectional=True, bias=True)
        ours = {k: tuple(v.shape) for k, v in mine.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        assert ours == theirs
    cell_names = {k for k, _ in nn.LSTMCell(3, 5).named_parameters()}
    assert cell_names == {k for k, _ in torch.nn.LSTMCell(3, 5).named_parameters()}


@pytest.mark.parametrize("cls,tcls", PAIRS, ids=["LSTM", "GRU"])
def test_two_layer_bidirectional_batch_first_forward_and_gradients(cls, tcls, rng):
    mine, ref = _twin(cls, tcls, 5, 7, num_layers=2, bidirectional=True, batch_first=True)
    x = rng.standard_normal((3, 6, 5)).astype(np.float32)

    def loss(x):
        outs = _flat(mine(x))
        return (outs[0] * outs[0]).sum() + (outs[1] * 0.5).sum(), *outs

    g = graphc.trace(loss, x)
    joint, index = grad(g, 0)
    got = graphc.compile_graph(joint)(x)

    outs = _flat(ref(torch.tensor(x)))
    total = (outs[0] * outs[0]).sum() + (outs[1] * 0.5).sum()
    total.backward()
    for a, b in zip(got[: len(outs) + 1], [total, *outs]):
        np.testing.assert_allclose(a, b.detach().numpy(), atol=1e-4, rtol=1e-4)
    params = dict(ref.named_parameters())
    assert set(index) == set(params)
    for name, i in index.items():
        np.testing.assert_allclose(got[i], params[name].grad.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_with_initial_state_and_no_bias(nonlinearity, rng):
    mine, ref = _twin(nn.RNN, torch.nn.RNN, 3, 4, num_layers=2, bias=False, nonlinearity=nonlinearity)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    h0 = rng.standard_normal((2, 2, 4)).astype(np.float32)
    got = graphc.compile(lambda x, h0: mine(x, h0), x, h0)(x, h0)
    want = ref(torch.tensor(x), torch.tensor(h0))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b.detach().numpy(), atol=1e-5)


def test_unbatched_lstm_with_state(rng):
    mine, ref = _twin(nn.LSTM, torch.nn.LSTM, 3, 4)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    h0, c0 = (rng.standard_normal((1, 4)).astype(np.float32) for _ in range(2))
    got = graphc.compile(lambda x, h, c: _flat(mine(x, (h, c))), x, h0, c0)(x, h0, c0)
    want = _flat(ref(torch.tensor(x), (torch.tensor(h0), torch.tensor(c0))))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b.detach().numpy(), atol=1e-5)


def test_dropout_between_layers_only_in_training(rng):
    # p = 1 zeroes the second layer's input in training, deterministically, as in PyTorch.
    mine, ref = _twin(nn.GRU, torch.nn.GRU, 3, 4, num_layers=2, dropout=1.0)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    for train in (True, False):
        mine.train(train)
        ref.train(train)
        got = graphc.compile(lambda x: mine(x), x)(x)
        want = ref(torch.tensor(x))
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b.detach().numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "cls,tcls",
    [(nn.RNNCell, torch.nn.RNNCell), (nn.LSTMCell, torch.nn.LSTMCell), (nn.GRUCell, torch.nn.GRUCell)],
)
def test_cells(cls, tcls, rng):
    mine, ref = _twin(cls, tcls, 3, 5)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    got = graphc.compile(lambda x: mine(x), x)(x)
    want = ref(torch.tensor(x))
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b.detach().numpy(), atol=1e-5)


def test_eager_mode_runs_the_loop(rng):
    mine, ref = _twin(nn.GRU, torch.nn.GRU, 3, 4, num_layers=2, bidirectional=True)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    out, h = mine(x)  # called on arrays, outside any trace: eager mode
    want_out, want_h = ref(torch.tensor(x))
    np.testing.assert_allclose(np.asarray(out), want_out.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(h), want_h.detach().numpy(), atol=1e-5)


def test_lstm_training_graph_keeps_the_loops_lean(rng):
    # The input projection and its weight gradient are each one 2-D GEMM over all T * B rows (no
    # batched GEMM of T products summed after); the backward step builds the gate gradient with
    # one concat (no zero pad per gate), written by the gates' pointwise kernel as its epilogue,
    # and accumulates no bias gradient: two kernels (gates, GEMM); the forward step's gate slices
    # are that kernel's prologue; the two biases' gradients share one sum; the gradients are still torch's.
    mine, ref = _twin(nn.LSTM, torch.nn.LSTM, 5, 4, batch_first=True)
    x = rng.standard_normal((3, 6, 5)).astype(np.float32)

    def loss(x):
        out, _ = mine(x)
        return (out * out).sum()

    joint, index = grad(graphc.trace(loss, x), 0)
    opt = graphc.passes.optimize(joint)
    top = [n for n in opt.nodes if n.op != "scan"]
    matmuls = [n for n in top if n.op == "matmul" or (n.op == "fused" and n.attrs["kind"] == "matmul")]
    assert matmuls and all(n.outputs[0].type.rank == 2 for n in matmuls)
    _, backward = sorted((n for n in opt.nodes if n.op == "scan"), key=lambda n: n.attrs["reverse"])
    assert backward.attrs["n_carry"] == 2  # dh, dc: no bias-gradient accumulator
    ops = backward.bodies[0].op_counts()
    assert "pad" not in ops and "concat" not in ops and ops.get("sum", 0) == 0
    assert sum(ops.values()) == 2  # the gates' pointwise kernel (the concat its epilogue), the GEMM
    gates = next(n for n in backward.bodies[0].nodes if n.attrs.get("kind") == "pointwise")
    assert gates.subgraph.op_counts().get("concat") == 1
    forward, _ = sorted((n for n in opt.nodes if n.op == "scan"), key=lambda n: n.attrs["reverse"])
    assert "slice" not in forward.bodies[0].op_counts()  # read in place by the gates' kernel
    assert sum(n.op == "sum" and n.inputs[0].type.rank >= 2 for n in top) == 1  # b_ih and b_hh share it
    # The loops read W_hh itself (the body transposes it, a view): no copy of it made per call,
    # and its gradient is still one GEMM after the loop (the backward carries dh and dc only).
    assert not [n for n in top if n.op == "transpose" and n.inputs[0].type.rank == 2]
    shapes = [tuple(v.shape) for v in forward.inputs]
    assert (16, 4) in shapes and (4, 16) not in shapes  # W_hh [4 H, H] as it is, not its transpose

    got = graphc.compile_graph(joint)(x)
    out, _ = ref(torch.tensor(x))
    (out * out).sum().backward()
    params = dict(ref.named_parameters())
    for name, i in index.items():
        np.testing.assert_allclose(got[i], params[name].grad.numpy(), atol=1e-4, rtol=1e-4)
