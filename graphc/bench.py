"""graphc bench: the benchmark suite of /docs BENCHMARKS.md, graphc against PyTorch, torch.compile, ORT.

Each workload is defined once here (model, shapes, inputs, optimizer). A model is written as a
function of a library namespace ``lib`` (``lib.nn``, ``lib.F``), so the very same code builds the
graphc Module (graphc.nn / graphc.functional) and its PyTorch twin (torch.nn /
torch.nn.functional); the twin loads graphc's initial weights by name. Every engine of a
workload starts from the same weights and runs on the same fixed-seed inputs.

Measurement:
- Engines are built (compiled), warmed up, then timed round-robin: in each of ``--repeat`` rounds
  every engine runs one block of steps (enough steps for ``--min-time`` seconds), so the engines
  share the machine's noise. Before each block the machine rests ``--settle`` seconds and the
  engine runs one untimed step, so pools that spin-wait after the previous engine's work
  (libgomp, OpenBLAS) are not charged to the next one. Per engine: median, min and max of the
  per-step time over blocks.
- Compile time, cold and warm, is measured in a subprocess (``python -m graphc.bench _probe``):
  cold with fresh, empty cache folders (GRAPHC_CACHE_DIR, NUMBA_CACHE_DIR,
  TORCHINDUCTOR_CACHE_DIR), warm with a second subprocess over the same folders. It is the time
  from the start of compilation to the end of the first step (torch.compile compiles on its
  first call), after imports.
- Threads: ``--threads N`` (default: the cores this process may use) goes to every engine:
  torch.set_num_threads, ORT intra_op_num_threads (inter_op 1, sequential), numba.set_num_threads,
  and BLAS/OpenMP pools through threadpoolctl (NumPy's OpenBLAS is already loaded when the CLI
  runs, so environment variables would come too late for it). OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS
  are also set in the environment, which is what the compile-time subprocesses see at start-up.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.util
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np

ENGINES = ("graphc", "torch", "torch.compile", "onnxruntime")
PEERS = ENGINES[1:]
BASELINE = "torch"
SEED = 0
MiB = 1 << 20
SCHEMA_VERSION = 1
COPY = "copy 32 MiB"  # the pseudo-engine timing a bandwidth-bound copy next to the engines


class Skip(Exception):
    """An engine cannot run a workload; the message says why."""


# ---------------------------------------------------------------------------------------- libraries
def graphc_lib() -> SimpleNamespace:
    """graphc's nn and functional as a library namespace for the model definitions."""
    try:
        from graphc import functional as F
        from graphc import nn
    except ImportError as err:
        raise Skip(f"graphc front end not available ({err})") from None
    return SimpleNamespace(name="graphc", nn=nn, F=F)


def torch_lib() -> SimpleNamespace:
    """torch.nn and torch.nn.functional as a library namespace for the model definitions."""
    try:
        import torch
    except ImportError:
        raise Skip("torch not installed (pip install -e '.[compare]')") from None
    return SimpleNamespace(name="torch", nn=torch.nn, F=torch.nn.functional, torch=torch)


# ---------------------------------------------------------------------------------------- models
def mlp(lib: SimpleNamespace, sizes: tuple[int, ...]) -> Any:
    """An MLP with ReLU between Linear layers of the given sizes."""

    class MLP(lib.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
                setattr(self, f"fc{i}", lib.nn.Linear(a, b))

        def forward(self, x):
            n = len(sizes) - 1
            for i in range(n):
                x = getattr(self, f"fc{i}")(x)
                if i < n - 1:
                    x = lib.F.relu(x)
            return x

    return MLP()


def cnn(lib: SimpleNamespace) -> Any:
    """conv3x3(3→32)-ReLU-maxpool2-conv3x3(32→64)-ReLU-maxpool2-Linear(4096→10) on 3×32×32."""
    nn, F = lib.nn, lib.F

    class CNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
            self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
            self.fc = nn.Linear(64 * 8 * 8, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            return self.fc(x.reshape(x.shape[0], 64 * 8 * 8))

    return CNN()


def encoder_layer(lib: SimpleNamespace, d: int = 256, heads: int = 4, ff: int = 1024) -> Any:
    """A post-norm transformer encoder layer; softmax attention written as matmuls."""
    nn, F = lib.nn, lib.F
    dh = d // heads
    scale = 1.0 / math.sqrt(dh)

    class EncoderLayer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.norm1 = nn.LayerNorm(d)
            self.ff1 = nn.Linear(d, ff)
            self.ff2 = nn.Linear(ff, d)
            self.norm2 = nn.LayerNorm(d)

        def forward(self, x):
            b, s = x.shape[0], x.shape[1]
            qkv = self.qkv(x).reshape(b, s, 3, heads, dh).permute(2, 0, 3, 1, 4)  # [3, b, h, s, dh]
            q, k, v = qkv[0], qkv[1], qkv[2]
            att = F.softmax((q @ k.transpose(2, 3)) * scale, dim=-1)  # [b, h, s, s]
            o = (att @ v).permute(0, 2, 1, 3).reshape(b, s, d)
            x = self.norm1(x + self.proj(o))
            return self.norm2(x + self.ff2(F.relu(self.ff1(x))))

    return EncoderLayer()


def fusion_chain(lib: SimpleNamespace) -> Callable:
    """``layer_norm(gelu(x + b) * s + r)`` over the last axis, exact (erf) GELU, as a function."""
    F = lib.F

    def chain(x, b, s, r):
        return F.layer_norm(F.gelu(x + b) * s + r, (x.shape[-1],))

    return chain


# ---------------------------------------------------------------------------------------- workloads
@dataclass(frozen=True)
class Workload:
    """One benchmark: what it computes, its inputs, and (training) its optimizer."""

    name: str
    kind: str  # "train" (forward + backward + update, cross-entropy loss) or "infer" (forward)
    what: str
    batch: int | None
    make_inputs: Callable[[np.random.Generator], tuple[np.ndarray, ...]]
    model: Callable[[SimpleNamespace], Any] | None = None  # lib -> Module
    function: Callable[[SimpleNamespace], Callable] | None = None  # lib -> function of tensors
    optimizer: tuple[str, dict] | None = None  # class name in graphc.optim / torch.optim, kwargs
    example: str | None = None  # examples/<file> whose model() graphc uses if its parameters match
    moved_bytes: Callable[[tuple[np.ndarray, ...]], int] | None = None  # bytes a perfect kernel moves


def _classes(rng: np.random.Generator, n: int, k: int = 10) -> np.ndarray:
    return rng.integers(0, k, size=n).astype(np.int64)


def _normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "mlp_small_train",
            "train",
            "MLP 20-256-10, ReLU, cross-entropy, SGD lr 0.01",
            64,
            lambda rng: (_normal(rng, 64, 20), _classes(rng, 64)),
            model=lambda lib: mlp(lib, (20, 256, 10)),
            optimizer=("SGD", {"lr": 0.01}),
            example="mlp.py",
        ),
        Workload(
            "mlp_train",
            "train",
            "MLP 784-512-512-10, ReLU, cross-entropy, Adam lr 1e-3",
            128,
            lambda rng: (_normal(rng, 128, 784), _classes(rng, 128)),
            model=lambda lib: mlp(lib, (784, 512, 512, 10)),
            optimizer=("Adam", {"lr": 1e-3}),
        ),
        Workload(
            "cnn_train",
            "train",
            "conv3x3(3→32)-ReLU-pool-conv3x3(32→64)-ReLU-pool-Linear(4096→10), 3×32×32, SGD momentum 0.9",
            32,
            lambda rng: (_normal(rng, 32, 3, 32, 32), _classes(rng, 32)),
            model=cnn,
            example="cnn.py",
            optimizer=("SGD", {"lr": 0.01, "momentum": 0.9}),
        ),
        Workload(
            "transformer_infer",
            "infer",
            "post-norm encoder layer d=256, 4 heads, ff 1024 ReLU, seq 128",
            8,
            lambda rng: (_normal(rng, 8, 128, 256),),
            model=encoder_layer,
            example="transformer.py",
        ),
        Workload(
            "fusion_chain_infer",
            "infer",
            "layer_norm(gelu(x + b) * s + r), x and r [8192, 1024], exact GELU",
            None,
            lambda rng: (
                _normal(rng, 8192, 1024),
                _normal(rng, 1024),
                _normal(rng, 1024),
                _normal(rng, 8192, 1024),
            ),
            function=fusion_chain,
            moved_bytes=lambda a: a[0].nbytes + a[3].nbytes + a[0].nbytes,  # read x, r; write out
        ),
    )
}


