"""The device executor (DevicePlan): whole graphs on the device, updates, errors, memory plans."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.ir import Graph, GraphcError, TensorType
from graphc.kernels.reference import execute
from graphc.runtime import build_device_plan

pytestmark = pytest.mark.cudasim


def _graph() -> tuple[Graph, dict[str, np.ndarray]]:
    """y = softmax-ish(x @ w + b) with an SGD-like update of w and a step counter (state)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    steps = np.array(0, np.int64)
    g = Graph("toy")
    x = g.add_input("x", TensorType((4, 6)))
    wv = g.add_input("w", TensorType((6, 3)), "param", w)
    bv = g.add_input("b", TensorType((3,)), "param", b)
    sv = g.add_input("steps", TensorType((), "i64"), "state", steps)
    h = g.op("add", g.op("matmul", x, wv), bv)
    flat = g.op("reshape", h, shape=(12,))
    e = g.op("exp", g.op("sub", flat, g.op("max", flat, axes=(0,), keepdims=True)))
    y = g.op("div", e, g.op("sum", e, axes=(0,), keepdims=True))
    g.add_output(g.op("reshape", y, shape=(4, 3)))
    g.add_output(g.op("sub", wv, g.op("mul", wv, g.op("const", value=0.1))), updates="w")
    g.add_output(g.op("add", sv, g.op("const", value=1, dtype="i64")), updates="steps")
    return g, {"w": w, "b": b, "steps": steps}


