"""cond / while_loop / scan: values against plain Python loops, the text/JSON/DOT forms, passes
inside bodies, the CPU sub-plans (compiled once), and gradients against finite differences
(float64) and PyTorch autograd."""

import numpy as np
import pytest
import torch
from control_flow_cases import nested_loops, nested_loops_numpy

import graphc
from graphc import GraphcError, passes
from graphc import control_flow as cf
from graphc.ir import (
    Graph,
    TensorType,
    graph_from_json,
    graph_to_dot,
    graph_to_json,
    parse_graph,
    print_graph,
    verify,
)
from graphc.kernels.reference import execute
from graphc.passes.autodiff import grad
from graphc.runtime import Plan


def _plan(graph: Graph, optimize: bool = True) -> Plan:
    g = passes.optimize(graph, check=True) if optimize else graph.copy()
    g = passes.schedule(g)
    mp = passes.plan_memory(g)
    passes.check_memory_plan(g, mp)
    return Plan(g, mp, "cpu")


def _feeds(graph: Graph, arrays) -> dict:
    return {v.name: a for v, a in zip(graph.data_inputs, arrays)}


def _both_backends(fn, *arrays, expected):
    """Reference executor and the optimized CPU plan both give ``expected``."""
    g = graphc.trace(fn, *arrays)
    verify(g)
    ref = execute(g, _feeds(g, arrays))
    got = _plan(g)(*arrays)
    got = got if isinstance(got, tuple) else (got,)
    assert len(ref) == len(got) == len(expected)
    for r, c, e in zip(ref, got, expected):
        np.testing.assert_allclose(r, e, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, e, rtol=1e-5, atol=1e-6)
    return g


# ---------------------------------------------------------------------------- values
def _rnn_step(c, x, w):
    return np.tanh(c * w + x)


def test_scan_matches_a_python_loop(rng):
    x = rng.standard_normal((5, 3)).astype(np.float32)
    w = rng.standard_normal(3).astype(np.float32)

    def fn(x, w):
        def body(carry, xt):
            c, n = carry
            c = (c * w + xt).tanh()  # w is a closure: a captured operand
            return (c, n + 1), (c * 2, c.sum())

        (c, n), (ys, sums) = cf.scan(body, (x[0], x[0].sum() * 0), x)
        return c, n, ys, sums

    c, ys = x[0], []
    for t in range(5):
        c = _rnn_step(c, x[t], w)
        ys.append(c)
    ys = np.stack(ys)
    _both_backends(fn, x, w, expected=[c, np.float32(5), ys * 2, ys.sum(axis=1)])


def test_scan_reverse_stacks_in_slice_order(rng):
    x = rng.standard_normal((4, 2)).astype(np.float32)

    def fn(x):
        return cf.scan(lambda c, xt: (c + xt, c * xt), x[0] * 0, x, reverse=True)

    c, ys = np.zeros(2, np.float32), [None] * 4
    for t in (3, 2, 1, 0):
        ys[t] = c * x[t]
        c = c + x[t]
    _both_backends(fn, x, expected=[c, np.stack(ys)])


def test_scan_with_length_only_and_no_ys(rng):
    def fn(a):
        c, ys = cf.scan(lambda c, _: (c * 2, None), a, None, length=6)
        assert ys is None
        return c

    a = rng.standard_normal(3).astype(np.float32)
    _both_backends(fn, a, expected=[a * 64])


def test_while_loop_matches_a_python_loop_and_survives_the_warm_up():
    # On the zeroed arena of the runtime's warm-up this loop would never end.
    def fn(x):
        return cf.while_loop(lambda c: c[0].sum() < 100.0, lambda c: (c[0] * 2, c[1] + 1), (x, x[0] * 0))

    x = np.array([0.5, 1.5], np.float32)
    c, n = x.copy(), 0
    while c.sum() < 100:
        c, n = c * 2, n + 1
    _both_backends(fn, x, expected=[c, np.float32(n)])


def test_cond_takes_either_branch(rng):
    w = rng.standard_normal(3).astype(np.float32)

    def fn(x):
        return cf.cond(x.sum() > 0, lambda a: (a * w).exp(), lambda a: a - w, x)

    for x in (np.abs(w) + 1, -np.abs(w) - 1):
        x = x.astype(np.float32)
        expected = np.exp(x * w) if x.sum() > 0 else x - w
        _both_backends(fn, x, expected=[expected])


