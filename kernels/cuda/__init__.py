"""CUDA backend (numba.cuda): generated kernels for every primitive op and for fused nodes.

- ``compile_node(node)`` returns ``fn(*input_device_arrays, *output_device_arrays)`` that fills
  the outputs (C-contiguous numba device arrays with the node's exact shapes and dtypes).
- ``kernel_sources(node)`` returns the generated module text (for dumps and plan files); it needs
  no GPU and no numba.
- ``require_device()`` raises a one-line GraphcError when no GPU/driver is usable. numba's CUDA
  simulator (``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported) counts as a device.
- ``GENERATORS`` maps every op name in ``ir.ops.REGISTRY`` to its source generator.
- cond / while_loop / scan compile to a ``ControlKernel`` (control_flow.py): their bodies run as
  device sub-plans driven from the host.
- runtime.DevicePlan (``graphc.runtime.build_device_plan``) runs a whole scheduled graph with
  these kernels, its data kept on the device.

Generated modules live in ``~/.cache/graphc/cuda/`` (``GRAPHC_CACHE_DIR`` overrides the
``~/.cache/graphc`` part), named by a hash of their text, and use ``@cuda.jit(cache=True)``.
"""

from __future__ import annotations

from graphc.ir import GraphcError, Node
from graphc.ir.control import CONTROL_OPS

from .codegen import Unsupported, launch_config, simulator
from .compiled import BodyRunner, CudaKernel, cache_dir, device_problem, require_device
from .control_flow import ControlKernel, control_kernel, control_source
from .generators import GENERATORS, describe, missing_ops

__all__ = [
    "CUDA_KERNELS",
    "GENERATORS",
    "BodyRunner",
    "ControlKernel",
    "CudaKernel",
    "cache_dir",
    "compile_node",
    "device_problem",
    "generate",
    "kernel_source",
    "kernel_sources",
    "launch_config",
    "missing_ops",
    "require_device",
    "simulator",
]


def generate(node: Node):
    """The KernelSource of a node; raises Unsupported when a fused body must run node by node."""
    gen = GENERATORS.get(node.op)
    if gen is None:
        raise GraphcError(f"no CUDA kernel for op {node.op!r} ({describe(node)})")
    return gen(node)


def compile_node(node: Node) -> CudaKernel | BodyRunner | ControlKernel:
    """Compile a node for the GPU: ``fn(*inputs, *outputs)`` over device arrays fills the outputs."""
    require_device()
    if node.op in CONTROL_OPS:  # cond / while_loop / scan: device sub-plans (control_flow.py)
        return control_kernel(node, compile_node, kernel_sources)
    try:
        ks = generate(node)
    except Unsupported as err:
        if node.op == "fused" and node.subgraph is not None:
            return BodyRunner(node, str(err), compile_node)
        raise GraphcError(f"the CUDA backend cannot compile {describe(node)}: {err}") from None
    return CudaKernel(node, ks)


def kernel_sources(node: Node) -> str:
    """The generated CUDA source of a node (a fused node that falls back lists its body's)."""
    if node.op in CONTROL_OPS:
        return control_source(node, kernel_sources)
    try:
        return generate(node).source
    except Unsupported as err:
        if node.op != "fused" or node.subgraph is None:
            raise GraphcError(f"the CUDA backend cannot compile {describe(node)}: {err}") from None
        parts = [f"# fused node {describe(node)} runs its body node by node: {err}"]
        parts += [kernel_sources(n) for n in node.subgraph.nodes]
        return "\n".join(parts)


# The op-coverage test and runtime.planfile look for these names.
CUDA_KERNELS = GENERATORS
kernel_source = kernel_sources
