"""Numba source generators of the CPU backend, one module per kind of kernel.

- ``source``: module text (header, @njit line, helpers, names, literals);
- ``loops``: bodies, parallel thresholds, the loop layout of broadcast operands;
- ``scalar``: this backend's dialect and overrides of ``kernels.scalar_ops``;
- ``pointwise``: every elementwise body (one primitive, a fused chain, a matmul epilogue);
- ``reduction``: row reductions (fused softmax/layer_norm bodies) and reductions over any axes;
- ``window``: im2col/col2im and max pooling; ``movement``: transpose, slice and pad.

The CUDA backend (kernels/cuda) has modules of the same names. This module gathers their
public names for the backend's entry point (``kernels.cpu``) and its attention kernel.
"""

from __future__ import annotations

from graphc.kernels.scalar_ops import Unsupported

from .loops import MIN_PARALLEL_TRIPS, PARALLEL_THRESHOLD, ROW_CHUNKS, Body, numel, use_parallel
from .movement import pad_source, slice_source, transpose_source
from .pointwise import pointwise_source
from .reduction import (
    CHEAP_OPS,
    REDUCTIONS,
    accumulate_source,
    combine,
    identity,
    reduce_lines,
    reduction_source,
)
from .scalar import CPU_SCALAR_OVERRIDES, is_elementwise, scalar_expr
from .source import NP_TYPE, Names, Source, decorator, literal
from .window import col2im_source, im2col_source, max_pool_grad_source, max_pool_source

__all__ = [
    "CHEAP_OPS",
    "CPU_SCALAR_OVERRIDES",
    "MIN_PARALLEL_TRIPS",
    "NP_TYPE",
    "PARALLEL_THRESHOLD",
    "REDUCTIONS",
    "ROW_CHUNKS",
    "Body",
    "Names",
    "Source",
    "Unsupported",
    "accumulate_source",
    "col2im_source",
    "combine",
    "decorator",
    "identity",
    "im2col_source",
    "is_elementwise",
    "literal",
    "max_pool_grad_source",
    "max_pool_source",
    "numel",
    "pad_source",
    "pointwise_source",
    "reduce_lines",
    "reduction_source",
    "scalar_expr",
    "slice_source",
    "transpose_source",
    "use_parallel",
]
