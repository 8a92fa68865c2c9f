"""Loop structure shared by the CPU generators: bodies, parallel thresholds, the loop layout.

Generated source never mentions value names: kernel arguments are ``a0..aN`` (inputs, then
outputs), temporaries ``t0..`` in emission order, so structurally identical bodies produce the
same text and share one cached kernel. Sizes are read from the argument arrays at run time
wherever an array carries them, so one kernel serves every shape with the same broadcast
pattern (fewer compiles); only attributes (slice starts, pad widths, constants) are baked in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from graphc.ir import Node, Value
from graphc.kernels.scalar_ops import Unsupported

from .source import NP_TYPE, Names, Source

# Above this many elements a kernel loops with prange (parallel=True). Below it, handing work
# to the thread pool costs more than it saves, and parallel=True roughly doubles the compile
# time. (It was 1 << 20 while OpenBLAS's spinning threads held a core between GEMMs: see blas.)
PARALLEL_THRESHOLD = 1 << 16
# prange over fewer trips than this leaves threads idle (and a 1-trip prange cost 8 ms here).
MIN_PARALLEL_TRIPS = 4
# Parallel row reductions split the rows into this many chunks (each with its own scratch rows);
# prange's static schedule hands each thread an equal share.
ROW_CHUNKS = 64


@dataclass
class Body:
    """What a generator compiles: one Value per input argument, nodes in order, one per output."""

    inputs: list[Value]
    nodes: list[Node]
    outputs: list[Value]


def numel(shape: Sequence[int]) -> int:
    """Number of elements of a shape."""
    n = 1
    for d in shape:
        n *= d
    return n


def use_parallel(elements: int, outer: int | None = None) -> bool:
    """Whether a kernel over ``elements`` elements (``outer`` trips of its prange loop) should use prange."""
    import numba

    if outer is not None and outer < MIN_PARALLEL_TRIPS:
        return False
    return elements > PARALLEL_THRESHOLD and numba.config.NUMBA_NUM_THREADS > 1


# ---------------------------------------------------------------- loop layout
Dims = list[tuple[int | None, int]]  # per own dim: (loop axis, or None for a size-1 dim; size)


def aligned(shape: Sequence[int], full: Sequence[int]) -> Dims:
    """Dims of a value right-aligned to the loop space ``full`` (NumPy broadcasting)."""
    r, rank = len(shape), len(full)
    if r > rank:
        raise Unsupported(f"rank {r} value in a rank {rank} loop")
    dims: Dims = []
    for k, s in enumerate(shape):
        ax = rank - r + k
        if s != 1 and full[ax] != s:
            raise Unsupported(f"size {s} does not match loop size {full[ax]}")
        dims.append((ax if s != 1 else None, s))
    return dims


class Layout:
    """A loop space ``full`` split into row axes (< split) and inner axes, with every array
    (leaf) viewed by a reshape that coalesces adjacent axes sharing one broadcast pattern.

    Axes of size 1 vanish; adjacent axes on one side of the split merge when every leaf either
    varies along both or along neither. Each side has at least one (possibly dummy) group.
    """

    def __init__(
        self, full: Sequence[int], split: int, leaves: dict[object, Dims], names: Names, inner: bool = False
    ) -> None:
        self.full = tuple(full)
        self.leaves = leaves
        self.vary = {}
        for key, dims in leaves.items():
            axes = [ax for ax, s in dims if s != 1]
            if any(ax is None for ax in axes) or axes != sorted(set(axes)):
                raise Unsupported("a value's dims do not map in order onto the loop axes")
            self.vary[key] = set(axes)
        groups: list[list[int]] = []
        sides: list[bool] = []
        last = None
        for a, size in enumerate(self.full):
            if size == 1:
                continue
            side = a >= split
            same = groups and sides[-1] == side and all((a in v) == (last in v) for v in self.vary.values())
            if same:
                groups[-1].append(a)
            else:
                groups.append([a])
                sides.append(side)
            last = a
        if False not in sides:
            groups.insert(0, [])
            sides.insert(0, False)
        if inner and True not in sides:
            groups.append([])
            sides.append(True)
        self.groups = groups
        self.sides = sides
        self.row_groups = [g for g, s in enumerate(sides) if not s]
        self.inner_groups = [g for g, s in enumerate(sides) if s]
        self.size_names = [names("n") for _ in groups]

    def full_on(self, key: object, g: int) -> bool:
        """Whether leaf ``key`` varies along group ``g``."""
        return bool(self.groups[g]) and self.groups[g][0] in self.vary[key]

    def size_lines(self, array_keys: Iterable[object]) -> list[str]:
        """Statements binding each group's size, from an array that spans it (else a literal)."""
        lines = []
        array_keys = list(array_keys)
        for g, axes in enumerate(self.groups):
            expr = str(numel([self.full[a] for a in axes]))
            for key in array_keys:
                if axes and self.full_on(key, g):
                    dims = self.leaves[key]
                    parts = [f"a{key}.shape[{d}]" for d, (ax, s) in enumerate(dims) if s != 1 and ax in axes]
                    expr = " * ".join(parts)
                    break
            lines.append(f"{self.size_names[g]} = {expr}")
        return lines

    def view_shape(self, key: object) -> str:
        """The reshape tuple that views leaf ``key`` over the coalesced groups."""
        parts = [self.size_names[g] if self.full_on(key, g) else "1" for g in range(len(self.groups))]
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"

    def index(self, key: object, ivars: Sequence[str]) -> str:
        """The index of leaf ``key`` at loop indices ``ivars`` (one per group)."""
        return ", ".join(ivars[g] if self.full_on(key, g) else "0" for g in range(len(self.groups)))

    def flat_index(self, key: object, ivars: Sequence[str]) -> str:
        """The C-order flat index into leaf ``key`` at loop indices ``ivars`` (for rng)."""
        expr = ""
        for g in range(len(self.groups)):
            if self.full_on(key, g):
                expr = ivars[g] if not expr else f"({expr} * {self.size_names[g]} + {ivars[g]})"
        return expr or "0"


