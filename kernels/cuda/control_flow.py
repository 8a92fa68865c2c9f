"""CUDA kernels of cond, while_loop and scan: each body runs as a device sub-plan, driven from the host.

A ``SubPlan`` schedules its body, plans its memory (one device arena of its own) and compiles
every body node once with the CUDA backend's ``compile_node``, when the control-flow node's
kernel is built; each iteration then only launches those kernels. As on the CPU backend
(kernels/cpu/control_flow.py; the binding and the loops are shared, in
``graphc.kernels.control_common``), per iteration nothing is allocated on the device:

- a loop-carried value ping-pongs between two device buffers: the body reads the carry from one
  and writes the next carry into the other (kernel arguments rebound, not copied), unless the
  body's memory plan aliases it (a view), when it is copied device to device;
- a scan's x slice is bound straight to a view of ``xs[i]`` and each y is written straight into
  a view of ``ys[i]`` (numba device arrays slice into views, no copy);
- loop-invariant operands (captured weights) are bound once per call;
- a scan precomputes every step's launches (``_scan_schedule``) once for the device arrays it is
  called with, and reuses them while a call brings the same arrays (a device plan binds them once).

Known cost: a while_loop copies its condition's ``bool[]`` result to the host after every
evaluation, and a cond its predicate once per call (a 1-element device-to-host copy, which also
waits for the kernels launched before it): the host decides whether to launch the next
iteration. A scan never waits: its trip count is static.

Error flags (a bad index in a gather) of body kernels are read once after the whole node ran
(``check``), as a device plan does for its own kernels, not per iteration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from graphc.ir import Graph, GraphcError, MemoryPlan, Node, TensorType
from graphc.ir.control import CONTROL_OPS
from graphc.kernels.control_common import (
    Call,
    SubPlanBase,
    body_sources,
    raise_in_body,
    run_calls,
    run_cond,
    run_while,
    scan_schedule,
)
from graphc.kernels.scalar_ops import Unsupported

from .compiled import CudaKernel, flat

__all__ = ["CONTROL_FLOW_GENERATORS", "ControlKernel", "SubPlan", "control_kernel", "control_source"]


class _FlatViews:
    """1-D views of device arrays, made once per array (a view of a device array is a new Python
    object each time, costing microseconds): the ping-pong buffers, invariants and the caller's
    arrays come back every iteration and every call. Holds the arrays it saw (so their ids stay
    theirs) for as long as its sub-plan lives; forgets them all past ``limit``."""

    def __init__(self, limit: int = 1024) -> None:
        self._views: dict[int, tuple[Any, Any]] = {}
        self._limit = limit

    def __call__(self, array: Any) -> Any:
        """The 1-D view of ``array``."""
        hit = self._views.get(id(array))
        if hit is not None and hit[0] is array:
            return hit[1]
        if len(self._views) >= self._limit:
            self._views.clear()
        view = flat(array)
        self._views[id(array)] = (array, view)
        return view


def _copy_flat(dst: Any, src: Any) -> None:
    """Copy 1-D device array ``src`` into ``dst`` (same size and dtype), device to device."""
    dst.copy_to_device(src)


class SubPlan(SubPlanBase):
    """One body, scheduled and memory-planned, with its kernels compiled once (a device arena).

    Generated kernels are launched on 1-D views (``CudaKernel.launch_flat``: rebinding an array
    rebinds its flat view); a nested control-flow node or a fused node that falls back to its
    body gets the shaped arrays. ``flagged``: the body kernels that can report a bad index."""

    def __init__(self, body: Graph, compile_node: Callable[..., Any], invariant: int | None = None) -> None:
        """``invariant``: data inputs from this index on are bound once per call for every iteration."""
        self.flagged: list[tuple[Node, Any]] = []
        self.flat = _FlatViews()
        super().__init__(body, compile_node, invariant)

    def copy(self, dst: Any, src: Any) -> None:  # type: ignore[override]
        """Copy device array ``src`` into ``dst`` (same shape and dtype), device to device."""
        if dst.size:
            self.flat(dst).copy_to_device(self.flat(src))

    def _buffers(self, mp: MemoryPlan, types: dict[str, TensorType]) -> dict[str, Any]:
        from numba import cuda

        self.arena = cuda.device_array(max(mp.arena_bytes, 1), np.uint8)
        views: dict[str, Any] = {}
        for name, buf in mp.buffers.items():
            t = types[name]
            if t.nbytes == 0:
                views[name] = cuda.device_array(t.shape, t.np_dtype)
                continue
            raw = self.arena[buf.offset : buf.offset + t.nbytes]
            views[name] = raw.view(t.np_dtype).reshape(t.shape)
        return views

    def _constant(self, array: np.ndarray) -> Any:
        from numba import cuda

        return cuda.to_device(array)

    def _compile(
        self, node: Node, compile_node: Callable[..., Any], arrays: list
    ) -> tuple[Callable, list, Callable | None]:
        kernel = compile_node(node)
        if kernel.has_flag:
            self.flagged.append((node, kernel))
        if isinstance(kernel, CudaKernel):
            return kernel.launch_flat, [self.flat(a) for a in arrays], self.flat
        if isinstance(kernel, ControlKernel):
            return kernel.launch, list(arrays), None
        return kernel, list(arrays), None  # a fused node run node by node (BodyRunner)

    @staticmethod
    def at(array: Any, t: int) -> Any:
        """The view of slice ``t`` (``array[t]`` of a 1-D device array would be a copy to the host)."""
        return array[t : t + 1].reshape(tuple(array.shape[1:]))

    def copy_call(self, dst: Any, src: Any) -> Call | None:
        """A device-to-device copy over 1-D views made now (None for an empty array)."""
        if not dst.size:
            return None
        return _copy_flat, (self.flat(dst), self.flat(src))

    def check(self) -> None:
        """Raise the first bad index a body kernel flagged since the last check, naming its node."""
        for node, kernel in self.flagged:
            try:
                kernel.check()
            except GraphcError as err:
                raise_in_body(node, err)


def _read_bool(device: Any, host: np.ndarray) -> bool:
    """A device scalar's truth (``device``: its 1-D view), copied to the host: one element, after
    the kernels launched before it have run."""
    device.copy_to_host(host)
    return bool(host[0])


class ControlKernel:
    """A control-flow node's kernel on the device: ``kernel(*inputs, *outputs)`` over device arrays
    of the node's shapes, like ``CudaKernel`` (``bind``, ``has_flag``, ``check``, ``source``)."""

    def __init__(
        self, node: Node, plans: Sequence[SubPlan], run: Callable[..., None], source_of: Callable[[Node], str]
    ) -> None:
        self.node = node
        self.plans = list(plans)
        self.launch = run  # run(*arrays): launch without reading the error flags
        self._source_of = source_of
        self.n_in = len(node.inputs)

    @property
    def source(self) -> str:
        """The bodies' generated sources (``control_source``)."""
        return control_source(self.node, self._source_of)

    @property
    def has_flag(self) -> bool:
        """Whether a body kernel can report a bad index."""
        return any(p.flagged for p in self.plans)

    def check(self) -> None:
        """Raise GraphcError if a body kernel flagged a bad index since the last check."""
        for p in self.plans:
            p.check()

    def bind(self, *arrays: Any) -> Callable[[], None]:
        """A no-argument launcher over these shaped device arrays (what a device plan keeps)."""
        return lambda: self.launch(*arrays)

    def __call__(self, *arrays: Any) -> None:
        """Run the node on device arrays (inputs then outputs), then read the error flags."""
        values = (*self.node.inputs, *self.node.outputs)
        if len(arrays) != len(values):
            raise GraphcError(f"{self.node.op}: expected {len(values)} arrays, got {len(arrays)}")
        for a, v in zip(arrays, values):
            if tuple(a.shape) != v.shape or a.dtype != v.type.np_dtype:
                raise GraphcError(f"{self.node.op}: got an array {a.dtype}{list(a.shape)} for {v.type}")
        self.launch(*arrays)
        self.check()


