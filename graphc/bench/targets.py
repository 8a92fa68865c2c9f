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


def _check_condition(what: str, target: str, where: str) -> None:
    parts = target.split()
    ok = len(parts) == 2 and parts[0] in ("<=", ">=")
    try:
        ok = ok and float(parts[1]) == float(parts[1])
    except ValueError:
        ok = False
    if not ok:
        raise GraphcError(f"{where}: target {target!r} of {what!r} must read '<= number' or '>= number'")


def check_goals(targets: tuple[tuple[str, str], ...], where: str) -> None:
    """GraphcError naming the file when a goal names an unknown ratio or is not ``<= x``/``>= x``."""
    for what, target in targets:
        if what not in RATIOS:
            raise GraphcError(f"{where}: TARGETS ratio {what!r} is not one of {', '.join(RATIOS)}")
        _check_condition(what, target, where)


def check_custom_goals(targets: tuple[tuple[str, str], ...], where: str) -> None:
    """A custom workload's goals: each ratio reads ``A / B`` (as its cases name it), each target ``<= x``."""
    for what, target in targets:
        if len(what.split(" / ")) != 2 or not all(p.strip() for p in what.split(" / ")):
            raise GraphcError(f"{where}: TARGETS ratio {what!r} must read 'A / B', e.g. 'graphc / torch'")
        _check_condition(what, target, where)


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
    met = _meets(value, target)
    return {**out, "met": met, "status": "met" if met else "missed", "note": ""}


def _meets(value: float, target: str) -> bool:
    op, limit = target.split()
    return value <= float(limit) if op == "<=" else value >= float(limit)


def _disagrees(g: dict, peer: str) -> bool:
    """Whether a custom workload's graphc entry says its result did not match ``peer``'s."""
    flag = g.get("agrees", True)
    if isinstance(flag, dict):
        return flag.get(peer, True) is False
    return flag is False


def evaluate_custom_goal(workload: dict, case: dict, what: str, target: str) -> dict:
    """One goal of a custom workload on one case: its ratio, whether graphc agreed, the verdict."""
    num, den = (p.strip() for p in what.split(" / "))
    engines = case["engines"]
    g = engines.get(num) or engines.get("graphc", {})
    name = f"{workload['name']} {case['case']}".strip()
    out = {"workload": name, "what": what, "target": target, "value": None, "paired": None}
    if g.get("status") != "ok":
        status = g.get("status", "not run")
        return {**out, "met": False, "status": "failed", "note": f"graphc {status}: {g.get('note', '')}"}
    peer = engines.get(den)
    if peer is not None and peer.get("status") != "ok":
        why = f"{den} {peer.get('status', 'not run')}"
        note = f"{why}: {peer['note']}" if peer.get("note") else why
        return {**out, "met": None, "status": "n/a", "note": note}
    value = case.get("ratios", {}).get(what)
    paired = paired_ratio(g, peer) if peer is not None else None
    out.update(value=value, paired=paired)
    if _disagrees(g, den):
        how = (g.get("agreement") or {}).get(den, "")
        return {
            **out,
            "met": False,
            "status": "missed",
            "note": f"graphc's result differs from {den}'s" + (f" ({how})" if how else ""),
        }
    if value is None or not isinstance(value, (int, float)) or value != value:
        return {**out, "value": None, "met": None, "status": "n/a", "note": "ratio not measured"}
    met = _meets(value, target)
    return {**out, "met": met, "status": "met" if met else "missed", "note": ""}


def evaluate_custom(workload: dict) -> list[dict]:
    """A custom workload's goals, per case that reports the goal's ratio (or any that names its engines)."""
    out = []
    for what, target in workload.get("goals", []):
        if workload.get("error"):
            out.append(
                {
                    "workload": workload["name"],
                    "what": what,
                    "target": target,
                    "value": None,
                    "paired": None,
                    "met": False,
                    "status": "failed",
                    "note": workload["error"],
                }
            )
            continue
        num, den = (p.strip() for p in what.split(" / "))
        cases = [
            c
            for c in workload.get("cases", [])
            if what in c.get("ratios", {}) or (num in c["engines"] and den in c["engines"])
        ]
        out += [evaluate_custom_goal(workload, c, what, target) for c in cases]
        if not cases:
            out.append(
                {
                    "workload": workload["name"],
                    "what": what,
                    "target": target,
                    "value": None,
                    "paired": None,
                    "met": None,
                    "status": "n/a",
                    "note": "no case measured this ratio",
                }
            )
    return out


def evaluate_targets(workloads: list[dict]) -> list[dict]:
    """graphc's goals of every workload against this run's ratios.

    A ratio between two engines is of their medians; the round-by-round ratio (``paired``) is
    given beside it and does not decide.
    """
    out = []
    for w in workloads:
        if w.get("kind") == "custom":
            out += evaluate_custom(w)
        else:
            out += [evaluate_goal(w, what, target) for what, target in w.get("goals", [])]
    return out


__all__ = [
    "BASELINE",
    "RATIOS",
    "agreement",
    "agrees",
    "check_custom_goals",
    "check_goals",
    "evaluate_targets",
    "paired_ratio",
]
