"""Fused attention: which chains stitch, and the CPU kernel against float64 NumPy and the reference.

The oracle is softmax(q k^T * scale + mask) v written directly in float64 NumPy; the reference
executor (which runs the stitched body stage by stage) is checked too.
"""

from __future__ import annotations

import numpy as np
import pytest
from graph_testing import const, make_feeds, softmax

import graphc.compiler
import graphc.kernels.cpu
from graphc import passes
from graphc.ir import Graph, TensorType, parse_graph, print_graph, verify
from graphc.kernels.cpu import attention as cpu_attention
from graphc.kernels.cpu import blas
from graphc.kernels.reference import execute

NP = {"f32": np.float32, "f64": np.float64}


def attention_graph(
    b=2,
    h=3,
    s=5,
    t=7,
    d=4,
    dv=6,
    dtype="f32",
    mask=None,
    heads_back=True,
    shared_k=False,
    probs_out=False,
    dropout=False,
) -> Graph:
    """softmax(q k^T / sqrt(d) [+ mask]) v over [b, h, s|t, d] inputs; ``mask`` is its shape."""
    g = Graph("attention")
    q = g.add_input("q", TensorType((b, h, s, d), dtype))
    k = g.add_input("k", TensorType((b, 1 if shared_k else h, t, d), dtype))
    v = g.add_input("v", TensorType((b, h, t, dv), dtype))
    scores = g.op("mul", g.op("matmul", q, g.op("transpose", k, perm=(0, 1, 3, 2))), const(g, d**-0.5, dtype))
    if mask is not None:
        scores = g.op("add", scores, g.add_input("mask", TensorType(mask, dtype)))
    probs = softmax(g, scores)
    if dropout:
        offset = g.add_input("rng.offset", TensorType((), "i64"), "state", np.zeros((), np.int64))
        keep = g.op("lt", g.op("rng_uniform", offset, shape=probs.shape, seed=7), const(g, 0.9))
        probs = g.op("where", keep, g.op("mul", probs, const(g, 1 / 0.9)), const(g, 0.0))
    out = g.op("matmul", probs, v)
    if heads_back:
        out = g.op("transpose", out, perm=(0, 2, 1, 3))
    g.add_output(out)
    if probs_out:
        g.add_output(probs)
    return g


def numpy_attention(feeds: dict[str, np.ndarray], heads_back=True) -> np.ndarray:
    """The float64 oracle."""
    q, k, v = (feeds[n].astype(np.float64) for n in "qkv")
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if "mask" in feeds:
        scores = scores + feeds["mask"]
    p = np.exp(scores - scores.max(-1, keepdims=True))
    out = (p / p.sum(-1, keepdims=True)) @ v
    return out.transpose(0, 2, 1, 3) if heads_back else out


def stitched(graph: Graph) -> list:
    return [n for n in graph.nodes if n.op == "fused" and n.attrs["kind"] == "attention"]


def run(graph: Graph, feeds: dict[str, np.ndarray]):
    plan = graphc.compiler.compile_graph(graph)
    return plan(*(feeds[v.name] for v in graph.data_inputs)), plan


def feeds_for(graph: Graph, seed=0) -> dict[str, np.ndarray]:
    feeds = make_feeds(graph, seed=seed, low=-2.0, high=2.0)
    if "mask" in feeds:  # a causal-style mask: large negative entries, one row all of them
        feeds["mask"] = np.where(feeds["mask"] > 1.0, -1e4, 0.0).astype(feeds["mask"].dtype)
    return feeds


