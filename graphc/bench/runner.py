"""One bench run: build every engine on each workload, check graphc against the peers, time them."""

from __future__ import annotations

import gc
import os
import platform
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from graphc.ir import GraphcError

from . import environment
from .custom import run_custom
from .engines import BASELINE, PEERS, Runner, Skip, build_engine, first_line
from .probe import compile_times
from .profile import profile_plan
from .targets import agreement, check_goals, evaluate_targets
from .threads import default_threads, restore_threads, set_threads
from .timing import MiB, machine_limits, measure
from .weights import seeded_graphc_model, state_of
from .workloads import load_workload, other_scripts, resolve, suite_dir, workload_kind

SCHEMA_VERSION = 3  # 3: custom workloads ("kind": "custom", with "cases" and "notes")
COPY = "copy 32 MiB"  # the pseudo-engine timing a bandwidth-bound copy next to the engines


def _failure(err: BaseException) -> str:
    if os.environ.get("GRAPHC_BENCH_DEBUG"):
        traceback.print_exception(err)
    return f"{type(err).__name__}: {first_line(err)}"


def _not_loaded(path: Path, engines: list[str], err: BaseException) -> dict:
    """A workload whose file did not load: graphc failed on it; the peers did not run."""
    out: dict[str, Any] = {"name": path.stem, "file": str(path), "kind": None, "what": "", "batch": None}
    out["engines"] = {
        "graphc": {"status": "failed", "note": f"the workload file did not load: {_failure(err)}"}
    }
    for e in engines[1:]:
        out["engines"][e] = {"status": "skipped", "note": "the workload file did not load"}
    return out


def _build_all(w: Any, engines: list[str], inputs: tuple, device: str, threads: int, log: Callable) -> tuple:
    """Runners of the engines that built, and each engine's entry (ok / skipped / failed)."""
    entries: dict[str, dict] = {}
    try:
        state = state_of(seeded_graphc_model(w.model))
    except Exception:  # graphc's model() fails: graphc's build says why; the peers keep their weights
        state = None
    runners: dict[str, Runner] = {}
    for engine in engines:
        log(f"  {w.name}: building {engine} ...")
        try:
            r = runners[engine] = build_engine(engine, w, inputs, state, device, threads)
            entries[engine] = {"status": "ok", "compile_inprocess_s": r.compile_s, "model": r.model_source}
            if r.note:
                entries[engine]["note"] = r.note
            if r.memory:
                entries[engine]["memory"] = r.memory
        except Skip as err:  # only a peer skips
            entries[engine] = {"status": "skipped", "note": str(err)}
        except Exception as err:  # graphc's ImportError too: a failure, never a skip
            entries[engine] = {"status": "failed", "note": _failure(err)}
        if engine != "graphc" and state is None and engine in runners:
            entries[engine]["note"] = "own initial weights (graphc's model() failed)"
        gc.collect()
    return runners, entries


def _check(w: Any, runners: dict[str, Runner], entries: dict[str, dict]) -> None:
    """Each engine's first result against torch eager's; graphc's against every peer's."""
    key = "loss_diff" if w.kind == "train" else "output_diff"
    if BASELINE in runners:
        for engine, r in runners.items():
            entries[engine][key] = agreement(r.first, runners[BASELINE].first)
    if "graphc" in runners:
        entries["graphc"]["agreement"] = {
            peer: agreement(runners["graphc"].first, r.first)
            for peer, r in runners.items()
            if peer != "graphc"
        }
    if w.kind == "train":
        for engine, r in runners.items():
            entries[engine]["first_loss"] = float(np.asarray(r.first))


