"""16-bit float values on the CPU backend: numba has no float16, so only NumPy touches them.

``passes.legalize_half`` leaves two kinds of node reading or making f16 values: ``cast`` to or from
f16 (run here with NumPy's conversion, rounding to nearest even straight from the source dtype)
and control-flow nodes, whose f16 carries are moved, never computed, by their sub-plans. Any other
node on f16 values reaching the backend is a GraphcError naming it (a graph compiled without the
legalization pass).

The low-bit storage types (float8, float4, int4/uint4, int2/uint2: ml_dtypes' types, one byte per
element) are handled the same way: their casts run here with ml_dtypes' conversion.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphc.ir import GraphcError, Node
from graphc.ir.control import CONTROL_OPS
from graphc.ir.types import STORAGE_DTYPES
from graphc.kernels.quoting import comment

_NAMES = {"f16": "float16", "bf16": "bfloat16"}


def half_kernel(node: Node) -> tuple[str, Callable[[], Callable[..., None]]] | None:
    """The (source, loader) of a CPU kernel for a node on 16-bit float (or low-bit) values, or None
    when the node has none (numba's kernels take it); a GraphcError for an op numba would have to
    compute in such a type."""
    values = (*node.inputs, *node.outputs)
    storage = [v.dtype for v in values if v.dtype in STORAGE_DTYPES]
    if node.op in CONTROL_OPS or not storage:
        return None
    if node.op == "cast":
        return _cast(node)
    where = f" at {node.source}" if node.source else ""
    raise GraphcError(
        f"no CPU kernel for {node.op} on {storage[0]} (node %{node.outputs[0].name}{where}): "
        f"numba has no {_NAMES.get(storage[0], storage[0])}; compile the graph with passes.legalize_half "
        "first (graphc.compile does)"
    )


def _cast(node: Node) -> tuple[str, Callable[[], Callable[..., None]]]:
    src, dst = node.inputs[0].dtype, node.output.dtype
    source = f"# {comment(f'NumPy: out[...] = x converted {src} -> {dst} (round to nearest even)')}\n"

    def load() -> Callable[..., None]:
        def cast_half(x: np.ndarray, out: np.ndarray) -> None:
            # beyond f16's range: inf, as IEEE says; ml_dtypes' types: NaN, saturation or wrap-around
            with np.errstate(over="ignore", invalid="ignore"):
                np.copyto(out, x, casting="unsafe")

        return cast_half

    return source, load
