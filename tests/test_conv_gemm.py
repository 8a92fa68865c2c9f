"""The convolution GEMM with its epilogue in the store (kernels/cpu/conv_gemm.py, micro-kernel in
conv_avx512.py) against NumPy in float64: ragged edges of m, n and k (the narrow last panel, depth
over one KC block), every epilogue step, the bits of the GEMM followed by the separate epilogue
(NaN and signed zeros through maximum/minimum included), the same bits on 1 and 2 numba threads,
and the fused matmuls of compiled convolutions routed here."""

import numba
import numpy as np
import pytest

from graphc.kernels.cpu import conv_gemm
from graphc.kernels.cpu.conv_avx512 import COLS, ROWS
from graphc.kernels.cpu.conv_gemm import KC, ConvGemm, Epilogue

SELECTS = {"a": np.less, "b": np.less_equal, "c": np.greater, "d": np.greater_equal, "e": None}

pytestmark = pytest.mark.skipif(
    not conv_gemm.HAVE_AVX512, reason="no AVX-512 on this CPU (or numba's target)"
)


@pytest.fixture(autouse=True)
def restore_numba_threads():
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


def _record_conv_calls(monkeypatch) -> list:
    """The epilogues of the ConvGemm calls made from now on (the kernel still runs)."""
    calls: list = []
    real = ConvGemm.__call__
    monkeypatch.setattr(ConvGemm, "__call__", lambda self, *a: calls.append(self.epilogue) or real(self, *a))
    return calls


def _operands(rng, program: str, m: int, n: int) -> list[np.ndarray]:
    """One float32 array per array step of ``program``: ``[m, 1]`` for a per-row step, ``[m, n]`` or
    a row vector ``[n]`` (alternately) for a vector step."""
    ops = []
    for ch in program:
        if ch in "rR":
            ops.append(rng.standard_normal((m, 1), dtype=np.float32))
        elif ch in "vV":
            shape = (m, n) if len(ops) % 2 == 0 else (n,)
            ops.append(rng.standard_normal(shape, dtype=np.float32))
    return ops


def _steps(program: str, x: np.ndarray, ops: list, consts: tuple[float, ...], dtype) -> np.ndarray:
    """``x`` through ``program`` in ``dtype``, as the pointwise kernels compute it: ``maximum(a, b)``
    is ``a if (a > b or a != a) else b``; ``where(x < k, k2, x)`` and the others of ``SELECTS``."""
    ops = iter(o.astype(dtype) for o in ops)
    consts = iter(dtype(k) for k in consts)
    x = x.astype(dtype)
    for ch in program:
        if ch in "rv":
            x = x + next(ops)
        elif ch in "RV":
            x = x * next(ops)
        elif ch in SELECTS:
            with np.errstate(invalid="ignore"):
                cond = x != x if ch == "e" else SELECTS[ch](x, next(consts))
            x = np.where(cond, next(consts), x).astype(dtype)
        else:
            k = next(consts)
            a, b = (x, k) if ch in "xn" else (k, x)
            pick = (a > b) if ch in "xX" else (a < b)
            x = np.where(pick | (a != a), a, b).astype(dtype)
    return x


def _consts(program: str) -> tuple[float, ...]:
    """Constants for ``program``'s steps: 0 for maximum, 6 for minimum, a relu's, a relu6's."""
    each = {"x": (0.0,), "X": (0.0,), "n": (6.0,), "N": (6.0,), "a": (0.0, 0.0), "b": (0.0, 0.0)}
    each.update({"c": (6.0, 6.0), "d": (1.0, -1.0), "e": (float("nan"),)})
    return tuple(k for ch in program for k in each.get(ch, ()))


def _run(program: str, a, b, ops, consts=(), threads: int | None = None) -> np.ndarray:
    if threads is not None:
        numba.set_num_threads(threads)
    m, n = a.shape[0], b.shape[-1]
    out = np.full((1, m, n), np.nan, np.float32)
    at = tuple(range(len(ops)))
    assert ConvGemm(Epilogue(program, at, tuple(consts)))(a, b.reshape(1, *b.shape[-2:]), out, list(ops))
    return out[0]


# Every epilogue letter in few programs: each program is one compiled kernel.
PROGRAMS = ["rvxn", "RVXNb", "reacd"]

