"""Shared by the MPI benchmarks: start a script under ``mpiexec -n N`` and collect rank 0's results.

A benchmark script run as plain python relaunches itself (``relaunch``); the suite's
``measure(opts)`` runs it under mpiexec with ``--json FILE`` (``run_json``) and reads what rank 0
wrote there. Every rank gets one numba, OpenMP and BLAS thread.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def under_mpiexec() -> bool:
    """Whether this process was started by an MPI launcher (MPICH's hydra or Open MPI's)."""
    return any(k in os.environ for k in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"))


def mpiexec_path() -> str | None:
    """The mpiexec next to this Python (the MPICH wheel's), else the one on PATH, else None."""
    return shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def _env(threads: int = 1) -> dict[str, str]:
    n = str(threads)
    # Rank threads are fixed here, whatever the calling process set for itself.
    return {**os.environ, "NUMBA_NUM_THREADS": n, "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


def relaunch(script: str, ranks: int, argv: list[str]) -> int:
    """Run ``script`` with ``argv`` on ``ranks`` ranks (one numba thread each); its exit status."""
    mpiexec = mpiexec_path()
    if mpiexec is None:
        sys.exit("no mpiexec: pip install 'graphc[mpi]'")
    return subprocess.call([mpiexec, "-n", str(ranks), sys.executable, script, *argv], env=_env())


def run_json(script: str, ranks: int, argv: list[str], timeout: float) -> dict[str, Any]:
    """Run ``script --json FILE *argv`` on ``ranks`` ranks; the dict rank 0 wrote to FILE.

    Raises RuntimeError (with the job's last output) when mpiexec is missing, the job fails or
    runs past ``timeout`` seconds, or writes no results.
    """
    mpiexec = mpiexec_path()
    if mpiexec is None:
        raise RuntimeError("no mpiexec (pip install 'graphc[mpi]')")
    with tempfile.TemporaryDirectory(prefix="graphc-mpi-") as tmp:
        out = Path(tmp) / "results.json"
        cmd = [mpiexec, "-n", str(ranks), sys.executable, script, "--json", str(out), *argv]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"mpiexec -n {ranks} {Path(script).name} ran past {timeout:g} s") from None
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"mpiexec -n {ranks} {Path(script).name} exited {done.returncode}: " + " | ".join(tail)
            )
        return json.loads(out.read_text())


def write_json(path: str | None, results: dict[str, Any]) -> None:
    """Write ``results`` to ``path`` (rank 0 calls this; nothing when ``path`` is None)."""
    if path:
        Path(path).write_text(json.dumps(results))
