"""The CPU backend's scalar code: its dialect of ``scalar_ops`` and its override table.

Overrides: float32 exp and erf call vectorizable polynomial helpers (``source``), where libm's
expf/erff would keep a whole loop scalar; every other case is the shared form.
"""

from __future__ import annotations

from collections.abc import Callable

from graphc.ir import Node
from graphc.kernels import scalar_ops
from graphc.kernels.scalar_ops import Dialect, is_elementwise

from .source import NP_TYPE, Source, literal

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


CPU_SCALAR_OVERRIDES: dict[str, Callable[..., str | None]] = {
    "exp": _helper("exp_f32"),
    "erf": _helper("erf_f32"),
}


def scalar_expr(node: Node, args: list[str], src: Source, nonpositive: bool = False) -> str:
    """Source of one elementwise op on scalar operands; the result has the node's dtype.

    ``nonpositive``: the operand is known to be <= 0 or NaN (cheaper exp).
    """
    return scalar_ops.scalar_expr(CPU, node, args, CPU_SCALAR_OVERRIDES, src=src, nonpositive=nonpositive)
