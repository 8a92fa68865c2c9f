"""runtime.Plan: the executable artefact (scheduled graph + arena layout + compiled kernels)."""

from __future__ import annotations

import bisect
import importlib
import sys
import threading
from collections.abc import Callable
from types import ModuleType

import numpy as np

from graphc.ir import Graph, GraphcError, MemoryPlan, Node, Value
from graphc.kernels.in_place import in_place_outputs

from .errors import at_node

BACKENDS = {
    "reference": "graphc.kernels.reference",
    "cpu": "graphc.kernels.cpu",
    "cuda": "graphc.kernels.cuda",
}


def backend_module(name: str) -> ModuleType:
    """The kernels package of a backend, by name."""
    try:
        return importlib.import_module(BACKENDS[name])
    except KeyError:
        raise GraphcError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}") from None


def _aligned_arena(nbytes: int, alignment: int) -> np.ndarray:
    # np.zeros only promises 16-byte alignment; the plan's offsets assume `alignment`. Zeros
    # (calloc): a large arena's pages read as zero without being touched, so building a plan
    # does not fault in (and zero) every page of a big arena up front (the warm-up's zeroed arena).
    raw = np.zeros(nbytes + alignment, dtype=np.uint8)
    start = (-raw.ctypes.data) % alignment
    return raw[start : start + nbytes]


def _extent(arr: np.ndarray) -> tuple[int, int]:
    return arr.ctypes.data, arr.ctypes.data + arr.nbytes


class ByteRanges:
    """A set of byte address ranges [lo, hi): disjoint, sorted, merged as they are added, so asking
    whether a range overlaps any of them is one binary search (the warm-up asks for every output
    of every numba kernel; a scan over a list grew with the number of kernels run before)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, lo: int, hi: int) -> None:
        """Add [lo, hi), merging it with the ranges it overlaps or touches."""
        if hi <= lo:
            return
        i = bisect.bisect_left(self.ends, lo)  # the first range ending at or after lo
        j = bisect.bisect_right(self.starts, hi)  # ranges from i to j - 1 touch [lo, hi)
        if i < j:
            lo, hi = min(lo, self.starts[i]), max(hi, self.ends[j - 1])
        self.starts[i:j], self.ends[i:j] = [lo], [hi]

    def spans(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of [lo, hi) that ranges of the set cover, in address order."""
        got = []
        i = bisect.bisect_right(self.ends, lo)  # the first range ending after lo
        while i < len(self.starts) and self.starts[i] < hi:
            got.append((max(lo, self.starts[i]), min(hi, self.ends[i])))
            i += 1
        return got

    def overlaps(self, lo: int, hi: int) -> bool:
        """Whether [lo, hi) shares a byte with a range of the set."""
        i = bisect.bisect_right(self.ends, lo)  # the first range ending after lo
        return hi > lo and i < len(self.starts) and self.starts[i] < hi


def _warm(fn: Callable, args: list[np.ndarray], n_in: int, dirty: ByteRanges) -> None:
    """Compile a kernel for its arguments. A numba dispatcher compiles (or loads from its cache)
    without running, so its warm-up costs the same whatever the size of its arrays (a T=512
    sequence's kernels compile as fast as T=64's: compile is not run); so does a kernel with a
    ``warm_up`` method (a fused matmul: its epilogue compiled, no GEMM run). Any other kernel runs
    once, and its outputs' bytes join ``dirty`` (address ranges written during the warm-up). A
    kernel that did not run leaves its outputs zero, as running it on the zeroed arena would
    (valid indices for a gather that reads them): the dirty bytes under an output are zeroed. Only
    those: zeroing touches every page (a T=512 LSTM's 128 MiB activations, ~0.5 s of the build; a
    16 MiB activation sharing bytes with a 32 KiB gradient a kernel wrote, ~40 ms)."""
    outs = args[n_in:]
    if hasattr(fn, "signatures") and callable(getattr(fn, "compile", None)):
        from numba import typeof

        fn.compile(tuple(typeof(a) for a in args))
    elif callable(getattr(fn, "warm_up", None)):
        fn.warm_up(*args)
    else:
        fn(*args)
        for out in outs:
            dirty.add(*_extent(out))
        return
    for out in outs:
        lo, hi = _extent(out)
        spans = dirty.spans(lo, hi)
        if not spans:
            continue
        if out.flags.c_contiguous:  # zero the dirty bytes only: the rest of the arena is still zero
            flat = out.reshape(-1).view(np.uint8)
            for a, b in spans:
                flat[a - lo : b - lo] = 0
        else:
            out.fill(0)


