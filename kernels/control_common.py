"""What the CPU and CUDA kernels of cond, while_loop and scan share: the body sub-plan's bindings
and the loops that drive it, whatever the arrays are (NumPy arrays or device arrays).

A backend subclasses ``SubPlanBase`` with four hooks: ``_buffers`` (one arena of its own, laid out
by the body's memory plan, as arrays per value), ``_constant`` (a body constant as the backend's
array), ``_compile`` (a body node's kernel with the arguments it is called with) and ``copy``
(``copy(dst, src)``); plus ``at`` (the view of slice ``t`` of a stacked array) and ``copy_call``
(a copy as a schedule entry). Everything else -- which inputs and outputs can be rebound instead
of copied, the ping-pong of carries, a scan's precomputed flat schedule, naming the body node
whose kernel raised -- is written once here (see kernels/cpu/control_flow.py for the design).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from graphc.ir import Graph, GraphcError, MemoryPlan, Node, TensorType, Value
from graphc.kernels.body_planner import plan_body

# A while_loop that runs this many iterations is taken to be stuck (a GraphcError, not a hang).
MAX_TRIPS = 10_000_000

# Where a value is an argument: (a step's argument list, its index, how to pass an array there).
Slots = list[tuple[list, int, Callable | None]]
Call = tuple[Callable, tuple]  # a kernel (or a copy) with its arguments
EntryPoint = Callable[[int, Callable, tuple], Callable]


class SubPlanBase:
    """One body, scheduled and memory-planned, with its kernels compiled once (backend hooks below)."""

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
        types = {v.name: v.type for v in g.inputs}
        types.update({v.name: v.type for n in g.nodes for v in n.outputs})
        self.views: dict[str, Any] = self._buffers(mp, types)
        for v in g.inputs:
            if g.kinds[v.name] != "data":
                self.views[v.name] = self._constant(np.ascontiguousarray(g.initializers[v.name]))
        self.steps: list[tuple[Callable, list]] = []
        self.step_nodes: list[Node] = []
        slots: dict[str, Slots] = {}
        produced: set[str] = set()
        aliased = {b.alias_of for b in mp.buffers.values() if b.alias_of}
        aliased |= {name for name, b in mp.buffers.items() if b.alias_of}
        for n in g.nodes:
            if mp.is_view(n):
                continue
            fn, args, convert = self._compile(
                n, compile_node, [self.views[v.name] for v in (*n.inputs, *n.outputs)]
            )
            for j, v in enumerate((*n.inputs, *n.outputs)):
                slots.setdefault(v.name, []).append((args, j, convert))
            produced.update(v.name for v in n.outputs)
            self.steps.append((fn, args))
            self.step_nodes.append(n)
        self.inputs: list[Value] = g.data_inputs
        self.outputs: list[Value] = list(g.outputs[:n_outputs])
        names_in = {v.name for v in self.inputs}
        # None: this input/output is not rebindable (copied instead).
        self.in_slots: list[Slots | None] = [
            slots.get(v.name, []) if v.name not in aliased else None for v in self.inputs
        ]
        first: dict[str, int] = {}
        for j, v in enumerate(self.outputs):
            first.setdefault(v.name, j)
        self.out_slots: list[Slots | None] = [
            slots[v.name]
            if first[v.name] == j and v.name in produced and v.name not in aliased and v.name not in names_in
            else None
            for j, v in enumerate(self.outputs)
        ]
        self.bound: dict[str, Any] = {}

    # ------------------------------------------------------------ backend hooks
    def _buffers(self, mp: MemoryPlan, types: dict[str, TensorType]) -> dict[str, Any]:
        """An arena of the body's own, as one array per value the memory plan places."""
        raise NotImplementedError

    def _constant(self, array: np.ndarray) -> Any:
        """A body constant as the backend's array."""
        raise NotImplementedError

    def _compile(
        self, node: Node, compile_node: Callable[..., Callable], arrays: list
    ) -> tuple[Callable, list, Callable | None]:
        """A body node's kernel ``fn``, the argument list it is called with (built from ``arrays``,
        the node's inputs then outputs), and how an array rebound into that list is passed (None:
        as it is)."""
        raise NotImplementedError

    @staticmethod
    def copy(dst: Any, src: Any) -> None:
        """Copy ``src`` into ``dst`` (same shape and dtype)."""
        raise NotImplementedError

    @staticmethod
    def at(array: Any, t: int) -> Any:
        """The view of slice ``t`` of a stacked array (a scan's ``xs[t]`` or ``ys[t]``)."""
        raise NotImplementedError

    def copy_call(self, dst: Any, src: Any) -> Call | None:
        """The copy of ``src`` into ``dst`` as a schedule entry (None: nothing to copy)."""
        return type(self).copy, (dst, src)

    # ------------------------------------------------------------ binding
    @staticmethod
    def _rebind(slots: Slots, arr: Any) -> None:
        for args, j, convert in slots:
            args[j] = arr if convert is None else convert(arr)

    def set_input(self, i: int, arr: Any) -> None:
        """Make body input ``i`` read ``arr`` (rebound where possible, else copied in)."""
        copy = self.bind_input(i, arr)
        if copy is not None:
            self.copy(*copy)

    def bind_input(self, i: int, arr: Any) -> tuple[Any, Any] | None:
        """Rebind body input ``i`` to ``arr``; where it cannot be rebound, the copy to make before
        running instead, as ``(destination, arr)``."""
        v, slots = self.inputs[i], self.in_slots[i]
        if slots is None:
            return self.views[v.name], arr
        self._rebind(slots, arr)
        self.bound[v.name] = arr
        return None

    def snapshot(self) -> tuple[tuple[Callable, tuple], ...]:
        """The kernels with their arguments as now bound (a scan's precomputed step)."""
        return tuple((fn, tuple(args)) for fn, args in self.steps)

    def bind_output(self, j: int, arr: Any) -> bool:
        """Have the body write output ``j`` straight into ``arr``; False if it cannot (copy then)."""
        slots = self.out_slots[j]
        if slots is None:
            return False
        self._rebind(slots, arr)
        self.bound[self.outputs[j].name] = arr
        return True

    def output(self, j: int) -> Any:
        """The current array of output ``j``."""
        name = self.outputs[j].name
        return self.bound.get(name, self.views.get(name))

    def run(self, steps: Sequence[tuple[Callable, Sequence]] | None = None) -> None:
        """Run the body's kernels once (``steps``: a ``snapshot`` of them instead)."""
        done = 0
        try:
            for fn, args in self.steps if steps is None else steps:
                fn(*args)
                done += 1
        except GraphcError as err:
            raise_in_body(self.step_nodes[done], err)