def run_workload(
    path: Path | str,
    engines: list[str],
    *,
    device: str,
    threads: int,
    repeat: int,
    warmup: int,
    min_time: float,
    settle: float = 0.2,
    compile_time: bool,
    profile: bool,
    quick: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Build, check and time one workload file on the engines; a dict of the results.

    A custom workload (graphc.bench.custom) times itself: it gets the run's settings and the
    peers asked for, and compile time and profiles are its own business.
    """
    path = Path(path)
    if path.suffix == ".py" and workload_kind(path) == "custom":
        return run_custom(
            path,
            engines[1:],
            threads=threads,
            repeat=repeat,
            warmup=warmup,
            min_time=min_time,
            settle=settle,
            quick=quick,
            log=log,
        )
    try:
        w = load_workload(path)
        check_goals(w.targets, str(path))
        inputs = w.inputs()
    except Exception as err:
        return _not_loaded(path, engines, err)
    result: dict[str, Any] = {
        "name": w.name,
        "file": str(path),
        "kind": w.kind,
        "what": w.what,
        "batch": w.batch,
    }
    if w.optimizer:
        result["optimizer"] = {"name": w.optimizer[0], **w.optimizer[1]}
    result["goals"] = [list(t) for t in w.targets]
    runners, entries = _build_all(w, engines, inputs, device, threads, log)
    result["engines"] = entries
    _check(w, runners, entries)
    log(f"  {w.name}: timing {', '.join(runners)} ({repeat} rounds) ...")
    timed: dict[str, Runner] = dict(runners)
    if w.moved_bytes is not None:
        # The bound's copy is timed in the same rounds as the engines, so it sees the same noise.
        src = np.ones(32 * MiB // 4, np.float32)
        dst = np.empty_like(src)
        timed[COPY] = Runner(lambda: np.copyto(dst, src), None, 0.0)
    timings = measure(timed, repeat, warmup, min_time, settle)
    copy = timings.pop(COPY, None)
    for engine, t in timings.items():
        entries[engine].update(t if t["status"] != "ok" else {k: v for k, v in t.items() if k != "status"})
    base = entries.get(BASELINE, {})
    for entry in entries.values():
        if entry.get("status") == "ok" and base.get("status") == "ok":
            entry["vs_torch"] = entry["median_ms"] / base["median_ms"]
    if copy is not None and copy["status"] == "ok":
        moved = int(w.moved_bytes(inputs))
        bandwidth = 2 * 32 * MiB / (copy["median_ms"] * 1e-3)  # bytes read + written per second
        result.update(
            moved_bytes=moved, bound_bandwidth_gbs=bandwidth / 1e9, bound_ms=1e3 * moved / bandwidth
        )
        for entry in entries.values():
            if entry.get("status") == "ok":
                entry["vs_bound"] = entry["median_ms"] / result["bound_ms"]
    graphc = runners.get("graphc")
    if profile and entries.get("graphc", {}).get("status") == "ok" and hasattr(graphc.plan, "steps"):
        log(f"  {w.name}: profiling graphc kernels ...")
        try:
            result["profile"] = profile_plan(graphc.plan, graphc.step, reps=max(5, repeat))
        except Exception as err:
            result["profile"] = {"error": _failure(err)}
    runners.clear()
    gc.collect()
    if compile_time:
        for engine, entry in entries.items():
            if entry.get("status") == "ok" and engine != BASELINE:
                log(f"  {w.name}: compile time of {engine} (cold, warm) ...")
                entry.update(compile_times(str(path), engine, device, threads))
    return result


def run_bench(
    items: list[str] | None = None,
    compare: list[str] | None = None,
    *,
    threads: int | None = None,
    repeat: int = 15,
    warmup: int = 3,
    min_time: float = 0.05,
    settle: float = 0.2,
    device: str = "cpu",
    compile_time: bool = True,
    profile: bool = False,
    quick: bool = False,
    suite: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run model files or suite workloads (none: the whole suite); the results as a JSON-compatible dict."""
    folder = suite or suite_dir()
    paths = resolve(list(items or []), folder)
    compare = list(compare or [])
    bad = [e for e in compare if e not in PEERS]
    if bad:
        raise GraphcError(f"unknown engine(s) {bad} in --compare; choose from {', '.join(PEERS)}")
    if quick:
        repeat, warmup, min_time, settle = min(repeat, 2), 1, 0.0, 0.0
    threads = threads or default_threads()
    engines = ["graphc", *[e for e in PEERS if e in compare]]
    how = set_threads(threads)
    try:
        load_start = environment.loadavg()
        log(f"graphc bench: {', '.join(p.stem for p in paths)} on {', '.join(engines)}; {threads} thread(s)")
        limits = machine_limits(repeat=3 if quick else 10)
        results = [
            run_workload(
                p,
                engines,
                device=device,
                threads=threads,
                repeat=repeat,
                warmup=warmup,
                min_time=min_time,
                settle=settle,
                compile_time=compile_time,
                profile=profile,
                quick=quick,
                log=log,
            )
            for p in paths
        ]
        return {
            "schema": SCHEMA_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "threads": threads,
                "threads_set_by": how,
                "device": device,
                "versions": environment.versions(),
                "blas": environment.blas_info(),
                "threading": environment.threading_info(),
                "loadavg_start": load_start,
                "loadavg_end": environment.loadavg(),
            },
            "settings": {
                "repeat": repeat,
                "warmup": warmup,
                "min_time_s": min_time,
                "settle_s": settle,
                "quick": quick,
                "compile_time": compile_time,
                "engines": engines,
                "baseline": BASELINE,
                "suite": str(folder) if folder else None,
                "other_scripts": [p.name for p in other_scripts(folder)] if folder and not items else [],
            },
            "limits": limits,
            "workloads": results,
            "targets": evaluate_targets(results),
        }
    finally:
        restore_threads()  # a caller's process keeps its own thread settings


def graphc_failures(data: dict) -> list[str]:
    """The workloads graphc failed on, with why (for a custom workload: its file or measure(), or an
    engine of graphc's, any named ``graphc...``, in one of its cases)."""
    out = []
    for w in data["workloads"]:
        if w.get("kind") == "custom":
            if w.get("error"):
                out.append(f"{w['name']}: {w['error']}")
            for case in w.get("cases", []):
                for engine, e in case["engines"].items():
                    if engine.startswith("graphc") and e.get("status") == "failed":
                        out.append(f"{w['name']} {case['case']} ({engine}): {e.get('note', '')}")
            continue
        g = w["engines"].get("graphc", {})
        if g.get("status") == "failed":
            out.append(f"{w['name']}: {g.get('note', '')}")
    return out
