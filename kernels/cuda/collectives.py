"""The CUDA backend's answer for the collective ops: not supported yet, said plainly.

Data-parallel training (``compile_train(..., distributed=True)``) runs on the CPU backend; a
CUDA plan would need a CUDA-aware MPI or host staging of each bucket. Compiling an
``allreduce_start``/``allreduce_wait`` node for the GPU raises ``Unsupported``, which
``kernels.cuda.compile_node`` reports as a GraphcError naming the node.
"""

from __future__ import annotations

from graphc.ir import Node
from graphc.kernels.scalar_ops import Unsupported


def _unsupported(node: Node):
    raise Unsupported(
        f"{node.op} (gradient allreduce) runs on the CPU backend only; "
        "use device='cpu' for distributed training"
    )


COLLECTIVE_GENERATORS = {"allreduce_start": _unsupported, "allreduce_wait": _unsupported}
