"""The CUDA generator of every elementwise body (one primitive, a fused pointwise chain)."""

from __future__ import annotations

from graphc.ir import Graph, Node
from graphc.ir.fused import split_pointwise
from graphc.kernels.scalar_ops import Unsupported

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
    part_offset,
)
from .source import KernelSource, indent, kernel_def


def gen_pointwise(node: Node, body: Graph) -> KernelSource:
    """One thread per output element, grid-stride, the whole body inline.

    A slice of an input (the body's prologue) is read at its offset and strides; a concat output
    (the epilogue) is written by the kernel over its parts' shape, each part at its offset.

    Outputs of different shapes get one kernel each, over their own shape, largest first. Every
    element is then read and written by the same thread, so an output may share memory with an
    input of its shape (in-place): the smaller kernels run after the larger ones have finished
    reading that input. (One kernel over the broadcast domain would race: another thread could
    still read the input element after the writing thread overwrote it.)
    """
    cfg = launch_config()
    params = Params(node, body)
    emitter = BodyEmitter(body, params.args)
    parts = split_pointwise(list(body.inputs), list(body.nodes), list(body.outputs))
    if isinstance(parts, str):
        raise Unsupported(parts)
    concat_of = {n.outputs[0]: n for n in parts.concats}
    # Stores by shape: (output index, part index or None); a concat output is written part by
    # part, each part's point at its offset of the output (the body's epilogue).
    groups: dict[tuple[int, ...], list[tuple[int, int | None]]] = {}
    for k, v in enumerate(body.outputs):
        if v in concat_of:
            for p, u in enumerate(concat_of[v].inputs):
                groups.setdefault(u.shape, []).append((k, p))
        else:
            groups.setdefault(v.shape, []).append((k, None))
    kernels, launch = [], []
    for g, shape in enumerate(sorted(groups, key=lambda s: (-numel(s), -len(s)))):
        n = numel(shape)
        scope = Scope(IndexCtx(shape, decompose("i", shape), "i", "d"), "s")
        pairs, offsets = [], []
        for k, p in groups[shape]:
            v = body.outputs[k]
            if p is None:
                pairs.append((v, f"out{k}"))
                offsets.append(None)
            else:
                pairs.append((concat_of[v].inputs[p], f"out{k}"))
                offsets.append(part_offset(scope.ctx, concat_of[v], p))
        emitter.store(pairs, scope, offsets)
        lines = [f"for i in range(cuda.grid(1), {n}, cuda.gridsize(1)):"] + indent(scope.code(), 1)
        name = "kernel" if g == 0 else f"kernel{g}"
        kernels.append((name, kernel_def(name, params.names, lines)))
        if n:
            launch.append(f"{name}[{grid_1d(n, cfg)}, {cfg.threads}]({', '.join(params.names)})")
    return finish(node, params, kernels, launch)