SHAPES = [
    (8, 1, 64),  # one row tile, depth 1
    (16, 27, 3 * COLS + 5),  # the first conv's depth; a ragged last panel under 16 columns
    (13, 300, 2 * COLS + 20),  # ragged rows; depth over one KC block; a last panel of 20 columns
    (96, 2 * KC + 3, 196),  # more rows than columns: the rows are split over the threads
    (200, 64, 64),
    (520, 20, 64),  # more rows than one MC block on a thread
    (264, 40, 49),  # a late 7 x 7 layer: one panel and a narrow one
]


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("program", ["", "rx", *PROGRAMS])
def test_matches_numpy_in_float64(m, k, n, program):
    rng = np.random.default_rng(m * 1000 + k)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    ops = _operands(rng, program, m, n)
    consts = _consts(program)
    got = _run(program, a, b, ops, consts)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = _steps(program, a64 @ b64, ops, consts, np.float64)
    sums = "".join(ch for ch in program if ch in "rvRV")
    scale = _steps(sums, np.abs(a64) @ np.abs(b64), [np.abs(o) for o in ops], (), np.float64)
    assert np.all(np.abs(got - want) <= 2e-5 * (np.abs(scale) + np.abs(want)) + 1e-30)


@pytest.mark.parametrize("program", ["rx", *PROGRAMS])
def test_the_bits_of_the_gemm_then_the_separate_epilogue(program):
    rng = np.random.default_rng(7)
    m, k, n = 24, 2 * KC + 40, 2 * COLS + 9
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    b[:, 3] = 0.0
    a[5] = -0.0  # row 5 of the product: sums of signed zeros
    b[:, 7] = np.nan  # column 7: NaN through every step
    ops = _operands(rng, program, m, n)
    for o in ops:
        o.flat[::11] = -0.0
    consts = _consts(program)
    product = _run("", a, b, [])
    want = _steps(program, product, ops, consts, np.float32)
    got = _run(program, a, b, ops, consts)
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


@pytest.mark.parametrize("m,k,n", [(40, 300, 5 * COLS + 3), (300, 40, 100)])
def test_same_bits_on_one_and_two_threads(m, k, n):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    ops = _operands(rng, "rv", m, n)
    one = _run("rvxn", a, b, ops, (0.0, 6.0), threads=1)
    two = _run("rvxn", a, b, ops, (0.0, 6.0), threads=2)
    np.testing.assert_array_equal(one.view(np.int32), two.view(np.int32))


def test_split_shares_the_larger_operand():
    assert conv_gemm.split(1000, 169, 2) == (2, 1)  # the weight is the larger: rows
    assert conv_gemm.split(64, 3025, 2) == (1, 2)
    assert conv_gemm.split(ROWS, 8 * COLS, 4) == (1, 4)
    assert conv_gemm.split(3 * ROWS, 16, 4) == (3, 1)  # no more parts than row tiles


def test_strided_weight_and_declines_leave_the_output_alone():
    rng = np.random.default_rng(5)
    wide = rng.standard_normal((16, 70), dtype=np.float32)
    a = wide[:, 3:67]  # rows strided in a wider matrix
    b = rng.standard_normal((64, 100), dtype=np.float32)
    bias = rng.standard_normal((16, 1), dtype=np.float32)
    got = _run("r", a, b, [bias])
    want = a.astype(np.float64) @ b.astype(np.float64) + bias
    assert np.all(np.abs(got - want) <= 1e-5 * (np.abs(a) @ np.abs(b) + np.abs(bias)))
    kernel = ConvGemm(Epilogue("r", (0,), ()))
    out = np.full((1, 16, 100), 7.0, np.float32)
    bt = np.asfortranarray(b)  # B's columns not contiguous
    assert not kernel(a, bt.reshape(1, 64, 100), out, [bias])
    assert not kernel(a, b.reshape(1, 64, 100), out, [out[0, :, :1]])  # an operand over the output
    assert not kernel(a.astype(np.float64), b.reshape(1, 64, 100), out, [bias])
    assert (out == 7.0).all()


