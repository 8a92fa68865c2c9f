"""The results as a table, as strict JSON, and as a bar chart."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from .environment import blas_lines
from .profile import format_profile
from .targets import agrees
from .timing import MiB


def _fmt(v: Any, spec: str = ".3f", none: str = "-") -> str:
    return none if v is None else format(v, spec)


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / MiB:.2f}"


def format_targets(targets: list[dict]) -> list[str]:
    """The lines of the targets section: this run's ratio, the round-by-round one, and the verdict."""
    lines = ["graphc targets (this run's ratios; by round = the median of per-round ratios):"]
    width = max([20, *(len(t["workload"]) for t in targets)])
    what_width = max([26, *(len(t["what"]) for t in targets)])
    for t in targets:
        verdict = {"met": "met", "missed": "MISSED", "failed": "FAILED"}.get(t.get("status"), "n/a")
        if t.get("note"):
            verdict += f" ({t['note']})"
        paired = f", by round {t['paired']:.2f}" if t.get("paired") is not None else ""
        lines.append(
            f"  {t['workload']:<{width}} {t['what']:<{what_width}} {_fmt(t['value'], '.2f'):>7} "
            f"(target {t['target']}{paired}): {verdict}"
        )
    return lines


def header(data: dict) -> list[str]:
    """Machine, BLAS (with a warning when the environment forces its kernel), limits, legend."""
    m, lim = data["machine"], data["limits"]
    lines = [
        f"machine: {m['processor']}, {m['threads']} thread(s) ({m['threads_set_by']}), device {m['device']}; "
        f"load average {m.get('loadavg_start')} at start, {m.get('loadavg_end')} at end",
        *blas_lines(m.get("blas") or {"note": "not recorded"}),
        f"limits: NumPy sgemm {lim['sgemm_n']}³ {lim['sgemm_gflops']:.1f} GFLOP/s "
        f"(best {lim['sgemm_gflops_best']:.1f}); copy bandwidth ({lim['copy_bytes'] // MiB} MiB, "
        f"read + write) {lim['copy_bandwidth_gbs']:.2f} GB/s (best {lim['copy_bandwidth_gbs_best']:.2f})",
        "ratio = median time / torch eager's median (lower is better); compile = compile + first step, "
        "cold (empty caches) / warm, in a fresh process",
    ]
    others = data["settings"].get("other_scripts") or []
    if others:
        lines.append(
            f"also in the suite folder, run on their own (python benchmarks/NAME): {', '.join(others)}"
        )
    return [*lines, ""]


def _notes(engine: str, e: dict) -> list[str]:
    notes = [e[k] for k in ("note", "compile_cold_note", "compile_warm_note") if e.get(k)]
    diff = e.get("loss_diff") or e.get("output_diff")
    if engine != "torch" and diff and not agrees(diff):
        notes.append(f"differs from torch eager: {diff.get('error') or format(diff['max_abs_diff'], '.3g')}")
    if engine == "graphc":
        for peer, d in (e.get("agreement") or {}).items():
            if peer != "torch" and not agrees(d):
                notes.append(f"differs from {peer}: {d.get('error') or format(d['max_abs_diff'], '.3g')}")
    return notes