def test_nested_control_flow(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    _both_backends(nested_loops, x, expected=nested_loops_numpy(x))


def test_module_parameters_inside_a_body_are_captured(rng):
    lin = graphc.nn.Linear(3, 3)

    def fn(x):
        return cf.scan(lambda c, xt: (lin(c).tanh() + xt, None), x[0], x)[0]

    x = rng.standard_normal((4, 3)).astype(np.float32)
    g = graphc.trace(fn, x)
    params = g.inputs_of_kind("param")
    scan = next(n for n in g.nodes if n.op == "scan")
    assert len(params) == 2 and set(params) <= set(scan.inputs)  # captured as operands of the node
    c = x[0]
    for t in range(4):
        c = np.tanh(c @ lin.weight.T + lin.bias) + x[t]
    _both_backends(fn, x, expected=[c])


def test_outside_a_trace_the_functions_are_python_loops():
    c, ys = cf.scan(lambda c, x: (c + x, c), np.float64(0), np.arange(4.0))
    assert c == 6 and list(ys) == [0, 0, 1, 3]
    assert cf.while_loop(lambda c: c < 10, lambda c: c * 3, 1) == 27
    assert cf.cond(False, lambda a: a + 1, lambda a: a - 1, 5) == 4


# ---------------------------------------------------------------------------- errors
def test_mismatched_branches_name_the_problem():
    def fn(x):
        return cf.cond(x.sum() > 0, lambda a: a, lambda a: a.sum(), x)

    with pytest.raises(GraphcError, match=r"test_control_flow.py:\d+: cond: false_fn's results differ"):
        graphc.trace(fn, np.ones(3, np.float32))


def test_scan_carry_type_change_is_an_error():
    def fn(x):
        return cf.scan(lambda c, xt: (c.sum(), None), x[0], x)

    with pytest.raises(GraphcError, match="scan: fn's carry differs from init"):
        graphc.trace(fn, np.ones((2, 3), np.float32))


def test_a_body_may_not_assign_state():
    bn = graphc.nn.BatchNorm1d(3)
    bn.train()

    def fn(x):
        return cf.scan(lambda c, xt: (bn(c[None])[0], None), x[0], x)[0]

    with pytest.raises(GraphcError, match="inside a cond/while_loop/scan body"):
        graphc.trace(fn, np.ones((2, 3), np.float32))


def test_verifier_rejects_a_body_of_the_wrong_signature():
    g = graphc.trace(lambda x: cf.scan(lambda c, xt: (c + xt, None), x[0], x)[0], np.ones((2, 3), np.float32))
    node = next(n for n in g.nodes if n.op == "scan")
    body = node.bodies[0]
    body.inputs[0].type = TensorType((4,), "f32")
    with pytest.raises(GraphcError, match="scan: body takes"):
        verify(g)


# ---------------------------------------------------------------------------- text, JSON, DOT
def _sample():
    def fn(x, w):
        def body(c, xt):
            d = cf.cond(c.sum() > 0, lambda a: a * w, lambda a: a + w, c)
            return (d + xt).tanh(), d

        c, ys = cf.scan(body, x[0], x)
        return cf.while_loop(lambda v: v.abs().sum() > 0.5, lambda v: v / 2, c), ys

    return graphc.trace(fn, np.ones((3, 2), np.float32), np.ones(2, np.float32))


def test_text_and_json_round_trip_nested_bodies():
    g = _sample()
    text = print_graph(g)
    assert "bodies 2" in text and "bodies 1" in text and "graph true_branch(" in text
    assert print_graph(parse_graph(text)) == text
    back = graph_from_json(graph_to_json(g))
    verify(back)
    assert print_graph(back) == text
    dot = graph_to_dot(g)
    assert "body: [" in dot and "cond: [" in dot and "cond[" in dot


def test_json_rejects_bodies_on_plain_ops_and_missing_bodies():
    data = graph_to_json(_sample())
    scan = next(n for n in data["nodes"] if n["op"] == "scan")
    scan["bodies"] = []
    with pytest.raises(GraphcError, match="holds 1 bodies"):
        graph_from_json(data)
    del scan["bodies"]
    with pytest.raises(GraphcError, match="only control-flow nodes have bodies"):
        graph_from_json(data)


def test_parser_rejects_a_wrong_body_count():
    text = print_graph(_sample()).replace("bodies 1", "bodies 2", 1)
    with pytest.raises(GraphcError):
        parse_graph(text)


def test_plan_file_round_trip(tmp_path):
    g = _sample()
    plan = _plan(g)
    x, w = np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2), np.array([0.5, -2], np.float32)
    expected = plan(x, w)
    plan.save(str(tmp_path / "p.graphc"))
    loaded = graphc.load_plan(str(tmp_path / "p.graphc"))
    for a, b in zip(loaded(x, w), expected):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- passes