def raise_in_body(node: Node | None, err: GraphcError) -> None:
    """Raise ``err`` again, naming the body node (if any) whose kernel raised it."""
    if node is None:
        raise err
    where = f" ({node.source})" if node.source else ""
    raise GraphcError(f"in a control-flow body, {node.op}{where}: {err}") from err


def run_cond(sub: SubPlanBase, arrays: Sequence, n_in: int) -> None:
    """Run the taken branch ``sub`` of a cond on the node's arrays (operands, then outputs)."""
    for i, arr in enumerate(arrays[1:n_in]):
        sub.set_input(i, arr)
    outs = arrays[n_in:]
    bound = [sub.bind_output(j, out) for j, out in enumerate(outs)]
    sub.run()
    for j, out in enumerate(outs):
        if not bound[j]:
            sub.copy(out, sub.output(j))


def run_while(
    test: SubPlanBase,
    body: SubPlanBase,
    k: int,
    arrays: Sequence,
    pairs: list[list[Any]],
    predicate: Callable[[], bool],
) -> None:
    """Run a while_loop over the node's arrays (carries, invariants, then outputs): the carries
    ping-pong between ``pairs`` (two buffers each); ``predicate()`` reads the test's result after
    each ``test.run()``. GraphcError after ``MAX_TRIPS`` iterations."""
    n_in = len(arrays) - k
    for i in range(k, n_in):  # loop invariants: bound once
        test.set_input(i, arrays[i])
        body.set_input(i, arrays[i])
    for p, a in zip(pairs, arrays[:k]):
        body.copy(p[0], a)
    cur = [p[0] for p in pairs]
    nxt = [p[1] for p in pairs]
    trips = 0
    while True:
        for i in range(k):
            test.set_input(i, cur[i])
        test.run()
        if not predicate():
            break
        for i in range(k):
            body.set_input(i, cur[i])
            body.bind_output(i, nxt[i])
        body.run()
        for i in range(k):
            if body.output(i) is not nxt[i]:
                body.copy(nxt[i], body.output(i))
        cur, nxt = nxt, cur
        trips += 1
        if trips > MAX_TRIPS:
            raise GraphcError(f"while_loop ran {MAX_TRIPS} iterations without its condition turning false")
    for out, c in zip(arrays[n_in:], cur):
        body.copy(out, c)