# ---------------------------------------------------------------------------------------- weights
def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu().numpy().copy()
    if not isinstance(value, np.ndarray) and hasattr(value, "data"):
        value = value.data
    return np.array(value, copy=True)


_EXAMPLES: dict[str, ModuleType | None] = {}


def _example_module(filename: str) -> ModuleType | None:
    """examples/<filename> imported once (None when missing or failing to import)."""
    if filename not in _EXAMPLES:
        path = Path(__file__).resolve().parent.parent / "examples" / filename
        module = None
        if path.is_file():
            try:
                spec = importlib.util.spec_from_file_location(f"graphc_bench_example_{path.stem}", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
            except Exception:
                sys.modules.pop(f"graphc_bench_example_{path.stem}", None)
                module = None
        _EXAMPLES[filename] = module
    return _EXAMPLES[filename]


def _shapes(model: Any) -> list[tuple[int, ...]]:
    return sorted(tuple(_to_numpy(v).shape) for v in model.state_dict().values())


def build_model(workload: Workload, lib: SimpleNamespace) -> tuple[Any, str]:
    """The workload's Module in a library, and where its definition came from.

    The examples/ file of the workload is used when it imports and its parameters have the
    shapes of the definition here: its ``model()`` for graphc, its ``torch_model()`` (a twin with
    the same state_dict keys) for torch; otherwise the definition here, in either library.
    """
    module = _example_module(workload.example) if workload.example else None
    factory = getattr(module, "model" if lib.name == "graphc" else "torch_model", None)
    if callable(factory):
        try:
            model = factory()
            if _shapes(model) == _shapes(workload.model(lib)):
                suffix = "" if lib.name == "graphc" else ":torch_model"
                return model, f"examples/{workload.example}{suffix}"
        except Exception:
            pass
    return workload.model(lib), "graphc.bench"


def initial_state(workload: Workload) -> dict[str, np.ndarray]:
    """The workload's initial weights: graphc's initializers (seeded), else torch's."""
    if workload.model is None:
        return {}
    try:
        lib = graphc_lib()
        lib.nn.init.manual_seed(SEED)
        model, _ = build_model(workload, lib)
    except Exception:  # graphc's front end missing or failing: its engine reports why, later
        lib = torch_lib()
        lib.torch.manual_seed(SEED)
        model, _ = build_model(workload, lib)
    return {k: _to_numpy(v) for k, v in model.state_dict().items()}


def load_state(model: Any, state: dict[str, np.ndarray], lib: SimpleNamespace) -> None:
    """Load numpy weights into a graphc or torch Module: by name, else by order when shapes match."""
    own = model.state_dict()
    if set(own) != set(state):
        shapes_own = [tuple(_to_numpy(v).shape) for v in own.values()]
        shapes_in = [v.shape for v in state.values()]
        if shapes_own != shapes_in:
            raise Skip(f"{lib.name} model's parameters {list(own)} do not fit the state {list(state)}")
        state = dict(zip(own, state.values()))
    if lib.name == "torch":
        state = {k: lib.torch.from_numpy(v.copy()) for k, v in state.items()}
    else:
        state = {k: v.copy() for k, v in state.items()}
    model.load_state_dict(state)


# ---------------------------------------------------------------------------------------- threads
_THREAD_LIMITS: list[Any] = []


def set_threads(n: int) -> str:
    """Limit every thread pool to n threads (env for subprocesses, threadpoolctl, numba); say how."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)
    how = ["env OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS"]
    try:
        from threadpoolctl import threadpool_limits

        _THREAD_LIMITS.append(threadpool_limits(limits=n))
        how.append("threadpoolctl")
    except ImportError:
        how.append("no threadpoolctl: BLAS threads fixed at import")
    try:
        import numba

        # set_num_threads starts numba's thread pool: the CPU backend must choose its threading
        # layer first (TBB, the one pool its kernels and GEMMs share), or numba starts the
        # first layer of its own order (a layer chosen this way once made the cnn_train step
        # 1.7x slower under `graphc bench` than outside it).
        import graphc.kernels.cpu  # noqa: F401

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        how.append("numba.set_num_threads")
    except ImportError:
        pass
    return ", ".join(how)


def _reapply_thread_limits(n: int) -> None:
    """Re-apply threadpoolctl after a library loaded its own OpenMP/BLAS (torch, onnxruntime)."""
    try:
        from threadpoolctl import threadpool_limits

        _THREAD_LIMITS.append(threadpool_limits(limits=n))
    except ImportError:
        pass


def default_threads() -> int:
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------- engines
@dataclass
class Runner:
    """One engine's compiled workload: ``step()`` runs one measured step on the bound inputs."""

    step: Callable[[], Any]
    first: Any  # the first step's result: the output (inference) or the loss (training)
    compile_s: float  # compile + first step, in this process
    model_source: str = ""
    memory: dict | None = None
    plan: Any = None  # graphc's runtime.Plan, for profiling
    note: str = ""


def _find_plan(obj: Any) -> Any:
    """The runtime plan inside what graphc.compile / compile_train returned (None if none)."""
    seen = 0
    while obj is not None and seen < 4:
        if hasattr(obj, "memory_plan"):
            return obj
        obj = next((getattr(obj, a) for a in ("plan", "_plan") if getattr(obj, a, None) is not None), None)
        seen += 1
    return None


def _memory_of(plan: Any) -> dict | None:
    mp = getattr(plan, "memory_plan", None)
    if mp is None:
        return None
    return {"naive_bytes": mp.naive_bytes, "lower_bound": mp.lower_bound, "arena_bytes": mp.arena_bytes}


def graphc_missing(kind: str = "train", device: str = "cpu") -> list[str]:
    """The stages of graphc a workload of this kind needs that are not (yet) there."""
    backend = "cuda" if device == "cuda" else "cpu"
    needs = [
        ("graphc.nn", "Module"),
        ("graphc.functional", "cross_entropy"),
        ("graphc.tracing", "trace"),
        ("graphc.passes", "optimize"),
        ("graphc.passes", "schedule"),
        ("graphc.passes", "plan_memory"),
        (f"graphc.kernels.{backend}", "compile_node"),
    ]
    if kind == "train":
        needs += [("graphc.training", "compile_train"), ("graphc.optim", "SGD")]
    missing = []
    for module, name in needs:
        try:
            ok = hasattr(importlib.import_module(module), name)
        except ImportError:
            ok = False
        if not ok:
            missing.append(f"{module}.{name}")
    return missing


def _build_graphc(w: Workload, inputs: tuple, state: dict, device: str) -> Runner:
    missing = graphc_missing(w.kind, device)
    if missing:
        raise Skip(f"graphc pieces not there yet: {', '.join(missing)}")
    lib = graphc_lib()
    import graphc.compiler

    if w.kind == "train":
        try:
            from graphc.training import compile_train
        except ImportError as err:
            raise Skip(f"graphc.training not available ({err})") from None
        import graphc.optim

        name, kwargs = w.optimizer
        model, source = build_model(w, lib)
        load_state(model, state, lib)
        opt = getattr(graphc.optim, name)(**kwargs)
        t0 = time.perf_counter()
        step = compile_train(model, lib.F.cross_entropy, opt, *inputs, device=device)
        first = step(*inputs)
        compile_s = time.perf_counter() - t0
        plan = _find_plan(step)
        return Runner(
            lambda: step(*inputs), float(np.asarray(first)), compile_s, source, _memory_of(plan), plan
        )
    if w.function is not None:
        target, source = w.function(lib), "graphc.bench"
    else:
        target, source = build_model(w, lib)
        load_state(target, state, lib)
        if hasattr(target, "eval"):
            target.eval()
    t0 = time.perf_counter()
    plan = graphc.compiler.compile(target, *inputs, device=device)
    first = plan(*inputs)
    compile_s = time.perf_counter() - t0
    inner = _find_plan(plan)
    return Runner(lambda: plan(*inputs), np.asarray(first), compile_s, source, _memory_of(inner), inner)


def _torch_device(torch: Any, device: str) -> Any:
    if device == "cuda" and not torch.cuda.is_available():
        raise Skip("torch has no CUDA device")
    return torch.device(device)


def _torch_target(w: Workload, lib: SimpleNamespace, state: dict, dev: Any) -> tuple[Any, str]:
    if w.function is not None:
        fn = w.function(lib)

        class Function(lib.nn.Module):
            def forward(self, *args):
                return fn(*args)

        return Function(), "graphc.bench"
    model, source = build_model(w, lib)
    load_state(model, state, lib)
    return model.to(dev), source


def _build_torch(
    w: Workload, inputs: tuple, state: dict, device: str, threads: int, compiled: bool
) -> Runner:
    lib = torch_lib()
    torch = lib.torch
    torch.set_num_threads(threads)
    _reapply_thread_limits(threads)
    dev = _torch_device(torch, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    tensors = tuple(torch.from_numpy(a.copy()).to(dev) for a in inputs)
    model, source = _torch_target(w, lib, state, dev)
    note = ""
    if w.kind == "train":
        name, kwargs = w.optimizer
        opt = getattr(torch.optim, name)(model.parameters(), **kwargs)
        F = lib.F

        def loss_fn(*args):
            return F.cross_entropy(model(*args[:-1]), args[-1])

        t0 = time.perf_counter()
        if compiled:
            loss_fn = torch.compile(loss_fn)
            note = "forward+loss+backward compiled; optimizer step eager"

        def step():
            opt.zero_grad()
            loss = loss_fn(*tensors)
            loss.backward()
            opt.step()
            sync()
            return loss

        first = float(step().item())
    else:
        model.eval()
        fn = torch.compile(model) if compiled else model
        t0 = time.perf_counter()

        def step():
            with torch.no_grad():
                out = fn(*tensors)
            sync()
            return out

        first = step().cpu().numpy()
    compile_s = time.perf_counter() - t0
    return Runner(step, first, compile_s, source, note=note)


def _build_onnxruntime(w: Workload, inputs: tuple, state: dict, device: str, threads: int) -> Runner:
    if w.kind == "train":
        raise Skip("inference only")
    try:
        import onnxruntime as ort
    except ImportError:
        raise Skip("onnxruntime not installed (pip install -e '.[compare]')") from None
    lib = torch_lib()
    torch = lib.torch
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise Skip("onnxruntime has no CUDAExecutionProvider")
        providers.insert(0, "CUDAExecutionProvider")
    torch.set_num_threads(threads)
    model, source = _torch_target(w, lib, state, torch.device("cpu"))
    model.eval()
    example = tuple(torch.from_numpy(a.copy()) for a in inputs)
    names = [f"in{i}" for i in range(len(inputs))]
    tmp = tempfile.mkdtemp(prefix="graphc-bench-onnx-")
    path = os.path.join(tmp, f"{w.name}.onnx")
    t0 = time.perf_counter()
    errors = []
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model, example, path, input_names=names, output_names=["out"], dynamo=dynamo
                )
            note = f"torch.onnx.export(dynamo={dynamo})" + (f" ({'; '.join(errors)})" if errors else "")
            break
        except Exception as err:  # the TorchScript exporter may be gone or fail: try the other one
            errors.append(f"dynamo={dynamo}: {type(err).__name__}: {_first_line(err)}")
    else:
        raise Skip("torch.onnx.export failed: " + "; ".join(errors))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=providers)
    feed = {i.name: a for i, a in zip(sess.get_inputs(), inputs)}
    first = sess.run(None, feed)[0]
    compile_s = time.perf_counter() - t0
    _reapply_thread_limits(threads)
    return Runner(lambda: sess.run(None, feed), np.asarray(first), compile_s, source, note=note)


