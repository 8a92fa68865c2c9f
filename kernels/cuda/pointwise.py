"""The CUDA generator of every elementwise body (one primitive, a fused pointwise chain)."""

from __future__ import annotations

from graphc.ir import Graph, Node

from .loops import (
    BodyEmitter,
    IndexCtx,
    Params,
    Scope,
    decompose,
    finish,
    grid_1d,
    launch_config,
    numel,
)
from .source import KernelSource, indent, kernel_def


def gen_pointwise(node: Node, body: Graph) -> KernelSource:
    """One thread per output element, grid-stride, the whole body inline.

    Outputs of different shapes get one kernel each, over their own shape, largest first. Every
    element is then read and written by the same thread, so an output may share memory with an
    input of its shape (in-place): the smaller kernels run after the larger ones have finished
    reading that input. (One kernel over the broadcast domain would race: another thread could
    still read the input element after the writing thread overwrote it.)
    """
    cfg = launch_config()
    params = Params(node, body)
    emitter = BodyEmitter(body, params.args)
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, v in enumerate(body.outputs):
        groups.setdefault(v.shape, []).append(k)
    kernels, launch = [], []
    for g, shape in enumerate(sorted(groups, key=lambda s: (-numel(s), -len(s)))):
        n = numel(shape)
        scope = Scope(IndexCtx(shape, decompose("i", shape), "i", "d"), "s")
        emitter.store([(body.outputs[k], f"out{k}") for k in groups[shape]], scope)
        lines = [f"for i in range(cuda.grid(1), {n}, cuda.gridsize(1)):"] + indent(scope.code(), 1)
        name = "kernel" if g == 0 else f"kernel{g}"
        kernels.append((name, kernel_def(name, params.names, lines)))
        if n:
            launch.append(f"{name}[{grid_1d(n, cfg)}, {cfg.threads}]({', '.join(params.names)})")
    return finish(node, params, kernels, launch)
