"""The CUDA backend's answer for cond, while_loop and scan: not supported yet, said plainly.

Control-flow nodes run their bodies as sub-plans on the CPU backend (kernels/cpu/control_flow.py);
compiling one for the GPU raises ``Unsupported``, which ``kernels.cuda.compile_node`` reports
as a GraphcError naming the node.
"""

from __future__ import annotations

from graphc.ir import Node
from graphc.ir.control import CONTROL_OPS
from graphc.kernels.scalar_ops import Unsupported


def _unsupported(node: Node):
    raise Unsupported(f"{node.op} (control flow) runs on the CPU backend only; use device='cpu'")


CONTROL_FLOW_GENERATORS = dict.fromkeys(CONTROL_OPS, _unsupported)
