"""Engines: a workload compiled and bound to its inputs, ready to step; graphc's own runner."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.ir import GraphcError
from graphc.modelfile import ModelFile

from .weights import load_state, seeded_graphc_model

ENGINES = ("graphc", "torch", "torch.compile", "onnxruntime")
PEERS = ENGINES[1:]
BASELINE = "torch"


class Skip(Exception):
    """A peer cannot run a workload (not installed, no torch_model(), inference only); the message says why.

    graphc itself never skips: whatever stops it is a failure.
    """


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
    build_s: float | None = None  # graphc: the plan's build alone, without the first step


def find_plan(obj: Any) -> Any:
    """The runtime plan inside what graphc.compile / compile_train returned (None if none)."""
    for _ in range(4):
        if obj is None or hasattr(obj, "memory_plan"):
            return obj
        obj = next((getattr(obj, a) for a in ("plan", "_plan") if getattr(obj, a, None) is not None), None)
    return None


def memory_of(plan: Any) -> dict | None:
    """graphc's memory plan figures: naive bytes, lower bound, planned arena."""
    mp = getattr(plan, "memory_plan", None)
    if mp is None:
        return None
    return {"naive_bytes": mp.naive_bytes, "lower_bound": mp.lower_bound, "arena_bytes": mp.arena_bytes}


def training_parts(w: ModelFile, functional: Any, optim: Any, library: str) -> tuple[Callable, type]:
    """The loss function and optimizer class a training workload names, in one library's modules."""
    loss = getattr(functional, w.loss, None)
    if not callable(loss):
        raise GraphcError(f"{w.path}: LOSS {w.loss!r} is not a function of {library}'s functional module")
    opt = getattr(optim, w.optimizer[0], None)
    if not isinstance(opt, type):
        raise GraphcError(f"{w.path}: OPTIMIZER {w.optimizer[0]!r} is not an optimizer class of {library}")
    return loss, opt


def build_graphc(w: ModelFile, inputs: tuple, state: dict | None, device: str) -> Runner:
    """graphc's runner: the file's model() on graphc's weights, compiled (a training step or forward)."""
    import graphc.compiler
    import graphc.optim
    from graphc import functional

    target = seeded_graphc_model(w.model)
    if state is not None:
        load_state(target, state, "graphc", w.path)
    source = f"{w.path}:model"
    if w.kind == "train":
        from graphc.training import compile_train

        loss, opt_cls = training_parts(w, functional, graphc.optim, "graphc")
        t0 = time.perf_counter()
        step = compile_train(target, loss, opt_cls(**w.optimizer[1]), *inputs, device=device)
        build_s = time.perf_counter() - t0
        first = step(*inputs)
        compile_s = time.perf_counter() - t0
        plan = find_plan(step)
        return Runner(
            lambda: step(*inputs),
            float(np.asarray(first)),
            compile_s,
            source,
            memory_of(plan),
            plan,
            build_s=build_s,
        )
    if hasattr(target, "eval"):
        target.eval()
    t0 = time.perf_counter()
    compiled = graphc.compiler.compile(target, *inputs, device=device, freeze=w.freeze)
    build_s = time.perf_counter() - t0
    first = compiled(*inputs)
    compile_s = time.perf_counter() - t0
    plan = find_plan(compiled)
    return Runner(lambda: compiled(*inputs), first, compile_s, source, memory_of(plan), plan, build_s=build_s)


def build_engine(
    engine: str, w: ModelFile, inputs: tuple, state: dict | None, device: str, threads: int
) -> Runner:
    """Compile a workload for one engine; a peer that cannot run it raises Skip."""
    if engine == "graphc":
        return build_graphc(w, inputs, state, device)
    from . import peers

    if engine in ("torch", "torch.compile"):
        return peers.build_torch(w, inputs, state, device, threads, compiled=engine == "torch.compile")
    if engine == "onnxruntime":
        return peers.build_onnxruntime(w, inputs, state, device, threads)
    raise GraphcError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, shortened."""
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
