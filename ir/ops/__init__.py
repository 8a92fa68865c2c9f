"""The registry of primitive ops: what each op *is* (arity, attributes, type rule, fusion class).

What an op *does* lives elsewhere, keyed by the op's name: reference kernels in
kernels/reference, VJP rules in passes/autodiff, code generators in kernels/cpu and kernels/cuda.
A coverage test walks ``REGISTRY`` and names every table an op is missing from.

Fusion classes, in the spirit of TVM's op patterns:
  pointwise  elementwise on one input (output index = input index)
  broadcast  elementwise over several inputs with NumPy broadcasting (and broadcast_to)
  reduction  reduces some axes
  injective  data movement where each output element reads one input element
  opaque     anything else (matmul, gather, im2col, ...): never fused into, may take epilogues
  source     nullary ops (const, rng) that a fused kernel can compute inline

One module per family of ops (``elementwise``, ``reductions``, ``movement``, ``image``,
``sources``, ``quantized``, ``distributed``, ``control_flow``), each registering its ops in
``REGISTRY`` on import; ``registry`` holds the machinery they share. Importing this package
registers every op and re-exports the names other modules use.
"""

from __future__ import annotations

# Each family module registers its ops in REGISTRY when imported: all of them, here.
from . import control_flow, distributed, elementwise, image, movement, quantized, reductions, sources  # noqa: F401
from .distributed import COLLECTIVE_OPS, MAX_BUCKET_VALUES  # noqa: F401
from .elementwise import (  # noqa: F401
    ARITH_BINARY,
    BITWISE_BINARY,
    COMPARE_BINARY,
    FLOAT_BINARY,
    ROUNDING,
    SHIFT_BINARY,
    UNARY_FLOAT,
    UNARY_NUMERIC,
)
from .image import conv_output_size, max_pool_pad_limits, pool_output_size  # noqa: F401
from .movement import SCATTER_REDUCTIONS, is_last_axes_swap, scatter_identity  # noqa: F401
from .reductions import REDUCTION_OPS  # noqa: F401
from .registry import (  # noqa: F401
    AXES,
    AXIS,
    DTYPE,
    FUSED_KINDS,
    FUSION_CLASSES,
    MAX_NUMEL,
    MAX_RANK,
    NONNEGATIVE_PAIR,
    POSITIVE,
    POSITIVE_PAIR,
    REGISTRY,
    REQUIRED,
    SHAPE,
    SIZE,
    Attr,
    AttrError,
    BoolSpec,
    ChoiceSpec,
    IntSpec,
    OpDef,
    RealSpec,
    ShapeSpec,
    TupleSpec,
    TypeRule,
    _check,
    _register,
    broadcast_shapes,
    get_op,
    infer_types,
    normalize_attrs,
)
