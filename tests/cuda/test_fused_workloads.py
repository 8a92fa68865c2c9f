"""Every fused node of the real workloads is one CUDA kernel, and small versions of them run right.

- The kernel count: every example (inference; mlp and cnn also as training steps with SGD
  momentum and Adam) and every benchmark workload, at its own sizes: each fused node generates
  one module with one kernel and one launch (no node-by-node fallback). Generating needs no GPU.
- Results: small versions of the same models (the examples' ``build`` at small widths) on the
  CUDA backend (simulator) against the reference backend, inference and training steps, with no
  fused node falling back.
- PTX: the workloads' kernels compile with ``numba.cuda.compile_ptx`` (GPU launch sizes, no
  simulator, in a subprocess: ``workload_ptx_main.py``), one kernel of each distinct structure
  (sources equal up to their numbers: 36 of the 82 distinct kernels, about 25 s).
  ``python tests/cuda/workload_ptx_main.py all`` compiles all 82 (about 2 minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fusion_workloads import ROOT, WORKLOADS, fused_nodes, launches, workload_graph

import graphc
from graphc import functional as F
from graphc import nn, optim
from graphc.kernels import cuda as kc
from graphc.kernels.cuda.codegen import Unsupported
from graphc.kernels.cuda.generators import describe
from graphc.kernels.reference import execute
from graphc.modelfile import import_file
from graphc.training import compile_train

pytestmark = pytest.mark.cudasim
HERE = Path(__file__).parent


def fallbacks(nodes) -> list[str]:
    """The fused nodes among ``nodes`` that do not generate exactly one kernel, with the reason."""
    bad = []
    for node in nodes:
        if node.op != "fused":
            continue
        try:
            ks = kc.generate(node)
        except Unsupported as err:
            bad.append(f"{describe(node)}: {err}")
            continue
        if len(ks.kernels) != 1 or launches(ks.source) != 1:
            bad.append(f"{describe(node)}: {len(ks.kernels)} kernels")
    return bad


@pytest.mark.parametrize("name", WORKLOADS)
def test_every_fused_node_of_the_workload_is_one_kernel(name: str) -> None:
    nodes = fused_nodes(workload_graph(name))
    assert nodes, f"{name} has no fused node"
    assert fallbacks(nodes) == []


def test_the_workload_list_covers_examples_training_and_benchmarks() -> None:
    assert "examples/transformer.py" in WORKLOADS and "benchmarks/transformer_infer.py" in WORKLOADS
    assert {"examples/mlp.py train SGD momentum", "examples/cnn.py train Adam"} <= set(WORKLOADS)
    kinds = {n.attrs["kind"] for name in WORKLOADS for n in fused_nodes(workload_graph(name))}
    assert kinds == {"pointwise", "reduction", "matmul", "attention"}


def test_a_node_outside_the_contract_is_reported_as_a_fallback() -> None:
    from cuda_cases import fused_cases

    case = next(c for c in fused_cases() if c.name == "fallback_transpose")
    assert len(fallbacks([case.node])) == 1


# ------------------------------------------------------------------ small versions, simulated
transformer = import_file(ROOT / "examples" / "transformer.py")
mlp = import_file(ROOT / "examples" / "mlp.py")
chain = import_file(ROOT / "benchmarks" / "fusion_chain_infer.py")


class TinyCNN(nn.Module):
    """examples/cnn.py's layers (conv-relu-pool twice, flatten, linear) at simulator size."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        return self.fc(self.pool(F.relu(self.conv2(x))).flatten(1))