def carry_homes(body: SubPlanBase, k: int, length: int) -> tuple[dict[int, int], dict[int, int]]:
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


def scan_schedule(
    node: Node,
    body: SubPlanBase,
    pairs: list[list[Any]],
    arrays: tuple,
    entry_point: EntryPoint | None = None,
) -> tuple[list[Call], list[Node | None]]:
    """A scan over ``arrays`` as one flat list of calls: the initial carries copied in, then per
    step the copies into the body, its kernels with their arguments bound (the carry's buffer,
    ``xs[t]``, ``ys[t]``), the copies out, and last the final carries copied out (copies are
    ``body.copy_call`` entries); with, for each call, the body node it runs (None for a copy).
    Calls over the same arrays (a plan binds them once) reuse it, and a step is then only its
    kernel calls. ``entry_point(j, fn, args)``: what to call for body kernel ``j`` with these
    arguments (default ``fn``).

    A carry ping-pongs between its two buffers, or lives in the slots of a y that stacks it
    (``carry_homes``): the step writes it straight into ``ys[t]`` (or the next step's slot)."""
    k, n_xs, length = node.attrs["n_carry"], node.attrs["n_xs"], node.attrs["length"]
    n_in = len(node.inputs)
    xs, ys = arrays[k : k + n_xs], arrays[n_in + k :]
    ts = [length - 1 - s if node.attrs["reverse"] else s for s in range(length)]
    slots: dict[tuple[int, int], Any] = {}

    def y_at(j: int, t: int) -> Any:  # one view object per slot: copies onto it are skipped
        if (j, t) not in slots:
            slots[j, t] = body.at(ys[j], t)
        return slots[j, t]

    calls: list[Call] = []
    nodes: list[Node | None] = []

    def copies(pairs_: Sequence[tuple[Any, Any] | None]) -> None:
        for c in pairs_:
            call = None if c is None or c[0] is c[1] else body.copy_call(*c)
            if call is not None:
                calls.append(call)
                nodes.append(None)

    entering, leaving = carry_homes(body, k, length)
    cur = [y_at(entering[i], ts[0]) if i in entering else pairs[i][0] for i in range(k)]
    copies(list(zip(cur, arrays[:k])))
    # Invariants are copied in before the first step only: the body may not write over them.
    copies([body.bind_input(i, arrays[i]) for i in range(k + n_xs, n_in)])
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
        pre += [body.bind_input(k + i, body.at(x, t)) for i, x in enumerate(xs)]
        bound = [body.bind_output(k + j, y) for j, y in enumerate(y_views)]
        post = [(nxt[i], body.output(i)) for i in range(k)]
        post += [(y, body.output(k + j)) for j, y in enumerate(y_views) if not bound[j]]
        copies(pre)
        for j, (fn, args) in enumerate(body.snapshot()):
            calls.append((fn if entry_point is None else entry_point(j, fn, args), args))
            nodes.append(body.step_nodes[j])
        copies(post)
        cur = nxt
    copies(list(zip(arrays[n_in : n_in + k], cur)))
    return calls, nodes


def run_calls(calls: Sequence[Call], nodes: Sequence[Node | None]) -> None:
    """Run a schedule's calls in order; a GraphcError names the body node whose kernel raised it."""
    done = 0
    try:
        for fn, args in calls:
            fn(*args)
            done += 1
    except GraphcError as err:
        raise_in_body(nodes[done], err)


def body_sources(node: Node, source_of: Callable[[Node], str], backend: str) -> str:
    """The text of a control-flow node's kernel: a header, then each body's kernel sources."""
    from graphc.kernels.quoting import comment

    text = f"# graphc {backend} kernel: {comment(node.op)} running its bodies as sub-plans (kernels below)\n"
    for body in node.bodies:
        text += f"# body {comment(body.name)}\n"
        text += "\n".join(source_of(n) for n in body.nodes)
    return text
