"""Gradient buckets: the allreduce nodes ``compile_train(..., distributed=True)`` adds to the train graph.

Gradients are grouped in the order the backward graph computes them (the last layers' first,
the reverse of the parameters' order, as in PyTorch DDP) into buckets of about ``bucket_bytes``
(25 MiB by default) of one dtype. Each bucket gets an ``allreduce_start`` reading its gradients
and an ``allreduce_wait`` giving their averages over the ranks; the optimizer update then reads
the averages. Inside a bucket, the gradients whose size is a multiple of the arena alignment
come first, so that the memory planner can place them in the bucket buffer (concat in place:
``passes.bucket_layout``). A bucket of one gradient is not packed: MPI reads the gradient in
place and its wait holds it live (``packed=False``). The scheduling pass (``passes.schedule``, through
``passes.collectives.collective_order``) puts each start just after its last gradient and each
wait just before its updates.
"""

from __future__ import annotations

from collections.abc import Mapping

from graphc.ir import Graph, GraphcError, Value

DEFAULT_BUCKET_BYTES = 25 * 1024 * 1024


def plan_buckets(graph: Graph, grads: Mapping[str, Value], bucket_bytes: int) -> list[list[str]]:
    """Parameter names grouped into buckets, in the order their gradients are computed."""
    if not isinstance(bucket_bytes, int) or isinstance(bucket_bytes, bool) or bucket_bytes <= 0:
        raise GraphcError(f"compile_train: bucket_bytes must be a positive int, got {bucket_bytes!r}")
    position = {v: k for k, n in enumerate(graph.nodes) for v in n.outputs}
    names = sorted(grads, key=lambda name: position.get(grads[name], -1))  # stable: ties keep order
    buckets: list[list[str]] = []
    size, dtype = 0, None
    for name in names:
        v = grads[name]
        if v.dtype not in ("f32", "f64"):
            raise GraphcError(
                f"compile_train(distributed=True): the gradient of {name!r} is {v.type}; "
                "gradient allreduce takes f32 or f64"
            )
        if buckets and dtype == v.dtype and size < bucket_bytes:
            buckets[-1].append(name)
            size += v.type.nbytes
        else:
            buckets.append([name])
            size, dtype = v.type.nbytes, v.dtype
    return buckets


def add_gradient_allreduce(
    graph: Graph, grads: Mapping[str, Value], bucket_bytes: int = DEFAULT_BUCKET_BYTES
) -> dict[str, Value]:
    """Append a start/wait pair per bucket; return each parameter's averaged gradient."""
    from graphc.passes.memory_plan import ALIGNMENT

    averaged: dict[str, Value] = {}
    for index, names in enumerate(plan_buckets(graph, grads, bucket_bytes)):
        # Gradients of whole aligned blocks first (stable): then each of them, and the first
        # other one, starts on an aligned byte of the bucket buffer, where the memory planner
        # can have its producer write it (passes.bucket_layout: no packing copy).
        names = sorted(names, key=lambda n: grads[n].type.nbytes % ALIGNMENT != 0)
        values = [grads[n] for n in names]
        packed = len(values) > 1
        start = graph.add_node("allreduce_start", values, {"bucket": index, "packed": packed})
        held = [] if packed else values
        shapes = [v.shape for v in values]
        wait = graph.add_node("allreduce_wait", [start.output, *held], {"shapes": shapes, "bucket": index})
        averaged.update(zip(names, wait.outputs))
    return {name: averaged[name] for name in grads}
