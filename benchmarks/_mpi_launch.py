"""Shared by the MPI benchmarks: start the script under ``mpiexec -n N`` when run as plain python."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def under_mpiexec() -> bool:
    """Whether this process was started by an MPI launcher (MPICH's hydra or Open MPI's)."""
    return any(k in os.environ for k in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"))


def relaunch(script: str, ranks: int, argv: list[str]) -> int:
    """Run ``script`` with ``argv`` on ``ranks`` ranks (one numba thread each); its exit status."""
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("no mpiexec: pip install 'graphc[mpi]'")
    env = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **os.environ}
    return subprocess.call([mpiexec, "-n", str(ranks), sys.executable, script, *argv], env=env)
