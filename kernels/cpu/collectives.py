"""CPU kernels of the collective ops: a nonblocking MPI sum per gradient bucket, waited with a deadline.

``allreduce_start(g1, ..., gk) -> buf``: packs the gradients into the flat bucket buffer (one
copy of each gradient not already at its place there: the memory planner makes their producers
write the buffer itself where it can, ``passes.bucket_layout``; none for an unpacked bucket of
one gradient, which MPI reads where it lies) and starts
the sum of it, in place, returning at once: a persistent request (``MPI_Allreduce_init``) built
on the first call with these arena arrays and started on each, else ``MPI_Iallreduce``
(``graphc.kernels.collectives.BucketSum``). ``allreduce_wait(buf, held...) -> g1', ...``
polls that request until it completes or the deadline passes (``graphc.kernels.collectives``),
then writes each gradient's average (sum / ranks) into its output: the one pass over the bucket
the averaging needs (in place where the memory plan put the outputs on the buffer's parts).
No numba: both are memory copies and MPI calls.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import is_

import numpy as np

from graphc.ir import GraphcError, Node
from graphc.kernels import collectives as coll
from graphc.kernels.quoting import comment, literal

Kernel = Callable[..., None]


def _start(node: Node) -> Kernel:
    bucket, packed = node.attrs["bucket"], node.attrs["packed"]
    # A plan calls a kernel with the same arena arrays every step: what the layout checks found
    # for them (all gradients already in place, or the span MPI may read) and the bucket's bound
    # sum (its persistent MPI request, coll.BucketSum) hold for the next call with the very same
    # objects (held here, compared by identity). Closure variables and identity checks: the
    # per-call path is a few microseconds at 4 KiB, so every lookup counts.
    held: tuple = ()
    copy = False
    bound: coll.BucketSum | None = None

    def allreduce_start(*arrays: np.ndarray) -> None:
        nonlocal held, copy, bound
        if len(arrays) != len(held) or not all(map(is_, arrays, held)):  # not the very same arrays
            grads, buf = arrays[:-1], arrays[-1]
            send = None if packed else coll.contiguous_span(grads)
            in_place = send is None and coll.pack(grads, buf) == 0
            if bound is not None:
                bound.close()
            held, copy = arrays, send is None and not in_place
            bound = coll.BucketSum(buf, send, bucket)
        elif copy:
            coll.pack(arrays[:-1], arrays[-1])
        bound.start()

    return allreduce_start


def _wait(node: Node) -> Kernel:
    bucket, n_in = node.attrs["bucket"], len(node.inputs)
    # Per array set: whether the averages lie in place over the whole buffer (then one divide, as
    # mpi4py's user does) and the buffer's address; per rank count: the divisor.
    held: tuple = ()
    whole = False
    address = 0
    world, divisor = 0, None

    def allreduce_wait(*arrays: np.ndarray) -> None:
        nonlocal held, whole, address, world, divisor
        buf = arrays[0]
        if len(arrays) != len(held) or not all(map(is_, arrays, held)):
            span = coll.contiguous_span(arrays[n_in:])  # the averages in place over the whole buffer?
            whole = span is not None and span.ctypes.data == buf.ctypes.data and span.nbytes == buf.nbytes
            held, address = arrays, buf.ctypes.data
        ranks = coll.finish_sum(buf, bucket, address)
        if ranks != world:
            world, divisor = ranks, buf.dtype.type(ranks)
        if whole:
            np.divide(buf, divisor, out=buf)
        else:
            coll.unpack_average(buf, arrays[n_in:], ranks)

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
        "# hand-written: graphc.kernels.cpu.collectives (MPI persistent Allreduce or Iallreduce in place, "
        "polled with a deadline)\n"
    )
    return text, lambda: maker(node)
