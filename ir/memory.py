"""The memory plan: plain data that passes.memory_plan computes and runtime.Plan consumes."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import GraphcError

if TYPE_CHECKING:
    from .graph import Node

# Ops whose result the memory planner may place on its operand's bytes, leaving nothing to run.
VIEW_OPS = ("reshape", "slice")


@dataclass(frozen=True)
class Buffer:
    """Where one value lives in the arena, and the schedule steps over which it is live.

    ``start`` is the index of the step that writes it (-1 for a data input copied in before
    step 0); ``end`` the last step that reads it (len(schedule) for a graph output).
    ``alias_of`` names the value whose bytes it shares (a reshape view, an in-place op, or the
    result of a concat in place it is an operand of).
    """

    value: str
    offset: int
    size: int
    start: int
    end: int
    alias_of: str | None = None


@dataclass
class MemoryPlan:
    """Arena layout of every intermediate, data input and output value of a scheduled graph
    (but the updates ``written_over`` their param/state arrays)."""

    arena_bytes: int
    buffers: dict[str, Buffer] = field(default_factory=dict)
    naive_bytes: int = 0  # sum of every buffer's size, as if nothing were reused
    lower_bound: int = 0  # the most bytes live at any one step: no plan can do better
    alignment: int = 64
    # Update results computed straight over their param/state input's array (value -> input
    # name): they have no buffer, and the runtime copies nothing after the step.
    written_over: dict[str, str] = field(default_factory=dict)

    def is_view(self, node: Node) -> bool:
        """Whether ``node``'s result is planned as a view of its operand's bytes, or (a concat in
        place, ``concat_in_place``) as its operands' bytes side by side: nothing to run."""
        buf = self.buffers.get(node.outputs[0].name) if node.outputs else None
        if node.op == "concat":
            return self.concat_in_place(node)
        return node.op in VIEW_OPS and buf is not None and buf.alias_of is not None

    def concat_in_place(self, node: Node) -> bool:
        """Whether the concat ``node`` is planned in place: each operand is one contiguous run of
        the result (``concat_places``) and every non-empty operand's buffer sits at its place in
        the result's bytes, an alias of the same root, so its producer wrote it there."""
        places = concat_places(node)
        out = self.buffers.get(node.outputs[0].name) if places is not None else None
        if out is None or out.size == 0 or node.outputs[0].type.nbytes == 0:
            return False
        root = out.alias_of or out.value
        for v, at in zip(node.inputs, places):
            if v.type.nbytes == 0:
                continue
            buf = self.buffers.get(v.name)
            if buf is None or buf.alias_of != root or buf.offset != out.offset + at:
                return False
        return True

    def summary(self) -> str:
        """Naive bytes, lower bound and arena on one line."""
        ratio = self.arena_bytes / self.lower_bound if self.lower_bound else 1.0
        return (
            f"naive {self.naive_bytes} B, lower bound {self.lower_bound} B, "
            f"arena {self.arena_bytes} B ({ratio:.2f}x bound)"
        )

    def to_json(self) -> dict:
        """A JSON-compatible dict."""
        return {
            "arena_bytes": self.arena_bytes,
            "naive_bytes": self.naive_bytes,
            "lower_bound": self.lower_bound,
            "alignment": self.alignment,
            "buffers": [vars(b) for b in self.buffers.values()],
            "written_over": dict(self.written_over),
        }

    @staticmethod
    def from_json(data: dict) -> MemoryPlan:
        """Inverse of ``to_json``; every field's type and range is checked (GraphcError naming it).

        Offsets and sizes are non-negative ints, the alignment a power of two, and the arena at
        most ``max_arena_bytes()`` (``GRAPHC_MAX_ARENA_BYTES``, 16 GiB by default). Whether the
        buffers fit the graph is ``passes.check_memory_plan``'s job.
        """
        if not isinstance(data, dict):
            raise GraphcError(f"memory plan must be an object, got {type(data).__name__}")
        limit = max_arena_bytes()
        arena = _int(data, "arena_bytes", "memory plan", 0, limit)
        alignment = _int(data, "alignment", "memory plan", 1, MAX_ALIGNMENT, default=64)
        if alignment & (alignment - 1):
            raise GraphcError(f"memory plan: alignment must be a power of two, got {alignment}")
        items = data.get("buffers")
        if not isinstance(items, list):
            raise GraphcError("memory plan: buffers must be a list")
        buffers: dict[str, Buffer] = {}
        for i, b in enumerate(items):
            where = f"memory plan buffers[{i}]"
            if not isinstance(b, dict):
                raise GraphcError(f"{where} must be an object")
            unknown = set(b) - _BUFFER_FIELDS
            if unknown:
                raise GraphcError(f"{where}: unknown field(s) {sorted(str(k)[:40] for k in unknown)}")
            value = _name(b.get("value"), f"{where}.value")
            if value in buffers:
                raise GraphcError(f"{where}: a second buffer for %{value}")
            alias = b.get("alias_of")
            buffers[value] = Buffer(
                value,
                _int(b, "offset", where, 0, limit),
                _int(b, "size", where, 0, limit),
                _int(b, "start", where, -1, MAX_STEPS),
                _int(b, "end", where, -1, MAX_STEPS),
                None if alias is None else _name(alias, f"{where}.alias_of"),
            )
        over = data.get("written_over", {})
        if not isinstance(over, dict):
            raise GraphcError("memory plan: written_over must be an object")
        written_over = {
            _name(k, "memory plan written_over"): _name(v, "memory plan written_over")
            for k, v in over.items()
        }
        return MemoryPlan(
            arena,
            buffers,
            _int(data, "naive_bytes", "memory plan", 0, None, default=0),
            _int(data, "lower_bound", "memory plan", 0, None, default=0),
            alignment,
            written_over,
        )


