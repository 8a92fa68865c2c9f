"""Loop-invariant GEMM operands: packed once per loop call instead of once per iteration.

A scan or while_loop binds its invariants (an RNN's weights) once per call, and its body's GEMM
then reads the same weight on every step: ``h @ W_hh^T`` packed ``W_hh^T`` into panels 64 times
in a T=64 LSTM's forward. The loop kernels (kernels/cpu/control_flow.py) run their steps inside
``loop_invariants(invariants, written)``: a promise, for that one call, that the invariant
arrays' bytes do not change while it lasts (the body may not write over them, and an invariant
overlapping one of the ``written`` arrays, the loop's outputs, is left out). A GEMM asks
``packed(kind, b, shape, fill)`` for its operand ``b``: where ``b`` lies wholly inside one of the
promised arrays, it gets the panels ``fill(b, buf)`` made, filled on the first ask of the window
and reused on the next; elsewhere None (the GEMM packs as usual).

A stale pack cannot be used: an entry is keyed by ``(kind, data pointer, shape, strides)`` AND the
window's version, which every window entry and exit bumps (so an entry made in one loop call is
never read in the next, although the arena gives the next call's weights the same address), and
outside every window ``packed`` answers None. Windows nest (a loop in a loop body): the promises
of all open windows hold, and entering or leaving one invalidates every entry (conservative).
The state is per Python thread (plans may run on several). The packed buffers are kept between
windows, for the next call to refill without allocating (``MAX_PACKS`` of them, least recently
used first out).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numba
import numpy as np
from numpy.lib.array_utils import byte_bounds

__all__ = ["MAX_PACKS", "active", "binding", "loop_invariants", "packed"]

MAX_PACKS = 16  # packed buffers kept per thread (each the size of its operand: an LSTM's 1 MiB)


@numba.njit(cache=True, nogil=True)
def _address(x: np.ndarray) -> int:
    """The address of ``x``'s first element (a fifth of the time of ``x.ctypes.data``)."""
    return x.ctypes.data


class _State(threading.local):
    """One thread's open windows and packs."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []  # byte ranges promised by every open window
        self.version = 0  # bumped at each window entry and exit
        self.packs: OrderedDict[tuple, tuple[int, np.ndarray]] = OrderedDict()  # key -> (version, buffer)


_STATE = _State()


@contextmanager
def loop_invariants(invariants: Sequence[object], written: Sequence[object] = ()) -> Iterator[None]:
    """A window in which the NumPy arrays among ``invariants`` keep their bytes (the caller's
    promise: a loop kernel's invariant operands, for one call), except any that shares memory
    with one of ``written`` or is not contiguous (its bounds would take in bytes of other
    arrays); GEMMs inside may pack them once (``packed``)."""
    keep = [
        x
        for x in invariants
        if isinstance(x, np.ndarray)
        and x.size
        and (x.flags.c_contiguous or x.flags.f_contiguous)  # its byte range holds nothing else
        and not any(isinstance(w, np.ndarray) and np.may_share_memory(x, w) for w in written)
    ]
    state = _STATE
    saved = len(state.ranges)
    state.ranges.extend(byte_bounds(x) for x in keep)
    state.version += 1
    try:
        yield
    finally:
        state.version += 1
        del state.ranges[saved:]


def active() -> bool:
    """Whether this thread is inside a window with at least one promised array."""
    return bool(_STATE.ranges)


def _inside(lo: int, hi: int, ranges: list[tuple[int, int]]) -> bool:
    return any(a <= lo and hi <= b for a, b in ranges)


def packed(
    kind: str, b: np.ndarray, shape: int | tuple[int, ...], fill: Callable[[np.ndarray, np.ndarray], None]
) -> np.ndarray | None:
    """The float32 buffer of this ``shape`` that ``fill(b, buf)`` fills from ``b`` (an operand;
    ``kind`` names the layout), filled once per window and reused there; None outside a window
    or where ``b`` does not lie wholly inside one promised array."""
    if not _STATE.ranges:
        return None
    return _Binding(kind, b, shape, fill)()


def binding(
    kind: str, b: np.ndarray, shape: int | tuple[int, ...], fill: Callable[[np.ndarray, np.ndarray], None]
) -> Callable[[], np.ndarray | None]:
    """``packed(kind, b, shape, fill)`` as a function of no arguments, for a caller that asks for
    this very array ``b`` on every call (a GEMM bound to a loop step's arrays): ``b``'s key and
    byte range are found once, here; the window and its version are looked at on every call."""
    return _Binding(kind, b, shape, fill)


class _Binding:
    """``packed``'s answer for one operand array: its key and bytes computed once."""

    __slots__ = ("b", "fill", "hi", "key", "lo", "shape")

    def __init__(
        self,
        kind: str,
        b: np.ndarray,
        shape: int | tuple[int, ...],
        fill: Callable[[np.ndarray, np.ndarray], None],
    ) -> None:
        self.b, self.fill = b, fill
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
        ptr = _address(b)
        self.key = (kind, ptr, b.shape, b.strides, b.dtype.str)
        lo, hi = ptr, ptr + b.itemsize
        for extent, stride in zip(b.shape, b.strides):
            if extent == 0:
                lo, hi = 1, 0  # no bytes: never inside a promised range
                break
            step = (extent - 1) * stride
            lo, hi = (lo + step, hi) if step < 0 else (lo, hi + step)
        self.lo, self.hi = lo, hi

    def __call__(self) -> np.ndarray | None:
        state = _STATE
        if not state.ranges:
            return None
        entry = state.packs.get(self.key)
        if entry is not None and entry[0] == state.version and entry[1].shape == self.shape:
            return entry[1]
        if self.hi < self.lo or not _inside(self.lo, self.hi, state.ranges):
            return None
        reuse = entry is not None and entry[1].shape == self.shape
        buf = entry[1] if reuse else np.empty(self.shape, np.float32)
        self.fill(self.b, buf)
        state.packs[self.key] = (state.version, buf)
        state.packs.move_to_end(self.key)
        while len(state.packs) > MAX_PACKS:
            state.packs.popitem(last=False)
        return buf
