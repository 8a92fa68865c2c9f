"""Compile time, cold and warm, each measured in a fresh process.

Cold: fresh, empty cache folders (GRAPHC_CACHE_DIR, NUMBA_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR);
warm: a second process over the same folders. The time is from the start of compilation to the
end of the first step (torch.compile compiles on its first call), after imports. The probe
process is ``python -m graphc.bench.probe FILE ENGINE DEVICE THREADS``; it prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from typing import Any

from .engines import Skip, build_engine, first_line
from .threads import set_threads
from .weights import seeded_graphc_model, state_of


def probe(path: str, engine: str, device: str, threads: int) -> dict:
    """In this (fresh) process: compile one engine's workload; its compile + first step seconds."""
    from .workloads import load_workload

    set_threads(threads)
    w = load_workload(path)
    try:
        state = state_of(seeded_graphc_model(w.model))
    except Exception:
        state = None
    try:
        runner = build_engine(engine, w, w.inputs(), state, device, threads)
    except Skip as err:
        return {"skipped": str(err)}
    except Exception as err:
        return {"failed": f"{type(err).__name__}: {first_line(err)}"}
    return {"compile_s": runner.compile_s}


def compile_times(path: str, engine: str, device: str, threads: int, timeout: float = 900) -> dict:
    """Cold (fresh empty caches) and warm (same caches again) compile times, each in a subprocess."""
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="graphc-bench-cache-") as tmp:
        env = dict(os.environ)
        env.update(
            GRAPHC_CACHE_DIR=os.path.join(tmp, "graphc"),
            NUMBA_CACHE_DIR=os.path.join(tmp, "numba"),
            TORCHINDUCTOR_CACHE_DIR=os.path.join(tmp, "inductor"),
            TRITON_CACHE_DIR=os.path.join(tmp, "triton"),
            PYTHONWARNINGS="ignore",
        )
        cmd = [sys.executable, "-m", "graphc.bench.probe", str(path), engine, device, str(threads)]
        for phase in ("cold", "warm"):
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                result[f"compile_{phase}_note"] = f"timed out after {timeout:.0f} s"
                break
            line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
            if proc.returncode != 0 or line is None:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                result[f"compile_{phase}_note"] = f"probe failed (rc {proc.returncode}): {tail[:200]}"
                break
            data = json.loads(line)
            if "compile_s" not in data:
                result[f"compile_{phase}_note"] = data.get("skipped") or f"failed: {data.get('failed')}"
                break
            result[f"compile_{phase}_s"] = data["compile_s"]
    return result


def main(argv: list[str]) -> int:
    """The probe process: ``FILE ENGINE DEVICE THREADS`` in, one JSON line out."""
    if len(argv) != 4:
        print("usage: python -m graphc.bench.probe FILE ENGINE DEVICE THREADS", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    path, engine, device, threads = argv
    print(json.dumps(probe(path, engine, device, int(threads))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
