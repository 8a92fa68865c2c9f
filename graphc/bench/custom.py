"""Custom workloads: suite files that time themselves (``WHAT``, ``PEERS``, ``TARGETS``, ``measure``).

A custom workload file defines at top level::

    WHAT = "one line for the report"
    PEERS = ("torch",)                        # standard peers (graphc.bench.engines.PEERS) and/or
                                              # its own labels ("graphc float32", "onnxruntime int8")
    TARGETS = [("graphc / torch", "<= 1")]    # (a ratio named in a case's "ratios", condition)
    def measure(opts: dict) -> dict: ...

``opts`` (see :func:`options`): ``compare`` (the standard peers to run: those asked for with
``--compare``, plus the workload's only peer when it has just one), ``threads``, ``repeat``,
``warmup``, ``min_time``, ``settle``, ``quick`` (tiny sizes and rounds, for tests) and ``log``.
``measure`` returns ``{"cases": [case, ...], "notes": [str, ...]}``; a case is
``{"case": label, "engines": {name: entry}, "ratios": {name: float}, "extra": {...}}`` where an
engine entry is ``{"status": "ok", "median_ms", "min_ms", "max_ms", "agreement": {peer: text}}``
(``"agrees": False``, or ``{peer: False}``, when graphc's result did not match: the goal is
then MISSED), or ``{"status": "skipped" | "failed", "note": why}``.
"""

from __future__ import annotations

import math
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphc.ir import GraphcError
from graphc.modelfile import import_file

from .engines import PEERS, Runner, first_line
from .timing import measure as time_runners


@dataclass(frozen=True)
class CustomWorkload:
    """What a custom workload file defines."""

    path: str
    name: str
    what: str
    peers: tuple[str, ...]
    targets: tuple[tuple[str, str], ...]
    measure: Callable[[dict], dict]


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise GraphcError(f"{where} must be a tuple of strings, got {type(value).__name__}")
    if not all(isinstance(v, str) and v for v in value):
        raise GraphcError(f"{where} must hold non-empty strings, got {list(value)!r}")
    return tuple(value)


def load_custom(path: str | os.PathLike) -> CustomWorkload:
    """Import a custom workload file and check what it defines (GraphcError naming the file)."""
    path = os.fspath(path)
    module = import_file(path)
    fn = getattr(module, "measure", None)
    if not callable(fn):
        raise GraphcError(f"{path} defines no function measure(opts)")
    what = getattr(module, "WHAT", None)
    if what is None:
        doc = (module.__doc__ or "").strip().splitlines()
        what = doc[0] if doc else ""
    if not isinstance(what, str):
        raise GraphcError(f"{path}: WHAT must be a string, got {type(what).__name__}")
    peers = _strings(getattr(module, "PEERS", ()), f"{path}: PEERS")
    targets = getattr(module, "TARGETS", ())
    if not isinstance(targets, (tuple, list)) or not all(
        isinstance(t, (tuple, list)) and len(t) == 2 and all(isinstance(s, str) for s in t) for t in targets
    ):
        raise GraphcError(
            f"{path}: TARGETS must be a list of (ratio, target) strings, e.g. ('graphc / torch', '<= 1')"
        )
    return CustomWorkload(
        path=path,
        name=str(getattr(module, "NAME", None) or Path(path).stem),
        what=what,
        peers=peers,
        targets=tuple((t[0], t[1]) for t in targets),
        measure=fn,
    )


def options(
    compare: list[str],
    peers: tuple[str, ...],
    *,
    threads: int,
    repeat: int,
    warmup: int,
    min_time: float,
    settle: float,
    quick: bool,
    log: Callable[[str], None],
) -> dict:
    """The ``opts`` a workload's measure() gets; its only peer, when standard, always runs."""
    run = list(compare)
    if len(peers) == 1 and peers[0] in PEERS and peers[0] not in run:
        run.append(peers[0])
    return {
        "compare": run,
        "threads": threads,
        "repeat": repeat,
        "warmup": warmup,
        "min_time": min_time,
        "settle": settle,
        "quick": quick,
        "log": log,
    }


def wanted(opts: dict, peer: str) -> bool:
    """Whether a standard peer is to run (asked for, or the workload's only comparison)."""
    return peer in opts["compare"]