def tolerance(dtype: str) -> dict:
    return {"rtol": 1e-5, "atol": 2e-6} if dtype == "f32" else {"rtol": 1e-12, "atol": 1e-12}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"heads_back": False},
        {"dtype": "f64"},
        {"mask": (5, 7)},
        {"mask": (1, 7)},
        {"mask": (1, 1, 5, 7)},
        {"shared_k": True},
        {"s": 1, "t": 9},
    ],
    ids=["heads-back", "no-transpose", "f64", "mask-rows", "mask-keys", "mask-4d", "shared-k", "one-query"],
)
def test_attention_matches_float64_numpy(options):
    g = attention_graph(**options)
    out_graph = passes.optimize(g.copy(), check=True)
    (node,) = stitched(out_graph)
    assert [n.op for n in out_graph.nodes if n.op != "reshape"] == ["fused"]
    assert [n.attrs.get("kind", n.op) for n in node.subgraph.nodes[:3]] == ["matmul", "reduction", "matmul"]
    feeds = feeds_for(g)
    got, _ = run(g, feeds)
    dtype = options.get("dtype", "f32")
    heads_back = options.get("heads_back", True)
    np.testing.assert_allclose(got, numpy_attention(feeds, heads_back), **tolerance(dtype))
    np.testing.assert_allclose(got, execute(g, feeds)[0], **tolerance(dtype))
    assert "fused attention" in graphc.kernels.cpu.kernel_source(node)


def test_row_blocks_split_each_matrix(monkeypatch):
    # Blocks of 2-3 query rows: partial blocks, a mask sliced per block, several tasks per matrix.
    monkeypatch.setattr(cpu_attention, "SCORE_BLOCK", 16)
    g = attention_graph(b=1, h=2, s=7, t=8, mask=(7, 8))
    feeds = feeds_for(g, seed=3)
    got, _ = run(g, feeds)
    np.testing.assert_allclose(got, numpy_attention(feeds), **tolerance("f32"))


def test_large_attention_runs_on_the_thread_pool():
    g = attention_graph(b=2, h=4, s=96, t=96, d=16, dv=16)
    node = stitched(passes.optimize(g.copy()))[0]
    source = graphc.kernels.cpu.kernel_source(node)
    assert "prange" in source.split("def kernel(")[1]
    feeds = feeds_for(g, seed=1)
    got, _ = run(g, feeds)
    np.testing.assert_allclose(got, numpy_attention(feeds), rtol=1e-4, atol=1e-5)


def test_without_bundled_openblas_the_stages_run_one_by_one(monkeypatch):
    monkeypatch.setattr(blas, "numpy_openblas", lambda: None)
    g = attention_graph()
    node = stitched(passes.optimize(g.copy()))[0]
    assert "run node by node" in graphc.kernels.cpu.kernel_source(node)
    feeds = feeds_for(g, seed=2)
    got, _ = run(g, feeds)
    np.testing.assert_allclose(got, numpy_attention(feeds), **tolerance("f32"))


@pytest.mark.parametrize(
    "options, why",
    [
        ({"probs_out": True}, "the probabilities are an output (training keeps them)"),
        ({"mask": (2, 1, 1, 7)}, "a mask that differs per batch matrix"),
    ],
)
def test_chains_that_do_not_stitch(options, why):
    g = attention_graph(**options)
    out = passes.optimize(g.copy(), check=True)
    assert not stitched(out), why
    feeds = feeds_for(g)
    got, _ = run(g, feeds)
    got = got[0] if isinstance(got, tuple) else got
    np.testing.assert_allclose(got, numpy_attention(feeds), **tolerance("f32"))


def test_dropout_on_the_probabilities_does_not_stitch():
    # its random numbers are drawn by element index over all matrices: a per-matrix kernel
    # would renumber them, so the chain stays three kernels
    g = attention_graph(heads_back=False, dropout=True)
    out = passes.optimize(g.copy(), check=True)
    assert not stitched(out)
    feeds = feeds_for(g)
    got, _ = run(g, feeds)
    np.testing.assert_allclose(got, execute(g, feeds)[0], **tolerance("f32"))


def test_stitched_graph_prints_and_parses_back():
    out = passes.optimize(attention_graph(mask=(5, 7)))
    text = print_graph(out)
    again = parse_graph(text)
    verify(again)
    assert print_graph(again) == text
    assert stitched(again)
