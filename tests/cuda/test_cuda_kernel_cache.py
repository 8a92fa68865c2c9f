"""The CUDA kernel cache gets the CPU cache's checks: a cached module whose text is not the
generated source (edited, planted, truncated) is regenerated and never run, in a private
folder that changes with graphc's version."""

from __future__ import annotations

import numpy as np
import pytest
from cuda_cases import prim

from graphc.kernels import cache_dir
from graphc.kernels import cuda as kc
from graphc.kernels.cuda import compiled

pytestmark = pytest.mark.cudasim


def test_planted_module_is_regenerated_not_run(tmp_path, monkeypatch) -> None:
    from numba import cuda

    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    x = np.linspace(-1.0, 1.0, 5 * 13, dtype=np.float32).reshape(5, 13)  # a shape no other test uses
    node = prim("neg", [x])
    source = kc.kernel_sources(node)
    path = compiled.source_path(source)
    assert path.parent == tmp_path / "cuda" / cache_dir.kernel_salt()
    path.parent.mkdir(parents=True, mode=0o700)
    marker = tmp_path / "planted-code-ran"
    path.write_text(f"open({str(marker)!r}, 'w').close()\n{source}")

    kernel = kc.compile_node(node)
    out = cuda.device_array(x.shape, x.dtype)
    kernel(cuda.to_device(x), out)
    np.testing.assert_array_equal(out.copy_to_host(), -x)
    assert not marker.exists()
    assert kernel.path == path and path.read_text() == source