def build_engine(engine: str, w: Workload, inputs: tuple, state: dict, device: str, threads: int) -> Runner:
    """Compile a workload for one engine; raises Skip when the engine cannot run it."""
    if engine == "graphc":
        try:
            return _build_graphc(w, inputs, state, device)
        except ImportError as err:  # a stage of graphc not written yet
            raise Skip(f"graphc piece missing ({err})") from None
    if engine in ("torch", "torch.compile"):
        return _build_torch(w, inputs, state, device, threads, compiled=engine == "torch.compile")
    if engine == "onnxruntime":
        return _build_onnxruntime(w, inputs, state, device, threads)
    raise ValueError(f"unknown engine {engine!r}")


def _first_line(err: BaseException, limit: int = 300) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------- timing
def _time_block(fn: Callable[[], Any], number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def _stats(samples: list[float]) -> dict:
    ms = [s * 1e3 for s in samples]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "runs": len(ms)}


def measure(
    runners: dict[str, Runner], repeat: int, warmup: int, min_time: float, settle: float = 0.0
) -> dict[str, dict]:
    """Warm up each runner, then time them round-robin; per-step seconds per block, per engine.

    Before each block the machine rests ``settle`` seconds and the engine runs one untimed step:
    thread pools of the engine before (OpenMP, OpenBLAS) spin-wait for a while after their last
    task, and on a machine with few cores that spinning would be charged to the next engine.
    """
    numbers, samples, errors = {}, {e: [] for e in runners}, {}
    for engine, r in runners.items():
        try:
            t = min(_time_block(r.step, 1) for _ in range(max(1, warmup)))
        except Exception as err:
            errors[engine] = f"{type(err).__name__}: {_first_line(err)}"
            continue
        numbers[engine] = max(1, min(10000, math.ceil(min_time / max(t, 1e-7)))) if min_time > 0 else 1
    for _ in range(repeat):
        for engine, r in runners.items():
            if engine in numbers and engine not in errors:
                try:
                    if settle > 0:
                        time.sleep(settle)
                        r.step()
                    samples[engine].append(_time_block(r.step, numbers[engine]))
                except Exception as err:
                    errors[engine] = f"{type(err).__name__}: {_first_line(err)}"
    out = {}
    for engine in runners:
        if engine in errors:
            out[engine] = {"status": "failed", "note": errors[engine]}
        else:
            out[engine] = {
                "status": "ok",
                **_stats(samples[engine]),
                "steps_per_run": numbers[engine],
                "per_round_ms": [1e3 * t for t in samples[engine]],
            }
    return out


