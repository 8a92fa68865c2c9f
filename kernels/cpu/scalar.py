"""The CPU backend's scalar code: its dialect of ``scalar_ops`` and its override table.

Overrides: float32 exp, erf and tanh call vectorizable polynomial helpers (``source``; tanh's is
here), where libm's expf/erff/tanhf would keep a whole loop scalar (an LSTM's fused gate loop);
every other case is the shared form.
"""

from __future__ import annotations

from collections.abc import Callable

from graphc.ir import Node
from graphc.kernels import scalar_ops
from graphc.kernels.scalar_ops import Dialect, is_elementwise

from .source import _EXP_REDUCED, NP_TYPE, Source, decorator, literal

__all__ = ["CPU", "CPU_SCALAR_OVERRIDES", "is_elementwise", "scalar_expr"]

CPU = Dialect(
    name="cpu",
    type_name=NP_TYPE.__getitem__,
    literal=literal,
    # Every result is wrapped in its dtype's constructor, bool included.
    wrap=lambda dtype, expr: f"{NP_TYPE[dtype]}({expr})",
    fmod="np.fmod",
)


def _helper(name: str) -> Callable[..., str | None]:
    """A form calling the f32 helper ``name`` (added to the kernel), the shared form otherwise."""

    def form(d: Dialect, node: Node, a: list[str], src: Source, nonpositive: bool = False) -> str | None:
        if node.outputs[0].dtype != "f32":
            return None
        helper = "exp_nonpos_f32" if name == "exp_f32" and nonpositive else name
        return f"{src.need(helper)}({a[0]})"

    return form


# tanh for float32 that LLVM vectorizes (Cephes' tanhf): below |x| = 0.625 an odd polynomial,
# above it 1 - 2 / (e**(2|x|) + 1) with the exp of ``_exp_f32`` (2|x| clamped to 19: tanh is 1.0f
# from |x| = 9.01 on). Within 2 ulp of the correctly rounded tanh (tests/test_cpu_tanh.py). Below
# |x| = 1e-4 tanh(x) rounds to x, which also keeps -0.0 and NaN.
_TANH_F32 = (
    """
from graphc.kernels.cpu.intrinsics import f32_from_bits


{deco}
def _tanh_f32(x):
    a = x if x >= np.float32(0.0) else -x
    c = a if a < np.float32(9.5) else np.float32(9.5)
    c = c + c"""
    + _EXP_REDUCED
    + """
    s = y * f32_from_bits(np.int32((np.int32(n) + np.int32(127)) << np.int32(23)))
    big = np.float32(1.0) - np.float32(2.0) / (s + np.float32(1.0))
    big = big if x >= np.float32(0.0) else -big
    z = x * x
    p = np.float32(-5.70498872745e-3)
    p = p * z + np.float32(2.06390887954e-2)
    p = p * z + np.float32(-5.37397155531e-2)
    p = p * z + np.float32(1.33314422036e-1)
    p = p * z + np.float32(-3.33332819422e-1)
    small = p * z * x + x
    r = small if a < np.float32(0.625) else big
    return r if a > np.float32(1e-4) else x
"""
)


def _tanh(d: Dialect, node: Node, a: list[str], src: Source, nonpositive: bool = False) -> str | None:
    """float32 tanh through ``_tanh_f32`` (added to the kernel); the shared form otherwise."""
    if node.outputs[0].dtype != "f32":
        return None
    src.helpers.setdefault("tanh_f32", _TANH_F32.format(deco=decorator(False, '{"contract"}')))
    return f"_tanh_f32({a[0]})"


CPU_SCALAR_OVERRIDES: dict[str, Callable[..., str | None]] = {
    "exp": _helper("exp_f32"),
    "erf": _helper("erf_f32"),
    "tanh": _tanh,
}


def scalar_expr(node: Node, args: list[str], src: Source, nonpositive: bool = False) -> str:
    """Source of one elementwise op on scalar operands; the result has the node's dtype.

    ``nonpositive``: the operand is known to be <= 0 or NaN (cheaper exp).
    """
    return scalar_ops.scalar_expr(CPU, node, args, CPU_SCALAR_OVERRIDES, src=src, nonpositive=nonpositive)