def concat_places(node: Node) -> list[int] | None:
    """Byte offset of each operand of a concat in its result where every operand is one
    contiguous run of the result (every axis before the concat axis has size 1: a channel
    concat at batch 1 in NCHW, or axis 0), else None (also for any other op)."""
    if node.op != "concat" or not node.outputs:
        return None
    y = node.outputs[0]
    axis = node.attrs.get("axis")
    if not isinstance(axis, int) or not 0 <= axis < len(y.shape) or math.prod(y.shape[:axis]) != 1:
        return None
    places, at = [], 0
    for v in node.inputs:
        places.append(at)
        at += v.type.nbytes
    return places if at == y.type.nbytes else None


# Limits a memory plan read from a file keeps to.
DEFAULT_MAX_ARENA_BYTES = 16 * 2**30
MAX_ALIGNMENT = 2**20
MAX_STEPS = 2**40
_BUFFER_FIELDS = {"value", "offset", "size", "start", "end", "alias_of"}


def max_arena_bytes() -> int:
    """The largest arena a memory plan may ask for: ``$GRAPHC_MAX_ARENA_BYTES`` if set (a
    positive int of bytes), else DEFAULT_MAX_ARENA_BYTES (16 GiB)."""
    text = os.environ.get("GRAPHC_MAX_ARENA_BYTES")
    if not text:
        return DEFAULT_MAX_ARENA_BYTES
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise GraphcError(f"GRAPHC_MAX_ARENA_BYTES must be a positive number of bytes, got {text[:40]!r}")
    return limit


def _int(data: dict, key: str, where: str, lo: int, hi: int | None, default: object = ...) -> int:
    """``data[key]`` as an int in [lo, hi]; GraphcError naming the field otherwise."""
    if key not in data:
        if default is ...:
            raise GraphcError(f"{where} lacks the field {key!r}")
        return default
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise GraphcError(f"{where}.{key} must be an int, got {type(value).__name__}")
    if value < lo or (hi is not None and value > hi):
        upper = "" if hi is None else f", at most {hi}"
        raise GraphcError(f"{where}.{key} must be at least {lo}{upper}; got {value}")
    return value


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 1000:
        raise GraphcError(f"{where} must be a value name (a non-empty string)")
    return value
