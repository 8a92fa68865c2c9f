"""Agreement of graphc's result with each peer's, and graphc's goals (a workload file's TARGETS).

A goal is met only when graphc ran, the ratio was measured, and graphc's result (output, or the
first step's loss) agrees with the peer it is measured against; a disagreement is a miss.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from graphc.ir import GraphcError

from .engines import BASELINE, PEERS

# ratio name -> the engine graphc is measured against (None: the bound, checked against a peer)
RATIOS = {
    "time / torch eager": "torch",
    "speedup over torch eager": "torch",
    "time / torch.compile": "torch.compile",
    "time / onnxruntime": "onnxruntime",
    "time / bandwidth bound": None,
}
RTOL = 1e-3  # agreement: max |graphc - peer| <= RTOL * max(1, max |peer|)


def check_goals(targets: tuple[tuple[str, str], ...], where: str) -> None:
    """GraphcError naming the file when a goal names an unknown ratio or is not ``<= x``/``>= x``."""
    for what, target in targets:
        if what not in RATIOS:
            raise GraphcError(f"{where}: TARGETS ratio {what!r} is not one of {', '.join(RATIOS)}")
        parts = target.split()
        ok = len(parts) == 2 and parts[0] in ("<=", ">=")
        try:
            ok = ok and float(parts[1]) == float(parts[1])
        except ValueError:
            ok = False
        if not ok:
            raise GraphcError(f"{where}: target {target!r} of {what!r} must read '<= number' or '>= number'")


def agreement(first: Any, reference: Any) -> dict:
    """How far an engine's first result is from a reference engine's (loss, or first output)."""
    try:
        a = np.asarray(first[0] if isinstance(first, (list, tuple)) else first, dtype=np.float64)
        b = np.asarray(reference[0] if isinstance(reference, (list, tuple)) else reference, dtype=np.float64)
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"}
    if a.shape != b.shape:
        return {"error": f"shape {list(a.shape)} vs {list(b.shape)}"}
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return {"error": "a result is not finite"}
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    return {"max_abs_diff": diff, "max_abs_ref": float(np.max(np.abs(b))) if b.size else 0.0}


def agrees(diff: dict | None) -> bool:
    """Whether an agreement record says the two results are the same within float32 rounding."""
    if not diff or "error" in diff:
        return False
    return diff["max_abs_diff"] <= RTOL * max(1.0, diff["max_abs_ref"])


def paired_ratio(entry: dict, base: dict) -> float | None:
    """Median over the rounds of entry's block time / base's block time in the same round.

    The two blocks of a round run within a second of each other, so this ratio sees little of
    the machine's slower and faster phases, which move both medians; None without rounds.
    """
    a, b = entry.get("per_round_ms") or [], base.get("per_round_ms") or []
    if not a or len(a) != len(b):
        return None
    return statistics.median(x / y for x, y in zip(a, b))


def _ratio(what: str, g: dict, engines: dict) -> tuple[float | None, float | None]:
    """The goal's ratio from the medians, and round by round (None where not measured)."""
    if what == "time / bandwidth bound":
        return g.get("vs_bound"), None
    peer = engines.get(RATIOS[what], {})
    if peer.get("status") != "ok" or not peer.get("median_ms"):
        return None, None
    value, paired = g["median_ms"] / peer["median_ms"], paired_ratio(g, peer)
    if what.startswith("speedup"):
        return 1 / value, (1 / paired if paired else None)
    return value, paired


def evaluate_goal(workload: dict, what: str, target: str) -> dict:
    """One goal of one workload: value, round-by-round value, met (True/False/None), status, note."""
    engines = workload["engines"]
    g = engines.get("graphc", {})
    out = {"workload": workload["name"], "what": what, "target": target, "value": None, "paired": None}
    if g.get("status") != "ok":
        status = g.get("status", "not run")
        return {**out, "met": False, "status": "failed", "note": f"graphc {status}: {g.get('note', '')}"}
    checker = RATIOS[what] or next((p for p in PEERS if engines.get(p, {}).get("status") == "ok"), None)
    peer = engines.get(checker, {}) if checker else {}
    if checker is None or peer.get("status") != "ok":
        why = (
            f"{checker} {peer.get('status', 'not run')}"
            if checker
            else "no peer ran to check graphc's result"
        )
        note = f"{why}: {peer['note']}" if peer.get("note") else why
        return {**out, "met": None, "status": "n/a", "note": note}
    value, paired = _ratio(what, g, engines)
    out.update(value=value, paired=paired)
    diff = g.get("agreement", {}).get(checker)
    if not agrees(diff):
        result = "loss" if workload.get("kind") == "train" else "output"
        how = (
            diff.get("error")
            if diff and "error" in diff
            else f"by {(diff or {}).get('max_abs_diff', float('nan')):.3g}"
        )
        return {
            **out,
            "met": False,
            "status": "missed",
            "note": f"graphc's {result} differs from {checker}'s ({how})",
        }
    if value is None:
        return {**out, "met": None, "status": "n/a", "note": "ratio not measured"}
    op, limit = target.split()
    met = value <= float(limit) if op == "<=" else value >= float(limit)
    return {**out, "met": met, "status": "met" if met else "missed", "note": ""}


def evaluate_targets(workloads: list[dict]) -> list[dict]:
    """graphc's goals of every workload against this run's ratios.

    A ratio between two engines is of their medians; the round-by-round ratio (``paired``) is
    given beside it and does not decide.
    """
    return [evaluate_goal(w, what, target) for w in workloads for what, target in w.get("goals", [])]


__all__ = ["BASELINE", "RATIOS", "agreement", "agrees", "check_goals", "evaluate_targets", "paired_ratio"]
