"""The CPU kernel cache: generated source on disk by content hash, numba's compiled code beside
it, reused by a second process without compiling; shared within a process by source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from graphc.ir import Graph, TensorType
from graphc.kernels import cpu
from graphc.kernels.cpu import cache

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    from graphc.ir import Graph, TensorType
    from graphc.kernels import cpu
    from graphc.kernels.cpu.cache import source_hash

    body = Graph("body")
    x = body.add_input("x", TensorType((4, 5)))
    m = body.op("max", x, axes=(1,), keepdims=True)
    e = body.op("exp", body.op("sub", x, m))
    body.add_output(body.op("div", e, body.op("sum", e, axes=(1,), keepdims=True)))
    g = Graph()
    node = g.add_fused([g.add_input("x", TensorType((4, 5)))], body, {"kind": "reduction"})
    fn = cpu.compile_node(node)
    xs = np.arange(20, dtype=np.float32).reshape(4, 5)
    out = np.empty_like(xs)
    fn(xs, out)
    ok = bool(np.allclose(out.sum(axis=1), 1.0))
    stats = fn.stats
    print(json.dumps({
        "hash": source_hash(cpu.kernel_source(node)),
        "hits": sum(stats.cache_hits.values()),
        "misses": sum(stats.cache_misses.values()),
        "ok": ok,
    }))
    """
)


def _run(cache_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}  # numba's cache beside the source
    env["GRAPHC_CACHE_DIR"] = str(cache_dir)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_compiled_kernel(tmp_path):
    first = _run(tmp_path)
    assert first["ok"] and first["misses"] == 1 and first["hits"] == 0
    kernel_dir = tmp_path / "kernels"
    source = kernel_dir / f"{first['hash']}.py"
    assert source.is_file()
    stamp = source.stat().st_mtime_ns
    cached = list((kernel_dir / "__pycache__").glob(f"{first['hash']}.kernel-*"))
    assert any(p.suffix == ".nbi" for p in cached) and any(p.suffix == ".nbc" for p in cached)

    second = _run(tmp_path)
    assert second["ok"] and second["hash"] == first["hash"]
    assert second["hits"] == 1 and second["misses"] == 0  # loaded, not compiled
    assert source.stat().st_mtime_ns == stamp  # never rewritten: numba's index stays valid
    assert not list(kernel_dir.glob(".tmp-*"))


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "c"))
    assert cache.kernel_dir() == tmp_path / "c" / "kernels"
    monkeypatch.delenv("GRAPHC_CACHE_DIR")
    assert cache.cache_root() == Path.home() / ".cache" / "graphc"


def test_existing_file_is_reused_not_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    source = "# a kernel module written by another process\nVALUE = 41 + 1\n"
    path = tmp_path / "kernels" / f"{cache.source_hash(source)}.py"
    path.parent.mkdir(parents=True)
    path.write_text(source)
    stamp = path.stat().st_mtime_ns
    assert cache.load_module(source).VALUE == 42
    assert cache.load_module(source) is cache.load_module(source)
    assert path.stat().st_mtime_ns == stamp


def _scaled_add(shape, prefix):
    g = Graph()
    x = g.add_input(f"{prefix}x", TensorType(shape))
    b = g.add_input(f"{prefix}b", TensorType(shape[-1:]))
    return g.add_node("add", [x, b], names=[f"{prefix}out"])


def test_same_pattern_shares_a_kernel_across_names_and_sizes():
    a, b = _scaled_add((3, 4), "first_"), _scaled_add((30, 40), "second_")
    assert cpu.kernel_source(a) == cpu.kernel_source(b)
    fa, fb = cpu.compile_node(a), cpu.compile_node(b)
    assert fa is fb
    x, v = np.ones((30, 40), np.float32), np.arange(40, dtype=np.float32)
    out = np.empty_like(x)
    fb(x, v, out)
    np.testing.assert_array_equal(out, x + v)
