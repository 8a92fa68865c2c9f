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
- loop-invariant operands (captured weights) are bound once per call;
- a scan precomputes every step's bindings (``_scan_schedule``: each step's kernels with their
  arguments, and its few copies) once for the arrays it is called with, and reuses them while a
  call brings the same arrays (a plan's arena views always do): the whole loop is then one flat
  list of kernel calls, with no Python rebinding between them, each numba kernel called through
  its compiled entry point (no type dispatch of its arguments per call).

Loops run with flush-to-zero (``denormals.flush_denormals``): a long recurrent backward's
cotangents decay through the denormal range, where its steps ran ~75x slower on x86.

Kernels carry ``skip_warm_up``: the sub-plans compile and warm up when built, and a loop run
on a zeroed arena (the runtime's warm-up) need not terminate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numba
import numpy as np
from numba.core.dispatcher import Dispatcher

from graphc.ir import Graph, GraphcError, Node, Value
from graphc.kernels.body_planner import plan_body
from graphc.kernels.in_place import in_place_outputs
from graphc.kernels.quoting import comment

from .denormals import flush_denormals

# A while_loop that runs this many iterations is taken to be stuck (a GraphcError, not a hang).
MAX_TRIPS = 10_000_000

Slots = list[tuple[list, int]]


class SubPlan:
    """One body, scheduled and memory-planned, with its kernels compiled once."""

    def __init__(
        self, body: Graph, compile_node: Callable[..., Callable], invariant: int | None = None
    ) -> None:
        """``invariant``: data inputs from this index on are bound once per call for every iteration,
        so the body may not write over them (they are kept live to the end of the body)."""
        g = body.copy()
        n_outputs = len(g.outputs)
        for v in g.data_inputs[invariant if invariant is not None else len(g.data_inputs) :]:
            g.add_output(v)
        g, mp = plan_body(g)
        raw = np.zeros(mp.arena_bytes + mp.alignment, dtype=np.uint8)
        start = (-raw.ctypes.data) % mp.alignment
        self.arena = raw[start : start + mp.arena_bytes]
        types = {v.name: v.type for v in g.inputs}
        types.update({v.name: v.type for n in g.nodes for v in n.outputs})
        self.views: dict[str, np.ndarray] = {}
        for name, buf in mp.buffers.items():
            t = types[name]
            self.views[name] = (
                self.arena[buf.offset : buf.offset + t.nbytes].view(t.np_dtype).reshape(t.shape)
            )
        for v in g.inputs:
            if g.kinds[v.name] != "data":
                self.views[v.name] = np.ascontiguousarray(g.initializers[v.name])
        self.steps: list[tuple[Callable, list[np.ndarray]]] = []
        self.step_nodes: list[Node] = []
        slots: dict[str, Slots] = {}
        produced: set[str] = set()
        aliased = {b.alias_of for b in mp.buffers.values() if b.alias_of}
        aliased |= {name for name, b in mp.buffers.items() if b.alias_of}
        for n in g.nodes:
            if mp.is_view(n):
                continue
            args = [self.views[v.name] for v in (*n.inputs, *n.outputs)]
            for j, v in enumerate((*n.inputs, *n.outputs)):
                slots.setdefault(v.name, []).append((args, j))
            produced.update(v.name for v in n.outputs)
            # An output on exactly an input's bytes (both aliased, so never rebound: the promise
            # holds on every call) is computed in place: without the hint the kernel's loop cannot
            # rule out overlap and stays scalar (an LSTM gate loop ran ~5x slower).
            in_place = in_place_outputs(args, len(n.inputs))
            self.steps.append((compile_node(n, in_place) if in_place else compile_node(n), args))
            self.step_nodes.append(n)
        self.inputs: list[Value] = g.data_inputs
        self.outputs: list[Value] = list(g.outputs[:n_outputs])
        names_in = {v.name for v in self.inputs}
        # None: this input/output is not rebindable (copied instead).
        self.in_slots: list[Slots | None] = [
            slots.get(v.name, []) if v.name not in aliased else None for v in self.inputs
        ]
        first = {}
        for j, v in enumerate(self.outputs):
            first.setdefault(v.name, j)
        self.out_slots: list[Slots | None] = [
            slots[v.name]
            if first[v.name] == j and v.name in produced and v.name not in aliased and v.name not in names_in
            else None
            for j, v in enumerate(self.outputs)
        ]
        self.bound: dict[str, np.ndarray] = {}
        self.run()  # compile (numba's first call) and warm up now, on the zeroed arena

    @staticmethod
    def _rebind(slots: Slots, arr: np.ndarray) -> None:
        for args, j in slots:
            args[j] = arr

    def set_input(self, i: int, arr: np.ndarray) -> None:
        """Make body input ``i`` read ``arr`` (rebound where possible, else copied in)."""
        copy = self.bind_input(i, arr)
        if copy is not None:
            np.copyto(*copy)

    def bind_input(self, i: int, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Rebind body input ``i`` to ``arr``; where it cannot be rebound, the copy to make before
        running instead, as ``(destination, arr)``."""
        v, slots = self.inputs[i], self.in_slots[i]
        if slots is None:
            return self.views[v.name], arr
        self._rebind(slots, arr)
        self.bound[v.name] = arr
        return None

    def snapshot(self) -> tuple[tuple[Callable, tuple[np.ndarray, ...]], ...]:
        """The kernels with their arguments as now bound (a scan's precomputed step)."""
        return tuple((fn, tuple(args)) for fn, args in self.steps)

    def bind_output(self, j: int, arr: np.ndarray) -> bool:
        """Have the body write output ``j`` straight into ``arr``; False if it cannot (copy then)."""
        slots = self.out_slots[j]
        if slots is None:
            return False
        self._rebind(slots, arr)
        self.bound[self.outputs[j].name] = arr
        return True

    def output(self, j: int) -> np.ndarray:
        """The current array of output ``j``."""
        name = self.outputs[j].name
        return self.bound.get(name, self.views.get(name))

    def run(self, steps: Sequence[tuple[Callable, Sequence[np.ndarray]]] | None = None) -> None:
        """Run the body's kernels once (``steps``: a ``snapshot`` of them instead)."""
        done = 0
        try:
            for fn, args in self.steps if steps is None else steps:
                fn(*args)
                done += 1
        except GraphcError as err:
            _raise_in_body(self.step_nodes[done], err)


def _raise_in_body(node: Node | None, err: GraphcError) -> None:
    """Raise ``err`` again, naming the body node (if any) whose kernel raised it."""
    if node is None:
        raise err
    where = f" ({node.source})" if node.source else ""
    raise GraphcError(f"in a control-flow body, {node.op}{where}: {err}") from err


def _source(node: Node, build: Callable[[Node], object]) -> str:
    text = f"# graphc CPU kernel: {comment(node.op)} running its bodies as sub-plans (kernels below)\n"
    for body in node.bodies:
        text += f"# body {comment(body.name)}\n"
        text += "\n".join(build(n).source for n in body.nodes)  # type: ignore[attr-defined]
    return text


def _cond_kernel(node: Node, compile_node: Callable) -> Callable:
    plans = [SubPlan(b, compile_node) for b in node.bodies]
    n_in = len(node.inputs)

    def cond(*arrays: np.ndarray) -> None:
        sub = plans[0] if bool(arrays[0]) else plans[1]
        for i, arr in enumerate(arrays[1:n_in]):
            sub.set_input(i, arr)
        outs = arrays[n_in:]
        bound = [sub.bind_output(j, out) for j, out in enumerate(outs)]
        sub.run()
        for j, out in enumerate(outs):
            if not bound[j]:
                np.copyto(out, sub.output(j))

    return cond


def _carry_buffers(node: Node, k: int) -> list[list[np.ndarray]]:
    return [[np.empty(v.shape, v.type.np_dtype) for _ in range(2)] for v in node.outputs[:k]]


def _while_kernel(node: Node, compile_node: Callable) -> Callable:
    k = node.attrs["n_carry"]
    test, body = (SubPlan(b, compile_node, invariant=k) for b in node.bodies)
    n_in = len(node.inputs)
    pairs = _carry_buffers(node, k)
    flag = np.zeros((), dtype=np.bool_)

    def while_loop(*arrays: np.ndarray) -> None:
        with flush_denormals():
            _run_while(arrays)

    def _run_while(arrays: tuple[np.ndarray, ...]) -> None:
        for i in range(k, n_in):  # loop invariants: bound once
            test.set_input(i, arrays[i])
            body.set_input(i, arrays[i])
        cur = [np.copyto(p[0], a) or p[0] for p, a in zip(pairs, arrays[:k])]
        nxt = [p[1] for p in pairs]
        test_bound = test.bind_output(0, flag)
        trips = 0
        while True:
            for i in range(k):
                test.set_input(i, cur[i])
            test.run()
            if not bool(flag if test_bound else test.output(0)):
                break
            for i in range(k):
                body.set_input(i, cur[i])
                body.bind_output(i, nxt[i])
            body.run()
            for i in range(k):
                if body.output(i) is not nxt[i]:
                    np.copyto(nxt[i], body.output(i))
            cur, nxt = nxt, cur
            trips += 1
            if trips > MAX_TRIPS:
                raise GraphcError(
                    f"while_loop ran {MAX_TRIPS} iterations without its condition turning false"
                )
        for out, c in zip(arrays[n_in:], cur):
            np.copyto(out, c)

    while_loop.skip_warm_up = True  # type: ignore[attr-defined]
    return while_loop


Call = tuple[Callable, tuple]  # a kernel (or np.copyto) with its arguments


def _entry_point(fn: Callable, args: tuple) -> Callable:
    """``fn`` itself, or, for a numba dispatcher with one compiled signature that ``args`` match
    exactly, that compilation's entry point: the same machine code without the dispatcher's type
    lookup of every argument on every call (about a third of the call's overhead for a fused
    LSTM gate kernel of 14 arrays). Checked once per schedule, which then binds the same arrays."""
    if not isinstance(fn, Dispatcher) or len(fn.overloads) != 1:
        return fn
    (compiled,) = fn.overloads.values()
    if tuple(compiled.signature.args) != _types(args):
        return fn
    return compiled.entry_point


def _types(args: tuple) -> tuple:
    return tuple(numba.typeof(a) for a in args)


def _carry_homes(body: SubPlan, k: int, length: int) -> tuple[dict[int, int], dict[int, int]]:
    """Carries that can live in a y's stacked slots instead of a ping-pong buffer: ``(entering,
    leaving)``, carry index -> y index, for a y that is the carry entering each step (a forward
    scan's saved carries for its backward) or, failing that, the carry's new value (an RNN's h,
    both carried and stacked). Their steps then copy nothing for that y."""
    if length == 0:
        return {}, {}
    ys = [v.name for v in body.outputs[k:]]
    entering = {i: ys.index(v.name) for i, v in enumerate(body.inputs[:k]) if v.name in ys}
    leaving = {
        i: ys.index(v.name)
        for i, v in enumerate(body.outputs[:k])
        if i not in entering and v.name in ys and body.out_slots[i] is not None
    }
    return entering, leaving


def _scan_schedule(
    node: Node, body: SubPlan, pairs: list[list[np.ndarray]], arrays: tuple
) -> tuple[list[Call], list[Node | None]]:
    """A scan over ``arrays`` as one flat list of calls: the initial carries copied in, then per
    step the copies into the body, its kernels with their arguments bound (the carry's buffer,
    ``xs[t]``, ``ys[t]``), the copies out, and last the final carries copied out (copies are
    ``np.copyto`` calls); with, for each call, the body node it runs (None for a copy). Building
    it costs what one call's rebinding used to; calls over the same arrays (a plan binds them
    once) reuse it, and a step is then only its kernel calls.

    A carry ping-pongs between its two buffers, or lives in the slots of a y that stacks it
    (``_carry_homes``): the step writes it straight into ``ys[t]`` (or the next step's slot)."""
    k, n_xs, length = node.attrs["n_carry"], node.attrs["n_xs"], node.attrs["length"]
    n_in = len(node.inputs)
    xs, ys = arrays[k : k + n_xs], arrays[n_in + k :]
    ts = [length - 1 - s if node.attrs["reverse"] else s for s in range(length)]
    slots: dict[tuple[int, int], np.ndarray] = {}

    def y_at(j: int, t: int) -> np.ndarray:  # one view object per slot: copies onto it are skipped
        if (j, t) not in slots:
            slots[j, t] = ys[j][t, ...]
        return slots[j, t]

    entering, leaving = _carry_homes(body, k, length)
    cur = [y_at(entering[i], ts[0]) if i in entering else pairs[i][0] for i in range(k)]
    copies = [(c, a) for c, a in zip(cur, arrays[:k])]
    # Invariants are copied in before the first step only: the body may not write over them.
    copies += [body.bind_input(i, arrays[i]) for i in range(k + n_xs, n_in)]
    calls: list[Call] = [(np.copyto, c) for c in copies if c is not None]
    nodes: list[Node | None] = [None] * len(calls)
    entries: dict[tuple, Callable] = {}
    for step, t in enumerate(ts):
        y_views = [y_at(j, t) for j in range(len(ys))]
        nxt = []
        for i in range(k):
            if i in entering and step + 1 < length:
                nxt.append(y_at(entering[i], ts[step + 1]))
            elif i in leaving:
                nxt.append(y_views[leaving[i]])
            else:
                nxt.append(pairs[i][1] if cur[i] is pairs[i][0] else pairs[i][0])
        pre = [body.bind_input(i, cur[i]) for i in range(k)]
        for i in range(k):
            body.bind_output(i, nxt[i])
        pre += [body.bind_input(k + i, x[t, ...]) for i, x in enumerate(xs)]
        bound = [body.bind_output(k + j, y) for j, y in enumerate(y_views)]
        post = [(nxt[i], body.output(i)) for i in range(k)]
        post += [(y, body.output(k + j)) for j, y in enumerate(y_views) if not bound[j]]
        copies_in = [(np.copyto, c) for c in pre if c is not None]
        calls += copies_in
        nodes += [None] * len(copies_in)
        for j, (fn, args) in enumerate(body.snapshot()):
            key = (j, _types(args)) if isinstance(fn, Dispatcher) else (j,)
            if key not in entries:
                entries[key] = _entry_point(fn, args)
            calls.append((entries[key], args))
            nodes.append(body.step_nodes[j])
        copies_out = [(np.copyto, (dst, src)) for dst, src in post if dst is not src]
        calls += copies_out
        nodes += [None] * len(copies_out)
        cur = nxt
    calls += [(np.copyto, (out, c)) for out, c in zip(arrays[n_in : n_in + k], cur)]
    nodes += [None] * k
    return calls, nodes


def _scan_kernel(node: Node, compile_node: Callable) -> Callable:
    k, n_xs = node.attrs["n_carry"], node.attrs["n_xs"]
    (body,) = (SubPlan(b, compile_node, invariant=k + n_xs) for b in node.bodies)
    pairs = _carry_buffers(node, k)
    cached: list = [None, None]  # (key of the arrays, their schedule)

    def scan(*arrays: np.ndarray) -> None:
        key = tuple((a.ctypes.data, a.shape, a.strides, a.dtype) for a in arrays)
        if cached[0] != key:
            # The schedule holds views of these arrays, which keeps their memory (and so the
            # addresses in the key) from going to another array while it is cached.
            cached[:] = key, _scan_schedule(node, body, pairs, arrays)
        with flush_denormals():
            _run_scan(arrays, cached[1])

    def _run_scan(arrays: tuple[np.ndarray, ...], schedule: tuple[list[Call], list[Node | None]]) -> None:
        calls, nodes = schedule  # the carries' copies in and out included
        done = 0
        try:
            for fn, args in calls:
                fn(*args)
                done += 1
        except GraphcError as err:
            _raise_in_body(nodes[done], err)

    scan.skip_warm_up = True  # type: ignore[attr-defined]
    return scan


_MAKERS = {"cond": _cond_kernel, "while_loop": _while_kernel, "scan": _scan_kernel}


def control_builder(build: Callable[[Node], object], compile_node: Callable[[Node], Callable]) -> Callable:
    """The CPU_KERNELS builder of the control-flow ops (``build``/``compile_node`` of the backend)."""
    from graphc.kernels.cpu import Built

    def builder(node: Node) -> Built:
        return Built(_source(node, build), lambda: _MAKERS[node.op](node, compile_node))

    return builder
