"""graphc.compile converts if/while/for on traced Tensors into cond/while_loop/scan (graphc/autograph.py)."""

import numpy as np
import pytest

import graphc
from graphc import GraphcError, nn
from graphc.autograph import convert, converted


class Halve(nn.Module):
    def forward(self, X):
        while X.abs().sum() > 1:
            X /= 2
        return X


def _halve(x):
    x = x.copy()
    while np.abs(x).sum() > 1:
        x /= 2
    return x


def test_while_on_a_tensor_compiles_unchanged():
    x = np.array([3.0, -2.0, 5.0], np.float32)
    plan = graphc.compile(Halve(), x)
    np.testing.assert_allclose(plan(x), _halve(x))
    y = np.array([0.25, 0.5, -8.0], np.float32)
    np.testing.assert_allclose(plan(y), _halve(y))  # the trip count is decided at run time
    with converted(Halve()) as m:
        assert "while_loop" in graphc.trace(m, x).op_counts()


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        scale = 0
        for _ in range(3):  # a Python loop over numbers still unrolls
            scale += 1
        if x.sum() > 0:
            y = self.lin(x) * scale
            only_here = y  # noqa: F841 - a temporary of one branch
        else:
            y = x - scale
        if self.training:  # a Python condition stays Python
            y = y + 0
        n = x.sum() * 0
        while n < 4:
            n = n + 1
            y = y * 1.5
        return y + n


def _branchy(m, x):
    y = (x @ m.lin.weight.T + m.lin.bias) * 3 if x.sum() > 0 else x - 3
    return y * 1.5**4 + 4


def test_if_and_while_with_parameters_and_python_values():
    m = Branchy()
    x = np.array([1.0, 2.0, -0.5], np.float32)
    plan = graphc.compile(m, x)
    for v in (x, -x):
        np.testing.assert_allclose(plan(v), _branchy(m, v), rtol=1e-5)
    with converted(m) as mm:
        counts = graphc.trace(mm, x).op_counts()
    assert counts.get("cond") == 1 and counts.get("while_loop") == 1
    assert "forward" not in m.__dict__  # the instance is left as it was


def test_functions_convert_too_and_keep_their_argument_names():
    def f(a, b):
        if (a * b).sum() > 0:
            out = a + b
        else:
            out = a - b
        return out

    a, b, c = np.ones(2, np.float32), np.full(2, -3, np.float32), np.full(2, 0.5, np.float32)
    plan = graphc.compile(f, a, b)
    np.testing.assert_allclose(plan(a, b), a - b)
    np.testing.assert_allclose(plan(a, c), a + c)
    g = graphc.trace(convert(f), a, b)
    assert [v.name for v in g.data_inputs] == ["a", "b"]


def test_a_variable_defined_in_one_branch_only_is_named_when_used():
    def f(x):
        if x.sum() > 0:
            y = x * 2
        return y  # noqa: F821 - undefined when the branch is not taken

    with pytest.raises(GraphcError, match=r"variable 'y' is not defined on every path"):
        graphc.compile(f, np.ones(2, np.float32))


def test_unconvertible_constructs_name_the_construct_and_the_line():
    def early_return(x):
        if x.sum() > 0:
            return x
        return -x

    def breaks(x):
        while x.sum() > 0:
            x = x - 1
            if x.max() < 3:
                break
        return x

    for fn, construct, offset in ((early_return, "a return statement", 1), (breaks, "a break statement", 1)):
        line = fn.__code__.co_firstlineno + offset
        with pytest.raises(GraphcError, match=rf"test_autograph.py:{line}: {construct} inside this"):
            graphc.compile(fn, np.ones(2, np.float32))


def test_python_semantics_when_nothing_is_traced():
    def f(n):
        total = 0
        while n > 0:
            if n % 2:
                total += n
            n -= 1
        return total

    assert convert(f)(5) == f(5) == 9
    assert convert(lambda x: x) is None  # no statements to convert


def test_plain_trace_still_refuses_python_control_flow():
    with pytest.raises(GraphcError, match="control flow"):
        graphc.trace(Halve(), np.ones(3, np.float32))


# ---------------------------------------------------------------------------- for loops
def _torch_check(fn, arrays, wrt, torch_kwargs=None, rtol=1e-9):
    """Trace ``convert(fn)`` (float64), take gradients of its scalar output with respect to the
    inputs ``wrt``, run it on the reference and CPU backends; compare with torch eager running
    ``fn`` itself. Returns the traced graph."""
    import torch

    from graphc.kernels.reference import execute
    from graphc.passes.autodiff import grad

    g = graphc.trace(convert(fn), *arrays)
    names = [v.name for v in g.data_inputs]
    joint, index = grad(g, 0, wrt=wrt)
    feeds = dict(zip(names, arrays))
    ref = execute(joint, feeds)
    compiled = graphc.compile_graph(joint)(*arrays)
    ts = {n: torch.tensor(a, requires_grad=n in wrt) for n, a in feeds.items()}
    loss = fn(*ts.values(), **(torch_kwargs or {}))
    loss.backward()
    np.testing.assert_allclose(ref[0], loss.item(), rtol=rtol)
    np.testing.assert_allclose(compiled[0], loss.item(), rtol=rtol)
    for n in wrt:
        np.testing.assert_allclose(ref[index[n]], ts[n].grad.numpy(), rtol=rtol, atol=1e-12)
        np.testing.assert_allclose(compiled[index[n]], ts[n].grad.numpy(), rtol=rtol, atol=1e-12)
    return g