def test_a_declined_layout_is_remembered_and_a_fitting_one_still_runs(monkeypatch):
    # A loop body passes new views at every step: a layout declined once is declined again
    # without the full checks; arrays that fit still run, and an overlap is not remembered.
    rng = np.random.default_rng(6)
    a = rng.standard_normal((16, 64), dtype=np.float32)
    b = rng.standard_normal((64, 100), dtype=np.float32)
    bias = rng.standard_normal((16, 1), dtype=np.float32)
    kernel = ConvGemm(Epilogue("r", (0,), ()))
    calls = []
    prepare = kernel._prepare
    monkeypatch.setattr(kernel, "_prepare", lambda *args: calls.append(1) or prepare(*args))
    out = np.full((1, 16, 100), 7.0, np.float32)
    for _ in range(3):  # B's columns not contiguous: a new view each time, checked once
        assert not kernel(a, np.asfortranarray(b).reshape(1, 64, 100), out, [bias])
    assert len(calls) == 1 and (out == 7.0).all()
    bt = np.asfortranarray(b).reshape(1, 64, 100)
    for _ in range(3):  # the very same arrays again (a plan's step): answered by their identity
        monkeypatch.setattr(kernel, "_declined", set())  # (so a second layout check would show)
        assert not kernel(a, bt, out, [bias])
    assert len(calls) == 2 and (out == 7.0).all()
    for _ in range(2):  # an output over an operand: declined, and checked again (addresses)
        assert not kernel(a, b.reshape(1, 64, 100), out, [out[0, :, :1]])
    assert len(calls) == 4 and (out == 7.0).all()
    assert kernel(a, b.reshape(1, 64, 100), out, [bias])
    want = a.astype(np.float64) @ b.astype(np.float64) + bias
    assert np.all(np.abs(out[0] - want) <= 1e-5 * (np.abs(a) @ np.abs(b) + np.abs(bias)))


def _torch_conv(x, w, bias, residual=None, lo=0.0, hi=None):
    import torch

    tx, tw, tb = (torch.from_numpy(v.astype(np.float64)) for v in (x, w, bias))
    y = torch.nn.functional.conv2d(tx, tw, tb, 1, 1)
    bound = torch.nn.functional.conv2d(tx.abs(), tw.abs(), tb.abs(), 1, 1)
    if residual is not None:
        y = y + torch.from_numpy(residual.astype(np.float64))
        bound = bound + torch.from_numpy(np.abs(residual).astype(np.float64))
    if lo is not None or hi is not None:
        y = y.clamp(lo, hi)
    return y.numpy(), bound.numpy()


@pytest.mark.parametrize("kind", ["relu", "residual", "relu6", "sigmoid"])
def test_compiled_convolutions_run_here_and_match_torch(monkeypatch, kind):
    import graphc
    from graphc import functional as F

    calls = _record_conv_calls(monkeypatch)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 16, 12, 12), dtype=np.float32)
    w = rng.standard_normal((24, 16, 3, 3), dtype=np.float32) * 0.2
    bias = rng.standard_normal(24, dtype=np.float32)
    r = rng.standard_normal((1, 24, 12, 12), dtype=np.float32)
    if kind == "relu":
        plan = graphc.compile(lambda x: F.relu(F.conv2d(x, w, bias, 1, 1)), x, freeze=True)
        want, bound = _torch_conv(x, w, bias)
        got = plan(x)
    elif kind == "residual":
        plan = graphc.compile(lambda x, r: F.relu(F.conv2d(x, w, bias, 1, 1) + r), x, r, freeze=True)
        want, bound = _torch_conv(x, w, bias, r)
        got = plan(x, r)
    elif kind == "relu6":
        plan = graphc.compile(lambda x: F.hardtanh(F.conv2d(x, w, bias, 1, 1), 0.0, 6.0), x, freeze=True)
        want, bound = _torch_conv(x, w, bias, hi=6.0)
        got = plan(x)
    else:  # an epilogue conv_tile does not make: the general path
        plan = graphc.compile(lambda x: F.relu(F.sigmoid(F.conv2d(x, w, bias, 1, 1)) - 0.5), x, freeze=True)
        want, bound = _torch_conv(x, w, bias, lo=None)
        want = np.maximum(1 / (1 + np.exp(-want)) - 0.5, 0)
        assert not calls
        np.testing.assert_allclose(plan(x), want, rtol=1e-5, atol=1e-6)
        return
    assert calls, "the convolution's fused matmul did not run on conv_gemm"
    assert np.all(np.abs(got - want) <= 1e-5 * bound + 1e-30)
    assert (got == 0).any() and (got > 0).any()
    if kind == "relu6":
        assert (got == 6).any()