def check_inputs(expected: list[Value], arrays: tuple) -> list[np.ndarray]:
    """The caller's arrays as C-contiguous arrays, or an error naming the input that is wrong."""
    names = ", ".join(v.name for v in expected)
    if len(arrays) != len(expected):
        raise GraphcError(f"plan takes {len(expected)} input(s) ({names}), got {len(arrays)}")
    checked = []
    for v, arr in zip(expected, arrays):
        arr = np.asarray(arr)
        if arr.shape != v.shape:
            raise GraphcError(f"input {v.name!r}: expected shape {list(v.shape)}, got {list(arr.shape)}")
        if arr.dtype != v.type.np_dtype:
            raise GraphcError(f"input {v.name!r}: expected dtype {v.type.np_dtype}, got {arr.dtype}")
        checked.append(arr if arr.flags.c_contiguous else arr.copy())  # keeps 0-d arrays 0-d
    return checked


def bind_persistent(graph: Graph) -> dict[str, np.ndarray]:
    """The param/state/const arrays a plan reads, shared (not copied): updates land in them."""
    arrays = {}
    for v in graph.inputs:
        if graph.kinds[v.name] == "data":
            continue
        arr = graph.initializers.get(v.name)
        if arr is None:
            raise GraphcError(f"plan: {graph.kinds[v.name]} input %{v.name} has no value")
        if not arr.flags.c_contiguous or arr.dtype != v.type.np_dtype or arr.shape != v.shape:
            raise GraphcError(f"plan: value of %{v.name} must be a C-contiguous {v.type} array")
        arrays[v.name] = arr
    return arrays