def test_for_over_a_tensor_is_one_scan_with_appended_outputs_and_torchs_gradients(rng):
    import torch

    def rnn(x, w, stack=graphc.stack):
        h = x[0] * 0
        ys = []
        for xt in x:
            h = (h * w + xt).tanh()
            ys.append(h * 2)
            ys.append(h.sum())
        return (stack(ys[::2]) ** 2).sum() + stack(ys[1::2]).sum() * 0.5 + h.sum()

    x, w = rng.standard_normal((5, 3)), rng.standard_normal(3)
    g = _torch_check(rnn, (x, w), ["x", "w"], {"stack": torch.stack})
    counts = g.op_counts()
    assert counts["scan"] == 1 and "tanh" not in counts  # one body, not five unrolled steps


def test_for_over_range_of_a_traced_count_is_a_while_loop(rng):
    import torch

    def f(x, n):
        acc = x * 0
        for i in range(1, n, 2):
            acc = (acc + x * i).sin()
        return acc.sum()

    x = rng.standard_normal(3)
    for n in (0, 1, 6):
        _torch_check(f, (x, np.array(n, np.int64)), ["x"])
    plan = graphc.compile(f, x.astype(np.float32), np.array(4, np.int64))
    for n in (0, 3, 7):  # the trip count is decided at run time
        expected = f(torch.tensor(x), n).item()
        np.testing.assert_allclose(plan(x.astype(np.float32), np.array(n)), expected, rtol=1e-5, atol=1e-6)
    with converted(f) as ff:
        assert graphc.trace(ff, x, np.array(4)).op_counts()["while_loop"] == 1


def test_for_over_zip_and_enumerate_of_tensors(rng):
    def f(a, b):
        s = a[0] * 0
        for i, (p, q) in enumerate(zip(a, b), 1):
            s = s * q + p * i
        last = p * 3  # the loop variable keeps its last value, as in Python
        return (s * s).sum() + last.sum()

    a, b = rng.standard_normal((5, 2)), rng.standard_normal((4, 2))  # zip stops at the shorter
    g = _torch_check(f, (a, b), ["a", "b"])
    assert g.op_counts()["scan"] == 1


def test_accumulators_that_start_as_python_numbers_become_tensors(rng):
    def f(x, n):
        total, count, acc = 0, 0, 0.0
        for r in x:
            total = total + r * r  # 0 + f64[2]: carried as f64[2] from the first step on
            count += 1
        for i in range(n):
            acc = acc + x[0] * i
        return total.sum() + acc.sum() * count

    g = _torch_check(f, (rng.standard_normal((3, 2)), np.array(3, np.int64)), ["x"])
    assert g.op_counts()["scan"] == 1 and g.op_counts()["while_loop"] == 1


def test_a_tuple_state_is_carried_as_one_variable(rng):
    def f(x, w):
        state = (x[0] * 0, w)
        for r in x:
            h, c = state
            state = ((h * c + r).tanh(), c * 0.9 + h)
        return (state[0] * state[1]).sum()

    g = _torch_check(f, (rng.standard_normal((4, 3)), rng.standard_normal(3)), ["x", "w"])
    assert g.op_counts()["scan"] == 1


class _CharRNNCode:
    """One forward for graphc's and torch's modules: an Elman RNN over time with a readout."""

    def forward(self, x):
        h = self.h0 * 1
        outs = []
        for xt in x:
            h = self.lib.tanh(self.inp(xt) + self.rec(h))
            outs.append(self.out(h))
        return self.lib.stack(outs)


class _GraphcRNN(_CharRNNCode, nn.Module):
    def __init__(self):
        super().__init__()
        self.lib, self.inp, self.rec, self.out = graphc, nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)
        self.h0 = nn.Parameter(np.zeros((2, 4), np.float32))


