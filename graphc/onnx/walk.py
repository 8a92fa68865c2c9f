"""Converting a list of ONNX nodes in order: the importer's main loop, also run on If/Loop/Scan bodies.

``convert_nodes`` looks each node up in the converter table, hands it its inputs from ``env``
(name -> Tensor, array or Initializer) and binds its outputs there. A body graph converts with a
copy of the enclosing ``env``, so the names it reads from outer scopes resolve as ONNX says.
"""

from __future__ import annotations

from typing import Any

from graphc.ir import GraphcError
from graphc.tensor import TraceContext

from .context import NodeContext
from .half_ops import narrow_outputs, widen_inputs
from .registry import lookup


def convert_nodes(nodes: Any, env: dict[str, Any], ctx: TraceContext, opset: int, where: str) -> None:
    """Convert ``nodes`` (ONNX NodeProtos, in order) into ops of ``ctx``, binding outputs in ``env``."""
    for index, node in enumerate(nodes):
        fn = lookup(node.domain, node.op_type, opset)
        if fn is None:  # prescan lists these first; a body converted on its own may still hit one
            raise GraphcError(f"{where}: op {node.op_type[:40]!r} has no converter at opset {opset}")
        values = []
        for name in node.input:
            if name == "":
                values.append(None)
            elif name in env:
                values.append(env[name])
            else:
                raise GraphcError(
                    f"{where}: node {(node.name or f'#{index}')[:60]!r} reads {name[:60]!r}, "
                    "which no earlier node, input or initializer defines"
                )
        wanted = list(node.output)
        half = widen_inputs(node.op_type, values)  # f16/bf16: computed in f32, rounded once
        nc = NodeContext(node, opset, values, ctx, len(wanted), index, env=env)
        try:
            outs = fn(nc)
        except GraphcError as err:
            text = str(err)
            raise GraphcError(text if nc.where in text else f"{nc.where}: {text}") from None
        except (ValueError, IndexError, TypeError, OverflowError, ZeroDivisionError) as err:
            # inconsistent constants in a malformed model (shapes that do not concatenate, ...)
            raise GraphcError(f"{nc.where}: cannot convert: {type(err).__name__}: {str(err)[:200]}") from None
        if half is not None:
            outs = narrow_outputs(list(outs), half)
        if len(outs) < len([o for o in wanted if o]):
            raise nc.fail(f"gives {len(outs)} output(s), the model expects {len(wanted)}")
        for name, value in zip(wanted, outs):
            if name:
                env[name] = value