def _cond_kernel(node: Node, compile_node: Callable) -> tuple[list[SubPlan], Callable]:
    plans = [SubPlan(b, compile_node) for b in node.bodies]
    n_in = len(node.inputs)
    pred = np.zeros(1, dtype=node.inputs[0].type.np_dtype)

    def cond(*arrays: Any) -> None:
        taken = _read_bool(plans[0].flat(arrays[0]), pred)  # one device-to-host copy per call
        run_cond(plans[0] if taken else plans[1], arrays, n_in)

    return plans, cond


def _carry_buffers(node: Node, k: int) -> list[list[Any]]:
    from numba import cuda

    return [[cuda.device_array(v.shape, v.type.np_dtype) for _ in range(2)] for v in node.outputs[:k]]


def _while_kernel(node: Node, compile_node: Callable) -> tuple[list[SubPlan], Callable]:
    from numba import cuda

    k = node.attrs["n_carry"]
    test, body = (SubPlan(b, compile_node, invariant=k) for b in node.bodies)
    pairs = _carry_buffers(node, k)
    flag = cuda.device_array((), np.bool_)
    host = np.zeros(1, np.bool_)

    def while_loop(*arrays: Any) -> None:
        test_bound = test.bind_output(0, flag)

        def predicate() -> bool:  # one device-to-host copy per evaluation of the condition
            return _read_bool(test.flat(flag if test_bound else test.output(0)), host)

        run_while(test, body, k, arrays, pairs, predicate)

    return [test, body], while_loop