def _value(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return format(v, ".4g")


def _disagreement(flag: Any) -> str | None:
    """The note for a custom workload's ``agrees`` flag (bool, or peer -> bool); None when it agrees."""
    if isinstance(flag, dict):
        peers = [p for p, v in flag.items() if v is False]
        return f"DISAGREES with {', '.join(peers)}" if peers else None
    return "DISAGREES" if flag is False else None


def format_custom(w: dict) -> list[str]:
    """A custom workload's rows: per case, each engine's times, graphc's agreement, ratios, extras."""
    lines = [f"{w['name']:<20} {w.get('what', '')}"]
    if w.get("error"):
        return [*lines, f"{'':<20} FAILED: {w['error']}"]
    width = max([14, *(len(e) for case in w["cases"] for e in case["engines"])])
    for case in w["cases"]:
        for i, (engine, e) in enumerate(case["engines"].items()):
            name = f"  {case['case']}" if i == 0 else ""
            if e.get("status") != "ok":
                lines.append(f"{name:<20} {engine:<{width}} {e.get('status')}: {e.get('note', '')}")
                continue
            lines.append(
                f"{name:<20} {engine:<{width}} {e['median_ms']:>10.3f} {e['min_ms']:>9.3f} "
                f"{e['max_ms']:>9.3f}"
            )
            notes = [e["note"]] if e.get("note") else []
            notes += [f"vs {peer}: {text}" for peer, text in (e.get("agreement") or {}).items()]
            notes += [d for d in [_disagreement(e.get("agrees", True))] if d]
            lines += [f"{'':<20} {'':<{width}}   note: {note}" for note in notes]
        figures = [f"{k} {_value(v)}" for k, v in case.get("ratios", {}).items()]
        if figures:
            lines.append(f"{'':<20} ratios: {'; '.join(figures)}")
        extra = [f"{k} {_value(v)}" for k, v in case.get("extra", {}).items()]
        if extra:
            lines.append(f"{'':<20} extra: {'; '.join(extra)}")
    lines += [f"{'':<20} note: {n}" for n in w.get("notes", [])]
    return lines


def format_table(data: dict) -> str:
    """The results as a readable table (custom workloads: their cases, ratios and extras)."""
    lines = header(data)
    head = (
        f"{'workload':<20} {'engine':<14} {'median ms':>10} {'min ms':>9} {'max ms':>9} {'ratio':>7} "
        f"{'cold s':>7} {'warm s':>7}  memory MiB naive/bound/arena"
    )
    lines += [head, "-" * len(head)]
    for w in data["workloads"]:
        if w.get("kind") == "custom":
            lines += format_custom(w)
            continue
        for i, (engine, e) in enumerate(w["engines"].items()):
            name = w["name"] if i == 0 else ""
            if e.get("status") != "ok":
                lines.append(f"{name:<20} {engine:<14} {e.get('status')}: {e.get('note', '')}")
                continue
            mem = e.get("memory")
            mem_s = (
                f"{_mb(mem['naive_bytes'])}/{_mb(mem['lower_bound'])}/{_mb(mem['arena_bytes'])}"
                if mem
                else ""
            )
            ratio = _fmt(e.get("vs_torch"), ".2f") + ("x" if e.get("vs_torch") else "")
            lines.append(
                f"{name:<20} {engine:<14} {e['median_ms']:>10.3f} {e['min_ms']:>9.3f} {e['max_ms']:>9.3f} "
                f"{ratio:>7} {_fmt(e.get('compile_cold_s'), '.2f'):>7} "
                f"{_fmt(e.get('compile_warm_s'), '.2f'):>7}  {mem_s}"
            )
            lines += [f"{'':<20} {'':<14}   note: {note}" for note in _notes(engine, e)]
        if "bound_ms" in w:
            parts = [
                f"{eng} {e['vs_bound']:.2f}x"
                for eng, e in w["engines"].items()
                if e.get("vs_bound") is not None
            ]
            lines.append(
                f"{'':<20} bandwidth bound {w['bound_ms']:.3f} ms ({w['moved_bytes'] // MiB} MiB moved at "
                f"{w['bound_bandwidth_gbs']:.2f} GB/s, copies timed in the same rounds); "
                f"time / bound: {', '.join(parts) or '-'}"
            )
    if data.get("targets"):
        lines += ["", *format_targets(data["targets"])]
    for w in data["workloads"]:
        prof = w.get("profile")  # (custom workloads have none)
        if prof and "error" not in prof:
            lines += ["", format_profile(w["name"], prof)]
        elif prof:
            lines += ["", f"profile of graphc on {w['name']} failed: {prof['error']}"]
    return "\n".join(lines)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _clean(obj: Any) -> Any:
    """NaN and infinities become null, so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(data: dict, path: str) -> None:
    """Write the results as strict JSON (NaN as null)."""
    with open(path, "w") as f:
        json.dump(_clean(data), f, indent=1, default=_json_default, allow_nan=False)
        f.write("\n")


def plot(data: dict, path: str) -> str:
    """Bar chart of each engine's time relative to torch eager per workload; a note when impossible."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib not installed (pip install 'graphc[plot]')"
    workloads = [w for w in data["workloads"] if w.get("kind") != "custom"]  # their ratios are their own
    engines = data["settings"]["engines"]
    fig, ax = plt.subplots(figsize=(1.8 * max(3, len(workloads)), 4))
    width = 0.8 / max(1, len(engines))
    for i, engine in enumerate(engines):
        vals = [w["engines"].get(engine, {}).get("vs_torch") or 0.0 for w in workloads]
        ax.bar([j + i * width for j in range(len(workloads))], vals, width, label=engine)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks(
        [j + 0.4 - width / 2 for j in range(len(workloads))], [w["name"] for w in workloads], fontsize=8
    )
    ax.set_ylabel("time / torch eager (lower is better)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"wrote {path}"
