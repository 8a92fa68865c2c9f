"""Composite ops in eager mode: a traced definition run as ONE tape entry.

A composite (``F.cross_entropy`` is the first user) is a function written with graphc's
primitives, as compiled mode traces it. In eager mode, the first call with a signature (the
function, its operands' shapes and dtypes, which of them need a gradient, its static
arguments) traces it once into a small ``ir.Graph`` (the same ops compiled mode records) and
keeps a flat forward program for it (``eager_backward._Program``: the reference kernels, or the
NumPy functions they wrap, called directly). Later calls run that program over the operands'
arrays in one go: no Tensor, no tape entry and no signature lookup per primitive op.

The result records ONE tape entry (``op`` :data:`COMPOSITE`): its operands that need a gradient,
and the residuals its gradient reads (the values of the small graph's nodes that depend on
them, and the values those nodes read that do not). ``backward()`` splices the small graph's
nodes back in over those residuals (:func:`expand`), so ``passes.autodiff`` differentiates
exactly the ops the op-by-op path would have recorded, and its backward program, cached per
recorded structure, is the same: the gradients are bit for bit the op-by-op ones.

Errors: a definition that fails to trace (a bad shape, dtype or argument) is remembered and
that signature runs op by op, which reports the error as it always does. A kernel error at run
time (a label out of range in a gather) names the user's line, as the op-by-op path does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from graphc.ir import Graph, GraphcError, TensorType
from graphc.tensor import Tensor

__all__ = ["COMPOSITE", "expand", "run"]

COMPOSITE = "composite"  # the tape op of a composite's result (EagerValue.op)

_MAX_ENTRIES = 256
# signature -> _Composite, or None where the definition does not trace (that signature runs op by op)
_ENTRIES: dict[tuple, _Composite | None] = {}
# definition -> its fused eager function (graphc/eager_xent.py), or None
_FUSED: dict[Callable, Callable | None] = {}


class _Composite:
    """One traced signature: its forward program and what its tape entry needs for backward()."""

    def __init__(
        self, key: tuple, graph: Graph, operand_slots: dict[int, int], live_inputs: list[int]
    ) -> None:
        from graphc.eager import _non_differentiable
        from graphc.eager_backward import _plan, _Program

        for node in graph.nodes:
            node.source = None  # errors name the user's line of each call, found at run time
        self.key = key
        out = graph.outputs[0]
        program = _Program(graph, 0, [])
        _plan(program)  # flattened now (the first call is the slow one)
        self.program = program
        self.n_values = program.n_values
        slot: dict[str, int] = {}
        for x in graph.inputs:
            slot[x.name] = len(slot)
        for node in graph.nodes:
            for o in node.outputs:
                slot[o.name] = len(slot)
        # the graph's own constants (class indices, ones): their arrays, at their slots
        n_in = len(operand_slots)
        self.consts = [(slot[x.name], graph.initializers[x.name]) for x in graph.inputs[n_in:]]
        self.out_slot = slot[out.name]
        self.out_type = out.type
        # The nodes that depend on an operand needing a gradient: the ones the tape would hold.
        live = {graph.inputs[operand_slots[i]].name for i in live_inputs}
        records = []
        saved: dict[int, int] = {}  # slot -> index in the residual list
        leaves: list[int] = []  # residual indices that are leaves (values needing no gradient)
        no_grad = _non_differentiable()
        for node in graph.nodes:
            if not any(i.name in live for i in node.inputs):
                continue
            outs = node.outputs
            if len(outs) != 1 or outs[0].type.dtype not in ("f32", "f64") or node.op in no_grad:
                continue  # as the tape: its value is a leaf to the ops that read it
            ins = []
            for i in node.inputs:
                s = slot[i.name]
                if i.name in live:
                    ins.append(("v", s))
                else:
                    if s not in saved:
                        saved[s] = len(saved)
                        leaves.append(s)
                    ins.append(("leaf", saved[s]))
            for o in node.outputs:
                live.add(o.name)
            o = node.outputs[0]
            records.append((node.op, node.attrs, ins, slot[o.name], o.type, len(node.outputs)))
        self.records = records
        self.leaf_slots = leaves
        self.leaf_types = [_type_at(graph, s, slot) for s in leaves]
        self.live_slots = [r[3] for r in records if r[3] != self.out_slot]
        self.live_inputs = [operand_slots[i] for i in live_inputs]  # their slots, in v.inputs' order
        self.differentiable = bool(records) and records[-1][3] == self.out_slot


def _type_at(graph: Graph, s: int, slot: dict[str, int]) -> TensorType:
    for x in graph.inputs:
        if slot[x.name] == s:
            return x.type
    for node in graph.nodes:
        for o in node.outputs:
            if slot[o.name] == s:
                return o.type
    raise AssertionError(s)


def _trace(fn: Callable, operands: list[Tensor | None], static: dict) -> Graph | None:
    """``fn``'s small graph over operands of these types (None: it does not trace)."""
    from graphc.tracing import TraceContext

    graph = Graph("composite")
    ctx = TraceContext(graph)
    args: list[Tensor | None] = []
    for i, t in enumerate(operands):
        if t is None:
            args.append(None)
            continue
        v = graph.add_input(f"x{i}", t.value.type, "data")
        args.append(Tensor(v, ctx))
    try:
        with ctx:
            out = fn(*args, **static)
            if not isinstance(out, Tensor) or out.ctx is not ctx:
                return None
            ctx.finish(out)
    except GraphcError:
        return None
    if len(graph.outputs) != 1 or graph.updates:
        return None
    for node in graph.nodes:
        if node.bodies:
            return None  # a control-flow or fused node: not one flat program
    return graph


