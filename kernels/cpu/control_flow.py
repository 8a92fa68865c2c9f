"""CPU kernels of cond, while_loop and scan: each body runs as a sub-plan.

A ``SubPlan`` schedules its body, plans its memory (one arena of its own) and compiles every
body node once, when the control-flow node's kernel is built; each iteration then only runs
those kernels. Per iteration nothing is allocated:

- a loop-carried value ping-pongs between two buffers: the body reads the carry from one and
  writes the next carry into the other (their kernel arguments are rebound, not copied), unless
  the body's memory plan aliases it (a view), when it is copied; bodies are planned without
  in-place outputs (``graphc.compiler``'s body planner) so that no input is written over;
- a scan's x slice is bound straight to ``xs[i]`` and each y is written straight into
  ``ys[i]`` (rebinding again; a copy only where the plan aliases the value);
- loop-invariant operands (captured weights) are bound once per call, and the loop runs inside
  ``loop_invariant.loop_invariants`` over them: a GEMM reading one (an RNN's ``h @ W_hh^T``)
  packs it into panels on the first step and reuses them on the others;
- a scan precomputes every step's bindings (``_scan_schedule``: each step's kernels with their
  arguments, and its few copies) once for the arrays it is called with, and reuses them while a
  call brings the same arrays (a plan's arena views always do): the whole loop is then one flat
  list of kernel calls, with no Python rebinding between them, each numba kernel called through
  its compiled entry point (no type dispatch of its arguments per call), and a kernel that can
  bind itself to fixed arrays (``bind``: a step's GEMM, its operand checks made once) bound.

The binding and the loops are backend-independent and live in ``graphc.kernels.control_common``
(the CUDA backend's kernels/cuda/control_flow.py shares them); this module supplies NumPy arenas,
numba kernels and ``np.copyto``.

Loops run with flush-to-zero (``denormals.flush_denormals``): a long recurrent backward's
cotangents decay through the denormal range, where its steps ran ~75x slower on x86.

Kernels carry ``skip_warm_up``: the sub-plans compile and warm up when built, and a loop run
on a zeroed arena (the runtime's warm-up) need not terminate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphc.ir import Graph, MemoryPlan, Node, TensorType
from graphc.kernels.control_common import (
    MAX_TRIPS,
    Call,
    SubPlanBase,
    body_sources,
    run_calls,
    run_cond,
    run_while,
    scan_schedule,
)
from graphc.kernels.in_place import in_place_outputs

from .denormals import flush_denormals
from .entry_points import entry_point
from .loop_invariant import loop_invariants

__all__ = ["MAX_TRIPS", "SubPlan", "control_builder"]


class SubPlan(SubPlanBase):
    """One body, scheduled and memory-planned, with its kernels compiled once (NumPy arena)."""

    copy = staticmethod(np.copyto)

    def __init__(
        self, body: Graph, compile_node: Callable[..., Callable], invariant: int | None = None
    ) -> None:
        """``invariant``: data inputs from this index on are bound once per call for every iteration,
        so the body may not write over them (they are kept live to the end of the body)."""
        super().__init__(body, compile_node, invariant)
        self.run()  # compile (numba's first call) and warm up now, on the zeroed arena

    def _buffers(self, mp: MemoryPlan, types: dict[str, TensorType]) -> dict[str, np.ndarray]:
        raw = np.zeros(mp.arena_bytes + mp.alignment, dtype=np.uint8)
        start = (-raw.ctypes.data) % mp.alignment
        self.arena = raw[start : start + mp.arena_bytes]
        views: dict[str, np.ndarray] = {}
        for name, buf in mp.buffers.items():
            t = types[name]
            views[name] = self.arena[buf.offset : buf.offset + t.nbytes].view(t.np_dtype).reshape(t.shape)
        return views

    def _constant(self, array: np.ndarray) -> np.ndarray:
        return array

    def _compile(
        self, node: Node, compile_node: Callable[..., Callable], arrays: list
    ) -> tuple[Callable, list, None]:
        # An output on exactly an input's bytes (both aliased, so never rebound: the promise
        # holds on every call) is computed in place: without the hint the kernel's loop cannot
        # rule out overlap and stays scalar (an LSTM gate loop ran ~5x slower).
        in_place = in_place_outputs(arrays, len(node.inputs))
        return (compile_node(node, in_place) if in_place else compile_node(node)), arrays, None

    @staticmethod
    def at(array: np.ndarray, t: int) -> np.ndarray:
        """The view of slice ``t`` (a 0-d view for a 1-D array, not a scalar)."""
        return array[t, ...]


def _source(node: Node, build: Callable[[Node], object]) -> str:
    return body_sources(node, lambda n: build(n).source, "CPU")  # type: ignore[attr-defined]


def _cond_kernel(node: Node, compile_node: Callable) -> Callable:
    plans = [SubPlan(b, compile_node) for b in node.bodies]
    n_in = len(node.inputs)

    def cond(*arrays: np.ndarray) -> None:
        run_cond(plans[0] if bool(arrays[0]) else plans[1], arrays, n_in)

    return cond


def _carry_buffers(node: Node, k: int) -> list[list[np.ndarray]]:
    return [[np.empty(v.shape, v.type.np_dtype) for _ in range(2)] for v in node.outputs[:k]]


def _while_kernel(node: Node, compile_node: Callable) -> Callable:
    k = node.attrs["n_carry"]
    test, body = (SubPlan(b, compile_node, invariant=k) for b in node.bodies)
    pairs = _carry_buffers(node, k)
    flag = np.zeros((), dtype=np.bool_)

    def while_loop(*arrays: np.ndarray) -> None:
        test_bound = test.bind_output(0, flag)

        def predicate() -> bool:
            return bool(flag if test_bound else test.output(0))

        with flush_denormals(), loop_invariants(arrays[k : len(node.inputs)], arrays[len(node.inputs) :]):
            run_while(test, body, k, arrays, pairs, predicate)

    while_loop.skip_warm_up = True  # type: ignore[attr-defined]
    return while_loop


def _scan_schedule(
    node: Node, body: SubPlan, pairs: list[list[np.ndarray]], arrays: tuple
) -> tuple[list[Call], list[Node | None]]:
    """``control_common.scan_schedule`` with each numba kernel called through its compiled entry
    point (``entry_points.entry_point``: looked up once per kernel and argument types), and each
    kernel with a ``bind(*arrays)`` method (a fused matmul on the AVX-512 GEMM) called in the
    form it returns for that step's arrays (its checks of them made once)."""

    def entry(j: int, fn: Callable, args: tuple) -> Callable:
        bind = getattr(fn, "bind", None)  # a kernel that specializes itself to fixed arrays
        return entry_point(fn, args) if bind is None else bind(*args)

    return scan_schedule(node, body, pairs, arrays, entry)