def producers(body: Body) -> dict[Value, Node]:
    """Map each node-defined value of the body to its node."""
    return {v: n for n in body.nodes for v in n.outputs}


def arg_index(body: Body) -> dict[Value, int]:
    """Map each input value to its (first) argument index."""
    out: dict[Value, int] = {}
    for k, v in enumerate(body.inputs):
        out.setdefault(v, k)
    return out


def needed_values(targets: Iterable[Value], prod: dict[Value, Node], args: dict[Value, int]) -> set[Value]:
    """Every value the targets depend on (the targets included)."""
    seen: set[Value] = set()
    stack = list(targets)
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        if v not in args:
            stack.extend(prod[v].inputs)
    return seen


def _rng_offset_arg(node: Node, args: dict[Value, int]) -> int:
    off = node.inputs[0]
    if off not in args:
        raise Unsupported("rng_uniform offset computed inside the body")
    return args[off]


def _seed(node: Node) -> int:
    return int(node.attrs["seed"]) & 0xFFFFFFFF


def rng_keys(rngs: list[Node], args: dict[Value, int], src: Source, names: Names, lines: list[str]) -> dict:
    """Append the lines computing each rng_uniform node's per-call key; node id -> key name."""
    keys = {}
    for n in rngs:
        src.need("rng")
        keys[id(n)] = names("key")
        lines.append(f"{keys[id(n)]} = _rng_key({_seed(n)}, a{_rng_offset_arg(n, args)}.reshape((1,))[0])")
    return keys


def rng_expr(node: Node, lay: Layout, ivars: Sequence[str], keys: dict) -> str:
    """An rng_uniform element at loop indices ``ivars`` (its flat index in its own shape)."""
    flat = lay.flat_index(("rng", id(node)), ivars)
    return f"{NP_TYPE[node.outputs[0].dtype]}(_rng_u({keys[id(node)]}, {flat}))"
