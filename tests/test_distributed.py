"""graphc.distributed in one process: the collective ops, their kernels, buckets, placement, sampler.

The MPI job itself (2 ranks matching one process, dead ranks, differing models) is in
tests/test_distributed_mpi.py. Here the kernels run as one rank of one, or against a fake
communicator that plays the other rank.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

import graphc.distributed as dist
import graphc.functional as F
import graphc.nn as nn
from graphc import optim, passes
from graphc.data import DataLoader, DistributedSampler
from graphc.distributed import comm as dist_comm
from graphc.distributed.consistency import describe, first_difference
from graphc.ir import Graph, GraphcError, TensorType
from graphc.kernels import collectives, cpu, reference
from graphc.training import compile_train, evaluate, fit


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(6, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        return self.out(F.relu(self.hidden(x)))


def _bucket_graph(packed: bool = True) -> Graph:
    g = Graph("bucket")
    a = g.add_input("a", TensorType((2, 3), "f32"))
    b = g.add_input("b", TensorType((4,), "f32"))
    ins = [a, b] if packed else [a]
    start = g.add_node("allreduce_start", ins, {"bucket": 7, "packed": packed})
    held = [] if packed else ins
    wait = g.add_node(
        "allreduce_wait", [start.output, *held], {"shapes": [v.shape for v in ins], "bucket": 7}
    )
    for v in wait.outputs:
        g.add_output(v)
    return g


@pytest.fixture
def no_communicator():
    collectives.set_communicator(None)
    yield
    collectives.set_communicator(None)


# ---------------------------------------------------------------- the ops
def test_type_rules():
    g = _bucket_graph()
    start, wait = g.nodes
    assert start.output.type == TensorType((10,), "f32")
    assert [v.type for v in wait.outputs] == [TensorType((2, 3), "f32"), TensorType((4,), "f32")]
    x = g.add_input("x", TensorType((3,), "f64"))
    i = g.add_input("i", TensorType((3,), "i32"))
    with pytest.raises(GraphcError, match="dtypes differ"):
        g.add_node("allreduce_start", [g.value("a"), x])
    with pytest.raises(GraphcError, match="sums f32 or f64 gradients, got i32"):
        g.add_node("allreduce_start", [i])
    with pytest.raises(GraphcError, match="shapes hold 7 elements, the buffer 10"):
        g.add_node("allreduce_wait", [start.output], {"shapes": [(7,)]})
    with pytest.raises(GraphcError, match="missing required attribute 'shapes'"):
        g.add_node("allreduce_wait", [start.output])


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("backend", [reference, cpu])
def test_one_rank_kernels_return_the_gradients(backend, packed, no_communicator):
    g = _bucket_graph(packed)
    start, wait = g.nodes
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([1.5, -2, 3, 4], np.float32)
    grads = [a, b] if packed else [a]
    buf = np.full(start.output.shape, np.nan, np.float32)
    backend.compile_node(start)(*grads, buf)
    outs = [np.empty(v.shape, np.float32) for v in wait.outputs]
    backend.compile_node(wait)(buf, *([] if packed else grads), *outs)
    for out, want in zip(outs, grads):
        np.testing.assert_array_equal(out, want)


class FakeRequest:
    def __init__(self, polls_left: int, finish=None) -> None:
        self.polls_left, self.finish, self.tests = polls_left, finish, 0

    def Test(self) -> bool:  # noqa: N802 (mpi4py's name)
        self.tests += 1
        if self.polls_left is None:
            return False
        self.polls_left -= 1
        if self.polls_left <= 0 and self.finish:
            self.finish()
            self.finish = None
        return self.polls_left <= 0


class FakeComm:
    """Plays rank 0 of 2 whose peer sends ``peer`` times our values: the sum lands after 3 polls."""

    def __init__(self, peer: float = 3.0, never: bool = False) -> None:
        self.peer, self.never, self.calls = peer, never, []

    def Get_size(self) -> int:  # noqa: N802
        return 2

    def Iprobe(self, source=None, tag=None) -> bool:  # noqa: N802
        self.probes = getattr(self, "probes", 0) + 1
        return False

    def Iallreduce(self, send, recv, op=None):  # noqa: N802
        from mpi4py import MPI

        self.calls.append(send)
        source = recv if send is MPI.IN_PLACE else send
        expected = np.array(source).reshape(-1) * (1 + self.peer)

        def land():
            recv[...] = expected

        return FakeRequest(None if self.never else 3, land)


@pytest.mark.parametrize("packed", [True, False])
def test_cpu_kernels_start_nonblocking_and_wait_for_the_sum(packed, no_communicator):
    pytest.importorskip("mpi4py")
    from mpi4py import MPI

    fake = FakeComm(peer=3.0)
    collectives.set_communicator(fake, timeout=5)
    g = _bucket_graph(packed)
    start, wait = g.nodes
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([1.5, -2, 3, 4], np.float32)
    grads = [a, b] if packed else [a]
    buf = np.zeros(start.output.shape, np.float32)
    cpu.compile_node(start)(*grads, buf)
    # Started, not finished: the sum lands during the wait's polling. A packed bucket holds the
    # packed gradients meanwhile; an unpacked one is untouched (MPI reads the gradient itself).
    packed_grads = np.concatenate([g.reshape(-1) for g in grads]) if packed else np.zeros(6, np.float32)
    np.testing.assert_array_equal(buf, packed_grads)
    if packed:
        assert fake.calls == [MPI.IN_PLACE]
    else:
        assert fake.calls[0].ctypes.data == a.ctypes.data  # MPI reads the gradient: no packing copy
    outs = [np.empty(v.shape, np.float32) for v in wait.outputs]
    cpu.compile_node(wait)(buf, *([] if packed else grads), *outs)
    for out, grad in zip(outs, grads):
        np.testing.assert_array_equal(out, grad * 4 / 2)  # (ours + 3 x ours) / 2 ranks


def test_a_wait_that_gets_no_answer_fails_at_its_deadline(no_communicator):
    pytest.importorskip("mpi4py")
    collectives.set_communicator(FakeComm(never=True), timeout=0.3)
    start, wait = _bucket_graph().nodes
    buf = np.zeros(10, np.float32)
    cpu.compile_node(start)(np.ones((2, 3), np.float32), np.ones(4, np.float32), buf)
    began = time.monotonic()
    with pytest.raises(GraphcError, match="allreduce of gradient bucket 7: no answer from the other ranks"):
        cpu.compile_node(wait)(buf, np.empty((2, 3), np.float32), np.empty(4, np.float32))
    assert time.monotonic() - began < 3


def test_a_wait_with_no_start_is_an_error(no_communicator):
    _, wait = _bucket_graph().nodes
    with pytest.raises(GraphcError, match="no allreduce_start is pending"):
        cpu.compile_node(wait)(
            np.zeros(10, np.float32), np.empty((2, 3), np.float32), np.empty(4, np.float32)
        )


def test_contiguous_span_and_averaging():
    arena = np.arange(12, dtype=np.float32)
    a, b = arena[:4].reshape(2, 2), arena[4:10]
    span = collectives.contiguous_span([a, b])
    assert span is not None and span.ctypes.data == arena.ctypes.data and span.size == 10
    assert collectives.contiguous_span([b, a]) is None  # out of order
    assert collectives.contiguous_span([a, arena[5:7]]) is None  # a gap
    outs = [np.empty((2, 2), np.float32), np.empty(6, np.float32)]
    collectives.unpack_average(arena[:10], outs, 2)
    np.testing.assert_array_equal(np.concatenate([o.reshape(-1) for o in outs]), arena[:10] / 2)


def test_the_cuda_backend_refuses_collectives_by_name():
    from graphc.kernels import cuda

    start, _ = _bucket_graph().nodes
    with pytest.raises(GraphcError, match="runs on the CPU backend only"):
        cuda.kernel_sources(start)


def test_differentiating_through_an_allreduce_is_refused():
    from graphc.passes import autodiff

    g = Graph("g")
    x = g.add_input("x", TensorType((3,), "f32"), "param", np.ones(3, np.float32))
    start = g.add_node("allreduce_start", [x])
    (y,) = g.add_node("allreduce_wait", [start.output], {"shapes": [(3,)]}).outputs
    g.add_output(g.op("sum", y, axes=(0,)))
    with pytest.raises(GraphcError, match="allreduce_wait .* has no gradient"):
        autodiff.grad(g, loss_index=0, wrt=["x"])


# ---------------------------------------------------------------- buckets and placement
def _joint_graph():
    from graphc.passes import autodiff
    from graphc.tracing import trace

    nn.init.manual_seed(0)
    model = MLP()
    x, y = np.ones((4, 6), np.float32), np.zeros(4, np.int64)
    graph = trace(lambda a, t: F.cross_entropy(model(a), t), x, y, module=model, input_names=["x", "t"])
    joint, index = autodiff.grad(graph, loss_index=0, wrt=[v.name for v in graph.inputs_of_kind("param")])
    return joint, {n: joint.outputs[i] for n, i in index.items()}


def test_buckets_follow_the_backward_order_and_the_size_cap():
    joint, grads = _joint_graph()
    # Backward computes the output layer's gradients before the hidden layer's.
    buckets = dist.plan_buckets(joint, grads, bucket_bytes=1)
    flat = [n for b in buckets for n in b]
    assert flat.index("out.weight") < flat.index("hidden.weight")
    assert all(len(b) == 1 for b in buckets)  # every gradient alone fills a 1-byte bucket
    assert dist.plan_buckets(joint, grads, bucket_bytes=1 << 20) == [flat]
    two = dist.plan_buckets(joint, grads, bucket_bytes=200)  # 16x3 floats = 192 bytes, then more
    assert len(two) == 2 and two[0][0] == flat[0]
    with pytest.raises(GraphcError, match="bucket_bytes must be a positive int"):
        dist.plan_buckets(joint, grads, bucket_bytes=0)


def _distributed_step(bucket_bytes: int, backend: str = "reference"):
    nn.init.manual_seed(0)
    model = MLP()
    x = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    y = np.arange(8) % 3
    return (
        model,
        x,
        y,
        compile_train(
            model,
            F.cross_entropy,
            optim.SGD(lr=0.1, momentum=0.9),
            x,
            y,
            backend=backend,
            distributed=True,
            bucket_bytes=bucket_bytes,
        ),
    )


@pytest.fixture
def one_rank(monkeypatch, no_communicator):
    pytest.importorskip("mpi4py")
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # init's abort hook is undone after the test
    monkeypatch.setitem(dist_comm._state, "comm", None)
    monkeypatch.setitem(dist_comm._state, "hook", None)
    yield
    collectives.set_communicator(None)


def test_starts_run_right_after_their_last_gradient_and_waits_right_before_their_updates(one_rank):
    *_, step = _distributed_step(bucket_bytes=1)
    graph = step.plan.graph
    nodes = graph.nodes
    at = {n: k for k, n in enumerate(nodes)}
    prod, users = graph.producers(), graph.users()
    starts = [n for n in nodes if n.op == "allreduce_start"]
    waits = [n for n in nodes if n.op == "allreduce_wait"]
    assert len(starts) == len(waits) == 4
    for s in starts:
        last = max(at[prod[v]] for v in s.inputs if v in prod)
        assert all(n.op == "allreduce_start" for n in nodes[last + 1 : at[s]]), s
    for w in waits:
        first = min(at[u] for v in w.outputs for u in users.get(v, []))
        assert all(n.op == "allreduce_wait" for n in nodes[at[w] + 1 : first]), w
    # The backward pass runs while the first buckets are summed.
    assert at[waits[0]] - at[starts[0]] > 2
    # The bucket buffers stay live from start to wait: no live buffers overlap.
    passes.check_memory_plan(graph, step.plan.memory_plan)


def _overlaps(a, b) -> bool:
    return a.offset < b.offset + b.size and b.offset < a.offset + a.size


@pytest.mark.parametrize("bucket_bytes", [1, 200])  # unpacked single-gradient buckets, packed pairs
def test_the_scheduling_pass_alone_places_collectives_and_the_plan_keeps_buckets_live(bucket_bytes):
    from graphc.passes.schedule import is_topological
    from graphc.training import _keep_outputs

    joint, grads = _joint_graph()
    averaged = dist.add_gradient_allreduce(joint, grads, bucket_bytes)
    optim.SGD(lr=0.1, momentum=0.9).append_update(joint, averaged)
    _keep_outputs(joint, [0])
    # add_gradient_allreduce leaves each wait right after its start, after the whole backward pass.
    ops = [n.op for n in joint.nodes]
    assert ops.index("allreduce_wait") == ops.index("allreduce_start") + 1
    graph = passes.PassManager([passes.schedule]).run(joint)
    nodes = graph.nodes
    assert is_topological(graph, nodes)
    at = {n: k for k, n in enumerate(nodes)}
    prod, users = graph.producers(), graph.users()
    starts = [n for n in nodes if n.op == "allreduce_start"]
    waits = [n for n in nodes if n.op == "allreduce_wait"]
    assert len(starts) == len(waits) == (4 if bucket_bytes == 1 else 2)
    for s in starts:  # right after its bucket's last gradient (only other starts in between)
        last = max(at[prod[v]] for v in s.inputs if v in prod)
        assert all(n.op == "allreduce_start" for n in nodes[last + 1 : at[s]]), s
    for w in waits:  # right before the first update that reads it (only other waits in between)
        first = min(at[u] for v in w.outputs for u in users.get(v, []))
        assert all(n.op == "allreduce_wait" for n in nodes[at[w] + 1 : first]), w
    first_start = min(at[s] for s in starts)
    assert any(n.op not in ("allreduce_start", "allreduce_wait") for n in nodes[first_start : at[waits[0]]])
    # Only waits and what reads sums (the updates) run after the first wait: the rest of the
    # backward pass overlaps the sums.
    reads_a_sum: set = set()
    for n in nodes:
        if n.op == "allreduce_wait" or any(prod.get(v) in reads_a_sum for v in n.inputs):
            reads_a_sum.add(n)
    assert all(n in reads_a_sum for n in nodes[at[waits[0]] :])
    # The memory plan keeps each bucket's buffer (and an unpacked bucket's gradient, which MPI
    # reads in place) live from its start to its wait, in bytes no other value live then uses.
    memory = passes.plan_memory(graph)
    passes.check_memory_plan(graph, memory)
    by_wait = {w.inputs[0]: w for w in waits}
    for s in starts:
        wait = by_wait[s.output]
        held = [s.output] + (list(s.inputs) if not s.attrs["packed"] else [])
        for v in held:
            buf = memory.buffers[v.name]
            root = memory.buffers[buf.alias_of] if buf.alias_of else buf
            assert buf.start <= at[s] and root.end >= at[wait], v
            for other in memory.buffers.values():
                if other.alias_of is None and other is not root and other.start <= at[wait]:
                    assert other.end < at[s] or not _overlaps(root, other), (v.name, other.value)


@pytest.mark.parametrize("bucket_bytes", [200, 1 << 20])  # packed pairs, one bucket of all four
def test_the_planner_places_bucket_gradients_so_the_start_copies_nothing(one_rank, bucket_bytes):
    model, x, y, step = _distributed_step(bucket_bytes=bucket_bytes, backend="cpu")
    plan, memory = step.plan, step.plan.memory_plan
    passes.check_memory_plan(plan.graph, memory)
    starts = [(k, n) for k, n in enumerate(plan.step_nodes) if n.op == "allreduce_start"]
    assert starts and all(n.attrs["packed"] for _, n in starts)
    for k, node in starts:
        # Aligned gradients first (the bias gradients' 12 and 64 bytes: one of them last).
        assert [v.type.nbytes % 64 != 0 for v in node.inputs] == sorted(
            v.type.nbytes % 64 != 0 for v in node.inputs
        )
        grads, buf = plan.steps[k][1][:-1], plan.steps[k][1][-1]
        span = collectives.contiguous_span(grads)
        assert span is not None and span.ctypes.data == buf.ctypes.data and span.nbytes == buf.nbytes
        for v in node.inputs:  # each gradient (a weight's matmul, a bias's sum under a reshape)
            assert memory.buffers[v.name].alias_of == node.output.name, v
        # The wait averages in place: its results are the bucket buffer's parts, in order.
        wait = next(n for n in plan.step_nodes if n.op == "allreduce_wait" and n.inputs[0] is node.output)
        places = [
            memory.buffers[v.name].offset - memory.buffers[node.output.name].offset for v in wait.outputs
        ]
        assert places == [
            memory.buffers[v.name].offset - memory.buffers[node.output.name].offset for v in node.inputs
        ]
        assert all(memory.buffers[v.name].alias_of == node.output.name for v in wait.outputs)
    # The start kernels copy no byte, and training still equals the reference backend's.
    nn.init.manual_seed(0)
    twin = MLP()
    ref = compile_train(twin, F.cross_entropy, optim.SGD(lr=0.1, momentum=0.9), x, y, backend="reference")
    before = collectives.packed_bytes()
    for _ in range(3):
        np.testing.assert_allclose(step(x, y), ref(x, y), rtol=1e-5)
    assert collectives.packed_bytes() == before
    for name, arr in twin.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], arr, rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_start_kernel_copies_only_gradients_not_in_place(no_communicator):
    g = _bucket_graph(packed=True)
    start, wait = g.nodes
    buf = np.zeros(10, np.float32)
    a, b = buf[:6].reshape(2, 3), np.arange(4, dtype=np.float32)
    a[...] = np.arange(6).reshape(2, 3)
    before = collectives.packed_bytes()
    cpu.compile_node(start)(a, b, buf)  # a lies at its place already: only b is copied
    assert collectives.packed_bytes() - before == b.nbytes
    np.testing.assert_array_equal(buf, np.concatenate([np.arange(6), np.arange(4)]))
    outs = [np.empty((2, 3), np.float32), np.empty(4, np.float32)]
    cpu.compile_node(wait)(buf, *outs)
    np.testing.assert_array_equal(outs[0], np.arange(6).reshape(2, 3))


def test_collective_kernels_reuse_their_layout_checks_for_the_same_arrays(no_communicator):
    """A plan calls a kernel with the same arena arrays each step: the second call reuses what the
    first found (b must still be copied every call; averages written in place over the whole
    buffer take one pass) and still gives the right numbers when the values change."""
    g = _bucket_graph(packed=True)
    start_node, wait_node = g.nodes
    start, wait = cpu.compile_node(start_node), cpu.compile_node(wait_node)
    buf = np.zeros(10, np.float32)
    a, b = buf[:6].reshape(2, 3), np.zeros(4, np.float32)
    outs = [buf[:6].reshape(2, 3), buf[6:]]  # the averages in place over the buffer
    for step in range(3):
        a[...] = step
        b[...] = 10 + step
        before = collectives.packed_bytes()
        start(a, b, buf)
        assert collectives.packed_bytes() - before == b.nbytes  # b is not in place: copied each call
        wait(buf, *outs)
        np.testing.assert_array_equal(buf, np.concatenate([np.full(6, step), np.full(4, 10 + step)]))
    separate = [np.empty((2, 3), np.float32), np.empty(4, np.float32)]
    start(a, b, buf)
    wait(buf, *separate)  # other output arrays: checked anew, averaged part by part
    np.testing.assert_array_equal(separate[1], np.full(4, 12.0))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_one_rank_distributed_training_equals_plain_training(one_rank, backend):
    model, x, y, step = _distributed_step(bucket_bytes=300, backend=backend)
    assert step.distributed and dist.is_initialized() and dist.world_size() == 1
    nn.init.manual_seed(0)
    plain = MLP()
    plain_step = compile_train(plain, F.cross_entropy, optim.SGD(lr=0.1, momentum=0.9), x, y, backend=backend)
    for _ in range(5):
        assert step(x, y) == plain_step(x, y)
    for name, arr in plain.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], arr, err_msg=name)
    loader = DataLoader((x, y), batch_size=8, sampler=DistributedSampler())
    history = fit(step, loader, epochs=1, eval_loader=loader, verbose=False)
    assert history[0]["accuracy"] == evaluate(step, loader)["accuracy"]
    assert evaluate(step, loader)["samples"] == 8


def test_distributed_training_needs_the_cpu(one_rank):
    with pytest.raises(GraphcError, match="runs on the CPU backends"):
        x, y = np.ones((2, 6), np.float32), np.zeros(2, int)
        compile_train(MLP(), F.cross_entropy, optim.SGD(lr=0.1), x, y, device="cuda", distributed=True)


def test_missing_mpi4py_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(GraphcError, match=r"pip install 'graphc\[mpi\]'"):
        dist_comm._mpi()


# ---------------------------------------------------------------- model checks
def test_first_difference_names_it():
    nn.init.manual_seed(0)
    base = describe(MLP())
    assert first_difference(base, base, 1) == ""
    nn.init.manual_seed(1)
    assert "the values of 'hidden.weight' differ between rank 1 and rank 0" in first_difference(
        describe(MLP()), base, 1
    )
    shape = [list(r) for r in base]
    shape[2][1] = [4, 16]
    assert (
        first_difference(shape, base, 1) == "'out.weight' has shape (4, 16) on rank 1 but (3, 16) on rank 0"
    )
    assert "('out.bias' is on rank 0 only)" in first_difference(base[:3], base, 1)
    renamed = [list(r) for r in base]
    renamed[0][0] = "first.weight"
    assert "entry 0 is 'first.weight' on rank 1 but 'hidden.weight' on rank 0" in first_difference(
        renamed, base, 1
    )


# ---------------------------------------------------------------- the sampler
@pytest.mark.parametrize(
    "n, ranks, drop_last", [(10, 3, False), (10, 3, True), (12, 4, False), (5, 2, False)]
)
def test_sampler_shards_are_disjoint_equal_and_cover_the_data(n, ranks, drop_last):
    data = np.arange(n)
    for epoch in range(3):
        shards = []
        for r in range(ranks):
            sampler = DistributedSampler(num_replicas=ranks, rank=r, drop_last=drop_last)
            loader = DataLoader(data, batch_size=1, shuffle=True, seed=5, sampler=sampler, prefetch=0)
            loader.set_epoch(epoch)
            shards.append(np.concatenate(list(loader)))
            assert len(loader) == len(shards[-1])
        sizes = {len(s) for s in shards}
        assert len(sizes) == 1
        everything = np.concatenate(shards)
        if drop_last:
            assert len(set(everything)) == len(everything) == n - n % ranks
        else:
            assert set(everything) == set(data) and len(everything) == -(-n // ranks) * ranks
            assert len(everything) - len(set(everything)) == len(everything) - n  # only the padding repeats
    order = [
        DataLoader(data, 1, shuffle=True, seed=5, sampler=DistributedSampler(2, 0)).indices(e) for e in (0, 1)
    ]
    assert not np.array_equal(order[0], order[1])  # reshuffled each epoch


def test_sampler_arguments_are_checked():
    with pytest.raises(GraphcError, match="rank must be an int in"):
        DistributedSampler(num_replicas=2, rank=2)
    with pytest.raises(GraphcError, match="num_replicas must be a positive int"):
        DistributedSampler(num_replicas=0, rank=0)
    with pytest.raises(GraphcError, match="sampler must be a DistributedSampler"):
        DataLoader(np.arange(4), sampler=object())
    assert DistributedSampler().num_replicas == dist.world_size()


# ---------------------------------------------------------------- the MPI benchmarks' arithmetic
def _benchmark(name: str):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_allreduce_workload_reports_bus_bandwidth_and_marks_disagreement():
    bench = _benchmark("allreduce")
    raw = {
        "ranks": 2,
        "cases": [
            {
                "bytes": 4 << 20,
                "times": {"graphc": [2e-3, 4e-3, 3e-3], "mpi4py": [1e-3] * 3},
                "oracle_diff": 0.0,
                "peer_diff": 0.0,
            },
            {
                "bytes": 4096,
                "times": {"graphc": [1e-5], "mpi4py": [1e-5]},
                "oracle_diff": 1e-2,
                "peer_diff": 0.0,
            },
        ],
    }
    big, small = bench.to_cases(raw)
    assert big["case"] == "4 MiB" and small["case"] == "4 KiB"
    assert big["engines"]["graphc"]["median_ms"] == pytest.approx(3.0)
    # 2 (n-1)/n * bytes / time on 2 ranks: bytes / time.
    assert big["extra"]["graphc_bus_gbs"] == pytest.approx((4 << 20) / 3e-3 / 1e9)
    assert big["ratios"]["graphc / mpi4py"] == pytest.approx(1 / 3)
    assert "agrees" not in big["engines"]["graphc"]
    assert small["engines"]["graphc"]["agrees"] is False
    assert bench.bus_bandwidth_gbs(3 << 20, 1.0, 4) == pytest.approx(1.5 * (3 << 20) / 1e9)


def test_ddp_workload_hidden_share_and_agreement():
    bench = _benchmark("ddp_mlp_train")
    raw = {
        "ranks": 2,
        "sizes": [8, 4, 2],
        "buckets": 2,
        "compile_s": 1.0,
        "graphc_loss": 2.0,
        "torch_loss": 2.0 + 1e-6,
        "param_diff": 1e-6,
        "times": {"graphc": [0.010, 0.012], "torch DDP gloo": [0.020, 0.022]},
        "exposed_s": 0.001,
        "whole_s": 0.004,
        "serialized_step_s": 0.014,
    }
    case = bench.to_case(raw)
    assert case["ratios"]["graphc / torch DDP gloo"] == pytest.approx(11 / 21)
    assert case["extra"]["allreduce_hidden_share"] == pytest.approx(0.75)
    best = bench.to_case({**raw, "exposed_min_s": 0.0005, "whole_min_s": 0.001})
    assert best["extra"]["allreduce_hidden_share_best"] == pytest.approx(0.5)
    assert bench.to_case({**raw, "exposed_s": 0.005})["extra"]["allreduce_hidden_share"] == 0.0
    assert "agrees" not in case["engines"]["graphc"]
    assert bench.to_case({**raw, "torch_loss": 2.1})["engines"]["graphc"]["agrees"] is False


def test_collective_profile_counts_blocked_time_and_serializes(no_communicator):
    pytest.importorskip("mpi4py")
    fake = FakeComm(peer=1.0)
    collectives.set_communicator(fake, timeout=5)
    start, wait = (cpu.compile_node(n) for n in _bucket_graph().nodes)
    a, b = np.ones((2, 3), np.float32), np.ones(4, np.float32)
    buf, outs = np.zeros(10, np.float32), [np.empty((2, 3), np.float32), np.empty(4, np.float32)]
    try:
        collectives.set_profile(True)
        start(a, b, buf)
        np.testing.assert_array_equal(buf, 1)  # started, not summed yet
        wait(buf, *outs)
        assert collectives.profile()["sums"] == 1 and collectives.profile()["blocked_s"] > 0
        collectives.set_profile(True, serialize=True)
        start(a, b, buf)
        np.testing.assert_array_equal(buf, 2)  # summed inside the start: nothing left to overlap
        wait(buf, *outs)
        assert collectives.profile()["sums"] == 1
        np.testing.assert_array_equal(outs[1], 1)
    finally:
        collectives.set_profile(False)
    assert collectives.profile() == {"blocked_s": 0.0, "sums": 0}


def test_the_progress_thread_drives_mpi_only_while_a_sum_is_pending(no_communicator):
    pytest.importorskip("mpi4py")
    fake = FakeComm(peer=1.0)
    collectives.set_communicator(fake, timeout=5)
    collectives.set_progress(True, interval=1e-3)
    thread = collectives.progress_thread()
    assert thread is not None
    start, wait = (cpu.compile_node(n) for n in _bucket_graph().nodes)
    a, b = np.ones((2, 3), np.float32), np.ones(4, np.float32)
    buf, outs = np.zeros(10, np.float32), [np.empty((2, 3), np.float32), np.empty(4, np.float32)]
    time.sleep(0.03)
    assert getattr(fake, "probes", 0) == 0  # nothing pending: the thread sleeps
    start(a, b, buf)
    deadline = time.monotonic() + 5
    while getattr(fake, "probes", 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert fake.probes >= 3  # the sum is pending: the thread calls MPI
    wait(buf, *outs)
    np.testing.assert_array_equal(outs[1], 1)
    time.sleep(0.01)
    after = fake.probes
    time.sleep(0.03)
    assert fake.probes == after  # the sum is done: the thread sleeps again
    with pytest.raises(GraphcError, match="progress interval must be positive"):
        collectives.set_progress(True, interval=0)
    collectives.set_communicator(None)  # a new communicator stops the thread
    assert collectives.progress_thread() is None and not thread._thread.is_alive()


def test_progress_setting_comes_from_the_argument_or_the_environment(monkeypatch):
    monkeypatch.delenv("GRAPHC_DIST_PROGRESS", raising=False)
    assert dist_comm._progress_wanted(None) is False
    monkeypatch.setenv("GRAPHC_DIST_PROGRESS", "1")
    assert dist_comm._progress_wanted(None) is True
    assert dist_comm._progress_wanted(False) is False
    monkeypatch.setenv("GRAPHC_DIST_PROGRESS", "yes")
    with pytest.raises(GraphcError, match="GRAPHC_DIST_PROGRESS must be 0 or 1, got 'yes'"):
        dist_comm._progress_wanted(None)


# ---------------------------------------------------------------- persistent requests (MPI-4)
class FakePersistent(FakeRequest):
    """A persistent request: inactive until ``Start``; each start lands the sum after 3 polls."""

    def __init__(self, comm: PersistentComm, send, recv) -> None:
        super().__init__(polls_left=0)
        self.comm, self.send, self.recv = comm, send, recv
        self.active, self.starts, self.freed = False, 0, False

    def Start(self) -> None:  # noqa: N802
        from mpi4py import MPI

        if self.active:
            raise RuntimeError("MPI_Start: the request is still active")
        self.active, self.starts = True, self.starts + 1
        source = self.recv if self.send is MPI.IN_PLACE else self.send
        expected = np.array(source).reshape(-1) * (1 + self.comm.peer)

        def land():
            self.recv[...] = expected
            self.active = False

        self.polls_left, self.finish = (None, None) if self.comm.never else (3, land)

    def Test(self) -> bool:  # noqa: N802
        return True if not self.active else super().Test()

    def Free(self) -> None:  # noqa: N802
        assert not self.active, "freed an active persistent request"
        self.freed = True


class PersistentComm(FakeComm):
    """FakeComm with MPI_Allreduce_init (``refuse``: as an MPI-3 library, NotImplementedError)."""

    def __init__(self, peer: float = 3.0, never: bool = False, refuse: bool = False) -> None:
        super().__init__(peer, never)
        self.refuse, self.inits = refuse, []

    def Allreduce_init(self, send, recv, op=None):  # noqa: N802
        if self.refuse:
            raise NotImplementedError("MPI_Allreduce_init")
        self.inits.append(FakePersistent(self, send, recv))
        return self.inits[-1]


@pytest.mark.parametrize("packed", [True, False])
def test_the_cpu_kernels_build_one_persistent_request_and_start_it_each_call(packed, no_communicator):
    pytest.importorskip("mpi4py")
    from mpi4py import MPI

    fake = PersistentComm(peer=3.0)
    collectives.set_communicator(fake, timeout=5)
    g = _bucket_graph(packed)
    start, wait = (cpu.compile_node(n) for n in g.nodes)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([1.5, -2, 3, 4], np.float32)
    grads = [a, b] if packed else [a]
    buf = np.zeros(g.nodes[0].output.shape, np.float32)
    outs = [np.empty(v.shape, np.float32) for v in g.nodes[1].outputs]
    for step in range(3):
        a[...] = np.arange(6).reshape(2, 3) + step
        start(*grads, buf)
        wait(buf, *([] if packed else grads), *outs)
        for out, grad in zip(outs, grads):
            np.testing.assert_array_equal(out, grad * 4 / 2)  # (ours + 3 x ours) / 2 ranks
    (request,) = fake.inits  # built once, on the first call
    assert request.starts == 3 and fake.calls == []  # no Iallreduce posted
    if packed:
        assert request.send is MPI.IN_PLACE and request.recv is buf
    else:
        assert request.send.ctypes.data == a.ctypes.data  # MPI reads the gradient where it lies
    # A new communicator: the kernel builds a request on it and frees the old one.
    fake2 = PersistentComm(peer=1.0)
    collectives.set_communicator(fake2, timeout=5)
    start(*grads, buf)
    wait(buf, *([] if packed else grads), *outs)
    np.testing.assert_array_equal(outs[0], a)  # (ours + ours) / 2
    assert len(fake2.inits) == 1 and fake.inits[0].freed and len(fake.inits) == 1


def test_without_persistent_collectives_the_kernels_post_iallreduce(no_communicator):
    pytest.importorskip("mpi4py")
    fake = PersistentComm(peer=1.0, refuse=True)
    collectives.set_communicator(fake, timeout=5)
    start, wait = (cpu.compile_node(n) for n in _bucket_graph().nodes)
    a, b = np.ones((2, 3), np.float32), np.full(4, 2.0, np.float32)
    buf, outs = np.zeros(10, np.float32), [np.empty((2, 3), np.float32), np.empty(4, np.float32)]
    for _ in range(2):
        start(a, b, buf)
        wait(buf, *outs)
        np.testing.assert_array_equal(outs[1], b)
    assert len(fake.calls) == 2 and fake.inits == []


def test_a_persistent_sum_with_no_answer_fails_at_its_deadline_and_cannot_restart(no_communicator):
    pytest.importorskip("mpi4py")
    collectives.set_communicator(PersistentComm(never=True), timeout=0.3)
    start, wait = (cpu.compile_node(n) for n in _bucket_graph().nodes)
    a, b = np.ones((2, 3), np.float32), np.ones(4, np.float32)
    buf, outs = np.zeros(10, np.float32), [np.empty((2, 3), np.float32), np.empty(4, np.float32)]
    start(a, b, buf)
    began = time.monotonic()
    with pytest.raises(GraphcError, match="allreduce of gradient bucket 7: no answer from the other ranks"):
        wait(buf, *outs)
    assert time.monotonic() - began < 3
    with pytest.raises(GraphcError, match="allreduce_start of bucket 7: MPI error: .*still active"):
        start(a, b, buf)


def test_persistent_requests_are_freed_with_their_kernels(no_communicator):
    pytest.importorskip("mpi4py")
    import gc

    fake = PersistentComm(peer=1.0)
    collectives.set_communicator(fake, timeout=5)
    start, wait = (cpu.compile_node(n) for n in _bucket_graph().nodes)
    buf, outs = np.zeros(10, np.float32), [np.empty((2, 3), np.float32), np.empty(4, np.float32)]
    start(np.ones((2, 3), np.float32), np.ones(4, np.float32), buf)
    wait(buf, *outs)
    other = np.zeros(10, np.float32)  # other arrays: a new request, the first one freed
    start(np.ones((2, 3), np.float32), np.ones(4, np.float32), other)
    wait(other, *outs)
    assert [r.freed for r in fake.inits] == [True, False]
    del start, wait
    gc.collect()
    assert fake.inits[1].freed  # the kernel is gone: so is its request (none left for MPI_Finalize)