def test_a_module_with_parameters_scans_over_time_like_torch(rng):
    import torch

    m = _GraphcRNN()
    tm = type("TorchRNN", (_CharRNNCode, torch.nn.Module), {})()
    torch.nn.Module.__init__(tm)
    tm.lib = torch
    for name in ("inp", "rec", "out"):
        lin = getattr(m, name)
        t = torch.nn.Linear(*lin.weight.shape[::-1])
        t.weight.data, t.bias.data = torch.tensor(np.asarray(lin.weight)), torch.tensor(np.asarray(lin.bias))
        setattr(tm, name, t)
    tm.h0 = torch.zeros(2, 4)
    x = rng.standard_normal((6, 2, 3)).astype(np.float32)
    plan = graphc.compile(m, x)
    np.testing.assert_allclose(plan(x), tm(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    with converted(m) as mm:
        assert graphc.trace(mm, x).op_counts()["scan"] == 1


def test_nested_for_loops_collect_rows_of_columns():
    def f(x):
        rows = []
        for r in x:
            cols = []
            acc = r[0] * 0
            for v in r:
                acc = acc + v
                cols.append(acc)
            rows.append(graphc.stack(cols))
        return graphc.stack(rows)

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(graphc.compile(f, x)(x), np.cumsum(x, axis=1))
    with converted(f) as ff:
        assert graphc.trace(ff, x).op_counts()["scan"] == 1  # the inner loop is a scan in its body


def test_for_keeps_python_semantics_on_python_values():
    def f(xs, n):
        total, seen = 0, []
        for i, v in enumerate(xs):
            if v % 2:
                continue  # escapes are fine when the loop runs as Python
            seen.append(v * i)
        for k in range(n):
            total += k
        else:
            total += 100
        return total, seen, v

    assert convert(f)([1, 2, 3, 4], 3) == f([1, 2, 3, 4], 3) == (103, [2, 12], 4)
    x = np.ones(2, np.float32)
    g = graphc.trace(convert(lambda_free_unroll), x)
    assert "scan" not in g.op_counts() and "while_loop" not in g.op_counts()


def lambda_free_unroll(x):
    for _ in range(3):  # a Python int range still unrolls
        x = x * 2
    return x


def _loop_errors():
    def breaks(x):
        s = x[0]
        for r in x:
            s = s + r
            if r.sum() > 9:
                break
        return s

    def returns_in_range(x, n):
        for i in range(n):
            return x * i
        return x

    def none_start(x):
        h = None
        for r in x:
            h = r
            h = h * 2
        return h

    def appends_in_while(x):
        ys = []
        while x.sum() < 10:
            x = x + 1
            ys.append(x)
        return x

    def appends_over_traced_range(x, n):
        ys = []
        for _ in range(n):
            ys.append(x)
        return x

    def reads_its_list(x):
        ys = [x[0]]
        for r in x:
            ys.append(ys[-1] + r)
        return ys[-1]

    def changes_shape(x):
        h = x[0]
        for r in x:
            h = h[None] + r
        return h

    return [
        (breaks, (), 2, r"a break statement inside this for statement cannot be converted"),
        (returns_in_range, (np.array(2),), 1, r"a return statement inside this for statement"),
        (none_start, (), 2, r"variable 'h' is a NoneType before the converted for loop and holds Tensors"),
        (appends_in_while, (), 4, r"ys.append\(\.\.\.\) inside the converted while loop at .*trip count"),
        (appends_over_traced_range, (np.array(2),), 3, r"ys.append\(\.\.\.\) inside the converted for loop"),
        (
            reads_its_list,
            (),
            3,
            r"list 'ys' is only appended to \(ys.append\(\.\.\.\)\) inside the converted",
        ),
        (
            changes_shape,
            (),
            2,
            r"variable 'h' is f32\[1,2\] after a step of the converted for loop and f32\[2\]",
        ),
    ]


@pytest.mark.parametrize(
    "fn, extra, offset, message", _loop_errors(), ids=[case[0].__name__ for case in _loop_errors()]
)
def test_unconvertible_for_loops_name_the_problem_and_the_line(fn, extra, offset, message):
    line = fn.__code__.co_firstlineno + offset
    with pytest.raises(GraphcError, match=rf"test_autograph.py:{line}: {message}"):
        graphc.compile(fn, np.ones((3, 2), np.float32), *extra)


def test_appending_inside_a_traced_if_in_a_for_loop_says_what_to_write():
    def f(x):
        ys = []
        for r in x:
            if r.sum() > 0:
                ys.append(r)
        return x

    with pytest.raises(GraphcError, match="append it after the statement"):
        graphc.compile(f, np.ones((3, 2), np.float32))


def test_compile_train_converts_a_tensor_while_loop_as_compile_does():
    """The halving loop (issue 17's model) inside a trained module: compile_train converts it too,
    and the step's loss and gradient step equal torch autograd's."""
    torch = pytest.importorskip("torch")
    import graphc.functional as F

    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((4, 3)).astype(np.float32) * 3

    class Halving(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(w0.copy())

        def forward(self, x):
            h = x @ self.w
            while h.abs().sum() > 1:
                h = h / 2
            return h

    x = rng.standard_normal((2, 4)).astype(np.float32)
    y = np.zeros((2, 3), np.float32)
    m = Halving()
    step = graphc.compile_train(m, F.mse_loss, graphc.optim.SGD(lr=0.1), x, y)
    loss = float(step(x, y))
    tw = torch.tensor(w0, requires_grad=True)
    h = torch.tensor(x) @ tw
    while h.abs().sum() > 1:
        h = h / 2
    want = torch.nn.functional.mse_loss(h, torch.tensor(y))
    want.backward()
    assert loss == pytest.approx(want.item(), rel=1e-5)
    np.testing.assert_allclose(np.asarray(m.w), w0 - 0.1 * tw.grad.numpy(), rtol=1e-5, atol=1e-6)