def _reference_steps(graph: Graph, x: np.ndarray, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    state = {k: v.copy() for k, v in graph.initializers.items()}
    for _ in range(n):
        outs = execute(graph, {"x": x, **state})
        for name, i in graph.updates.items():
            state[name] = outs[i]
    return outs[0], state


@pytest.mark.parametrize("planned", [False, True], ids=["per-value", "arena"])
def test_device_plan_matches_reference_and_updates_host_arrays(planned: bool) -> None:
    graph, params = _graph()
    expect_y, expect_state = _reference_steps(graph, np.ones((4, 6), np.float32), 2)
    graph, params = _graph()
    memory_plan = None
    if planned:
        from graphc.passes import plan_memory

        memory_plan = plan_memory(graph)
    plan = build_device_plan(graph, memory_plan)
    x = np.ones((4, 6), np.float32)
    for _ in range(2):
        y = plan(x)
    np.testing.assert_allclose(y, expect_y, rtol=1e-5, atol=1e-7)
    for name, value in expect_state.items():
        np.testing.assert_allclose(params[name], value, rtol=1e-6)  # the caller's own arrays changed
    assert params["steps"] == 2
    assert plan.parameters["w"] is params["w"]
    assert "kernel" in next(iter(plan.kernel_sources().values()))


def test_host_changes_are_seen_unless_resident() -> None:
    graph, params = _graph()
    plan = build_device_plan(graph)
    x = np.ones((4, 6), np.float32)
    plan(x)
    params["steps"][...] = 10  # e.g. load_state_dict into the same arrays
    plan(x)
    assert params["steps"] == 11

    graph, params = _graph()
    plan = build_device_plan(graph, resident=True)
    plan(x)
    plan(x)
    assert params["steps"] == 0  # the device holds the truth until asked
    plan.sync_to_host()
    assert params["steps"] == 2
    params["steps"][...] = 5
    plan.sync_to_device()
    plan(x)
    plan.sync_to_host()
    assert params["steps"] == 6


def test_bad_index_raises_and_leaves_parameters_alone() -> None:
    g = Graph("lookup")
    idx = g.add_input("idx", TensorType((2,), "i64"))
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    tv = g.add_input("table", TensorType((4, 3)), "param", table)
    rows = g.op("gather", tv, idx, axis=0)
    g.add_output(rows)
    g.add_output(g.op("add", tv, g.op("const", value=1.0)), updates="table")
    plan = build_device_plan(g)
    np.testing.assert_array_equal(plan(np.array([3, 0])), [[9, 10, 11], [0, 1, 2]])
    with pytest.raises(GraphcError, match="gather: index out of range"):
        plan(np.array([1, 4]))
    np.testing.assert_array_equal(table, np.arange(12).reshape(4, 3) + 1)  # only the good step
    np.testing.assert_array_equal(plan(np.array([0, 0])), [[1, 2, 3], [1, 2, 3]])


def test_wrong_input_is_named() -> None:
    graph, _ = _graph()
    plan = build_device_plan(graph)
    with pytest.raises(GraphcError, match="input 'x': expected shape"):
        plan(np.ones((3, 6), np.float32))


def test_compile_model_on_cuda_matches_reference() -> None:
    import graphc
    from graphc import functional as F
    from graphc import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = nn.Linear(6, 8)
            self.out = nn.Linear(8, 3)

        def forward(self, x):
            return F.softmax(self.out(F.gelu(self.hidden(x))), -1)

    net = Net()
    x = np.random.default_rng(1).random((4, 6)).astype(np.float32)
    expect = graphc.compile(net, x, backend="reference")(x)
    plan = graphc.compile(net, x, device="cuda")
    np.testing.assert_allclose(plan(x), expect, rtol=1e-5, atol=1e-6)


def test_train_step_on_cuda_matches_reference() -> None:
    import graphc
    from graphc import functional as F
    from graphc import nn

    def make():
        model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
        return model

    x = np.random.default_rng(2).random((4, 5)).astype(np.float32)
    labels = np.array([0, 2, 1, 1])
    a, b = make(), make()
    b.load_state_dict(a.state_dict())
    step_a = graphc.compile_train(a, F.cross_entropy, graphc.optim.SGD(lr=0.1, momentum=0.9), x, labels,
                                  device="cuda")  # fmt: skip
    step_b = graphc.compile_train(b, F.cross_entropy, graphc.optim.SGD(lr=0.1, momentum=0.9), x, labels,
                                  backend="reference")  # fmt: skip
    for _ in range(3):
        np.testing.assert_allclose(step_a(x, labels), step_b(x, labels), rtol=1e-5)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_allclose(np.asarray(pa), np.asarray(pb), rtol=1e-5, atol=1e-6, err_msg=name)


def test_attention_train_graph_on_cuda_matches_reference_plan() -> None:
    """Embedding, layer_norm, attention softmax, dropout, cross-entropy and SGD: one joint graph.

    Both plans run the same optimized graph (two traces would draw different dropout seeds).
    """
    import graphc
    from graphc import functional as F
    from graphc import nn
    from graphc.runtime import Plan

    class TinyLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(6, 4)
            self.norm = nn.LayerNorm(4)
            self.qkv = nn.Linear(4, 12)
            self.drop = nn.Dropout(0.5)
            self.head = nn.Linear(4, 3)

        def forward(self, ids):
            h = self.norm(self.emb(ids))
            q, k, v = self.qkv(h).reshape(2, 3, 3, 4).permute(2, 0, 1, 3)
            att = F.softmax((q @ k.transpose(1, 2)) * 0.5, dim=-1)
            return self.head(self.drop(att @ v).mean(1))

    ids = np.array([[1, 5, 2], [0, 0, 3]])
    labels = np.array([2, 0])
    sgd = graphc.optim.SGD(lr=0.1, momentum=0.9)
    step = graphc.compile_train(TinyLM(), F.cross_entropy, sgd, ids, labels, backend="reference")
    graph, memory_plan = step.plan.graph, step.plan.memory_plan
    lr = step.optimizer.lr_array()

    def fresh() -> Graph:
        g = graph.copy()
        g.initializers = {k: v.copy() for k, v in graph.initializers.items()}
        return g

    on_gpu, on_cpu = fresh(), fresh()
    device_plan = build_device_plan(on_gpu, memory_plan)
    reference_plan = Plan(on_cpu, memory_plan, "reference")
    for _ in range(2):
        np.testing.assert_allclose(device_plan(ids, labels, lr), reference_plan(ids, labels, lr), rtol=1e-5)
    for name in graph.updates:
        np.testing.assert_allclose(on_gpu.initializers[name], on_cpu.initializers[name], rtol=1e-4, atol=1e-6)
