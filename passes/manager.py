"""PassManager: runs an ordered list of passes with timing, node counts, change detection and dumps.

A pass is any callable ``Graph -> Graph`` with a ``name`` attribute; it may mutate and return
its argument. The manager records, per pass, the wall time, the node count before and after and
whether the graph changed (its text form, initializers included, differs). ``dump`` is either a
callable ``dump(name, graph)`` called after every pass, or a directory that receives
``NN_name.txt`` (``ir.print_graph``) and ``NN_name.dot`` (``ir.graph_to_dot``) after every pass,
with ``00_input`` first. A pass listed in
``disable`` is skipped by name, which is how a miscompile is bisected. With ``check`` (or the
environment variable ``GRAPHC_CHECK_PASSES=1``) ``ir.verify`` runs after every pass and names the
pass that broke an invariant. ``track_changes=False`` skips the change detection (its text
fingerprints cost as much as a cheap pass). The cyclic garbage collector is held off while the
passes run (``gc_paused``), and each graph's cached ``users()`` is dropped after every pass.
"""

from __future__ import annotations

import gc
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from graphc.ir import Graph, GraphcError, graph_to_dot, print_graph, verify

DumpTarget = Callable[[str, Graph], None] | str | os.PathLike | None


@dataclass
class PassRecord:
    """What one pass did: its name, seconds, node counts before/after, and whether it changed."""

    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    changed: bool
    skipped: bool = False


def fingerprint(graph: Graph) -> str:
    """A digest of the graph's text form and initializer contents (detects any change)."""
    h = hashlib.sha1(print_graph(graph, with_source=False).encode())
    for name in sorted(graph.initializers):
        arr = graph.initializers[name]
        h.update(name.encode())
        h.update(str(arr.dtype).encode() + str(arr.shape).encode())
        if arr.size <= 1 << 16:
            h.update(arr.tobytes())
    return h.hexdigest()


def _dump_fn(dump: DumpTarget) -> Callable[[int, str, Graph], None] | None:
    if dump is None:
        return None
    if callable(dump):
        return lambda index, name, graph: dump(name, graph) if index else None
    folder = Path(dump)
    folder.mkdir(parents=True, exist_ok=True)

    def write(index: int, name: str, graph: Graph) -> None:
        stem = folder / f"{index:02d}_{name}"
        stem.with_suffix(".txt").write_text(print_graph(graph) + "\n")
        stem.with_suffix(".dot").write_text(graph_to_dot(graph) + "\n")

    return write


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector off while compiling (restored on exit, nesting allowed).

    A large graph is hundreds of thousands of long-lived objects, and every full collection
    walks them all: about a third of the passes' time on a 160-block MLP's training step. Plain
    reference counting still frees what the passes drop; cycles wait for the next collection.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def pass_name(p: Callable) -> str:
    """The name a pass reports (its ``name`` attribute, else its function name)."""
    return getattr(p, "name", None) or getattr(p, "__name__", type(p).__name__)


class PassManager:
    """Runs ``passes`` in order over a graph; ``records`` holds one PassRecord per pass after ``run``."""

    def __init__(
        self,
        passes: Sequence[Callable[[Graph], Graph]],
        disable: Iterable[str] = (),
        dump: DumpTarget = None,
        check: bool | None = None,
        track_changes: bool = True,
    ) -> None:
        self.passes = list(passes)
        # Whether each record's ``changed`` is computed (a fingerprint of the whole graph's text
        # after every pass, as much as a cheap pass costs); False leaves it False. ``optimize``,
        # which reads no records, turns it off.
        self.track_changes = track_changes
        self.disable = set(disable)
        known = {pass_name(p) for p in self.passes}
        unknown = self.disable - known
        if unknown:
            raise GraphcError(
                f"cannot disable unknown pass(es) {sorted(unknown)}; pipeline has {sorted(known)}"
            )
        self.dump = _dump_fn(dump)
        self.check = check if check is not None else os.environ.get("GRAPHC_CHECK_PASSES") == "1"
        self.records: list[PassRecord] = []

    def run(self, graph: Graph) -> Graph:
        """Run every enabled pass in order and return the resulting graph."""
        with gc_paused():
            return self._run(graph)

    def _run(self, graph: Graph) -> Graph:
        self.records = []
        if self.check:
            verify(graph)
        if self.dump:
            self.dump(0, "input", graph)
        digest = None  # the fingerprint after the last pass run is the next one's "before"
        for index, p in enumerate(self.passes, start=1):
            name = pass_name(p)
            before = len(graph.nodes)
            if name in self.disable:
                self.records.append(PassRecord(name, 0.0, before, before, False, skipped=True))
                continue
            if digest is None and self.track_changes:
                digest = fingerprint(graph)
            t0 = time.perf_counter()
            result = p(graph)
            seconds = time.perf_counter() - t0
            if not isinstance(result, Graph):
                raise GraphcError(f"pass {name} returned {type(result).__name__}, not a Graph")
            graph = result
            graph.invalidate_uses()  # the pass may have edited node operands directly
            if self.check:
                try:
                    verify(graph)
                except GraphcError as err:
                    raise GraphcError(f"after pass {name}: {err}") from None
            after = fingerprint(graph) if self.track_changes else None
            changed, digest = after != digest, after
            self.records.append(PassRecord(name, seconds, before, len(graph.nodes), changed))
            if self.dump:
                self.dump(index, name, graph)
        return graph

    def report(self) -> str:
        """A table of the last run: pass, ms, nodes before -> after, changed."""
        lines = [f"{'pass':<24}{'ms':>9}  {'nodes':>13}  changed"]
        for r in self.records:
            if r.skipped:
                lines.append(f"{r.name:<24}{'-':>9}  {'(disabled)':>13}")
                continue
            nodes = f"{r.nodes_before} -> {r.nodes_after}"
            lines.append(f"{r.name:<24}{r.seconds * 1e3:>9.2f}  {nodes:>13}  {'yes' if r.changed else 'no'}")
        return "\n".join(lines)
