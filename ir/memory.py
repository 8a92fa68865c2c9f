"""The memory plan: plain data that passes.memory_plan computes and runtime.Plan consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .graph import Node

# Ops whose result the memory planner may place on its operand's bytes, leaving nothing to run.
VIEW_OPS = ("reshape", "slice")


@dataclass(frozen=True)
class Buffer:
    """Where one value lives in the arena, and the schedule steps over which it is live.

    ``start`` is the index of the step that writes it (-1 for a data input copied in before
    step 0); ``end`` the last step that reads it (len(schedule) for a graph output).
    ``alias_of`` names the value whose bytes it shares (a reshape view, or an in-place op).
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
        """Whether ``node``'s result is planned as a view of its operand's bytes (nothing to run)."""
        buf = self.buffers.get(node.outputs[0].name) if node.outputs else None
        return node.op in VIEW_OPS and buf is not None and buf.alias_of is not None

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
        """Inverse of ``to_json``."""
        buffers = {b["value"]: Buffer(**b) for b in data["buffers"]}
        return MemoryPlan(
            data["arena_bytes"],
            buffers,
            data["naive_bytes"],
            data["lower_bound"],
            data.get("alignment", 64),
            {str(k): str(v) for k, v in data.get("written_over", {}).items()},
        )
