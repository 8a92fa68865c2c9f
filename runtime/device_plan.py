"""Device plans: a scheduled graph run with the CUDA kernels, its data kept on the GPU.

Interface (what runtime.Plan needs to take it over)::

    plan = DevicePlan(graph, memory_plan=None, resident=False)   # or build_device_plan(...)
    y = plan(*data_arrays)          # NumPy in; one array, or a tuple when several results
    plan.parameters                 # name -> the host arrays of param/state/const inputs (shared)
    plan.sync_to_host()             # resident mode: copy device param/state values into them
    plan.sync_to_device()           # resident mode: upload them after changing them on the host
    plan.kernel_sources()           # node output name -> generated source (for plan files)

Construction compiles every node (``compile_node``), allocates one device arena laid out by the
memory plan (or one device array per value without one), uploads the param/state/const arrays,
and binds every kernel to its device views once. A call copies the data inputs in (one
host-to-device copy each), launches the kernels in order over those views (intermediates never
leave the GPU), reads the error flags of indexing kernels (one tiny copy each), applies
``graph.updates`` on the device (device-to-device copies into the param/state buffers) and copies
the results out. A cond / while_loop / scan node is a ``ControlKernel`` (kernels/cuda/control_flow.py):
its launcher drives its bodies' kernels from the host (device sub-plans, compiled here with the
rest); a while_loop's condition and a cond's predicate come to the host each evaluation.

Host/device consistency of param/state arrays: by default (``resident=False``) the plan behaves
like runtime.Plan: it uploads every param/state array before each call, so changes made on the
host are seen, and writes updated values back into the host arrays after each call. With
``resident=True`` the device copies are the truth between calls: no per-call uploads or
write-backs; ``sync_to_host``/``sync_to_device`` move them when asked (fast training loops).
Const inputs are uploaded once.

Threads: a call, ``sync_to_host`` and ``sync_to_device`` hold the plan's lock (one arena, bound
once), so calls from several threads take turns; each returns arrays of its own. A GraphcError a
kernel raises (a bad index) names the node and the user's source line (``errors.at_node``).
"""

from __future__ import annotations

import threading

import numpy as np

from graphc.ir import Graph, GraphcError, MemoryPlan, Value
from graphc.kernels.cuda import compile_node, kernel_sources, require_device

from .errors import at_node
from .plan import bind_persistent, check_inputs