def test_passes_run_inside_bodies():
    def fn(x):
        def body(c, xt):
            a = (c * 1.0 + xt).tanh()
            b = (c * 1.0 + xt).tanh()  # cse merges it with a; simplify drops the * 1.0
            dead = xt.sum()  # noqa: F841 - dce removes it
            two = np.float32(1.0) + np.float32(1.0)
            return a + b * two, None

        return cf.scan(body, x[0], x)[0]

    x = np.full((3, 2), 0.1, np.float32)
    g = graphc.trace(fn, x)
    before = next(n for n in g.nodes if n.op == "scan").bodies[0].op_counts()
    opt = passes.optimize(g, check=True)
    body = next(n for n in opt.nodes if n.op == "scan").bodies[0]
    assert before.get("tanh") == 2 and before.get("mul") >= 2 and "sum" in before
    assert [n.op for n in body.nodes] == ["fused"]  # one kernel per step
    inner = body.nodes[0].subgraph.op_counts()
    assert inner.get("tanh") == 1 and "sum" not in inner and inner.get("mul") == 1
    c = x[0]
    for t in range(3):
        c = 3 * np.tanh(c + x[t])
    np.testing.assert_allclose(_plan(g)(x), c, rtol=1e-5)


def test_a_constant_predicate_folds_the_branch_away():
    def fn(x):
        return cf.cond(np.float32(2) > x[0] * 0 + 1, lambda a: a * 3, lambda a: a - 3, x)

    g = graphc.trace(fn, np.ones(2, np.float32))
    assert "cond" in g.op_counts()
    opt = passes.optimize(g, passes=["constant_fold", "simplify", "cse", "dce"], check=True)
    # x[0] * 0 + 1 is not known statically (NaN * 0), so build a truly constant predicate too.
    g2 = graphc.trace(
        lambda x: cf.cond(x.new_ones(()) > 0, lambda a: a * 3, lambda a: a - 3, x), np.ones(2, np.float32)
    )
    opt2 = passes.optimize(g2, passes=["constant_fold", "dce"], check=True)
    assert "cond" not in opt2.op_counts() and "cond" in opt.op_counts()
    np.testing.assert_allclose(_plan(g2)(np.array([1, 2], np.float32)), [3, 6])


def test_cpu_compiles_each_body_node_once_whatever_the_trip_count(monkeypatch):
    from graphc.kernels import cpu
    from graphc.kernels.cpu import control_flow as cpu_cf

    counts = []
    for length in (3, 40):
        x = np.ones((length, 4), np.float32)
        g = passes.optimize(
            graphc.trace(lambda x: cf.scan(lambda carry, xt: ((carry * xt).tanh(), carry + 1), x[0], x), x)
        )
        node = next(n for n in g.nodes if n.op == "scan")
        calls = []

        def counting(n, in_place=None, calls=calls):
            calls.append(n.op)
            return cpu.compile_node(n, in_place)

        kernel = cpu_cf._scan_kernel(node, counting)
        outs = [np.empty(v.shape, v.type.np_dtype) for v in node.outputs]
        kernel(*[x if v.shape == x.shape else x[0] for v in node.inputs], *outs)
        c, ys = x[0], []
        for t in range(length):
            ys.append(c + 1)
            c = np.tanh(c * x[t])
        np.testing.assert_allclose(outs[1], np.stack(ys), rtol=1e-6)
        counts.append(len(calls))
    assert counts[0] == counts[1] > 0


