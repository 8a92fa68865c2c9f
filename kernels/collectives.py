"""What every backend's collective kernels share: the communicator, deadlines, packing.

``allreduce_start`` / ``allreduce_wait`` (ir/ops.py, "# --- distributed") sum a bucket of
gradients across the ranks of one communicator. graphc.distributed sets it here
(``set_communicator``); with none set, a graph runs as one rank of one (the sum is the bucket
itself), so a distributed graph also runs in a plain process. No wait blocks forever: a request
is polled until ``timeout()`` seconds have passed, then a GraphcError says which collective got
no answer (graphc.distributed turns an uncaught error into MPI_Abort, which stops every rank).

Profiling (opt-in, off by default: ``set_profile``): the seconds the kernels spend blocked on
MPI, to measure how much of the allreduce time the backward pass hides. With ``serialize=True``
every start waits for its own sum at once (no overlap): the blocked time is then the whole
allreduce time; in a normal run it is the part left exposed.

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

from .mpi_progress import DEFAULT_INTERVAL, ProgressThread

DEFAULT_TIMEOUT = 300.0  # seconds; GRAPHC_DIST_TIMEOUT or graphc.distributed.init(timeout=) override
SPIN_SECONDS = 1.0  # a wait polls back to back this long, then sleeps between polls
QUICK_POLLS = 64  # polls before a wait reads the clock and its deadline (tens of microseconds)
BARE_POLLS = 16  # of those, polls back to back before each yields the core (a few microseconds)
_yield = getattr(os, "sched_yield", lambda: time.sleep(0))

_lock = threading.Lock()
_state: dict[str, Any] = {"comm": None, "timeout": None, "progress": None}
_pending: dict[int, tuple[Any, int]] = {}  # buffer address -> (MPI request or None, bucket)
_profile: dict[str, Any] = {"on": False, "serialize": False, "blocked_s": 0.0, "sums": 0}
_packed = [0]  # bytes pack() copied (packed_bytes())


def set_communicator(comm: Any, timeout: float | None = None) -> None:
    """Use ``comm`` (an mpi4py communicator, or None for one rank) and a deadline in seconds."""
    if timeout is not None and not (timeout > 0):
        raise GraphcError(f"distributed timeout must be positive seconds, got {timeout!r}")
    with _lock:
        if _state["progress"] is not None and comm is not _state["comm"]:
            _state["progress"].close()
            _state["progress"] = None
        _state["comm"] = comm
        _state["timeout"] = timeout
        _pending.clear()


def set_progress(enabled: bool, interval: float = DEFAULT_INTERVAL) -> None:
    """Run (or stop) a thread that moves pending sums forward during compute (``mpi_progress``).

    Only with a communicator of more than one rank; ``interval`` seconds between its MPI calls.
    """
    if enabled and not (interval > 0):
        raise GraphcError(f"distributed progress interval must be positive seconds, got {interval!r}")
    with _lock:
        if _state["progress"] is not None:
            _state["progress"].close()
            _state["progress"] = None
        comm = _state["comm"]
        if enabled and comm is not None and comm.Get_size() > 1:
            _state["progress"] = ProgressThread(comm, interval)


def progress_thread() -> ProgressThread | None:
    """The running progress thread, if any."""
    return _state["progress"]


def set_profile(enabled: bool, serialize: bool = False) -> None:
    """Start (``enabled``) or stop counting the seconds spent blocked on MPI; clears the counts.

    ``serialize``: each ``allreduce_start`` waits for its sum right away (nothing overlaps it).
    """
    with _lock:
        _profile.update(on=bool(enabled), serialize=bool(enabled and serialize), blocked_s=0.0, sums=0)


def profile() -> dict[str, float]:
    """``{"blocked_s": seconds blocked on MPI sums, "sums": sums waited for}`` since ``set_profile``."""
    return {"blocked_s": float(_profile["blocked_s"]), "sums": int(_profile["sums"])}


def _wait_counted(request: Any, what: str) -> None:
    if not _profile["on"]:
        wait_for(request, what)
        return
    t0 = time.perf_counter()
    wait_for(request, what)
    _profile["blocked_s"] += time.perf_counter() - t0
    _profile["sums"] += 1


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
    """Poll an MPI request until it completes; a GraphcError naming ``what`` after ``timeout()`` s.

    MPI moves a nonblocking collective forward only inside MPI calls, so the first
    ``SPIN_SECONDS`` poll back to back (as a blocking ``MPI_Allreduce`` spins), yielding the core
    between polls (a bare spin made 4 KiB sums take 12 ms, not 0.05, with more ranks than free
    cores); only a wait that lasts longer sleeps between polls, up to 1 ms, so a rank stuck on
    a dead peer does not burn a core until its deadline. (Sleeping from the first poll, as
    before, added up to 1 ms a sum.)
    """
    try:
        if request.Test():  # done already: no deadline to compute
            return
        for k in range(QUICK_POLLS):  # a small bucket's sum is microseconds away: no clock yet
            if k >= BARE_POLLS:  # then let a peer rank that shares this core run
                _yield()
            if request.Test():
                return
    except Exception as err:  # mpi4py.MPI.Exception: the MPI library reported an error
        raise GraphcError(f"{what}: MPI error: {err}") from None
    limit = timeout()
    began = time.monotonic()
    deadline, spin_until = began + limit, began + SPIN_SECONDS
    delay = 0.0
    try:
        while not request.Test():
            now = time.monotonic()
            if now > deadline:
                raise GraphcError(
                    f"{what}: no answer from the other ranks within {limit:g} s (a rank died, hangs, "
                    "or runs a different graph); set GRAPHC_DIST_TIMEOUT to wait longer"
                )
            if now < spin_until:
                _yield()  # not a bare spin: on a busy machine the peer rank may need this core
            else:
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


def pack(arrays: Sequence[np.ndarray], out: np.ndarray) -> int:
    """Copy ``arrays`` one after another into the flat ``out``; return the bytes copied.

    An array that already lies at its place in ``out`` (the memory planner wrote it there:
    ``passes.bucket_layout``, concat in place) is not copied; a bucket whose gradients all lie
    there costs no pass over its bytes. ``packed_bytes()`` counts the bytes copied.
    """
    base, offset, moves = out.ctypes.data, 0, []
    for a in arrays:
        if a.ctypes.data != base + offset or a.dtype != out.dtype or not a.flags.c_contiguous:
            moves.append((offset // out.itemsize, a))
        offset += a.nbytes
    if len(moves) == len(arrays):
        np.concatenate([a.reshape(-1) for a in arrays], out=out)  # one call: Python overhead counts at 4 KiB
    else:
        for at, a in moves:
            out[at : at + a.size] = a.reshape(-1)
    copied = sum(a.nbytes for _, a in moves)
    _packed[0] += copied
    return copied


def packed_bytes() -> int:
    """Bytes ``pack`` has copied into bucket buffers in this process (to check concat in place)."""
    return _packed[0]


def unpack_average(buf: np.ndarray, outs: Sequence[np.ndarray], world: int) -> None:
    """Fill each of ``outs`` with its part of the summed ``buf`` divided by ``world``."""
    offset = 0
    divisor = buf.dtype.type(world)
    for out in outs:
        np.divide(buf[offset : offset + out.size].reshape(out.shape), divisor, out=out)
        offset += out.size


def start_sum(buf: np.ndarray, send: np.ndarray | None, bucket: int, address: int | None = None) -> None:
    """Start summing ``buf`` across ranks (from ``send`` when given, else in place); nonblocking.

    ``address``: ``buf``'s data address if the caller knows it (it keys the pending sum)."""
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
    if request is not None and _profile["serialize"]:
        _wait_counted(request, f"allreduce of gradient bucket {bucket}")
        request = None
    with _lock:
        _pending[buf.ctypes.data if address is None else address] = (request, bucket)
    progress = _state["progress"]
    if request is not None and progress is not None:
        progress.busy(+1)


def finish_sum(buf: np.ndarray, bucket: int, address: int | None = None) -> None:
    """Wait (with the deadline) for the sum ``start_sum`` began on ``buf`` (at ``address``, if known)."""
    with _lock:
        entry = _pending.pop(buf.ctypes.data if address is None else address, None)
    if entry is None:
        raise GraphcError(f"allreduce_wait of bucket {bucket}: no allreduce_start is pending on its buffer")
    request, started = entry
    if started != bucket:
        raise GraphcError(f"allreduce_wait of bucket {bucket}: its buffer holds bucket {started}")
    if request is None:
        return
    progress = _state["progress"]
    if progress is not None:
        progress.waiting(+1)
    try:
        _wait_counted(request, f"allreduce of gradient bucket {bucket}")
    finally:
        if progress is not None:
            progress.waiting(-1)
            progress.busy(-1)


def sum_blocking(buf: np.ndarray, bucket: int) -> None:
    """Sum ``buf`` in place across ranks now (the reference kernels' form), with the deadline."""
    start_sum(buf, None, bucket)
    finish_sum(buf, bucket)
