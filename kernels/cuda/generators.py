"""The CUDA backend's table: op name -> source generator (``GENERATORS``), and fused kinds.

A generator takes a node and returns a ``KernelSource``; it raises ``Unsupported`` when it cannot
handle the node (a fused node then falls back to running its body node by node). Kernels work on
flat (1-D) device arrays; shapes, strides and launch sizes are constants baked into the source,
so each distinct node shape is its own small, cacheable module. Elementwise ops get the
pointwise generator from ``scalar_ops``' table (plus this backend's overrides): a new elementwise
op needs no entry here.
"""

from __future__ import annotations

from collections.abc import Callable

from graphc.ir import Node
from graphc.ir.ops import REGISTRY
from graphc.kernels.scalar_ops import Unsupported, elementwise_ops

from .attention import gen_attention
from .collectives import COLLECTIVE_GENERATORS
from .control_flow import CONTROL_FLOW_GENERATORS
from .depthwise import gen_depthwise_conv2d
from .indexing import gen_gather, gen_scatter_add, gen_scatter_reduce
from .int8 import gen_qconv2d, gen_qlinear, gen_qmatmul
from .loops import describe, single_body
from .matmul import gen_matmul
from .movement import gen_concat, gen_pad, gen_reshape, gen_slice, gen_transpose
from .pointwise import gen_pointwise
from .reduction import REDUCTIONS, gen_reduction
from .scalar import CUDA_SCALAR_OVERRIDES
from .source import KernelSource
from .window import gen_col2im, gen_im2col, gen_max_pool2d, gen_max_pool2d_grad

__all__ = ["FUSED_KINDS", "GENERATORS", "Generator", "describe", "gen_fused", "missing_ops"]

Generator = Callable[[Node], KernelSource]
FUSED_KINDS = {
    "pointwise": gen_pointwise,
    "reduction": gen_reduction,
    "matmul": gen_matmul,
    "attention": lambda node, body: gen_attention(node),
}


def gen_fused(node: Node) -> KernelSource:
    """Generate one kernel for a fused node by its kind; Unsupported means: run the body instead."""
    if node.subgraph is None:
        raise Unsupported("fused node without a body")
    gen = FUSED_KINDS.get(node.attrs.get("kind"))
    if gen is None:
        raise Unsupported(f"unknown fused kind {node.attrs.get('kind')!r}")
    return gen(node, node.subgraph)


def _on_own_body(gen: Callable) -> Generator:
    return lambda node: gen(node, single_body(node))


GENERATORS: dict[str, Generator] = {
    op: _on_own_body(gen_pointwise) for op in elementwise_ops(CUDA_SCALAR_OVERRIDES)
}
GENERATORS.update({op: _on_own_body(gen_reduction) for op in REDUCTIONS})
GENERATORS.update(
    {
        "matmul": _on_own_body(gen_matmul),
        "reshape": gen_reshape,
        "transpose": gen_transpose,
        "slice": gen_slice,
        "pad": gen_pad,
        "concat": gen_concat,
        "gather": gen_gather,
        "scatter_add": gen_scatter_add,
        "scatter_reduce": gen_scatter_reduce,
        "im2col": gen_im2col,
        "col2im": gen_col2im,
        "depthwise_conv2d": gen_depthwise_conv2d,
        "max_pool2d": gen_max_pool2d,
        "max_pool2d_grad": gen_max_pool2d_grad,
        "fused": gen_fused,
        "qmatmul": gen_qmatmul,
        "qlinear": gen_qlinear,
        "qconv2d": gen_qconv2d,
    }
)
GENERATORS.update(COLLECTIVE_GENERATORS)  # refusals: collectives run on the CPU backend
GENERATORS.update(CONTROL_FLOW_GENERATORS)  # refusals: control flow runs on the CPU backend


def missing_ops() -> list[str]:
    """Ops of the registry with no CUDA generator (the coverage test wants this empty)."""
    return sorted(set(REGISTRY) - set(GENERATORS))