def test_body_plans_bind_every_input_and_output_so_steps_copy_nothing(rng):
    # A body's memory plan has no in-place outputs: each step's kernels read the carry buffer and
    # xs[t] and write the next carry and ys[t] themselves (an output over an input's bytes made
    # the input unbindable: copied in and out every step). Numba kernels are called through their
    # compiled entry points (no per-call type dispatch).
    from numba.core.dispatcher import Dispatcher

    from graphc.kernels import cpu
    from graphc.kernels.cpu import control_flow as cpu_cf

    x = rng.standard_normal((3, 4, 8)).astype(np.float32)
    g = passes.optimize(
        graphc.trace(lambda x: cf.scan(lambda c, xt: ((c * xt + 1).tanh() * 2, c.sum()), x[0], x), x)
    )
    node = next(n for n in g.nodes if n.op == "scan")
    body = cpu_cf.SubPlan(node.bodies[0], cpu.compile_node, invariant=2)
    assert body.in_slots[0] is not None and body.out_slots[0] is not None  # the carry
    kernel = cpu_cf._scan_kernel(node, cpu.compile_node)
    outs = [np.empty(v.shape, v.type.np_dtype) for v in node.outputs]
    args = [x if v.shape == x.shape else x[0] for v in node.inputs]
    made = []
    real = cpu_cf._scan_schedule
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cpu_cf, "_scan_schedule", lambda *a: made.append(real(*a)) or made[-1])
        kernel(*args, *outs)
    ((calls, nodes),) = made
    steps = calls[1:-1]  # between the carry's copy in and its copy out: only the body's kernels
    assert calls[0][0] is calls[-1][0] is np.copyto and len(steps) == 3 * len(node.bodies[0].nodes)
    assert all(n is not None for n in nodes[1:-1]) and np.copyto not in [fn for fn, _ in steps]
    assert not any(isinstance(fn, Dispatcher) for fn, _ in steps)
    c, ys = x[0], []
    for t in range(3):
        ys.append(c.sum())
        c = np.tanh(c * x[t] + 1) * 2
    np.testing.assert_allclose(outs[0], c, rtol=1e-6)
    np.testing.assert_allclose(outs[1], ys, rtol=1e-5)


def test_loop_carries_ping_pong_without_copies():
    from graphc.kernels import cpu
    from graphc.kernels.cpu.control_flow import SubPlan

    g = passes.optimize(
        graphc.trace(
            lambda x: cf.scan(lambda c, xt: (c @ xt, c.sum()), x[0], x), np.ones((3, 2, 2), np.float32)
        )
    )
    body = next(n for n in g.nodes if n.op == "scan").bodies[0]
    sub = SubPlan(body, cpu.compile_node, invariant=2)
    assert sub.in_slots[0] is not None and sub.out_slots[0] is not None  # carry rebound, not copied
    assert sub.in_slots[1] is not None  # the x slice is bound to xs[i]