class Plan:
    """A compiled graph: call it with the data inputs (NumPy arrays) to get its outputs.

    Threads: a plan owns one arena, bound into its kernels once, and kernels keep scratch
    buffers between calls, so a call holds the plan's lock: calls of one plan from several
    threads run one at a time (each correct, and each returning arrays of its own). Different
    plans run in parallel, with results bit-identical to running them one by one: no GEMM of
    theirs depends on OpenBLAS's process-wide thread count (see ``kernels.cpu.blas``).
    """

    def __init__(self, graph: Graph, memory_plan: MemoryPlan, backend: str = "cpu") -> None:
        if backend == "cuda":
            raise GraphcError("device plans are runtime.DevicePlan (build_device_plan), not runtime.Plan")
        self.graph = graph
        self.memory_plan = memory_plan
        self.backend = backend
        self._inputs = graph.data_inputs
        self._persistent = bind_persistent(graph)
        self.arena = _aligned_arena(memory_plan.arena_bytes, memory_plan.alignment)
        values = {v.name: v for v in graph.inputs}
        values.update({v.name: v for n in graph.nodes for v in n.outputs})
        self._views = self._bind_views(values)
        self._lock = threading.Lock()
        kernels = backend_module(backend)
        self.steps: list[tuple[Callable, list[np.ndarray]]] = []
        step_values: list[list[Value]] = []
        views_of: dict[str, list[Value]] = {}  # value -> the skipped reshapes of it
        for node in graph.nodes:
            if memory_plan.is_view(node):  # a view of its input's bytes: no work to do
                if node.op == "reshape":  # slices sit at an offset: their bytes are never rebound
                    views_of.setdefault(node.inputs[0].name, []).append(node.output)
                continue
            step_values.append([*node.inputs, *node.outputs])
            self.steps.append((node, [self._array(v) for v in step_values[-1]]))
        self.step_nodes: list[Node] = [node for node, _ in self.steps]  # the node each step runs
        update_indices = set(graph.updates.values())
        self._result_indices = [i for i in range(len(graph.outputs)) if i not in update_indices]
        self._rebind = self._rebindable(step_values, views_of)
        # Updates the memory plan writes straight over their param/state arrays: bound, for
        # now, to copies, so building the plan (the warm-up runs every kernel) changes nothing.
        self._direct = self._direct_updates(step_values)
        for name, slots in self._direct.items():
            self._bind(slots, self._persistent[name].copy())
        # An output on exactly an input's bytes is computed in place, unless a call may bind
        # either one to another array.
        self.in_place: dict[str, dict[int, int]] = {}  # node (first output) -> its in-place hint
        rebound = {
            (id(args), j) for kind in self._rebind.values() for slots in kind.values() for args, j, _ in slots
        }
        for i, (node, arrays) in enumerate(self.steps):
            n_in = len(node.inputs)
            in_place = {
                k: j
                for k, j in in_place_outputs(arrays, n_in).items()
                if (id(arrays), j) not in rebound and (id(arrays), n_in + k) not in rebound
            }
            if in_place:
                self.in_place[node.outputs[0].name] = in_place
            self.steps[i] = (kernels.compile_node(node, in_place or None), arrays)
        self._warm_up()
        for name, slots in self._direct.items():
            self._bind(slots, self._persistent[name])
        self._returned: dict[str, np.ndarray] = {}
        self._returned_updated = {graph.outputs[i].name for i in self._result_indices} & set(graph.updates)
        self._updates = [
            (self._persistent[name], self._array(graph.outputs[i]))
            for name, i in graph.updates.items()
            if name not in self._direct
        ]

    def _warm_up(self) -> None:
        # numba compiles a kernel on its first call: compile every step now (``_warm``), on a
        # zeroed arena (valid indices for gather/scatter), so compiling is part of building the
        # plan and the first real call costs what every later call costs. Params are only read.
        # The arena is fresh from _aligned_arena, already zero: zeroing it again would touch every
        # page, which made building a plan scale with the arena (196 MiB: ~1 s for a T=512 LSTM).
        self._run_steps(warm_up=True)

    def _run_steps(self, warm_up: bool = False) -> None:
        """Run every kernel in order; a GraphcError one raises is re-raised naming its node and the
        user's source line (``errors.at_node``). The warm-up (``_warm``) skips kernels marked
        ``skip_warm_up`` (control-flow loops: they warm up their bodies when built)."""
        done = 0
        dirty = ByteRanges()
        try:
            for fn, args in self.steps:
                if not warm_up:
                    fn(*args)
                elif not getattr(fn, "skip_warm_up", False):
                    _warm(fn, args, len(self.step_nodes[done].inputs), dirty)
                done += 1
        except GraphcError as err:
            raise at_node(err, self.step_nodes[done]) from err

    def _bind_views(self, values: dict[str, Value]) -> dict[str, np.ndarray]:
        views = {}
        for name, buf in self.memory_plan.buffers.items():
            ttype = values[name].type
            if buf.offset < 0 or buf.offset + ttype.nbytes > self.memory_plan.arena_bytes:
                raise GraphcError(f"plan: buffer of %{name} lies outside the arena")
            raw = self.arena[buf.offset : buf.offset + ttype.nbytes]
            views[name] = raw.view(ttype.np_dtype).reshape(ttype.shape)
        return views

    def _array(self, value: Value) -> np.ndarray:
        if value.name in self._persistent:
            return self._persistent[value.name]
        if value.name in self.memory_plan.written_over:
            return self._persistent[self.memory_plan.written_over[value.name]]
        try:
            return self._views[value.name]
        except KeyError:
            raise GraphcError(f"plan: memory plan has no buffer for %{value.name}") from None

    # ------------------------------------------------------------ calling
    def check_inputs(self, arrays: tuple) -> list[np.ndarray]:
        """Validate the caller's arrays against the graph's data inputs (count, shape, dtype)."""
        return check_inputs(self._inputs, arrays)

    def _rebindable(self, step_values: list[list[Value]], views_of: dict[str, list[Value]]) -> dict:
        """Where each data input and result can be bound per call instead of copied.

        A data input whose bytes only reshape views share is read in the caller's own array;
        a result no other value shares is written straight into a fresh array that is returned.
        Either saves a full copy per call (the fusion chain's inputs and output are 96 MiB).
        """
        buffers = self.memory_plan.buffers.values()
        view_names = {v.name for vs in views_of.values() for v in vs}
        root = {b.value: b.alias_of or b.value for b in buffers}
        # Bytes written in place, or viewed by a slice at an offset, stay in the arena.
        overwritten = {b.alias_of for b in buffers if b.alias_of and b.value not in view_names}
        positions: dict[str, list[tuple[int, int]]] = {}
        for i, values in enumerate(step_values):
            for j, v in enumerate(values):
                positions.setdefault(v.name, []).append((i, j))

        def reshapes(v: Value) -> list[Value]:
            """The skipped reshapes of ``v``, and of those, and so on."""
            out = []
            for view in views_of.get(v.name, ()):
                out += [view, *reshapes(view)]
            return out

        def slots(v: Value) -> list[tuple[list[np.ndarray], int, tuple[int, ...] | None]]:
            out = [(self.steps[i][1], j, None) for i, j in positions.get(v.name, ())]
            for view in reshapes(v):
                out += [(self.steps[i][1], j, view.shape) for i, j in positions.get(view.name, ())]
            return out

        made_at = {v.name: i for i, n in enumerate(self.graph.nodes) for v in n.outputs}

        def alone_in_its_bytes(v: Value) -> bool:
            # Whatever else shares v's bytes must be one of its reshapes (rebound with it) or
            # made before v (dead once v overwrote it in place): a slice of v, an in-place op
            # over v, or a reshape of v's in-place input read later would read the arena.
            mine = {v.name, *(w.name for w in reshapes(v))}
            return all(
                name in mine or made_at.get(name, -1) < made_at[v.name]
                for name, r in root.items()
                if r == root[v.name]
            )

        # Graph outputs (and update sources) are read from the arena after the run, not through
        # step arguments: an input that is, or is viewed by, one of them must be copied in.
        read_after = {v.name for v in self.graph.outputs}
        inputs = {
            v.name: slots(v)
            for v in self._inputs
            if v.name not in overwritten
            and v.name not in read_after
            and not any(w.name in read_after for w in reshapes(v))
        }
        written = {v.name for n in self.graph.nodes if not self.memory_plan.is_view(n) for v in n.outputs}
        updated = {self.graph.outputs[i].name for i in self.graph.updates.values()}
        results = {}
        for i in self._result_indices:
            v = self.graph.outputs[i]
            fixed = v.name in updated or v.name in self._persistent
            # A reshape of v that is itself an output is read from the arena after the run, so
            # v must be written there too.
            also_read = any(w.name in read_after for w in reshapes(v))
            if v.name in written and not fixed and not also_read and alone_in_its_bytes(v):
                results[v.name] = slots(v)
        return {"inputs": inputs, "results": results}

    def _direct_updates(self, step_values: list[list[Value]]) -> dict:
        """For each update the memory plan writes over its param/state array (``written_over``),
        by input name: the step argument slots of the new value, and of the old value in the
        step that writes the new one (the same array for both makes that kernel in place)."""
        positions: dict[str, list[tuple[int, int]]] = {}
        for i, values in enumerate(step_values):
            for j, v in enumerate(values):
                positions.setdefault(v.name, []).append((i, j))
        direct = {}
        for new, name in self.memory_plan.written_over.items():
            made = [i for i, j in positions.get(new, ()) if j >= len(self.steps[i][0].inputs)]
            if len(made) != 1 or name not in self._persistent:
                raise GraphcError(f"plan: update %{new} cannot be written over %{name}")
            slots = [(self.steps[i][1], j, None) for i, j in positions[new]]
            slots += [(self.steps[i][1], j, None) for i, j in positions.get(name, ()) if i == made[0]]
            direct[name] = slots
        return direct

    @staticmethod
    def _bind(slots, arr: np.ndarray) -> None:
        for args, j, shape in slots:
            args[j] = arr if shape is None else arr.reshape(shape)

    def __call__(self, *arrays: np.ndarray):
        """Run the plan on the data inputs; one array, or a tuple when there are several outputs.

        Calls from several threads take turns (the plan's lock); the arrays returned are the
        caller's own (never the arena, never handed to another call while referenced)."""
        with self._lock:
            return self._call(arrays)

    def _call(self, arrays: tuple):
        rebind_inputs, rebind_results = self._rebind["inputs"], self._rebind["results"]
        for v, arr in zip(self._inputs, self.check_inputs(arrays)):
            slots = rebind_inputs.get(v.name)
            if slots is None:
                np.copyto(self._views[v.name], arr)
            else:
                self._bind(slots, arr)
        fresh = {}
        for name, slots in rebind_results.items():
            last = self._returned.get(name)
            # Reuse the last result only when nobody else holds it (its references are then this
            # dict, `last`, getrefcount's argument and one per kernel slot bound to it, directly
            # or through a reshaped view): fresh pages cost a page fault each.
            if last is not None and sys.getrefcount(last) <= 3 + len(slots):
                fresh[name] = arr = last
            else:
                fresh[name] = arr = np.empty_like(self._views[name])
            self._bind(slots, arr)
        self._returned = fresh
        # A param/state input returned as it is gives its value before this call's update.
        before = {name: self._persistent[name].copy() for name in self._returned_updated}
        self._run_steps()
        for target, new in self._updates:
            np.copyto(target, new)
        outs = []
        for i in self._result_indices:
            v = self.graph.outputs[i]
            if v.name in before:
                old = before[v.name]
                outs.append(old.copy() if any(o is old for o in outs) else old)
            elif v.name not in fresh:
                outs.append(self._array(v).copy())
            elif any(o is fresh[v.name] for o in outs):  # returned twice: callers may change either
                outs.append(fresh[v.name].copy())
            else:
                outs.append(fresh[v.name])
        return outs[0] if len(outs) == 1 else tuple(outs)

    # ------------------------------------------------------------ inspection
    @property
    def parameters(self) -> dict[str, np.ndarray]:
        """The persistent param/state/const arrays the plan reads (shared with the model)."""
        return dict(self._persistent)

    def memory_report(self) -> str:
        """Naive bytes, lower bound and planned arena as one line."""
        return f"memory: {self.memory_plan.summary()}"

    def save(self, path: str) -> None:
        """Write the plan as a zip of JSON (graph, memory plan, kernel sources) and .npz arrays."""
        from .planfile import save_plan

        save_plan(self, path)

    def __repr__(self) -> str:
        return f"<Plan {self.graph.name}: {len(self.steps)} kernels, backend={self.backend}>"