def _normal(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


SMALL_INFERENCE = {
    "transformer": lambda: (
        transformer.build(nn, F, d_model=8, n_heads=2, d_ff=16).eval(),
        (_normal(2, 5, 8),),
    ),
    "mlp": lambda: (mlp.build(nn, F, sizes=(6, 8, 3)), (_normal(3, 6),)),
    "fusion_chain": lambda: (
        chain.model(),
        (_normal(3, 12, seed=1), _normal(12, seed=2), _normal(12, seed=3), _normal(3, 12, seed=4)),
    ),
    "cnn": lambda: (TinyCNN(), (_normal(2, 1, 4, 4),)),
}


@pytest.mark.parametrize("name", sorted(SMALL_INFERENCE))
def test_small_version_matches_reference_with_one_kernel_per_fused_node(name: str) -> None:
    nn.init.manual_seed(0)
    model, inputs = SMALL_INFERENCE[name]()
    graph = graphc.trace(model, *inputs)
    expected = execute(graph, {v.name: a for v, a in zip(graph.data_inputs, inputs)})[0]
    plan = graphc.compile(model, *inputs, device="cuda")
    assert fallbacks(plan.step_nodes) == []
    if name == "transformer":
        assert any(n.attrs.get("kind") == "attention" for n in plan.step_nodes)
    np.testing.assert_allclose(plan(*inputs), expected, rtol=1e-4, atol=1e-5)


SMALL_TRAINING = {"mlp": lambda: mlp.build(nn, F, sizes=(5, 6, 3)), "cnn": TinyCNN}
OPTIMIZERS = {"SGD momentum": lambda: optim.SGD(lr=0.1, momentum=0.9), "Adam": lambda: optim.Adam(lr=1e-2)}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("name", sorted(SMALL_TRAINING))
def test_small_training_step_matches_reference(name: str, optimizer: str) -> None:
    x = _normal(4, 5) if name == "mlp" else _normal(2, 1, 4, 4)
    y = np.random.default_rng(1).integers(0, 3, x.shape[0]).astype(np.int64)
    results = {}
    for device, backend in (("cpu", "reference"), ("cuda", None)):
        nn.init.manual_seed(0)
        model = SMALL_TRAINING[name]()
        opt = OPTIMIZERS[optimizer]()
        step = compile_train(model, F.cross_entropy, opt, x, y, device=device, backend=backend)
        if device == "cuda":
            assert fallbacks(step.plan.step_nodes) == []
        losses = [step(x, y) for _ in range(3)]
        step.sync_to_host()
        results[device] = losses, {k: np.array(v) for k, v in model.state_dict().items()}
    np.testing.assert_allclose(results["cuda"][0], results["cpu"][0], rtol=1e-5)
    for k, v in results["cpu"][1].items():
        np.testing.assert_allclose(results["cuda"][1][k], v, rtol=1e-5, atol=1e-6, err_msg=k)


# ------------------------------------------------------------------ types and PTX, no simulator
def _ptx_report(scope: str, tmp_path_factory) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.setdefault("GRAPHC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    proc = subprocess.run(
        [sys.executable, str(HERE / "workload_ptx_main.py"), scope],
        capture_output=True,
        text=True,
        env=env,
        cwd=HERE,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def _check(report: dict) -> None:
    assert report["generate_failures"] == [], report["generate_failures"]
    if report["ptx_unavailable"]:
        pytest.skip(f"numba.cuda.compile_ptx unavailable: {report['ptx_unavailable']}")
    assert report["failures"] == [], json.dumps(report["failures"], indent=1)[:6000]
    assert report["ptx"] == report["kernels"] > 0


def test_workload_kernels_of_every_structure_compile_to_ptx(tmp_path_factory) -> None:
    _check(_ptx_report("structures", tmp_path_factory))


def test_attention_whose_row_of_keys_overflows_shared_memory_runs_its_stages() -> None:
    from cuda_cases import attention_node

    from graphc.kernels.cuda.attention import SHARED_BYTES

    keys = SHARED_BYTES // 4 + 1  # f32 scores of one row no longer fit beside the query
    q, k, v = (np.zeros(s, np.float32) for s in ((1, 1, 2, 4), (1, 1, keys, 4), (1, 1, keys, 3)))
    node = attention_node(q, k, v)
    with pytest.raises(Unsupported, match="shared memory"):
        kc.generate(node)
    source = kc.kernel_sources(node)
    assert "runs its body node by node" in source and "shared memory" in source
    assert fallbacks(node.subgraph.nodes) == []  # each stage is still one kernel
    fits = attention_node(*(a[:, :, :1000] if a is not q else a for a in (q, k, v)))
    assert fallbacks([fits]) == []
