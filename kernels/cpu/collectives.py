"""CPU kernels of the collective ops: a nonblocking MPI sum per gradient bucket, waited with a deadline.

``allreduce_start(g1, ..., gk) -> buf``: packs the gradients into the flat bucket buffer (one
copy of each gradient not already at its place there: the memory planner makes their producers
write the buffer itself where it can, ``passes.bucket_layout``; none for an unpacked bucket of
one gradient, which MPI reads where it lies) and starts
``MPI_Iallreduce`` on it, in place, returning at once. ``allreduce_wait(buf, held...) -> g1', ...``
polls that request until it completes or the deadline passes (``graphc.kernels.collectives``),
then writes each gradient's average (sum / ranks) into its output: the one pass over the bucket
the averaging needs (in place where the memory plan put the outputs on the buffer's parts).
No numba: both are memory copies and MPI calls.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphc.ir import GraphcError, Node
from graphc.kernels import collectives as coll
from graphc.kernels.quoting import comment, literal

Kernel = Callable[..., None]


def _start(node: Node) -> Kernel:
    bucket, packed = node.attrs["bucket"], node.attrs["packed"]

    def allreduce_start(*arrays: np.ndarray) -> None:
        grads, buf = arrays[:-1], arrays[-1]
        send = None if packed else coll.contiguous_span(grads)
        if send is None:
            coll.pack(grads, buf)
        coll.start_sum(buf, send, bucket)

    return allreduce_start


def _wait(node: Node) -> Kernel:
    bucket, n_in = node.attrs["bucket"], len(node.inputs)

    def allreduce_wait(*arrays: np.ndarray) -> None:
        buf, outs = arrays[0], arrays[n_in:]
        coll.finish_sum(buf, bucket)
        coll.unpack_average(buf, outs, coll.world_size())

    return allreduce_wait


_MAKERS = {"allreduce_start": _start, "allreduce_wait": _wait}


def collective_kernel(node: Node) -> tuple[str, Callable[[], Kernel]]:
    """(source text for dumps and plan files, a loader of the kernel) of a collective node."""
    maker = _MAKERS.get(node.op)
    if maker is None:
        raise GraphcError(f"no CPU collective kernel for op {comment(node.op)!r}")
    sizes = ", ".join(str(v.type) for v in (node.inputs if node.op == "allreduce_start" else node.outputs))
    text = (
        f"# graphc CPU kernel: {comment(node.op)} of gradient bucket {literal(node.attrs['bucket'])} "
        f"({comment(sizes)})\n"
        "# hand-written: graphc.kernels.cpu.collectives (MPI Iallreduce in place, polled with a deadline)\n"
    )
    return text, lambda: maker(node)
