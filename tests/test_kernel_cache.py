"""The CPU kernel cache: generated source on disk by content hash, numba's compiled code beside
it, reused by a second process without compiling; shared within a process by source. The
cache is trusted only as far as it is checked: a file not matching its name is regenerated and
never run, damaged entries are repaired, folders that others can write are refused, and the
folder changes with graphc's version and the helper modules kernels import."""

from __future__ import annotations

import ast
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from graphc.ir import Graph, GraphcError, TensorType
from graphc.kernels import cache_dir, cache_store, cpu
from graphc.kernels.cpu import cache

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    from graphc.ir import Graph, TensorType
    from graphc.kernels import cpu
    from graphc.kernels.cpu.cache import kernel_dir, source_hash

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
        "dir": str(kernel_dir()),
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
    kernel_dir = Path(first["dir"])
    assert kernel_dir.parent == tmp_path / "kernels"
    for folder in (kernel_dir, kernel_dir.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
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
    assert cache.kernel_dir() == tmp_path / "c" / "kernels" / cache_dir.kernel_salt()
    monkeypatch.delenv("GRAPHC_CACHE_DIR")
    assert cache.cache_root() == Path.home() / ".cache" / "graphc"


def test_existing_file_is_reused_not_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    source = "# a kernel module written by another process\nVALUE = 41 + 1\n"
    path = cache.kernel_dir() / f"{cache.source_hash(source)}.py"
    path.parent.mkdir(parents=True, mode=0o700)
    path.parent.parent.chmod(0o700)
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


def test_edited_kernel_is_regenerated_not_run_and_damaged_numba_index_is_rebuilt(tmp_path):
    first = _run(tmp_path)
    source = Path(first["dir"]) / f"{first['hash']}.py"
    text = source.read_text()
    marker = tmp_path / "planted-code-ran"
    source.write_text(f"open({str(marker)!r}, 'w').close()\n{text}")  # an edit that would run code

    edited = _run(tmp_path)
    assert not marker.exists()  # the edited file was never imported
    assert edited["ok"] and edited["hash"] == first["hash"]
    assert source.read_text() == text  # regenerated in place
    assert edited["misses"] == 1 and edited["hits"] == 0  # numba's files for the old text are gone

    (index,) = (source.parent / "__pycache__").glob(f"{first['hash']}.kernel-*.nbi")
    index.write_bytes(b"\x80\x05not a pickle")
    damaged = _run(tmp_path)
    assert damaged["ok"] and damaged["misses"] == 1  # compiled afresh instead of failing
    again = _run(tmp_path)
    assert again["ok"] and again["hits"] == 1 and again["misses"] == 0  # the rebuilt index is used


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """GRAPHC_CACHE_DIR and the temporary folder (fallbacks) under tmp_path; fresh salt and fallbacks."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    cache_dir._process_dir.cache_clear()
    cache_dir.kernel_salt.cache_clear()
    yield tmp_path
    cache_dir._process_dir.cache_clear()
    cache_dir.kernel_salt.cache_clear()


def _unique_source(tmp_path: Path, body: str = "VALUE = 42\n") -> str:
    return f"# test module for {tmp_path}\n{body}"  # a digest no other test has loaded


def test_planted_file_is_replaced_before_anything_runs(private_cache):
    source = _unique_source(private_cache)
    path = cache.kernel_dir() / f"{cache.source_hash(source)}.py"
    path.parent.mkdir(parents=True)
    marker = private_cache / "ran"
    path.write_text(f"open({str(marker)!r}, 'w').close()\nVALUE = 41\n")
    pycache = path.parent / "__pycache__"
    pycache.mkdir()
    stale = pycache / f"{path.stem}.kernel-3.py312.nbi"
    stale.write_bytes(b"index of the planted text")
    assert cache.load_module(source).VALUE == 42
    assert not marker.exists()
    assert path.read_text() == source and not stale.exists()
    assert not list(path.parent.glob(".tmp-*"))


def test_truncated_source_is_regenerated(private_cache):
    source = _unique_source(private_cache, "def kernel(x):\n    return x + 1\n")
    path = cache.kernel_dir() / f"{cache.source_hash(source)}.py"
    path.parent.mkdir(parents=True)
    path.write_text(source[: len(source) - 12])  # a syntax error if imported
    assert cache.load_kernel(source)(1) == 2
    assert path.read_text() == source


def test_a_failing_import_is_retried_once_from_a_regenerated_entry(private_cache, monkeypatch):
    real = cache_store._exec_module
    calls = []

    def flaky(name, path, source):
        calls.append(path)
        if len(calls) == 1:
            (path.parent / "__pycache__").mkdir(exist_ok=True)
            (path.parent / "__pycache__" / f"{path.stem}.kernel-2.py312.nbi").write_bytes(b"damaged")
            raise EOFError("truncated cache data")
        return real(name, path, source)

    monkeypatch.setattr(cache_store, "_exec_module", flaky)
    source = _unique_source(private_cache)
    assert cache.load_module(source).VALUE == 42
    assert len(calls) == 2 and calls[0] == calls[1]
    assert not list((calls[0].parent / "__pycache__").glob(f"{calls[0].stem}.*"))  # the entry was purged

    monkeypatch.setattr(cache_store, "_exec_module", lambda *a: (_ for _ in ()).throw(EOFError("still bad")))
    with pytest.raises(GraphcError, match=r"generated kernel .*\.py does not load: EOFError: still bad"):
        cache.load_module(_unique_source(private_cache, "VALUE = 43\n"))


def _load_expecting_refusal(tmp_path: Path, refused: Path) -> Path:
    source = _unique_source(tmp_path, f"VALUE = {len(str(refused))}\n")
    with pytest.warns(UserWarning, match=f"kernel cache folder {re.escape(str(refused))} "):
        module = cache.load_module(source)
    path = Path(module.__file__)
    assert not path.is_relative_to(refused) and path.read_text() == source
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    return path


def test_a_cache_folder_others_can_write_is_refused(private_cache):
    kernels = private_cache / "cache" / "kernels"
    kernels.mkdir(parents=True)
    kernels.chmod(0o777)
    path = _load_expecting_refusal(private_cache, kernels)
    assert path.is_relative_to(private_cache / "tmp" / f"graphc-{os.getuid()}" / "kernels")
    assert not list(kernels.rglob("*.py"))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another uid needs root")
def test_folders_owned_by_another_user_are_refused(private_cache):
    kernels = private_cache / "cache" / "kernels"
    kernels.mkdir(parents=True, mode=0o700)
    os.chown(kernels, 54321, 54321)
    _load_expecting_refusal(private_cache, kernels)
    fallback = private_cache / "tmp" / f"graphc-{os.getuid()}"  # reused by the last test's load
    os.chown(fallback, 54321, 54321)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the kernels folder's warning, shown once already
        path = _load_expecting_refusal(private_cache, fallback)
    assert path.parent.parent.parent == cache_dir._process_dir()  # a fresh private folder
    assert stat.S_IMODE(cache_dir._process_dir().stat().st_mode) == 0o700


def test_a_symlinked_cache_folder_is_refused(private_cache):
    elsewhere = private_cache / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    kernels = private_cache / "cache" / "kernels"
    kernels.parent.mkdir()
    kernels.symlink_to(elsewhere)
    _load_expecting_refusal(private_cache, kernels)
    assert not list(elsewhere.rglob("*.py"))


def test_salt_follows_graphc_version_and_helper_sources(private_cache, monkeypatch):
    helper = private_cache / "helper.py"
    helper.write_text("def f():\n    return 1\n")
    monkeypatch.setattr(cache_dir, "helper_files", lambda: {"graphc.kernels.cpu.helper": helper})
    monkeypatch.setattr(cache_dir, "graphc_version", lambda: "1.0")
    cache_dir.kernel_salt.cache_clear()
    before = cache.kernel_dir()
    assert before.parent == private_cache / "cache" / "kernels"
    assert cache.kernel_dir() == before  # computed once: stable within a process

    helper.write_text("def f():\n    return 2\n")
    cache_dir.kernel_salt.cache_clear()
    edited = cache.kernel_dir()
    monkeypatch.setattr(cache_dir, "graphc_version", lambda: "1.1")
    cache_dir.kernel_salt.cache_clear()
    upgraded = cache.kernel_dir()
    assert len({before, edited, upgraded}) == 3


def test_salt_covers_every_graphc_module_generated_kernels_import():
    imported = set()
    for path in (REPO / "kernels").rglob("*.py"):  # the templates of generated source are strings
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                imported |= set(re.findall(r"^\s*from (graphc[\w.]*) import", node.value, re.M))
                imported |= set(re.findall(r"^\s*import (graphc[\w.]*)", node.value, re.M))
    assert imported  # the scan finds the templates' imports (intrinsics, blas)
    assert imported <= set(cache_dir.HELPER_MODULES)
    assert all(p.is_file() for p in cache_dir.helper_files().values())
