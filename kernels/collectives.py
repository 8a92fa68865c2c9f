"""What every backend's collective kernels share: the communicator, deadlines, packing.

``allreduce_start`` / ``allreduce_wait`` (ir/ops/distributed.py) sum a bucket of
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

The per-call path (``BucketSum``): a start kernel binds its arena arrays once, and where the MPI
library has persistent collectives (MPI-4 ``MPI_Allreduce_init``; MPICH 4 has them) it builds
the bucket's request there, once: each call then only ``Start``s it, with no buffer parsing and
no schedule built per call (2 ranks on the 2-core dev box at load average ~9, a 4 KiB
sum + divide in mpi4py, median: 10 µs this way, 19 µs with ``MPI_Iallreduce``, 35 µs with a
blocking ``MPI_Allreduce``). A persistent sum is still nonblocking and still
polled with the deadline (``wait_for``), so a dead or hung rank fails the wait in ``timeout()``
seconds as before; building and starting the request are local (measured: rank 0's
``Allreduce_init`` and ``Start`` return in 0.1 ms while rank 1 sleeps), so they cannot hang.
Every rank binds its buckets in the same order (the same plan, the same step order), which
MPI asks of collective initialisation as of any collective. Without persistent collectives (an
MPI-3 library, a test's stand-in communicator) each call posts ``MPI_Iallreduce`` as before.
A blocking ``MPI_Allreduce`` is never used, not even where nothing overlaps a sum: it cannot
time out, so a dead peer would hang this rank, and on this machine it was no faster than the
persistent request anyway. Forcing another ``MPIR_CVAR_IALLREDUCE_INTRA_ALGORITHM``
(recursive doubling, recursive exchange) made the sums slower than MPICH's own choice.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
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
# world: ranks of comm (read per call, no MPI call); generation: bumped by each set_communicator, so
# a BucketSum bound to an earlier communicator binds again; persistent: False once the library
# refused MPI_Allreduce_init (MPI < 4), so later buckets post Iallreduce at once.
_state: dict[str, Any] = {
    "comm": None,
    "timeout": None,
    "progress": None,
    "world": 1,
    "generation": 0,
    "persistent": True,
}
# Buffer address -> (MPI request or None, bucket). Single dict stores and pops (atomic under the
# GIL) on the hot path; set_communicator clears it under the lock.
_pending: dict[int, tuple[Any, int]] = {}
_profile: dict[str, Any] = {"on": False, "serialize": False, "blocked_s": 0.0, "sums": 0}
_packed = [0]  # bytes pack() copied (packed_bytes())
_bound: weakref.WeakSet = weakref.WeakSet()  # BucketSums holding a persistent request (freed at exit)


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
        _state["world"] = 1 if comm is None else int(comm.Get_size())
        _state["generation"] += 1
        _state["persistent"] = True
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
    return _state["world"]


def generation() -> int:
    """A number that changes with every ``set_communicator`` (to rebind what a kernel cached)."""
    return _state["generation"]


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


def _mpi() -> Any:
    """mpi4py's MPI module (imported once; only called with a communicator of several ranks)."""
    module = _state.get("mpi")
    if module is None:
        from mpi4py import MPI as module

        _state["mpi"] = module
    return module


def _posted(request: Any, address: int, bucket: int) -> None:
    """Record a started sum for its wait (with ``serialize`` profiling: wait for it right away)."""
    if request is not None and _profile["serialize"]:
        _wait_counted(request, f"allreduce of gradient bucket {bucket}")
        request = None
    _pending[address] = (request, bucket)
    if request is not None:
        progress = _state["progress"]
        if progress is not None:
            progress.busy(+1)


def start_sum(buf: np.ndarray, send: np.ndarray | None, bucket: int, address: int | None = None) -> None:
    """Start summing ``buf`` across ranks (from ``send`` when given, else in place); nonblocking.

    ``address``: ``buf``'s data address if the caller knows it (it keys the pending sum)."""
    request = None
    if _state["world"] > 1:
        MPI = _mpi()
        try:
            request = _state["comm"].Iallreduce(MPI.IN_PLACE if send is None else send, buf, op=MPI.SUM)
        except Exception as err:
            raise GraphcError(f"allreduce_start of bucket {bucket}: MPI error: {err}") from None
    elif send is not None:
        buf[...] = send
    _posted(request, buf.ctypes.data if address is None else address, bucket)