def test_a_second_output_read_from_the_first_runs_as_a_tail(monkeypatch):
    """A fused matmul with two outputs, relu(conv) and its square (Inception's conv before an LRN):
    the relu chain runs on conv_gemm, the square as a pointwise tail over its output, bit for bit
    the square of that output."""
    import graphc
    from graphc import functional as F

    calls = _record_conv_calls(monkeypatch)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 16, 12, 12), dtype=np.float32)
    w = rng.standard_normal((24, 16, 3, 3), dtype=np.float32) * 0.2
    bias = rng.standard_normal(24, dtype=np.float32)

    def model(x):
        y = F.relu(F.conv2d(x, w, bias, 1, 1))
        return y, y * y

    plan = graphc.compile(model, x, freeze=True)
    fused = [n for n in plan.graph.nodes if n.op == "fused" and n.attrs.get("kind") == "matmul"]
    assert len(fused) == 1 and len(fused[0].outputs) == 2
    y, sq = plan(x)
    assert calls, "the two-output fused matmul did not run on conv_gemm"
    want, bound = _torch_conv(x, w, bias)
    assert np.all(np.abs(y - want) <= 1e-5 * bound + 1e-30)
    assert np.array_equal(sq, y * y)


@pytest.mark.parametrize("a_layout", ["C", "T"])
@pytest.mark.parametrize("m, k, n", [(8 * ROWS + 3, KC + 19, 2 * COLS + 7), (300, 200, 130), (520, 300, 96)])
def test_tiled_matmul_matches_numpy_and_declines_to_blas(m, k, n, a_layout):
    """Products matmul_for routes to blas.tiled_matmul (conv_gemm with no epilogue): float64
    NumPy's values for A row-major or transposed, the same bits on 1 and 2 threads; B a transposed
    view, float64 operands and an output over an operand go to blas.matmul."""
    from graphc.kernels.cpu import blas

    fn = blas.matmul_for(k, (m, n))
    assert fn.__name__ == "avx512_matmul"
    rng = np.random.default_rng(13)
    a = rng.standard_normal((m, k) if a_layout == "C" else (k, m), dtype=np.float32)
    a = a if a_layout == "C" else a.T
    b = rng.standard_normal((k, n), dtype=np.float32)
    want = a.astype(np.float64) @ b.astype(np.float64)
    bound = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    outs = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        out = np.full((m, n), np.nan, np.float32)
        fn(a, b, out)
        outs.append(out)
    assert np.array_equal(outs[0], outs[1])
    assert np.all(np.abs(outs[0] - want) <= 1e-5 * bound + 1e-30)
    for x, y in ((a, np.asfortranarray(b)), (a.astype(np.float64), b.astype(np.float64))):
        out = np.full((m, n), np.nan, x.dtype)
        fn(x, y, out)  # declined by the kernel: BLAS
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_a_large_transposed_a_few_columns_declines_runs_tiled(monkeypatch):
    """An LSTM's dW_ih = dgates.T @ x ([1024, 2048] @ [2048, 64], A a transposed view): the
    few-columns kernel declines it, and conv_gemm's kernel runs it (not OpenBLAS)."""
    from graphc.kernels.cpu import blas

    calls = _record_conv_calls(monkeypatch)
    assert blas.matmul_for(2048, (1024, 64)) is blas.few_columns_matmul
    rng = np.random.default_rng(14)
    a = rng.standard_normal((2048, 1024), dtype=np.float32).T
    b = rng.standard_normal((2048, 64), dtype=np.float32)
    out = np.full((1024, 64), np.nan, np.float32)
    blas.few_columns_matmul(a, b, out)
    assert calls
    want = a.astype(np.float64) @ b.astype(np.float64)
    assert np.all(np.abs(out - want) <= 1e-5 * (np.abs(a).astype(np.float64) @ np.abs(b)) + 1e-30)