def _address(array: Any) -> int | None:
    """Where a device array's data lies (the simulator's arrays are NumPy arrays underneath)."""
    pointer = getattr(array, "device_ctypes_pointer", None)
    return pointer.value if pointer is not None else array.ctypes.data


def _scan_schedule(
    node: Node, body: SubPlan, pairs: list[list[Any]], arrays: tuple
) -> tuple[list[Call], list[Node | None]]:
    """``control_common.scan_schedule`` over device arrays: views of ``xs[t]``/``ys[t]`` bound
    into each step's launches, copies device to device."""
    return scan_schedule(node, body, pairs, arrays)


def _scan_kernel(node: Node, compile_node: Callable) -> tuple[list[SubPlan], Callable]:
    k, n_xs = node.attrs["n_carry"], node.attrs["n_xs"]
    (body,) = (SubPlan(b, compile_node, invariant=k + n_xs) for b in node.bodies)
    pairs = _carry_buffers(node, k)
    cached: list = [None, None]  # (key of the arrays, their schedule)

    def scan(*arrays: Any) -> None:
        key = tuple((_address(a), tuple(a.shape), tuple(a.strides), a.dtype) for a in arrays)
        if cached[0] != key:
            # The schedule holds views of these arrays, which keeps their memory (and so the
            # addresses in the key) from going to another array while it is cached.
            cached[:] = key, _scan_schedule(node, body, pairs, arrays)
        run_calls(*cached[1])  # the carries' copies in and out included

    return [body], scan


_MAKERS = {"cond": _cond_kernel, "while_loop": _while_kernel, "scan": _scan_kernel}


def control_source(node: Node, source_of: Callable[[Node], str]) -> str:
    """The text of a control-flow node's device kernel: its bodies' generated sources."""
    return body_sources(node, source_of, "CUDA")


def control_kernel(
    node: Node, compile_node: Callable[[Node], Any], source_of: Callable[[Node], str]
) -> ControlKernel:
    """Build a cond / while_loop / scan node's kernel: its bodies compiled once as device sub-plans
    (``compile_node``/``source_of``: the CUDA backend's, for the body nodes)."""
    plans, run = _MAKERS[node.op](node, compile_node)
    return ControlKernel(node, plans, run, source_of)


def _not_one_kernel(node: Node):
    raise Unsupported(f"{node.op} runs its bodies as device sub-plans (compile_node), not as one kernel")


# GENERATORS entries (every op has one): compile_node builds control-flow nodes with control_kernel.
CONTROL_FLOW_GENERATORS = dict.fromkeys(CONTROL_OPS, _not_one_kernel)