def run(fn: Callable, operands: tuple[Tensor | None, ...], static: dict) -> Tensor | None:
    """``fn(*operands, **static)`` in eager mode as one composite step, or None where it takes the
    op-by-op path (a signature that does not trace, unhashable static arguments, the "cpu"
    backend, an operand that is not an eager value). ``fn`` must be the traced definition: the
    same function compiled mode traces, with no value-dependent Python control flow."""
    import graphc.eager_fast as _fast  # not ``from graphc import``: that form runs importlib's Python code
    from graphc.eager import _SEQ, EAGER, EagerValue, get_backend

    if get_backend() != "reference":
        return None
    fused = _FUSED.get(fn, False)
    if fused is False:
        from graphc.eager_xent import fused_for

        fused = _FUSED[fn] = fused_for(fn)
    if fused is not None:  # a hand-fused kernel for this definition (graphc/eager_xent.py)
        out = fused(operands, static)
        if out is not None:
            return out
    ctx = EAGER
    parts: list[Any] = [fn]
    grads: list[int] = []
    for i, t in enumerate(operands):
        if t is None:
            parts.append(None)
            continue
        v = t.value
        if type(v) is not EagerValue or t.ctx is not ctx:
            return None
        typ = v.type
        needs = v.requires_grad and ctx.grad_enabled
        if needs:
            grads.append(i)
        parts.append((typ.shape, typ.dtype, needs))
    try:
        key = (*parts, *sorted(static.items()))
        entry = _ENTRIES.get(key, False)
    except TypeError:
        return None
    if entry is False:
        graph = _trace(fn, list(operands), static)
        entry = None
        if graph is not None:
            slots = {i: k for k, i in enumerate(i for i, t in enumerate(operands) if t is not None)}
            entry = _Composite(key, graph, slots, grads)
            if grads and not entry.differentiable:
                entry = None
        if len(_ENTRIES) >= _MAX_ENTRIES:
            _ENTRIES.clear()
        _ENTRIES[key] = entry
    if entry is None:
        return None
    from graphc.eager_backward import _run_reference

    env: list[np.ndarray | None] = [t.value.data for t in operands if t is not None]
    env.extend([None] * (entry.n_values - len(env)))
    for s, arr in entry.consts:
        env[s] = arr
    _run_reference(entry.program, env)
    arr = env[entry.out_slot]
    if not grads or not entry.records:
        return _fast._plain(entry.out_type, arr, ctx)
    out = EagerValue(entry.out_type, arr, True)  # type: ignore[arg-type]
    out.op = COMPOSITE
    out.attrs = {
        "composite": entry,
        "leaves": [env[s] for s in entry.leaf_slots],
        "values": [env[s] for s in entry.live_slots],
    }
    out.inputs = tuple([operands[i].value for i in grads])  # type: ignore[union-attr]
    out.seq = next(_SEQ)
    out._source = _fast.source_ref(1)
    return Tensor(out, ctx)


def expand(v: Any, leaves: list, records: list) -> None:
    """Append the small graph's ops behind the composite tape value ``v`` to ``records`` (tuples
    ``(op, attrs, inputs, output)``, the last one's output ``v`` itself) and its residual leaves
    to ``leaves``, as EagerValues over the saved arrays."""
    from graphc.eager import EagerValue

    entry: _Composite = v.attrs["composite"]
    by_slot: dict[int, Any] = {}
    for k, s in enumerate(entry.live_inputs):
        by_slot[s] = v.inputs[k]
    leaf_values = []
    for t, arr in zip(entry.leaf_types, v.attrs["leaves"]):
        lv = EagerValue(t, arr, False)
        leaf_values.append(lv)
        leaves.append(lv)
    values = iter(v.attrs["values"])
    source = v.source
    for op, attrs, ins, out_slot, t, _ in entry.records:
        inputs = []
        for kind, ref in ins:
            if kind == "leaf":
                inputs.append(leaf_values[ref])
            else:
                inputs.append(by_slot[ref])
        if out_slot == entry.out_slot:
            out = v
        else:
            out = EagerValue(t, next(values), True)
            out._source = source
        by_slot[out_slot] = out
        records.append((op, attrs, tuple(inputs), out))
