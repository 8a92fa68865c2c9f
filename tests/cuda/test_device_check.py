"""Type-check (and, with NVVM installed, compile to PTX) every generated kernel for the real GPU target.

The simulator runs kernels as Python and checks no types, so this runs the same kernels through
numba's CUDA compiler in a subprocess with the simulator switched off; no GPU is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cudasim
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.setdefault("GRAPHC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    proc = subprocess.run(
        [sys.executable, str(HERE / "device_check_main.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=HERE,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def test_every_kernel_types_for_the_cuda_target(report: dict) -> None:
    assert report["failures"] == [], json.dumps(report["failures"], indent=1)[:6000]
    assert report["checked"] > 100


def test_every_kernel_compiles_to_ptx(report: dict) -> None:
    if report["ptx_unavailable"]:
        pytest.skip(f"numba.cuda.compile_ptx unavailable: {report['ptx_unavailable']}")
    assert report["failures"] == []
    assert report["ptx"] == report["checked"]


def test_no_gpu_is_one_clear_line(report: dict) -> None:
    if report["device_problem"] is None:
        pytest.skip("this machine has a usable GPU")
    message = report["compile_error"]
    assert message is not None and message.startswith("device='cuda': "), message
    assert "\n" not in message and "NOT A GraphcError" not in message
