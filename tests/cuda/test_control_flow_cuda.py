"""cond / while_loop / scan on device='cuda' (device sub-plans, kernels/cuda/control_flow.py) against
NumPy loops, PyTorch (nn.LSTM / nn.GRU, forward and gradients), eager mode and the reference
backend; simulator-sized (the whole file runs in ~10 s)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import graphc
from graphc import GraphcError, nn
from graphc import control_flow as cf
from graphc.passes.autodiff import grad
from graphc.runtime import load_plan

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # control_flow_cases
from control_flow_cases import nested_loops, nested_loops_numpy  # noqa: E402

pytestmark = pytest.mark.cudasim
ROOT = Path(__file__).resolve().parents[2]


def _cuda(fn, *arrays, **options):
    """``fn`` compiled for the GPU (a DevicePlan; ``options`` go to ``graphc.compile``)."""
    return graphc.compile(fn, *arrays, device="cuda", **options)


def _reference(fn, *arrays):
    """``fn`` on ``arrays`` by the reference backend (NumPy kernels, bodies run with ``execute``)."""
    return graphc.compile(fn, *arrays, backend="reference")(*arrays)


def _outs(result) -> list[np.ndarray]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _close(got, expected, tol=1e-5) -> None:
    got, expected = _outs(got), _outs(expected)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol)


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


# ---------------------------------------------------------------------------- cond
def test_cond_takes_either_branch_on_the_device():
    w = _rng().standard_normal(3).astype(np.float32)

    def fn(x):
        return cf.cond(x.sum() > 0, lambda a: (a * w).exp(), lambda a: a - w, x)

    pos = (np.abs(w) + 1).astype(np.float32)
    plan = _cuda(fn, pos)
    assert "cond" in plan.graph.op_counts()
    for x in (pos, -pos):
        _close(plan(x), np.exp(x * w) if x.sum() > 0 else x - w)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_cond_on_a_constant_predicate(sign):
    # The default pipeline folds the taken branch in; with no passes the device kernel decides.
    x = np.array([1.0, -2.0], np.float32)

    def fn(x):
        return cf.cond(x.new_ones(()) * sign > 0, lambda a: a * 3.0, lambda a: a + 1.0, x)

    expected = x * 3 if sign > 0 else x + 1
    for options, has_cond in (({"passes": []}, True), ({}, False)):
        plan = _cuda(fn, x, **options)
        assert ("cond" in plan.graph.op_counts()) == has_cond
        _close(plan(x), expected)


# ---------------------------------------------------------------------------- while_loop
def _nest_mlp():
    spec = importlib.util.spec_from_file_location("nest_mlp", ROOT / "examples" / "nest_mlp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fixed_hidden_mlp_halving_loop_runs_on_the_device():
    mod = _nest_mlp()
    nn.init.manual_seed(0)
    net = mod.FixedHiddenMLP()  # halve=True: `while x.abs().sum() > 1` becomes a while_loop
    x = mod.example_inputs()[0]
    plan = _cuda(net, x)
    assert "while_loop" in plan.graph.op_counts()
    expected = graphc.compile(net, x, backend="reference")(x)
    assert expected.sum() != 0
    _close(plan(x), expected)
    _close(plan(x), np.asarray(net(x)))  # eager mode: the Python loop on values


def test_while_loop_with_zero_and_several_trips(monkeypatch):
    from graphc.kernels.cuda import control_flow as cuda_cf

    def fn(x, limit):
        return cf.while_loop(lambda c: c[0].sum() < limit, lambda c: (c[0] * 2, c[1] + 1), (x, x[0] * 0))

    x = np.array([0.5, 1.5], np.float32)
    plan = _cuda(fn, x, np.float32(100))
    reads = []
    real = cuda_cf._read_bool
    monkeypatch.setattr(cuda_cf, "_read_bool", lambda *a: reads.append(1) or real(*a))
    for limit in (100.0, 1.0):  # 6 trips; 0 trips (the condition is false at once)
        c, n = x.copy(), 0
        while c.sum() < limit:
            c, n = c * 2, n + 1
        reads.clear()
        _close(plan(x, np.float32(limit)), [c, np.float32(n)])
        assert len(reads) == n + 1  # one device-to-host copy of the condition per evaluation


# ---------------------------------------------------------------------------- scan
def _scan_fn(reverse: bool):
    def fn(x, w):
        def body(carry, xt):
            c, n = carry
            c = (c * w + xt).tanh()  # w is a closure: a loop-invariant operand
            return (c, n + 1), (c * 2, c.sum())  # the sums stack to a 1-D y: 0-d slices

        (c, n), (ys, sums) = cf.scan(body, (x[0] * 0, x[0].sum() * 0), x, reverse=reverse)
        return c, n, ys, sums

    return fn


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_forward_and_reverse(reverse):
    rng = _rng()
    x = rng.standard_normal((4, 3)).astype(np.float32)
    w = rng.standard_normal(3).astype(np.float32)
    plan = _cuda(_scan_fn(reverse), x, w)
    assert "scan" in plan.graph.op_counts()
    c, ys = np.zeros(3, np.float32), [None] * 4
    for t in reversed(range(4)) if reverse else range(4):
        c = np.tanh(c * w + x[t])
        ys[t] = c
    ys = np.stack(ys)
    expected = [c, np.float32(4), ys * 2, ys.sum(axis=1)]
    _close(plan(x, w), expected)
    _close(plan(x * 0.5, w), _reference(_scan_fn(reverse), x * 0.5, w))  # a second call


def test_nested_control_flow_and_its_plan_file(tmp_path):
    x = _rng().standard_normal((3, 4)).astype(np.float32)

    plan = _cuda(nested_loops, x)
    _close(plan(x), nested_loops_numpy(x))
    (scan,) = [n for n in plan.graph.nodes if n.op == "scan"]
    source = plan.kernel_sources()[scan.outputs[0].name]  # the bodies' kernels, nested ones too
    assert "running its bodies as sub-plans" in source and "# body cond" in source
    plan.save(str(tmp_path / "nested.gcp"))
    loaded = load_plan(str(tmp_path / "nested.gcp"))
    assert loaded.backend == "cuda"
    _close(loaded(x), nested_loops_numpy(x))


# ---------------------------------------------------------------------------- recurrent layers
PAIRS = [(nn.LSTM, torch.nn.LSTM), (nn.GRU, torch.nn.GRU)]


def _twin(cls, tcls):
    torch.manual_seed(0)
    ref = tcls(2, 3, num_layers=2, bidirectional=True, batch_first=True)
    mine = cls(2, 3, num_layers=2, bidirectional=True, batch_first=True)
    mine.load_state_dict(ref.state_dict())
    return mine, ref


def _flat(result):
    out, h = result
    return [out, *h] if isinstance(h, tuple) else [out, h]


@pytest.mark.parametrize("cls,tcls", PAIRS, ids=["LSTM", "GRU"])
def test_two_layer_bidirectional_recurrent_forward_and_gradients(cls, tcls):
    # The joint forward+backward graph: forward scans, and the backward reverse scans of their VJPs.
    mine, ref = _twin(cls, tcls)
    x = _rng().standard_normal((2, 3, 2)).astype(np.float32)

    def loss(x):
        outs = _flat(mine(x))
        return (outs[0] * outs[0]).sum() + (outs[1] * 0.5).sum(), *outs

    joint, index = grad(graphc.trace(loss, x), 0)
    got = graphc.compile_graph(joint, device="cuda")(x)
    outs = _flat(ref(torch.tensor(x)))
    total = (outs[0] * outs[0]).sum() + (outs[1] * 0.5).sum()
    total.backward()
    for a, b in zip(got[: len(outs) + 1], [total, *outs]):
        np.testing.assert_allclose(a, b.detach().numpy(), atol=1e-4, rtol=1e-4)
    params = dict(ref.named_parameters())
    assert set(index) == set(params)
    for name, i in index.items():
        np.testing.assert_allclose(got[i], params[name].grad.numpy(), atol=1e-4, rtol=1e-4, err_msg=name)


class _Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(2, 3, batch_first=True)
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        return self.out(self.rnn(x)[0][:, -1])


def test_train_step_through_a_scan_matches_the_reference():
    from graphc import functional as F
    from graphc import optim
    from graphc.training import compile_train

    rng = _rng()
    x = rng.standard_normal((2, 3, 2)).astype(np.float32)
    y = np.array([0, 1], np.int64)
    results = {}
    for device, backend in (("cpu", "reference"), ("cuda", None)):
        nn.init.manual_seed(0)
        model = _Tagger()
        step = compile_train(
            model, F.cross_entropy, optim.Adam(lr=1e-2), x, y, device=device, backend=backend
        )
        losses = [step(x, y) for _ in range(2)]
        step.sync_to_host()
        results[device] = losses, {k: np.array(v) for k, v in model.state_dict().items()}
    np.testing.assert_allclose(results["cuda"][0], results["cpu"][0], rtol=1e-5)
    for k, v in results["cpu"][1].items():
        np.testing.assert_allclose(results["cuda"][1][k], v, rtol=1e-5, atol=1e-6, err_msg=k)


# ---------------------------------------------------------------------------- the sub-plans
def _scan_node(length: int):
    from graphc import passes

    x = np.ones((length, 4), np.float32)
    g = passes.optimize(graphc.trace(lambda x: cf.scan(lambda c, xt: ((c * xt).tanh(), c + 1), x[0], x), x))
    return next(n for n in g.nodes if n.op == "scan"), x


def test_body_kernels_compile_once_and_carries_ping_pong_without_copies():
    from numba import cuda

    from graphc.kernels import cuda as kc
    from graphc.kernels.cuda import control_flow as cuda_cf

    counts = []
    for length in (2, 5):
        node, x = _scan_node(length)
        calls = []

        def counting(n, calls=calls):
            calls.append(n.op)
            return kc.compile_node(n)

        kernel = cuda_cf.control_kernel(node, counting, kc.kernel_sources)
        body = kernel.plans[0]
        assert body.in_slots[0] is not None and body.out_slots[0] is not None  # the carry: rebound
        assert body.in_slots[1] is not None  # the x slice: bound to a view of xs[t]
        ins = [cuda.to_device(x if v.shape == x.shape else x[0]) for v in node.inputs]
        outs = [cuda.device_array(v.shape, v.type.np_dtype) for v in node.outputs]
        kernel(*ins, *outs)
        c, ys = x[0], []
        for t in range(length):
            ys.append(c + 1)
            c = np.tanh(c * x[t])
        np.testing.assert_allclose(outs[0].copy_to_host(), c, rtol=1e-6)
        np.testing.assert_allclose(outs[1].copy_to_host(), np.stack(ys), rtol=1e-6)
        counts.append(len(calls))
        schedule = cuda_cf._scan_schedule(node, body, cuda_cf._carry_buffers(node, 1), (*ins, *outs))[0]
        launches = [fn for fn, _ in schedule if fn is not cuda_cf._copy_flat]
        assert len(launches) == length * len(body.steps)  # per step only the body's kernels
        assert len(schedule) - len(launches) == 2  # the carry copied in once and out once
    assert counts[0] == counts[1] > 0


def test_a_bad_index_in_a_body_names_the_node():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    idx = np.array([[0], [1], [2]], np.int64)

    def fn(x, idx):
        return cf.scan(lambda c, i: (c + x[i[0]], c.sum()), x[0] * 0, idx)

    plan = _cuda(fn, x, idx)
    _close(plan(x, idx), _reference(fn, x, idx))
    with pytest.raises(GraphcError, match="in a control-flow body"):
        plan(x, np.array([[0], [7], [1]], np.int64))
    _close(plan(x, idx[::-1].copy()), _reference(fn, x, idx[::-1].copy()))  # the flag was reset
