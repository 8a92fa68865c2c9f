"""float32 tanh in generated CPU kernels: a vectorizable helper (``kernels/cpu/scalar.py``).

libm's tanhf is a call per element, which keeps a whole fused loop (an LSTM's gates) scalar; the
helper is Cephes' tanhf (a polynomial below |x| = 0.625, 1 - 2 / (e**2|x| + 1) above). Checked
against float64 NumPy rounded to float32.
"""

from __future__ import annotations

import numpy as np

from graphc.ir import Graph, TensorType
from graphc.kernels import cpu


def _tanh_node(shape: tuple[int, ...], dtype: str = "f32"):
    g = Graph()
    x = g.add_input("x", TensorType(shape, dtype))
    return g.add_node("tanh", [x], {})


def _run(x: np.ndarray) -> np.ndarray:
    node = _tanh_node(x.shape, "f32" if x.dtype == np.float32 else "f64")
    out = np.full(x.shape, 7, x.dtype)
    cpu.compile_node(node)(x, out)
    return out


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in float32 units in the last place (sign-magnitude bits mapped to a line)."""

    def line(v: np.ndarray) -> np.ndarray:
        bits = v.view(np.int32).astype(np.int64)
        return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)

    return np.abs(line(a) - line(b))


def test_float32_tanh_is_within_2_ulp_everywhere():
    ramp = np.linspace(-12, 12, 200_001, dtype=np.float32)
    tiny_to_big = np.geomspace(1e-38, 20, 50_000).astype(np.float32)
    cut = np.float32(0.625)  # the helper's switch between its two forms
    near_cut = np.array([np.nextafter(cut, np.float32(0)), cut, np.nextafter(cut, np.float32(1))], np.float32)
    x = np.concatenate([ramp, tiny_to_big, -tiny_to_big, near_cut, -near_cut, [9.0, 9.01, 9.5, 30.0, 3e38]])
    x = x.astype(np.float32)
    got = _run(x)
    want = np.tanh(x.astype(np.float64)).astype(np.float32)
    assert _ulps(got, want).max() <= 2
    assert np.all(np.abs(got) <= 1)


def test_float32_tanh_special_values_follow_numpy():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, -3e38], np.float32)
    got = _run(x)
    want = np.tanh(x)
    np.testing.assert_array_equal(got, want)  # NaN where NaN, exact values elsewhere
    assert np.array_equal(np.signbit(got), np.signbit(want))  # tanh(-0.0) is -0.0


def test_float32_tanh_calls_the_vectorizable_helper_and_float64_keeps_libm():
    # A libm call (math.tanh / np.tanh) in the float32 loop would keep it scalar.
    src32 = cpu.kernel_source(_tanh_node((4, 8)))
    assert "_tanh_f32(" in src32 and "math.tanh" not in src32 and "np.tanh" not in src32
    src64 = cpu.kernel_source(_tanh_node((4, 8), "f64"))
    assert "_tanh_f32" not in src64
    x = np.linspace(-5, 5, 32).reshape(4, 8)
    np.testing.assert_allclose(_run(x), np.tanh(x), rtol=1e-15, atol=0)


def test_fused_lstm_gate_loop_with_tanh_matches_float64():
    # The LSTM cell's gate arithmetic as one fused pointwise kernel (tanh twice, sigmoid via exp).
    import graphc
    from graphc import functional as F

    def cell(gates, c):
        i, f, g, o = (gates[:, k * 16 : (k + 1) * 16] for k in range(4))
        c2 = F.sigmoid(f) * c + F.sigmoid(i) * F.tanh(g)
        return F.sigmoid(o) * F.tanh(c2)

    rng = np.random.default_rng(3)
    gates = rng.standard_normal((8, 64)).astype(np.float32) * 3
    c = rng.standard_normal((8, 16)).astype(np.float32)
    got = graphc.compile(cell, gates, c)(gates, c)
    g64, c64 = gates.astype(np.float64), c.astype(np.float64)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c2 = sig(g64[:, 16:32]) * c64 + sig(g64[:, :16]) * np.tanh(g64[:, 32:48])
    np.testing.assert_allclose(got, sig(g64[:, 48:]) * np.tanh(c2), rtol=2e-6, atol=2e-7)