class BucketSum:
    """The sum across ranks of one bucket buffer, bound once for the many calls of a start kernel.

    ``buf``: the flat bucket buffer (summed in place); ``send``: where MPI reads the gradients when
    they are not packed into ``buf`` (a span over them), else None. ``start()`` begins the sum,
    nonblocking; the wait kernel finishes it (``finish_sum`` at ``address``) with the deadline.
    With more than one rank and persistent collectives in the MPI library, the request is built
    once per communicator (``MPI_Allreduce_init``) and each ``start()`` only starts it; otherwise
    each posts ``MPI_Iallreduce`` (``start_sum``).
    """

    __slots__ = ("buf", "send", "bucket", "address", "_generation", "_request", "__weakref__")

    def __init__(self, buf: np.ndarray, send: np.ndarray | None, bucket: int) -> None:
        self.buf, self.send, self.bucket = buf, send, bucket
        self.address = buf.ctypes.data
        self._generation = -1
        self._request: Any = None

    def persistent(self) -> bool:
        """Whether this sum holds a persistent request (MPI_Allreduce_init) that ``start()`` starts."""
        return self._request is not None

    def start(self) -> None:
        """Begin the sum: start the persistent request, else post MPI_Iallreduce (or copy, one rank)."""
        if self._generation != _state["generation"]:
            self._bind()
        request = self._request
        if request is None:
            start_sum(self.buf, self.send, self.bucket, self.address)
            return
        try:
            request.Start()
        except Exception as err:  # e.g. still active: an earlier wait of this bucket failed
            raise GraphcError(f"allreduce_start of bucket {self.bucket}: MPI error: {err}") from None
        if _profile["serialize"] or _state["progress"] is not None:
            _posted(request, self.address, self.bucket)
        else:
            _pending[self.address] = (request, self.bucket)

    def _bind(self) -> None:
        self.close()
        self._generation = _state["generation"]
        init = getattr(_state["comm"], "Allreduce_init", None)
        if _state["world"] <= 1 or not _state["persistent"] or init is None:
            return
        MPI = _mpi()
        try:
            self._request = init(MPI.IN_PLACE if self.send is None else self.send, self.buf, op=MPI.SUM)
        except Exception:  # NotImplementedError (MPI < 4) or the library refused: post Iallreduce
            _state["persistent"] = False
            return
        if not _state.get("atexit"):
            atexit.register(_close_all)  # runs before mpi4py's MPI_Finalize (registered earlier)
            _state["atexit"] = True
        _bound.add(self)

    def __del__(self) -> None:
        self.close()  # a plan dropped: its requests go too (MPICH warns of each left at MPI_Finalize)

    def close(self) -> None:
        """Free the persistent request, if it is not in flight (then it is left to MPI); a later
        ``start()`` builds a new one."""
        request, self._request = self._request, None
        self._generation = -1
        if request is None:
            return
        try:
            if _mpi().Is_finalized():
                return
            if request.Test():  # an idle persistent request tests complete at once
                request.Free()
        except Exception:  # the communicator is gone, or MPI refuses: nothing left to release
            pass


def persistent_requests() -> int:
    """How many bucket sums hold a persistent MPI request now (0 with one rank or an MPI-3 library)."""
    return sum(bucket_sum.persistent() for bucket_sum in list(_bound))


def _close_all() -> None:
    """Free every persistent request still held (MPICH warns of each one left at MPI_Finalize)."""
    for bucket_sum in list(_bound):
        bucket_sum.close()


def finish_sum(buf: np.ndarray, bucket: int, address: int | None = None) -> int:
    """Wait (with the deadline) for the sum ``start_sum`` began on ``buf`` (at ``address``, if known).

    Returns the number of ranks summed over (the divisor of the average)."""
    entry = _pending.pop(buf.ctypes.data if address is None else address, None)
    if entry is None:
        raise GraphcError(f"allreduce_wait of bucket {bucket}: no allreduce_start is pending on its buffer")
    request, started = entry
    if started != bucket:
        raise GraphcError(f"allreduce_wait of bucket {bucket}: its buffer holds bucket {started}")
    if request is None:
        return _state["world"]
    progress = _state["progress"]
    if progress is None:
        if not _profile["on"]:
            # A small bucket's sum is done now or within a few polls: poll back to back first,
            # with no clock, no deadline and no message built (a 4 KiB sum is ~5 us in all).
            test = request.Test
            try:
                for _ in range(BARE_POLLS):
                    if test():
                        return _state["world"]
            except Exception as err:  # mpi4py.MPI.Exception: the MPI library reported an error
                raise GraphcError(f"allreduce of gradient bucket {bucket}: MPI error: {err}") from None
        _wait_counted(request, f"allreduce of gradient bucket {bucket}")
        return _state["world"]
    progress.waiting(+1)
    try:
        _wait_counted(request, f"allreduce of gradient bucket {bucket}")
    finally:
        progress.waiting(-1)
        progress.busy(-1)
    return _state["world"]


def sum_blocking(buf: np.ndarray, bucket: int) -> None:
    """Sum ``buf`` in place across ranks now (the reference kernels' form), with the deadline."""
    start_sum(buf, None, bucket)
    finish_sum(buf, bucket)
