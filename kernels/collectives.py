"""What every backend's collective kernels share: the communicator, deadlines, packing.

``allreduce_start`` / ``allreduce_wait`` (ir/ops.py, "# --- distributed") sum a bucket of
gradients across the ranks of one communicator. graphc.distributed sets it here
(``set_communicator``); with none set, a graph runs as one rank of one (the sum is the bucket
itself), so a distributed graph also runs in a plain process. No wait blocks forever: a request
is polled until ``timeout()`` seconds have passed, then a GraphcError says which collective got
no answer (graphc.distributed turns an uncaught error into MPI_Abort, which stops every rank).

Pending sums are keyed by the address of their bucket buffer, the token the wait reads: a plan
holds one arena, and a compiled step runs one call at a time (its lock), so an address names one
bucket of one call.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from graphc.ir import GraphcError

DEFAULT_TIMEOUT = 300.0  # seconds; GRAPHC_DIST_TIMEOUT or graphc.distributed.init(timeout=) override

_lock = threading.Lock()
_state: dict[str, Any] = {"comm": None, "timeout": None}
_pending: dict[int, tuple[Any, int]] = {}  # buffer address -> (MPI request or None, bucket)


def set_communicator(comm: Any, timeout: float | None = None) -> None:
    """Use ``comm`` (an mpi4py communicator, or None for one rank) and a deadline in seconds."""
    if timeout is not None and not (timeout > 0):
        raise GraphcError(f"distributed timeout must be positive seconds, got {timeout!r}")
    with _lock:
        _state["comm"] = comm
        _state["timeout"] = timeout
        _pending.clear()


def communicator() -> Any:
    """The communicator collective kernels use (None: a single process)."""
    return _state["comm"]


def world_size() -> int:
    """Ranks taking part in a sum (1 without a communicator)."""
    comm = _state["comm"]
    return 1 if comm is None else int(comm.Get_size())


def timeout() -> float:
    """Seconds any wait on other ranks may take before it fails."""
    if _state["timeout"] is not None:
        return float(_state["timeout"])
    text = os.environ.get("GRAPHC_DIST_TIMEOUT")
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise GraphcError(f"GRAPHC_DIST_TIMEOUT must be positive seconds, got {text!r}")
    return value


def wait_for(request: Any, what: str) -> None:
    """Poll an MPI request until it completes; a GraphcError naming ``what`` after ``timeout()`` s."""
    limit = timeout()
    deadline = time.monotonic() + limit
    delay = 0.0
    try:
        while not request.Test():
            if time.monotonic() > deadline:
                raise GraphcError(
                    f"{what}: no answer from the other ranks within {limit:g} s (a rank died, hangs, "
                    "or runs a different graph); set GRAPHC_DIST_TIMEOUT to wait longer"
                )
            time.sleep(delay)
            delay = min(1e-3, delay * 2 or 1e-5)
    except GraphcError:
        raise
    except Exception as err:  # mpi4py.MPI.Exception: the MPI library reported an error
        raise GraphcError(f"{what}: MPI error: {err}") from None


def contiguous_span(arrays: Sequence[np.ndarray]) -> np.ndarray | None:
    """One flat view over ``arrays`` when they lie back to back in memory in this order, else None."""
    first = arrays[0]
    if not all(a.flags.c_contiguous and a.dtype == first.dtype for a in arrays):
        return None
    address = first.ctypes.data
    for a in arrays:
        if a.ctypes.data != address:
            return None
        address += a.nbytes
    if len(arrays) == 1:
        return first.reshape(-1)
    base = first.base if first.base is not None else first
    if not isinstance(base, np.ndarray) or not base.flags.c_contiguous:
        return None
    start = first.ctypes.data - base.ctypes.data
    if start < 0 or start + (address - first.ctypes.data) > base.nbytes:
        return None
    raw = base.reshape(-1).view(np.uint8)
    return raw[start : start + (address - first.ctypes.data)].view(first.dtype)


def pack(arrays: Sequence[np.ndarray], out: np.ndarray) -> None:
    """Copy ``arrays`` one after another into the flat ``out``."""
    offset = 0
    for a in arrays:
        out[offset : offset + a.size] = a.reshape(-1)
        offset += a.size


def unpack_average(buf: np.ndarray, outs: Sequence[np.ndarray], world: int) -> None:
    """Fill each of ``outs`` with its part of the summed ``buf`` divided by ``world``."""
    offset = 0
    divisor = buf.dtype.type(world)
    for out in outs:
        np.divide(buf[offset : offset + out.size].reshape(out.shape), divisor, out=out)
        offset += out.size


def start_sum(buf: np.ndarray, send: np.ndarray | None, bucket: int) -> None:
    """Start summing ``buf`` across ranks (from ``send`` when given, else in place); nonblocking."""
    comm = _state["comm"]
    request = None
    if comm is not None and comm.Get_size() > 1:
        from mpi4py import MPI

        try:
            request = comm.Iallreduce(MPI.IN_PLACE if send is None else send, buf, op=MPI.SUM)
        except Exception as err:
            raise GraphcError(f"allreduce_start of bucket {bucket}: MPI error: {err}") from None
    elif send is not None:
        buf[...] = send
    with _lock:
        _pending[buf.ctypes.data] = (request, bucket)


def finish_sum(buf: np.ndarray, bucket: int) -> None:
    """Wait (with the deadline) for the sum ``start_sum`` began on ``buf``."""
    with _lock:
        entry = _pending.pop(buf.ctypes.data, None)
    if entry is None:
        raise GraphcError(f"allreduce_wait of bucket {bucket}: no allreduce_start is pending on its buffer")
    request, started = entry
    if started != bucket:
        raise GraphcError(f"allreduce_wait of bucket {bucket}: its buffer holds bucket {started}")
    if request is not None:
        wait_for(request, f"allreduce of gradient bucket {bucket}")


def sum_blocking(buf: np.ndarray, bucket: int) -> None:
    """Sum ``buf`` in place across ranks now (the reference kernels' form), with the deadline."""
    start_sum(buf, None, bucket)
    finish_sum(buf, bucket)
