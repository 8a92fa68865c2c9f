"""The CPU generator of every elementwise body: a single pointwise/broadcast primitive, a fused
pointwise chain, the epilogue of a fused matmul."""

from __future__ import annotations

from graphc.ir import Value
from graphc.kernels.scalar_ops import Unsupported

from .loops import (
    Body,
    Dims,
    Layout,
    aligned,
    arg_index,
    needed_values,
    numel,
    producers,
    rng_expr,
    rng_keys,
    use_parallel,
)
from .scalar import is_elementwise, scalar_expr
from .source import Names, Source, literal


def pointwise_source(body: Body, title: str = "pointwise", in_place: dict[int, int] | None = None) -> str:
    """One loop nest per distinct output shape computing the whole chain per element.

    Inputs broadcast through reshaped views with size-1 axes. Loop nests run from the largest
    output shape down: a smaller output may alias (in place) an input that a larger nest reads
    broadcast, so that input must be read first.

    ``in_place`` maps an output index to the input index whose array the caller always passes
    for it too (same shape). Such an output is stored through the input's view: LLVM then sees
    one pointer read and written at the same index and vectorizes, where two arguments that
    alias fail its run-time overlap check and the loop runs scalar (5x slower).
    """
    for n in body.nodes:
        if not is_elementwise(n):
            raise Unsupported(f"{n.op} in an elementwise body")
    src = Source(title)
    names = Names()
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, v in enumerate(body.outputs):
        by_shape.setdefault(v.shape, []).append(k)
    lines: list[str] = []
    parallel = False
    for shape in sorted(by_shape, key=lambda s: -numel(s)):
        parallel |= _pointwise_nest(body, shape, by_shape[shape], src, names, lines, in_place or {})
    return src.render(len(body.inputs) + len(body.outputs), lines, parallel)


def _pointwise_nest(
    body: Body,
    shape: tuple[int, ...],
    outs: list[int],
    src: Source,
    names: Names,
    lines: list[str],
    in_place: dict[int, int],
) -> bool:
    """Append the loop nest computing outputs ``outs`` (all of ``shape``); True if it uses prange."""
    prod, args = producers(body), arg_index(body)
    n_in = len(body.inputs)
    need = needed_values([body.outputs[k] for k in outs], prod, args)
    # Outputs stored through an input's view: the input's own key stands for both.
    store_key = {k: in_place.get(k, n_in + k) for k in outs}
    leaves: dict[object, Dims] = {}
    for k in outs:
        leaves[store_key[k]] = aligned(shape, shape)
    for v, k in sorted(args.items(), key=lambda kv: kv[1]):
        if v in need and k not in leaves:
            leaves[k] = aligned(v.shape, shape)
    rngs = [n for n in body.nodes if n.op == "rng_uniform" and n.outputs[0] in need]
    for n in rngs:
        leaves[("rng", id(n))] = aligned(n.outputs[0].shape, shape)
    lay = Layout(shape, len(shape), leaves, names)
    array_keys = [k for k in leaves if isinstance(k, int)]
    lines += lay.size_lines(array_keys)
    view = {}
    for key in array_keys:
        view[key] = names("v")
        lines.append(f"{view[key]} = a{key}.reshape({lay.view_shape(key)})")
    keys = rng_keys(rngs, args, src, names, lines)
    par = use_parallel(numel(shape))
    ivars = [names("i") for _ in lay.groups]
    innermost = len(ivars) - 1
    # Each statement sits in the outermost loop it depends on: a broadcast operand loaded inside
    # a loop that stores may alias it as far as LLVM knows, which keeps that loop scalar.
    blocks: dict[int, list[str]] = {g: [] for g in range(-1, len(ivars))}
    env: dict[Value, tuple[str, int]] = {}

    def depth_of(key: object) -> int:
        return max((g for g in range(len(ivars)) if lay.full_on(key, g)), default=-1)

    overwritten = set(store_key.values()) & set(args.values())

    def get(v: Value) -> tuple[str, int]:
        if v not in env:  # an input, loaded where first used
            key = args[v]
            env[v] = (names(), depth_of(key))
            load = f"{view[key]}[{lay.index(key, ivars)}]"
            if key in overwritten:  # see intrinsics.unseen: no masked stores
                load = f"{src.need('unseen')}({load})"
            blocks[env[v][1]].append(f"{env[v][0]} = {load}")
        return env[v]

    for n in body.nodes:
        o = n.outputs[0]
        if o not in need:
            continue
        if n.op == "const":
            env[o] = (literal(n.attrs["value"], o.dtype), -1)
            continue
        if n.op == "rng_uniform":
            expr, depth = rng_expr(n, lay, ivars, keys), innermost
        else:
            operands = [get(i) for i in n.inputs]
            expr = scalar_expr(n, [name for name, _ in operands], src)
            depth = max((d for _, d in operands), default=-1)
        env[o] = (names(), depth)
        blocks[depth].append(f"{env[o][0]} = {expr}")
    for k in outs:
        key = store_key[k]
        blocks[innermost].append(f"{view[key]}[{lay.index(key, ivars)}] = {get(body.outputs[k])[0]}")
    lines += blocks[-1]
    indent = ""
    for g, iv in enumerate(ivars):
        lines.append(f"{indent}for {iv} in {'prange' if par and g == 0 else 'range'}({lay.size_names[g]}):")
        indent += "    "
        lines += [indent + line for line in blocks[g]]
    return par