def not_asked(peer: str) -> dict:
    """The engine entry of a standard peer the user did not ask for."""
    return {"status": "skipped", "note": f"not asked for (--compare {peer})"}


def failed(err: BaseException) -> dict:
    """The engine entry of an engine that raised."""
    if os.environ.get("GRAPHC_BENCH_DEBUG"):
        traceback.print_exception(err)
    return {"status": "failed", "note": f"{type(err).__name__}: {first_line(err)}"}


def time_steps(steps: dict[str, Callable[[], Any]], opts: dict) -> dict[str, dict]:
    """Time callables round-robin with the run's settings (graphc.bench.timing.measure); engine entries."""
    runners = {name: Runner(fn, None, 0.0) for name, fn in steps.items()}
    return time_runners(runners, opts["repeat"], opts["warmup"], opts["min_time"], opts["settle"])


def ratio(entries: dict[str, dict], num: str, den: str) -> float | None:
    """Median time of ``num`` over ``den``'s, or None when either did not run."""
    a, b = entries.get(num, {}), entries.get(den, {})
    if a.get("status") != "ok" or b.get("status") != "ok" or not b.get("median_ms"):
        return None
    return a["median_ms"] / b["median_ms"]


def _check_result(data: Any, where: str) -> dict:
    """GraphcError naming the file when measure() returned something other than the protocol's dict."""
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise GraphcError(f"{where}: measure() must return {{'cases': [...], 'notes': [...]}}")
    for i, case in enumerate(data["cases"]):
        if not isinstance(case, dict) or not isinstance(case.get("engines"), dict):
            raise GraphcError(f"{where}: case {i} must be a dict with 'case', 'engines', 'ratios'")
        case.setdefault("case", str(i))
        case.setdefault("ratios", {})
        case.setdefault("extra", {})
        for engine, entry in case["engines"].items():
            if not isinstance(entry, dict) or entry.get("status") not in ("ok", "skipped", "failed"):
                raise GraphcError(
                    f"{where}: case {case['case']!r}, engine {engine!r} needs a status ok/skipped/failed"
                )
            if entry["status"] == "ok" and not all(
                isinstance(entry.get(k), (int, float)) and math.isfinite(entry[k])
                for k in ("median_ms", "min_ms", "max_ms")
            ):
                raise GraphcError(
                    f"{where}: case {case['case']!r}, engine {engine!r} is ok but lacks median/min/max_ms"
                )
    notes = data.get("notes", [])
    data["notes"] = [str(n) for n in notes] if isinstance(notes, (list, tuple)) else [str(notes)]
    return data


def run_custom(
    path: Path | str,
    compare: list[str],
    *,
    threads: int,
    repeat: int,
    warmup: int,
    min_time: float,
    settle: float,
    quick: bool,
    log: Callable[[str], None],
) -> dict:
    """Load and run one custom workload; its result (``"error"`` when the file or measure() failed)."""
    from .targets import check_custom_goals

    path = Path(path)
    out: dict[str, Any] = {"name": path.stem, "file": str(path), "kind": "custom", "what": "", "batch": None}
    try:
        w = load_custom(path)
        check_custom_goals(w.targets, str(path))
    except Exception as err:
        return {
            **out,
            "goals": [],
            "cases": [],
            "notes": [],
            "error": f"the workload file did not load: {failed(err)['note']}",
        }
    out.update(name=w.name, what=w.what, peers=list(w.peers), goals=[list(t) for t in w.targets])
    opts = options(
        compare,
        w.peers,
        threads=threads,
        repeat=repeat,
        warmup=warmup,
        min_time=min_time,
        settle=settle,
        quick=quick,
        log=log,
    )
    log(f"  {w.name}: measuring (custom workload; peers {', '.join(w.peers) or 'none'}) ...")
    try:
        data = _check_result(w.measure(opts), str(path))
    except Exception as err:
        return {**out, "cases": [], "notes": [], "error": f"measure() raised {failed(err)['note']}"}
    return {**out, "cases": data["cases"], "notes": data["notes"]}


def run_script(path: str, argv: list[str] | None = None) -> int:
    """``python benchmarks/NAME.py [bench options]``: the same as ``graphc bench benchmarks/NAME.py``."""
    import sys

    from graphc.cli import main

    return main(["bench", path, *(sys.argv[1:] if argv is None else argv)])