def _scan_loop(c, x, w, reverse):
    """The scan below as a NumPy loop: carry c = tanh(c * w + x_t), ys each step's c."""
    ys = [None] * len(x)
    for t in reversed(range(len(x))) if reverse else range(len(x)):
        c = np.tanh(c * w + x[t])
        ys[t] = c
    return c, np.stack(ys)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_schedule_is_reused_for_new_data_and_rebuilt_for_new_arrays(rng, reverse):
    # The CPU scan precomputes each step's bindings for the arrays it is called with: a plan's
    # next call (new data, same arena) reuses them, a call on other arrays rebuilds them; odd and
    # even lengths end in either carry buffer.
    from graphc.kernels import cpu

    def fn(c, x, w):
        return cf.scan(lambda c, xt: ((c * w + xt).tanh(),) * 2, c, x, reverse=reverse)

    def fresh(length):
        return [rng.standard_normal(s).astype(np.float32) for s in ((3,), (length, 3), (3,))]

    for length in (5, 4):
        g = graphc.trace(fn, *fresh(length))
        plan = _plan(g)
        node = next(n for n in passes.optimize(g).nodes if n.op == "scan")
        assert [v.name for v in node.inputs] == ["c", "x", "w"]
        kernel = cpu.compile_node(node)
        for _ in range(2):
            c, x, w = fresh(length)
            want_c, want_ys = _scan_loop(c, x, w, reverse)
            got_c, got_ys = plan(c, x, w)
            np.testing.assert_allclose(got_c, want_c, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got_ys, want_ys, rtol=1e-5, atol=1e-6)
            outs = [np.full(v.shape, 7, v.type.np_dtype) for v in node.outputs]  # new arrays each call
            kernel(c, x, w, *outs)
            np.testing.assert_allclose(outs[0], want_c, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(outs[1], want_ys, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [4, 5])
def test_carries_stacked_as_ys_live_in_their_slots(rng, reverse, length):
    # A carry that a y stacks as it enters each step (what a forward scan saves for its backward)
    # or as it leaves it (an RNN's h) is written straight into that y's slots: no copy per step.
    from graphc.kernels import cpu
    from graphc.kernels.cpu import control_flow as cpu_cf

    def fn(a, b, x):
        def body(carry, xt):
            a, b = carry
            new_b = b + a
            return ((a * xt).tanh(), new_b), (a, new_b)

        return cf.scan(body, (a, b), x, reverse=reverse)

    a, b, x = (rng.standard_normal(s).astype(np.float32) for s in ((3,), (3,), (length, 3)))
    node = next(n for n in passes.optimize(graphc.trace(fn, a, b, x)).nodes if n.op == "scan")
    made = []
    real = cpu_cf._scan_schedule
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cpu_cf, "_scan_schedule", lambda *args: made.append(real(*args)) or made[-1])
        kernel = cpu_cf._scan_kernel(node, cpu.compile_node)
        outs = [np.empty(v.shape, v.type.np_dtype) for v in node.outputs]
        kernel(a, b, x, *outs)
    ((calls, _),) = made
    assert np.copyto not in [fn for fn, _ in calls[2:-2]]  # only the carries' copies in and out
    want_a, want_b, ys_a, ys_b = a, b, [None] * length, [None] * length
    for t in reversed(range(length)) if reverse else range(length):
        ys_a[t] = want_a
        want_a, want_b = np.tanh(want_a * x[t]), want_b + want_a
        ys_b[t] = want_b
    for got, want in zip(outs, (want_a, want_b, np.stack(ys_a), np.stack(ys_b))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _is_denormal(x: np.ndarray) -> np.ndarray:
    return (x != 0) & (np.abs(x) < np.finfo(x.dtype).tiny)


def test_loops_flush_denormals_to_zero_and_restore_the_mode_after():
    from graphc.kernels.cpu.denormals import SUPPORTED

    # c halves each step from 1e-30: past step 26 it is below float32's smallest normal. The CPU
    # loop runs with flush-to-zero (denormal steps cost ~100x on x86: a long LSTM's backward);
    # above that range every value is exactly the IEEE one.
    x = np.full((40, 3), 0.5, np.float32)
    c0 = np.full(3, 1e-30, np.float32)
    g = graphc.trace(lambda c, x: cf.scan(lambda c, xt: (c * xt, c * xt), c, x), c0, x)
    _, ys = _plan(g)(c0, x)
    expected = c0 * np.cumprod(x, axis=0, dtype=np.float32)  # numpy keeps the denormals
    assert _is_denormal(expected).any()
    normal = ~_is_denormal(expected)
    np.testing.assert_array_equal(ys[normal], expected[normal])
    if SUPPORTED:
        assert not _is_denormal(ys).any()
        np.testing.assert_array_equal(ys[~normal], 0)
    # The thread's floating-point mode is back as it was: numpy makes denormals again.
    assert _is_denormal(np.float32(1e-38) * np.float32(0.5))


def test_flush_denormals_nests_and_restores():
    from graphc.kernels.cpu.denormals import SUPPORTED, flush_denormals

    if not SUPPORTED:
        pytest.skip("flush-to-zero is set on x86-64 only")
    tiny, half = np.float32(1e-38), np.float32(0.5)
    with flush_denormals():
        with flush_denormals():
            assert tiny * half == 0
        assert tiny * half == 0  # the inner one leaves the outer's mode on
    assert _is_denormal(tiny * half)
    with pytest.raises(ZeroDivisionError), flush_denormals():
        raise ZeroDivisionError
    assert _is_denormal(tiny * half)


# ---------------------------------------------------------------------------- gradients
def _fd_check(fn, *arrays, eps=1e-6, tol=1e-6):
    g = graphc.trace(fn, *arrays)
    names = [v.name for v in g.data_inputs]
    joint, index = grad(g, 0, wrt=names)
    verify(joint)
    feeds = dict(zip(names, arrays))
    analytic = execute(joint, feeds)
    compiled = _plan(joint)(*arrays)
    for name, a in zip(names, arrays):
        numeric = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            hi, lo = a.copy(), a.copy()
            hi[idx] += eps
            lo[idx] -= eps
            numeric[idx] = (execute(g, {**feeds, name: hi})[0] - execute(g, {**feeds, name: lo})[0]) / (
                2 * eps
            )
        np.testing.assert_allclose(analytic[index[name]], numeric, atol=tol, rtol=tol)
        np.testing.assert_allclose(compiled[index[name]], analytic[index[name]], rtol=1e-9, atol=1e-12)


def test_scan_gradient_matches_finite_differences(rng):
    def fn(x, w):
        def body(c, xt):
            h, n = c
            h = (h * w + xt).tanh()
            return (h, n + 1), h * h * n

        (h, n), ys = cf.scan(body, (x[0], x[0, 0] * 0), x)
        return h.sum() + ys.sum() * 0.5

    _fd_check(fn, rng.standard_normal((4, 3)), rng.standard_normal(3))


def test_reverse_scan_gradient_matches_finite_differences(rng):
    def fn(x, w):
        c, ys = cf.scan(lambda c, xt: ((c * w + xt).sin(), c * xt), w, x, reverse=True)
        return (c * c).sum() + (ys * ys).sum()

    _fd_check(fn, rng.standard_normal((4, 3)), rng.standard_normal(3))


def test_while_loop_gradient_matches_finite_differences(rng):
    def fn(x, w):
        c = cf.while_loop(lambda c: c.abs().sum() > 0.3, lambda c: c * w * 0.9, x + w)
        return (c * c).sum()

    _fd_check(fn, rng.uniform(0.5, 1, 3), rng.uniform(0.5, 0.9, 3))


def test_cond_gradient_is_the_taken_branchs(rng):
    def fn(x, w):
        d = x * w
        return cf.cond(d.sum() > 0, lambda a: (a * w).sin(), lambda a: a * a - w, d).sum()

    w = rng.standard_normal(3)
    _fd_check(fn, np.abs(w) * np.sign(w), w)  # x * w > 0: the true branch
    _fd_check(fn, -np.abs(w) * np.sign(w), w)  # the false branch


def test_scan_weight_gradients_are_one_gemm_after_the_loop(rng):
    # Both forms of a weight's per-step gradient: h_t^T @ g_t (h @ w) and g_t @ h_t^T (w @ h);
    # the contraction (2 rows) is short, so each is summed as one GEMM over the stacked steps.
    def fn(x, w, u):
        def body(h, xt):
            return (h @ w + xt).tanh(), (u @ h).sin()

        h, ys = cf.scan(body, x[0] * 0, x)
        return (h * h).sum() + (ys * ys).sum()

    x, w, u = rng.standard_normal((4, 2, 6)), rng.standard_normal((6, 6)) / 2, rng.standard_normal((6, 2))
    _fd_check(fn, x, w, u)
    joint, _ = grad(graphc.trace(fn, x, w, u), 0, wrt=["x", "w", "u"])
    backward = [n for n in joint.nodes if n.op == "scan" and n.attrs["reverse"]]
    assert len(backward) == 1
    carries = backward[0].outputs[: backward[0].attrs["n_carry"]]
    assert (6, 6) not in [v.shape for v in carries]  # no per-step accumulator of w's gradient
    assert any(n.op == "matmul" and n.output.shape == (6, 6) for n in joint.nodes)  # after the loop


def test_scan_backward_reads_saved_products_and_transcendentals(rng):
    # The backward step neither redoes the forward's GEMM nor its tanh/exp: the forward saves them.
    def fn(x, w):
        def body(h, xt):
            z = h @ w + xt
            return (z.tanh() * z.sigmoid()), z.exp().sum()

        h, ys = cf.scan(body, x[0] * 0, x)
        return (h * h).sum() + ys.sum()

    x, w = rng.standard_normal((5, 2, 6)), rng.standard_normal((6, 6)) / 2
    _fd_check(fn, x, w)
    joint, _ = grad(graphc.trace(fn, x, w), 0, wrt=["x", "w"])
    (backward,) = [n for n in joint.nodes if n.op == "scan" and n.attrs["reverse"]]
    ops = backward.bodies[0].op_counts()
    assert ops.get("matmul", 0) == 1  # h's cotangent only
    assert not {"tanh", "exp"} & set(ops)


def test_gradients_match_torch_autograd(rng):
    x, w, v = rng.standard_normal((5, 3)), rng.standard_normal(3), rng.standard_normal(3)

    def fn(x, w, v):
        def body(h, xt):
            h = (h * w + xt).tanh()
            h = cf.cond(h.sum() > 0, lambda a: a * v, lambda a: a + v, h)
            return h, h.sum()

        h, ys = cf.scan(body, v, x)
        h = cf.while_loop(lambda c: c.abs().sum() > 0.2, lambda c: c * 0.5, h)
        return (h * h).sum() + (ys * ys).sum()

    g = graphc.trace(fn, x, w, v)
    joint, index = grad(g, 0, wrt=["x", "w", "v"])
    got = _plan(joint)(x, w, v)

    tx, tw, tv = (torch.tensor(a, requires_grad=True) for a in (x, w, v))
    h, ys = tv, []
    for t in range(5):
        h = torch.tanh(h * tw + tx[t])
        h = h * tv if h.sum() > 0 else h + tv
        ys.append(h.sum())
    while h.abs().sum() > 0.2:
        h = h * 0.5
    loss = (h * h).sum() + (torch.stack(ys) ** 2).sum()
    loss.backward()
    np.testing.assert_allclose(got[0], loss.item(), rtol=1e-10)
    for name, t in (("x", tx), ("w", tw), ("v", tv)):
        np.testing.assert_allclose(got[index[name]], t.grad.numpy(), rtol=1e-8, atol=1e-10)


def test_sliced_gates_backward_is_one_concat_and_bias_gradient_one_sum_after_the_loop(rng):
    # An LSTM-like step slices one GEMM's result into gates: the VJP's zero pads of each gate and
    # their sum become one concat; the bias's per-step gradient (a sum over the batch) is one sum
    # over the stacked gate gradients after the loop, not an accumulator carried through it; and
    # the forward stacks only residuals the backward reads (not the GEMM's product here).
    def fn(x, w, b):
        def body(c, xt):
            z = c @ w + b + xt
            i, g = z[:, :3].sigmoid(), z[:, 3:].tanh()
            return i * g + c * 0.5, (i * g).sum()

        c, ys = cf.scan(body, x[0, :, :3] * 0, x)
        return (c * c).sum() + (ys * ys).sum()

    x, w, b = rng.standard_normal((4, 2, 6)), rng.standard_normal((3, 6)) / 2, rng.standard_normal(6)
    _fd_check(fn, x, w, b)
    joint, _ = grad(graphc.trace(fn, x, w, b), 0, wrt=["x", "w", "b"])
    forward = next(n for n in joint.nodes if n.op == "scan" and not n.attrs["reverse"])
    (backward,) = [n for n in joint.nodes if n.op == "scan" and n.attrs["reverse"]]
    step = backward.bodies[0]
    ops = step.op_counts()
    assert "pad" not in ops and ops.get("concat") == 1
    carries = backward.outputs[: backward.attrs["n_carry"]]
    assert (6,) not in [v.shape for v in carries]  # no per-step accumulator of b's gradient
    read = {v for n in step.nodes for v in n.inputs} | set(step.outputs)
    saved = [v for v in step.data_inputs if v.name.startswith("p")]  # the stacked residuals
    assert saved and all(v in read for v in saved)  # none stacked for nothing
    assert (4, 2, 6) not in [v.shape for v in forward.outputs]  # the GEMM's product is not stacked