def _scan_kernel(node: Node, compile_node: Callable) -> Callable:
    k, n_xs, n_in = node.attrs["n_carry"], node.attrs["n_xs"], len(node.inputs)
    (body,) = (SubPlan(b, compile_node, invariant=k + n_xs) for b in node.bodies)
    pairs = _carry_buffers(node, k)
    cached: list = [None, None]  # (key of the arrays, their schedule)

    def scan(*arrays: np.ndarray) -> None:
        key = tuple((a.ctypes.data, a.shape, a.strides, a.dtype) for a in arrays)
        if cached[0] != key:
            # The schedule holds views of these arrays, which keeps their memory (and so the
            # addresses in the key) from going to another array while it is cached.
            cached[:] = key, _scan_schedule(node, body, pairs, arrays)
        # The invariants keep their bytes for the call: a GEMM packs one once (loop_invariant).
        with flush_denormals(), loop_invariants(arrays[k + n_xs : n_in], arrays[n_in:]):
            run_calls(*cached[1])  # the carries' copies in and out included

    scan.skip_warm_up = True  # type: ignore[attr-defined]
    return scan


_MAKERS = {"cond": _cond_kernel, "while_loop": _while_kernel, "scan": _scan_kernel}


def control_builder(build: Callable[[Node], object], compile_node: Callable[[Node], Callable]) -> Callable:
    """The CPU_KERNELS builder of the control-flow ops (``build``/``compile_node`` of the backend)."""
    from graphc.kernels.cpu import Built

    def builder(node: Node) -> Built:
        return Built(_source(node, build), lambda: _MAKERS[node.op](node, compile_node))

    return builder