# ---------------------------------------------------------------------------------------- limits
def machine_limits(repeat: int = 10) -> dict:
    """NumPy sgemm GFLOP/s at 1024³ and the copy bandwidth of a 32 MiB float32 array."""
    rng = np.random.default_rng(SEED)
    n = 1024
    a, b = _normal(rng, n, n), _normal(rng, n, n)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)
    gemm = [_time_block(lambda: np.matmul(a, b, out=c), 1) for _ in range(max(3, repeat))]
    src = np.ones(32 * MiB // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    copy = [_time_block(lambda: np.copyto(dst, src), 1) for _ in range(max(3, repeat * 2))]
    flops = 2.0 * n**3
    moved = 2 * src.nbytes  # read + written
    return {
        "sgemm_n": n,
        "sgemm_gflops": flops / statistics.median(gemm) / 1e9,
        "sgemm_gflops_best": flops / min(gemm) / 1e9,
        "copy_bytes": src.nbytes,
        "copy_bandwidth_gbs": moved / statistics.median(copy) / 1e9,
        "copy_bandwidth_gbs_best": moved / min(copy) / 1e9,
    }


# ---------------------------------------------------------------------------------------- correctness
def _agreement(w: Workload, first: Any, reference: Any) -> dict:
    """How far an engine's first result is from the baseline's (loss, or output)."""
    try:
        a = np.asarray(first[0] if isinstance(first, (list, tuple)) else first, dtype=np.float64)
        b = np.asarray(reference[0] if isinstance(reference, (list, tuple)) else reference, dtype=np.float64)
        if a.shape != b.shape:
            return {"error": f"shape {list(a.shape)} vs {list(b.shape)}"}
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        return {"max_abs_diff": diff, "max_abs_ref": float(np.max(np.abs(b))) if b.size else 0.0}
    except Exception as err:
        return {"error": _first_line(err)}


# ---------------------------------------------------------------------------------------- profile
def _kernel_label(node: Any) -> tuple[str, str]:
    op = node.op
    detail = ""
    if op == "fused":
        op = f"fused:{node.attrs.get('kind', '?')}"
        body = getattr(node, "subgraph", None)
        if body is not None:
            ops = [n.op for n in body.nodes]
            detail = ",".join(ops[:12]) + (",…" if len(ops) > 12 else "")
    shapes = " ".join("x".join(map(str, v.shape)) or "scalar" for v in node.outputs)
    return op, f"{shapes} {detail}".strip()


def _matmul_flops(node: Any) -> int | None:
    """2·m·n·k·batch of a matmul node or of the matmul that opens a fused matmul node; an
    attention node's two matmuls together."""
    mm = node
    if node.op == "fused" and node.attrs.get("kind") == "attention":
        stages = [_matmul_flops(n) for n in node.subgraph.nodes]
        return sum(f for f in stages if f) or None
    if node.op == "fused":
        body = getattr(node, "subgraph", None)
        mm = next((n for n in body.nodes if n.op == "matmul"), None) if body is not None else None
    if mm is None or mm.op != "matmul":
        return None
    a, b = mm.inputs[0].shape, mm.inputs[1].shape
    out = mm.outputs[0].shape
    if len(a) < 1 or len(b) < 1 or not out:
        return None
    k = a[-1]
    return 2 * k * int(np.prod(out))


def profile_plan(plan: Any, call: Callable[[], Any], reps: int = 10) -> dict:
    """Per-kernel time of a graphc Plan: its steps run in order, each timed; plus the call overhead.

    Each round runs the steps once with a timer around every kernel, then one plain call of the
    step, so the sum of the kernels and the whole call see the same machine. A matmul kernel
    reports GFLOP/s; every kernel its bytes in + out per second (GB/s), to compare with the limits.
    """
    nodes = getattr(plan, "step_nodes", None)
    nodes = nodes or [n for n in plan.graph.nodes if not plan.memory_plan.is_view(n)]
    if len(nodes) != len(plan.steps):
        nodes = [None] * len(plan.steps)
    times: list[list[float]] = [[] for _ in plan.steps]
    calls = []
    for _ in range(reps):
        for i, (fn, args) in enumerate(plan.steps):
            t0 = time.perf_counter()
            fn(*args)
            times[i].append(time.perf_counter() - t0)
        calls.append(_time_block(call, 1))
    kernels = []
    for i, (node, ts) in enumerate(zip(nodes, times)):
        op, detail = _kernel_label(node) if node is not None else ("?", "")
        seconds = statistics.median(ts)
        entry = {
            "index": i,
            "op": op,
            "detail": detail,
            "source": (getattr(node, "source", "") or "") if node is not None else "",
            "ms": 1e3 * seconds,
        }
        args = plan.steps[i][1]
        moved = sum(a.nbytes for a in args if isinstance(a, np.ndarray))
        entry["gbs"] = moved / seconds / 1e9 if seconds > 0 else None
        flops = _matmul_flops(node) if node is not None else None
        if flops:
            entry["gflops"] = flops / seconds / 1e9 if seconds > 0 else None
        kernels.append(entry)
    total_kernels = sum(k["ms"] for k in kernels)
    call_ms = 1e3 * statistics.median(calls)
    by_op: dict[str, float] = {}
    for k in kernels:
        by_op[k["op"]] = by_op.get(k["op"], 0.0) + k["ms"]
    return {
        "call_ms": call_ms,
        "kernels_ms": total_kernels,
        "overhead_ms": call_ms - total_kernels,
        "n_kernels": len(kernels),
        "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
        "kernels": kernels,
    }


def format_profile(name: str, prof: dict, top: int = 15) -> str:
    """A per-kernel profile as text: totals, time by op kind, the slowest kernels."""
    lines = [
        f"profile of graphc on {name}: call {prof['call_ms']:.3f} ms = {prof['n_kernels']} kernels "
        f"{prof['kernels_ms']:.3f} ms + overhead (input/output copies, updates, Python) "
        f"{prof['overhead_ms']:.3f} ms",
        "  by op: " + ", ".join(f"{op} {ms:.3f} ms" for op, ms in prof["by_op"].items()),
    ]
    slow = sorted(prof["kernels"], key=lambda k: -k["ms"])[:top]
    for k in slow:
        share = 100 * k["ms"] / prof["call_ms"] if prof["call_ms"] else 0
        rate = f"{k['gflops']:6.1f} GFLOP/s" if k.get("gflops") else f"{_fmt(k.get('gbs'), '6.1f')} GB/s    "
        lines.append(
            f"  #{k['index']:<4} {k['ms']:9.3f} ms {share:5.1f}% {rate}  {k['op']:<16} "
            f"{k['detail'][:60]}  {k['source']}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- compile probe
def _probe(workload: str, engine: str, device: str, threads: int) -> dict:
    """In a fresh process: compile one engine's workload and time compile + first step."""
    set_threads(threads)
    w = WORKLOADS[workload]
    inputs = w.make_inputs(np.random.default_rng(SEED))
    state = initial_state(w)
    try:
        runner = build_engine(engine, w, inputs, state, device, threads)
    except Skip as err:
        return {"skipped": str(err)}
    return {"compile_s": runner.compile_s}


def compile_times(workload: str, engine: str, device: str, threads: int, timeout: float = 900) -> dict:
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
        cmd = [sys.executable, "-m", "graphc.bench", "_probe", workload, engine, device, str(threads)]
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
            if "skipped" in data:
                result[f"compile_{phase}_note"] = data["skipped"]
                break
            result[f"compile_{phase}_s"] = data["compile_s"]
    return result


# ---------------------------------------------------------------------------------------- the run
def run_workload(
    w: Workload,
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
    log: Callable[[str], None] = print,
) -> dict:
    """Build, check and time one workload on the engines; a dict of the results."""
    inputs = w.make_inputs(np.random.default_rng(SEED))
    result: dict[str, Any] = {"name": w.name, "kind": w.kind, "what": w.what, "batch": w.batch, "engines": {}}
    if w.optimizer:
        result["optimizer"] = {"name": w.optimizer[0], **w.optimizer[1]}
    try:
        state = initial_state(w)
    except Skip as err:
        for e in engines:
            result["engines"][e] = {"status": "skipped", "note": str(err)}
        return result
    runners: dict[str, Runner] = {}
    for engine in engines:
        log(f"  {w.name}: building {engine} ...")
        try:
            runners[engine] = build_engine(engine, w, inputs, state, device, threads)
            r = runners[engine]
            result["engines"][engine] = {
                "status": "ok",
                "compile_inprocess_s": r.compile_s,
                "model": r.model_source,
            }
            if r.note:
                result["engines"][engine]["note"] = r.note
            if r.memory:
                result["engines"][engine]["memory"] = r.memory
        except Skip as err:
            result["engines"][engine] = {"status": "skipped", "note": str(err)}
        except Exception as err:
            result["engines"][engine] = {
                "status": "failed",
                "note": f"{type(err).__name__}: {_first_line(err)}",
            }
            if os.environ.get("GRAPHC_BENCH_DEBUG"):
                traceback.print_exc()
        gc.collect()
    if BASELINE in runners:
        ref = runners[BASELINE].first
        for engine, r in runners.items():
            key = "loss_diff" if w.kind == "train" else "output_diff"
            result["engines"][engine][key] = _agreement(w, r.first, ref)
    for engine, r in runners.items():
        if w.kind == "train":
            result["engines"][engine]["first_loss"] = float(np.asarray(r.first))
    log(f"  {w.name}: timing {', '.join(runners)} ({repeat} rounds) ...")
    timed: dict[str, Any] = dict(runners)
    if w.moved_bytes is not None:
        # The bound's copy is timed in the same rounds as the engines, so it sees the same noise.
        src = np.ones(32 * MiB // 4, np.float32)
        dst = np.empty_like(src)
        timed[COPY] = Runner(lambda: np.copyto(dst, src), None, 0.0)
    timings = measure(timed, repeat, warmup, min_time, settle)
    copy = timings.pop(COPY, None)
    for engine, t in timings.items():
        entry = result["engines"][engine]
        if t["status"] != "ok":
            entry.update(t)
        else:
            entry.update({k: v for k, v in t.items() if k != "status"})
    base = result["engines"].get(BASELINE, {})
    for _engine, entry in result["engines"].items():
        if entry.get("status") == "ok" and base.get("status") == "ok":
            entry["vs_torch"] = entry["median_ms"] / base["median_ms"]
    if copy is not None and copy["status"] == "ok":
        moved = w.moved_bytes(inputs)
        bandwidth = 2 * 32 * MiB / (copy["median_ms"] * 1e-3)  # bytes read + written per second
        result["moved_bytes"] = moved
        result["bound_bandwidth_gbs"] = bandwidth / 1e9
        result["bound_ms"] = 1e3 * moved / bandwidth
        for entry in result["engines"].values():
            if entry.get("status") == "ok":
                entry["vs_bound"] = entry["median_ms"] / result["bound_ms"]
    if profile and "graphc" in runners and hasattr(runners["graphc"].plan, "steps"):
        log(f"  {w.name}: profiling graphc kernels ...")
        try:
            result["profile"] = profile_plan(
                runners["graphc"].plan, runners["graphc"].step, reps=max(5, repeat)
            )
        except Exception as err:
            result["profile"] = {"error": f"{type(err).__name__}: {_first_line(err)}"}
    runners.clear()
    gc.collect()
    if compile_time:
        for engine, entry in result["engines"].items():
            if entry.get("status") != "ok" or engine == "torch":
                continue
            log(f"  {w.name}: compile time of {engine} (cold, warm) ...")
            entry.update(compile_times(w.name, engine, device, threads))
    return result


# graphc's goals (set by the project lead, not by BENCHMARKS.md): workload, ratio, target.
TARGETS = (
    ("fusion_chain_infer", "time / bandwidth bound", "<= 1.3"),
    ("fusion_chain_infer", "speedup over torch eager", ">= 3"),
    ("transformer_infer", "time / onnxruntime", "<= 1"),
    ("mlp_small_train", "time / torch eager", "<= 0.333"),
    ("mlp_train", "time / torch eager", "<= 1"),
    ("cnn_train", "time / torch eager", "<= 1"),
)


def paired_ratio(entry: dict, base: dict) -> float | None:
    """Median over the rounds of entry's block time / base's block time in the same round.

    The two blocks of a round run within a second of each other, so this ratio sees little of
    the machine's slower and faster phases, which move both medians; None without rounds.
    """
    a, b = entry.get("per_round_ms") or [], base.get("per_round_ms") or []
    if not a or len(a) != len(b):
        return None
    return statistics.median(x / y for x, y in zip(a, b))


def evaluate_targets(workloads: list[dict]) -> list[dict]:
    """graphc's goals against this run's ratios: value, target and whether it is met.

    A ratio between two engines is of their medians (as BENCHMARKS.md reports); the round-by-round
    ratio (``paired_ratio``) is given beside it, and does not decide.
    """
    by_name = {w["name"]: w for w in workloads}
    out = []
    for name, what, target in TARGETS:
        w = by_name.get(name)
        if w is None:
            continue
        g = w["engines"].get("graphc", {})
        value = paired = None
        if g.get("status") == "ok":
            if what == "time / bandwidth bound":
                value = g.get("vs_bound")
            elif what == "speedup over torch eager":
                value = 1 / g["vs_torch"] if g.get("vs_torch") else None
                by_round = paired_ratio(g, w["engines"].get(BASELINE, {}))
                paired = 1 / by_round if by_round else None
            elif what == "time / onnxruntime":
                o = w["engines"].get("onnxruntime", {})
                if o.get("status") == "ok":
                    value, paired = g["median_ms"] / o["median_ms"], paired_ratio(g, o)
            else:
                value = g.get("vs_torch")
                paired = paired_ratio(g, w["engines"].get(BASELINE, {}))
        op, limit = target.split()
        met = None if value is None else (value <= float(limit) if op == "<=" else value >= float(limit))
        out.append(
            {"workload": name, "what": what, "target": target, "value": value, "paired": paired, "met": met}
        )
    return out


def _versions() -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("numba", "torch", "onnxruntime", "onnx"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:
            out[mod] = None
    try:
        import graphc

        out["graphc"] = graphc.__version__
    except Exception:
        out["graphc"] = None
    return out


def _loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages: how busy the machine was (None where unknown)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _threading_info() -> dict:
    """What decides how the thread pools behave: numba's layer, OpenMP waiting, the BLAS pools."""
    info: dict[str, Any] = {
        k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER")
    }
    try:
        import numba

        info["numba_threading_layer"] = numba.threading_layer()
    except Exception:  # no parallel numba function has run yet
        info["numba_threading_layer"] = None
    try:
        from threadpoolctl import threadpool_info

        info["pools"] = [
            {k: p.get(k) for k in ("internal_api", "num_threads", "filepath")} for p in threadpool_info()
        ]
    except ImportError:
        pass
    return info


def run_bench(
    names: list[str] | None = None,
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
    log: Callable[[str], None] = print,
) -> dict:
    """Run the benchmark suite; the results as a JSON-compatible dict."""
    names = list(names or WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    compare = list(compare or [])
    bad = [e for e in compare if e not in PEERS]
    if bad:
        raise ValueError(f"unknown engine(s) {bad} in --compare; choose from {list(PEERS)}")
    if quick:
        repeat, warmup, min_time, settle = min(repeat, 2), 1, 0.0, 0.0
    threads = threads or default_threads()
    engines = ["graphc", *[e for e in PEERS if e in compare]]
    how = set_threads(threads)
    load_start = _loadavg()
    log(f"graphc bench: {', '.join(names)} on {', '.join(engines)}; {threads} thread(s)")
    limits = machine_limits(repeat=3 if quick else 10)
    results = [
        run_workload(
            WORKLOADS[n],
            engines,
            device=device,
            threads=threads,
            repeat=repeat,
            warmup=warmup,
            min_time=min_time,
            settle=settle,
            compile_time=compile_time,
            profile=profile,
            log=log,
        )
        for n in names
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
            "versions": _versions(),
            "threading": _threading_info(),
            "loadavg_start": load_start,
            "loadavg_end": _loadavg(),
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
        },
        "limits": limits,
        "workloads": results,
        "targets": evaluate_targets(results),
    }


# ---------------------------------------------------------------------------------------- output
def _fmt(v: Any, spec: str = ".3f", none: str = "-") -> str:
    return none if v is None else format(v, spec)


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / MiB:.2f}"


def format_targets(targets: list[dict]) -> list[str]:
    """The lines of the targets section: this run's ratio, the round-by-round one, met or not."""
    lines = ["graphc targets (this run's ratios; by round = the median of per-round ratios):"]
    for t in targets:
        met = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        paired = f", by round {t['paired']:.2f}" if t.get("paired") is not None else ""
        lines.append(
            f"  {t['workload']:<20} {t['what']:<26} {_fmt(t['value'], '.2f'):>7} "
            f"(target {t['target']}{paired}): {met}"
        )
    return lines


def format_table(data: dict) -> str:
    """The results as a readable table."""
    lim = data["limits"]
    m = data["machine"]
    lines = [
        f"machine: {m['processor']}, {m['threads']} thread(s) ({m['threads_set_by']}), device {m['device']}; "
        f"load average {m.get('loadavg_start')} at start, {m.get('loadavg_end')} at end",
        f"limits: NumPy sgemm {lim['sgemm_n']}³ {lim['sgemm_gflops']:.1f} GFLOP/s "
        f"(best {lim['sgemm_gflops_best']:.1f}); copy bandwidth ({lim['copy_bytes'] // MiB} MiB, "
        f"read + write) {lim['copy_bandwidth_gbs']:.2f} GB/s (best {lim['copy_bandwidth_gbs_best']:.2f})",
        "ratio = median time / torch eager's median (lower is better); compile = compile + first step, "
        "cold (empty caches) / warm, in a fresh process",
        "",
    ]
    head = (
        f"{'workload':<20} {'engine':<14} {'median ms':>10} {'min ms':>9} {'max ms':>9} {'ratio':>7} "
        f"{'cold s':>7} {'warm s':>7}  memory MiB naive/bound/arena"
    )
    lines += [head, "-" * len(head)]
    for w in data["workloads"]:
        first = True
        for engine, e in w["engines"].items():
            name = w["name"] if first else ""
            first = False
            if e.get("status") != "ok":
                lines.append(f"{name:<20} {engine:<14} {e.get('status')}: {e.get('note', '')}")
                continue
            mem = e.get("memory")
            mem_s = (
                f"{_mb(mem['naive_bytes'])}/{_mb(mem['lower_bound'])}/{_mb(mem['arena_bytes'])}"
                if mem
                else ""
            )
            ratio = _fmt(e.get("vs_torch"), ".2f") + ("x" if e.get("vs_torch") else "")
            lines.append(
                f"{name:<20} {engine:<14} {e['median_ms']:>10.3f} {e['min_ms']:>9.3f} {e['max_ms']:>9.3f} "
                f"{ratio:>7} {_fmt(e.get('compile_cold_s'), '.2f'):>7} "
                f"{_fmt(e.get('compile_warm_s'), '.2f'):>7}  {mem_s}"
            )
            notes = [e[k] for k in ("note", "compile_cold_note", "compile_warm_note") if e.get(k)]
            diff = e.get("loss_diff") or e.get("output_diff")
            if diff and diff.get("max_abs_diff", 0) > 1e-3 * max(1.0, diff.get("max_abs_ref", 1.0)):
                notes.append(f"differs from torch eager by {diff['max_abs_diff']:.3g}")
            if diff and diff.get("error"):
                notes.append(f"check: {diff['error']}")
            for note in notes:
                lines.append(f"{'':<20} {'':<14}   note: {note}")
        if "bound_ms" in w:
            parts = [
                f"{eng} {e['vs_bound']:.2f}x"
                for eng, e in w["engines"].items()
                if e.get("vs_bound") is not None
            ]
            lines.append(
                f"{'':<20} bandwidth bound {w['bound_ms']:.3f} ms ({w['moved_bytes'] // MiB} MiB moved at "
                f"{w['bound_bandwidth_gbs']:.2f} GB/s, copies timed in the same rounds); "
                f"time / bound: {', '.join(parts) or '-'}"
            )
    if data.get("targets"):
        lines += ["", *format_targets(data["targets"])]
    for w in data["workloads"]:
        prof = w.get("profile")
        if prof and "error" not in prof:
            lines += ["", format_profile(w["name"], prof)]
        elif prof:
            lines += ["", f"profile of graphc on {w['name']} failed: {prof['error']}"]
    return "\n".join(lines)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _clean(obj: Any) -> Any:
    """NaN and infinities become null, so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(data: dict, path: str) -> None:
    """Write the results as strict JSON (NaN as null)."""
    with open(path, "w") as f:
        json.dump(_clean(data), f, indent=1, default=_json_default, allow_nan=False)
        f.write("\n")


def plot(data: dict, path: str) -> str:
    """Bar chart of each engine's time relative to torch eager per workload; a note when impossible."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib not installed (pip install -e '.[plot]')"
    workloads = data["workloads"]
    engines = data["settings"]["engines"]
    fig, ax = plt.subplots(figsize=(1.8 * max(3, len(workloads)), 4))
    width = 0.8 / max(1, len(engines))
    for i, engine in enumerate(engines):
        vals = [w["engines"].get(engine, {}).get("vs_torch") or 0.0 for w in workloads]
        ax.bar([j + i * width for j in range(len(workloads))], vals, width, label=engine)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks(
        [j + 0.4 - width / 2 for j in range(len(workloads))], [w["name"] for w in workloads], fontsize=8
    )
    ax.set_ylabel("time / torch eager (lower is better)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"wrote {path}"


# ---------------------------------------------------------------------------------------- CLI
def _parse_compare(text: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if items == ["all"]:
        return list(PEERS)
    bad = [s for s in items if s not in PEERS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown engine(s) {bad}; choose from {', '.join(PEERS)} or all")
    return items


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to the graphc CLI's subparsers."""
    p = subparsers.add_parser(
        "bench",
        help="run the benchmark suite (docs: BENCHMARKS.md)",
        description="Time graphc on the benchmark workloads, optionally against PyTorch, torch.compile "
        "and ONNX Runtime.",
    )
    p.add_argument(
        "workloads", nargs="*", metavar="WORKLOAD", help=f"any of {', '.join(WORKLOADS)} (default: all)"
    )
    p.add_argument(
        "--compare",
        type=_parse_compare,
        default=[],
        metavar="ENGINES",
        help=f"comma list of {','.join(PEERS)}",
    )
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument(
        "--threads", type=_positive, default=None, help="CPU threads for every engine (default: all)"
    )
    p.add_argument("--repeat", type=_positive, default=15, help="timed rounds per engine (default 15)")
    p.add_argument("--warmup", type=_positive, default=3, help="untimed steps first (default 3)")
    p.add_argument("--min-time", type=float, default=0.05, help="seconds per timed block (default 0.05)")
    p.add_argument(
        "--settle", type=float, default=0.2, help="seconds of rest before each timed block (default 0.2)"
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of the ratios (needs matplotlib)")
    p.add_argument("--quick", action="store_true", help="tiny repeat counts (tests, smoke runs)")
    p.add_argument("--no-compile-time", action="store_true", help="skip the cold/warm compile subprocesses")
    p.add_argument("--profile", action="store_true", help="per-kernel times of graphc's plans")
    p.set_defaults(func=cmd_bench)
    return p


def cmd_bench(args: argparse.Namespace) -> None:
    """Run `graphc bench` from parsed arguments."""
    from graphc.ir import GraphcError

    unknown = [n for n in args.workloads if n not in WORKLOADS]
    if unknown:
        raise GraphcError(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    data = run_bench(
        args.workloads or None,
        args.compare,
        threads=args.threads,
        repeat=args.repeat,
        warmup=args.warmup,
        min_time=args.min_time,
        settle=args.settle,
        device=args.device,
        compile_time=not args.no_compile_time,
        profile=args.profile,
        quick=args.quick,
        log=log,
    )
    print(format_table(data))
    if args.json:
        write_json(data, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        print(plot(data, args.plot))


def _main(argv: list[str]) -> int:
    if argv[:1] == ["_probe"] and len(argv) == 5:
        warnings.simplefilter("ignore")
        _, workload, engine, device, threads = argv
        print(json.dumps(_probe(workload, engine, device, int(threads))), flush=True)
        return 0
    from graphc.cli import main

    return main(["bench", *argv])


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