class DevicePlan:
    """A scheduled graph bound to device memory and compiled CUDA kernels; call it like runtime.Plan."""

    backend = "cuda"

    def __init__(self, graph: Graph, memory_plan: MemoryPlan | None = None, resident: bool = False) -> None:
        require_device()
        from numba import cuda

        self.graph = graph
        self.memory_plan = memory_plan
        self.resident = resident
        self._lock = threading.RLock()  # re-entered: a call syncs through the public methods
        self._inputs = graph.data_inputs
        self.parameters = bind_persistent(graph)  # shared: write-backs land in the caller's arrays
        # value name -> device array
        self._device: dict[str, object] = {name: cuda.to_device(a) for name, a in self.parameters.items()}
        self._synced = [v.name for v in graph.inputs if graph.kinds[v.name] in ("param", "state")]
        skip = self._bind_buffers(cuda)
        self._steps = []
        self.step_nodes = []  # the node each launcher in _steps runs (for profiles)
        self._flagged = []
        for node in graph.nodes:
            if id(node) in skip:
                continue
            kernel = compile_node(node)
            self._steps.append(kernel.bind(*(self._device[v.name] for v in (*node.inputs, *node.outputs))))
            self.step_nodes.append(node)
            if kernel.has_flag:
                self._flagged.append((node, kernel))
        updated = set(graph.updates.values())
        self._results = [graph.outputs[i].name for i in range(len(graph.outputs)) if i not in updated]
        self._updates = [(name, graph.outputs[i].name) for name, i in graph.updates.items()]

    def _bind_buffers(self, cuda) -> set[int]:
        """Device arrays for data inputs and node outputs; returns the view nodes to skip."""
        values: dict[str, Value] = {v.name: v for v in self._inputs}
        values.update({v.name: v for n in self.graph.nodes for v in n.outputs})
        skip: set[int] = set()
        mp = self.memory_plan
        if mp is None:
            for node in self.graph.nodes:
                out = node.outputs[0]
                if node.op == "reshape" and node.inputs[0].name in self._device:
                    # A view of its input, as the memory planner would alias it: no kernel.
                    self._device[out.name] = self._device[node.inputs[0].name].reshape(out.shape)
                    skip.add(id(node))
                    continue
                for v in node.outputs:
                    self._device[v.name] = cuda.device_array(v.shape, v.type.np_dtype)
            for v in self._inputs:
                self._device[v.name] = cuda.device_array(v.shape, v.type.np_dtype)
            return skip
        self.arena = cuda.device_array(max(mp.arena_bytes, 1), np.uint8)
        for name, v in values.items():
            buf = mp.buffers.get(name)
            if name in mp.written_over:  # on the device the update is still copied after the step
                self._device[name] = cuda.device_array(v.shape, v.type.np_dtype)
                continue
            if buf is None:
                raise GraphcError(f"plan: memory plan has no buffer for %{name}")
            nbytes = v.type.nbytes
            if buf.offset < 0 or buf.offset + nbytes > mp.arena_bytes:
                raise GraphcError(f"plan: buffer of %{name} lies outside the arena")
            if nbytes == 0:
                self._device[name] = cuda.device_array(v.shape, v.type.np_dtype)
                continue
            raw = self.arena[buf.offset : buf.offset + nbytes]
            self._device[name] = raw.view(v.type.np_dtype).reshape(v.shape)
        for node in self.graph.nodes:
            if mp.is_view(node):
                skip.add(id(node))
        return skip

    # ------------------------------------------------------------ calling
    def check_inputs(self, arrays: tuple) -> list[np.ndarray]:
        """Validate the caller's arrays against the graph's data inputs (count, shape, dtype)."""
        return check_inputs(self._inputs, arrays)

    def __call__(self, *arrays: np.ndarray):
        """Run the graph on the data inputs; one array, or a tuple when there are several results.

        Calls from several threads take turns (the plan's lock)."""
        with self._lock:
            return self._call(arrays)

    def _call(self, arrays: tuple):
        for v, arr in zip(self._inputs, self.check_inputs(arrays)):
            if arr.size:
                self._device[v.name].copy_to_device(arr)
        if not self.resident:
            self.sync_to_device()
        self._launch()
        for name, value in self._updates:
            if self._device[name] is not self._device[value] and self.parameters[name].size:
                self._device[name].copy_to_device(self._device[value])
        if not self.resident:
            self.sync_to_host()
        outs = tuple(self._device[name].copy_to_host() for name in self._results)
        return outs[0] if len(outs) == 1 else outs

    def _launch(self) -> None:
        """Launch every kernel in order, then read the indexing kernels' error flags (before the
        updates: a step with a bad index changes no parameter); a GraphcError is re-raised naming
        its node and the user's source line (``errors.at_node``)."""
        done = 0
        try:
            for step in self._steps:
                step()
                done += 1
        except GraphcError as err:
            raise at_node(err, self.step_nodes[done]) from err
        for node, kernel in self._flagged:
            try:
                kernel.check()
            except GraphcError as err:
                raise at_node(err, node) from err

    def sync_to_host(self) -> None:
        """Copy the device values of param/state inputs into the host arrays."""
        with self._lock:
            for name in self._synced:
                if self.parameters[name].size:
                    self._device[name].copy_to_host(self.parameters[name])

    def sync_to_device(self) -> None:
        """Upload the host arrays of param/state inputs to the device."""
        with self._lock:
            for name in self._synced:
                if self.parameters[name].size:
                    self._device[name].copy_to_device(self.parameters[name])

    # ------------------------------------------------------------ inspection
    def kernel_sources(self) -> dict[str, str]:
        """Generated source of each node, keyed by its first output's name."""
        return {n.outputs[0].name: kernel_sources(n) for n in self.graph.nodes}

    def memory_report(self) -> str:
        """Naive bytes, lower bound and planned arena as one line."""
        if self.memory_plan is None:
            return "memory: one device array per value (no memory plan)"
        return f"memory (device): {self.memory_plan.summary()}"

    def save(self, path: str) -> None:
        """Write the plan file (JSON + .npz); load_plan rebuilds it on the device."""
        from .planfile import save_plan

        if self.resident:
            self.sync_to_host()
        save_plan(self, path)

    def __repr__(self) -> str:
        return f"<DevicePlan {self.graph.name}: {len(self._steps)} kernels, backend=cuda>"


def build_device_plan(
    graph: Graph, memory_plan: MemoryPlan | None = None, resident: bool = False
) -> DevicePlan:
    """A callable plan running ``graph`` (scheduled) on the GPU; see DevicePlan."""
    return DevicePlan(graph, memory_plan, resident)
