"""CPU generators of the movement ops: transpose, slice and pad."""

from __future__ import annotations

from graphc.ir import Node

from .loops import numel, use_parallel
from .source import Source, literal


# ---------------------------------------------------------------- movement
def transpose_source(node: Node) -> str:
    """out = x.transpose(perm); runs of input axes that stay adjacent are coalesced."""
    x = node.inputs[0]
    perm = [p for p in node.attrs["perm"] if x.shape[p] != 1]
    runs: list[list[int]] = []
    for p in perm:
        if runs and runs[-1][-1] + 1 == p:
            runs[-1].append(p)
        else:
            runs.append([p])
    if not runs:
        runs = [[]]
    in_order = sorted(range(len(runs)), key=lambda r: runs[r][0] if runs[r] else 0)
    lines = []
    for r, axes in enumerate(runs):
        lines.append(f"n{r} = " + (" * ".join(f"a0.shape[{d}]" for d in axes) or "1"))
    lines.append("x = a0.reshape((" + ", ".join(f"n{r}" for r in in_order) + ",))")
    lines.append("o = a1.reshape((" + ", ".join(f"n{r}" for r in range(len(runs))) + ",))")
    outer = numel([x.shape[d] for d in runs[0]]) if runs else 1
    par = use_parallel(x.type.numel, outer)
    ind = ""
    for r in range(len(runs)):
        lines.append(f"{ind}for i{r} in {'prange' if par and r == 0 else 'range'}(n{r}):")
        ind += "    "
    oidx = ", ".join(f"i{r}" for r in range(len(runs)))
    xidx = ", ".join(f"i{r}" for r in in_order)
    lines.append(f"{ind}o[{oidx}] = x[{xidx}]")
    return Source(f"transpose {tuple(node.attrs['perm'])}").render(2, lines, par)


def _nest(rank: int, bound: str, par: bool, lines: list[str]) -> str:
    ind = ""
    for d in range(rank):
        lines.append(f"{ind}for i{d} in {'prange' if par and d == 0 else 'range'}({bound}.shape[{d}]):")
        ind += "    "
    return ind


def slice_source(node: Node) -> str:
    """out[i] = x[start + step * i] per axis (starts and steps baked in)."""
    out = node.outputs[0]
    starts, steps = node.attrs["starts"], node.attrs["steps"]
    rank = len(out.shape)
    lines: list[str] = []
    if rank == 0:
        lines.append("a1.reshape((1,))[0] = a0.reshape((1,))[0]")
        return Source("slice").render(2, lines, False)
    par = use_parallel(out.type.numel, out.shape[0])
    ind = _nest(rank, "a1", par, lines)
    xidx = ", ".join(
        f"i{d}" if (a, s) == (0, 1) else f"{a} + {s} * i{d}" if s != 1 else f"{a} + i{d}"
        for d, (a, s) in enumerate(zip(starts, steps))
    )
    lines.append(f"{ind}a1[{', '.join(f'i{d}' for d in range(rank))}] = a0[{xidx}]")
    return Source(f"slice {tuple(starts)} step {tuple(steps)}").render(2, lines, par)


def pad_source(node: Node) -> str:
    """Fill out with the pad value, then copy x to its offset (pads and value baked in)."""
    x, out = node.inputs[0], node.outputs[0]
    pads = node.attrs["pads"]
    rank = len(x.shape)
    lines = ["of = a1.reshape((a1.size,))", "for k in range(of.shape[0]):"]
    lines.append(f"    of[k] = {literal(node.attrs['value'], out.dtype)}")
    if rank == 0:
        lines.append("a1.reshape((1,))[0] = a0.reshape((1,))[0]")
        return Source("pad").render(2, lines, False)
    par = use_parallel(out.type.numel, x.shape[0])
    ind = _nest(rank, "a0", par, lines)
    oidx = ", ".join(f"{lo} + i{d}" if lo else f"i{d}" for d, (lo, _) in enumerate(pads))
    lines.append(f"{ind}a1[{oidx}] = a0[{', '.join(f'i{d}' for d in range(rank))}]")
    return Source(f"pad {tuple(tuple(p) for p in pads)}").render(2, lines, par)
