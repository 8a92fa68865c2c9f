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


def _ids(arrays: tuple) -> tuple:
    return tuple(map(id, arrays))


def _start(node: Node) -> Kernel:
    bucket, packed = node.attrs["bucket"], node.attrs["packed"]
    # A plan calls a kernel with the same arena arrays every step: what the layout checks found
    # for them (all gradients already in place, or the span MPI may read, the buffer's address)
    # holds for the next call with the very same objects (kept here, so their ids stay theirs).
    last: dict = {"ids": None, "arrays": None, "send": None, "in_place": False, "address": 0}

    def allreduce_start(*arrays: np.ndarray) -> None:
        grads, buf = arrays[:-1], arrays[-1]
        if _ids(arrays) == last["ids"]:
            send = last["send"]
            if send is None and not last["in_place"]:
                coll.pack(grads, buf)
        else:
            send = None if packed else coll.contiguous_span(grads)
            in_place = send is None and coll.pack(grads, buf) == 0
            last.update(
                ids=_ids(arrays), arrays=arrays, send=send, in_place=in_place, address=buf.ctypes.data
            )
        coll.start_sum(buf, send, bucket, last["address"])

    return allreduce_start


def _wait(node: Node) -> Kernel:
    bucket, n_in = node.attrs["bucket"], len(node.inputs)
    last: dict = {"ids": None, "arrays": None, "whole": False, "address": 0}

    def allreduce_wait(*arrays: np.ndarray) -> None:
        buf, outs = arrays[0], arrays[n_in:]
        if _ids(arrays) != last["ids"]:
            span = coll.contiguous_span(outs)  # the averages in place over the whole buffer?
            whole = span is not None and span.ctypes.data == buf.ctypes.data and span.nbytes == buf.nbytes
            last.update(ids=_ids(arrays), arrays=arrays, whole=whole, address=buf.ctypes.data)
        coll.finish_sum(buf, bucket, last["address"])
        if last["whole"]:
            np.divide(buf, buf.dtype.type(coll.world_size()), out=buf)  # one pass, as mpi4py's user does
        else:
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
