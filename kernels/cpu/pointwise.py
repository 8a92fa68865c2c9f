"""The CPU generator of every elementwise body: a single pointwise/broadcast primitive, a fused
pointwise chain, the epilogue of a fused matmul."""

from __future__ import annotations

from graphc.ir import Node, Value
from graphc.ir.fused import split_pointwise
from graphc.kernels.scalar_ops import Unsupported

from .loops import (
    PARALLEL_THRESHOLD,
    Body,
    Dims,
    Layout,
    Strided,
    aligned,
    arg_index,
    needed_values,
    numel,
    op_cost,
    part_leaf,
    producers,
    rng_expr,
    rng_keys,
    slice_leaf,
    use_parallel,
)
from .scalar import scalar_expr
from .source import Names, Source, literal


def pointwise_source(body: Body, title: str = "pointwise", in_place: dict[int, int] | None = None) -> str:
    """One loop nest per distinct output shape computing the whole chain per element.

    Inputs broadcast through reshaped views with size-1 axes. Loop nests run from the largest
    output shape down: a smaller output may alias (in place) an input that a larger nest reads
    broadcast, so that input must be read first.

    A slice of an input (the body's prologue, ``ir.fused.PointwiseParts``) is read through a flat
    view of that input at the slice's offset and strides; a concat output (its epilogue) is
    written part by part at each part's offset, in the nest over the parts' shape. Loop axes
    coalesce only where such a leaf's strides allow (``Strided.merges``), so the innermost loop
    stays unit-stride for step-1 slices and LLVM still vectorizes it.

    ``in_place`` maps an output index to the input index whose array the caller always passes
    for it too (same shape). Such an output is stored through the input's view: LLVM then sees
    one pointer read and written at the same index and vectorizes, where two arguments that
    alias fail its run-time overlap check and the loop runs scalar (5x slower).
    """
    parts = split_pointwise(list(body.inputs), list(body.nodes), list(body.outputs))
    if isinstance(parts, str):
        raise Unsupported(parts)
    concat_of = {n.outputs[0]: n for n in parts.concats}
    # A concat output is written through its own flat view even where it shares memory with an
    # input (fusion lets it only where every read of that memory is at the point that writes it).
    in_place = {k: j for k, j in (in_place or {}).items() if body.outputs[k] not in concat_of}
    src = Source(title)
    names = Names()
    by_shape: dict[tuple[int, ...], list[tuple[int, int | None]]] = {}
    for k, v in enumerate(body.outputs):
        if v in concat_of:
            for p, u in enumerate(concat_of[v].inputs):
                by_shape.setdefault(u.shape, []).append((k, p))
        else:
            by_shape.setdefault(v.shape, []).append((k, None))
    lines: list[str] = []
    flat: dict[int, str] = {}
    parallel = False
    for shape in sorted(by_shape, key=lambda s: -numel(s)):
        nest = _Nest(body, shape, by_shape[shape], src, names, lines, in_place, concat_of, flat)
        parallel |= nest.emit()
    return src.render(len(body.inputs) + len(body.outputs), lines, parallel)


