"""CPU kernels of cond, while_loop and scan: each body runs as a sub-plan.

A ``SubPlan`` schedules its body, plans its memory (one arena of its own) and compiles every
body node once, when the control-flow node's kernel is built; each iteration then only runs
those kernels. Per iteration nothing is allocated:

- a loop-carried value ping-pongs between two buffers: the body reads the carry from one and
  writes the next carry into the other (their kernel arguments are rebound, not copied), unless
  the body's memory plan aliases it (an in-place op or a view), when it is copied;
- a scan's x slice is bound straight to ``xs[i]`` and each y is written straight into
  ``ys[i]`` (rebinding again; a copy only where the plan aliases the value);
- loop-invariant operands (captured weights) are bound once per call;
- a scan precomputes every step's bindings (``_scan_schedule``: each step's kernels with their
  arguments, and its few copies) once for the arrays it is called with, and reuses them while a
  call brings the same arrays (a plan's arena views always do): a step is then only its kernel
  calls, with no Python rebinding between them.

Loops run with flush-to-zero (``denormals.flush_denormals``): a long recurrent backward's
cotangents decay through the denormal range, where its steps ran ~75x slower on x86.

Kernels carry ``skip_warm_up``: the sub-plans compile and warm up when built, and a loop run
on a zeroed arena (the runtime's warm-up) need not terminate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

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
            node = self.step_nodes[done]
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


Copies = tuple[tuple[np.ndarray, np.ndarray], ...]  # (destination, source) pairs
Step = tuple[Copies, tuple, Copies]  # copies in, the body's kernels with their arguments, copies out


def _scan_schedule(node: Node, body: SubPlan, pairs: list[list[np.ndarray]], arrays: tuple) -> list[Step]:
    """Every step of a scan over ``arrays`` as plain data: the copies into the body, its kernels
    with their arguments bound (the carry's ping-pong buffer, ``xs[t]``, ``ys[t]``), the copies
    out. Building it costs what one call's rebinding used to; calls over the same arrays (a plan
    binds them once) reuse it, and each step then only calls its kernels."""
    k, n_xs, length = node.attrs["n_carry"], node.attrs["n_xs"], node.attrs["length"]
    n_in = len(node.inputs)
    pre_all = [body.bind_input(i, arrays[i]) for i in range(k + n_xs, n_in)]  # loop invariants
    invariant_copies = tuple(c for c in pre_all if c is not None)
    xs, ys = arrays[k : k + n_xs], arrays[n_in + k :]
    schedule = []
    for step in range(length):
        t = length - 1 - step if node.attrs["reverse"] else step
        cur, nxt = [p[step % 2] for p in pairs], [p[1 - step % 2] for p in pairs]
        pre = [body.bind_input(i, cur[i]) for i in range(k)]
        for i in range(k):
            body.bind_output(i, nxt[i])
        pre += [body.bind_input(k + i, x[t, ...]) for i, x in enumerate(xs)]
        y_views = [y[t, ...] for y in ys]
        bound = [body.bind_output(k + j, y) for j, y in enumerate(y_views)]
        post = [(nxt[i], body.output(i)) for i in range(k) if body.output(i) is not nxt[i]]
        post += [(y, body.output(k + j)) for j, y in enumerate(y_views) if not bound[j]]
        # Invariants are copied in before the first step only: the body may not write over them.
        copies_in = (invariant_copies if step == 0 else ()) + tuple(c for c in pre if c is not None)
        schedule.append((copies_in, body.snapshot(), tuple(post)))
    return schedule


def _scan_kernel(node: Node, compile_node: Callable) -> Callable:
    k, n_xs, length = node.attrs["n_carry"], node.attrs["n_xs"], node.attrs["length"]
    (body,) = (SubPlan(b, compile_node, invariant=k + n_xs) for b in node.bodies)
    n_in = len(node.inputs)
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

    def _run_scan(arrays: tuple[np.ndarray, ...], schedule: list[Step]) -> None:
        for p, a in zip(pairs, arrays[:k]):
            np.copyto(p[0], a)
        for copies_in, steps, copies_out in schedule:
            for dst, src in copies_in:
                np.copyto(dst, src)
            body.run(steps)
            for dst, src in copies_out:
                np.copyto(dst, src)
        for out, p in zip(arrays[n_in : n_in + k], pairs):
            np.copyto(out, p[length % 2])

    scan.skip_warm_up = True  # type: ignore[attr-defined]
    return scan


_MAKERS = {"cond": _cond_kernel, "while_loop": _while_kernel, "scan": _scan_kernel}


def control_builder(build: Callable[[Node], object], compile_node: Callable[[Node], Callable]) -> Callable:
    """The CPU_KERNELS builder of the control-flow ops (``build``/``compile_node`` of the backend)."""
    from graphc.kernels.cpu import Built

    def builder(node: Node) -> Built:
        return Built(_source(node, build), lambda: _MAKERS[node.op](node, compile_node))

    return builder
