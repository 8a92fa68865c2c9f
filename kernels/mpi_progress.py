"""A background thread that moves pending MPI sums forward while the step computes.

MPICH (and most MPI libraries without an asynchronous progress thread) advances a nonblocking
collective only inside MPI calls. Between a bucket's ``allreduce_start`` and its
``allreduce_wait`` the rank runs compiled kernels (numba, ``nogil``) and makes no MPI call, so
without help the sum would sit still until the wait and nothing would overlap. While at least one
sum is pending (``busy``), this thread calls ``Iprobe`` on the communicator every ``interval``
seconds (it matches no message: collectives travel in their own context) and sleeps in between;
with nothing pending, or while a wait polls the sums itself (``waiting``), it blocks on an event
and costs nothing (two threads calling MPI contend for the library's lock). It never touches a request (only
the thread that started a sum tests it), which MPI_THREAD_MULTIPLE (mpi4py's default) allows.
"""

from __future__ import annotations

import threading
import time
from typing import Any

DEFAULT_INTERVAL = 1e-3  # seconds between progress calls while a sum is pending


class ProgressThread:
    """Drives MPI progress on ``comm`` while sums are pending; ``close()`` ends the thread."""

    def __init__(self, comm: Any, interval: float = DEFAULT_INTERVAL) -> None:
        self.comm, self.interval = comm, interval
        self._pending = 0
        self._waiting = 0
        self._count_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.calls = 0
        self._thread = threading.Thread(target=self._run, name="graphc-mpi-progress", daemon=True)
        self._thread.start()

    def busy(self, delta: int) -> None:
        """One more (+1) or one fewer (-1) pending sum; wakes the thread when one appears."""
        with self._count_lock:
            self._pending = max(0, self._pending + delta)
            pending = self._pending and not self._waiting
        if pending:
            self._wake.set()

    def waiting(self, delta: int) -> None:
        """A wait begins (+1) or ends (-1): the waiting thread drives MPI itself meanwhile."""
        with self._count_lock:
            self._waiting = max(0, self._waiting + delta)
            resume = self._pending and not self._waiting
        if resume:
            self._wake.set()

    def close(self) -> None:
        """Stop the thread (waits for it briefly)."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        from mpi4py import MPI

        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            while self._pending > 0 and not self._waiting and not self._closed:
                try:
                    self.comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG)
                except Exception:  # the library failed: the waits report it with their deadline
                    return
                self.calls += 1
                time.sleep(self.interval)
