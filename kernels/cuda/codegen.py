"""Source generators of the CUDA backend, one module per kind of kernel (as kernels/cpu):

- ``source``: module text (numba type names, literals, kernel and module layout);
- ``loops``: launch sizes, index maps, body emission, kernel parameters;
- ``scalar``: this backend's dialect and overrides of ``kernels.scalar_ops``, the RNG's lines;
- ``pointwise``, ``reduction``, ``matmul``, ``window``, ``movement``, ``indexing``: the generators;
- ``generators``: the table op name -> generator.

Everything is string work with no numba import. This module gathers the public names.
"""

from __future__ import annotations

from graphc.kernels.scalar_ops import Unsupported

from .loops import (
    GPU_CONFIG,
    SIM_CONFIG,
    BodyEmitter,
    IndexCtx,
    LaunchConfig,
    Scope,
    broadcasts_into,
    contiguous_strides,
    decompose,
    grid_1d,
    launch_config,
    numel,
    simulator,
)
from .scalar import (
    CUDA_SCALAR_OVERRIDES,
    SCALAR_OPS,
    hash32_lines,
    rng_key_lines,
    rng_value_lines,
    scalar_expr,
)
from .source import HEADER, NUMBA_TYPES, KernelSource, indent, kernel_def, literal, module_source, signature

__all__ = [
    "CUDA_SCALAR_OVERRIDES",
    "GPU_CONFIG",
    "HEADER",
    "NUMBA_TYPES",
    "SCALAR_OPS",
    "SIM_CONFIG",
    "BodyEmitter",
    "IndexCtx",
    "KernelSource",
    "LaunchConfig",
    "Scope",
    "Unsupported",
    "broadcasts_into",
    "contiguous_strides",
    "decompose",
    "grid_1d",
    "hash32_lines",
    "indent",
    "kernel_def",
    "launch_config",
    "literal",
    "module_source",
    "numel",
    "rng_key_lines",
    "rng_value_lines",
    "scalar_expr",
    "signature",
    "simulator",
]