class _Nest:
    """The loop nest over one shape computing its stores (an output, or one part of a concat output)."""

    def __init__(
        self,
        body: Body,
        shape: tuple[int, ...],
        stores: list[tuple[int, int | None]],
        src: Source,
        names: Names,
        lines: list[str],
        in_place: dict[int, int],
        concat_of: dict[Value, Node],
        flat: dict[int, str],
    ) -> None:
        self.body, self.shape, self.stores = body, shape, stores
        self.src, self.names, self.lines = src, names, lines
        self.in_place, self.concat_of, self.flat = in_place, concat_of, flat

    def _stored(self, k: int, p: int | None) -> Value:
        v = self.body.outputs[k]
        return v if p is None else self.concat_of[v].inputs[p]

    def emit(self) -> bool:
        """Append the nest's lines; True if it uses prange."""
        body, shape, names, lines, src = self.body, self.shape, self.names, self.lines, self.src
        prod, args = producers(body), arg_index(body)
        n_in = len(body.inputs)
        need = needed_values([self._stored(k, p) for k, p in self.stores], prod, args)
        # Inputs read element by element (not only through a slice), and each output's key: an
        # output stored through an input's view shares that input's key.
        direct = {v for n in body.nodes if n.op != "slice" and n.outputs[0] in need for v in n.inputs}
        direct |= {self._stored(k, p) for k, p in self.stores}
        store_key: dict[tuple[int, int | None], object] = {}
        leaves: dict[object, Dims] = {}
        strided: dict[object, Strided] = {}
        for k, p in self.stores:
            if p is None:
                store_key[k, p] = self.in_place.get(k, n_in + k)
                leaves[store_key[k, p]] = aligned(shape, shape)
            else:
                store_key[k, p] = ("part", k, p)
                leaves[store_key[k, p]], strided[store_key[k, p]] = part_leaf(
                    self.concat_of[body.outputs[k]], p, shape
                )
        for v, k in sorted(args.items(), key=lambda kv: kv[1]):
            if v in need and v in direct and k not in leaves:
                leaves[k] = aligned(v.shape, shape)
        sliced = {n.outputs[0]: n for n in body.nodes if n.op == "slice" and n.outputs[0] in need}
        for v, n in sliced.items():
            leaves[("slice", v)], strided[("slice", v)] = slice_leaf(n, shape)
        rngs = [n for n in body.nodes if n.op == "rng_uniform" and n.outputs[0] in need]
        for n in rngs:
            leaves[("rng", id(n))] = aligned(n.outputs[0].shape, shape)
        lay = Layout(shape, len(shape), leaves, names, strided=strided)
        array_keys = [k for k in leaves if isinstance(k, int)]
        lines += lay.size_lines(array_keys)
        view = {}
        for key in array_keys:
            view[key] = names("v")
            lines.append(f"{view[key]} = a{key}.reshape({lay.view_shape(key)})")
        for key in strided:  # one flat view per array, however many slices or parts use it
            arg = args[sliced[key[1]].inputs[0]] if key[0] == "slice" else n_in + key[1]
            if arg not in self.flat:
                whole = body.inputs[arg] if arg < n_in else body.outputs[arg - n_in]
                self.flat[arg] = names("f")
                lines.append(f"{self.flat[arg]} = a{arg}.reshape(({numel(whole.shape)},))")
            view[key] = self.flat[arg]
        keys = rng_keys(rngs, args, src, names, lines)
        cost = sum(op_cost(n) for n in body.nodes if n.outputs[0] in need)
        # A heavy loop below PARALLEL_THRESHOLD goes prange only over enough rows (group 0).
        rows = numel([shape[a] for a in lay.groups[0]])
        par = use_parallel(numel(shape), rows if numel(shape) <= PARALLEL_THRESHOLD else None, cost)
        ivars = [names("i") for _ in lay.groups]
        innermost = len(ivars) - 1
        # Each statement sits in the outermost loop it depends on: a broadcast operand loaded inside
        # a loop that stores may alias it as far as LLVM knows, which keeps that loop scalar.
        blocks: dict[int, list[str]] = {g: [] for g in range(-1, len(ivars))}
        env: dict[Value, tuple[str, int]] = {}

        def depth_of(key: object) -> int:
            return max((g for g in range(len(ivars)) if lay.full_on(key, g)), default=-1)

        def at(key: object) -> str:
            return lay.strided_index(key, ivars) if key in strided else lay.index(key, ivars)

        overwritten = set(store_key.values()) & set(args.values())

        def get(v: Value) -> tuple[str, int]:
            if v not in env:  # an input (or a slice of one), loaded where first used
                key = ("slice", v) if v in sliced else args[v]
                env[v] = (names(), depth_of(key))
                load = f"{view[key]}[{at(key)}]"
                if key in overwritten:  # see intrinsics.unseen: no masked stores
                    load = f"{src.need('unseen')}({load})"
                blocks[env[v][1]].append(f"{env[v][0]} = {load}")
            return env[v]

        for n in body.nodes:
            o = n.outputs[0]
            if o not in need or n.op == "slice":
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
        for k, p in self.stores:
            key = store_key[k, p]
            blocks[innermost].append(f"{view[key]}[{at(key)}] = {get(self._stored(k, p))[0]}")
        lines += blocks[-1]
        indent = ""
        for g, iv in enumerate(ivars):
            lines.append(
                f"{indent}for {iv} in {'prange' if par and g == 0 else 'range'}({lay.size_names[g]}):"
            )
            indent += "    "
            lines += [indent + line for line in blocks[g]]
        return par
