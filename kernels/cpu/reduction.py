"""CPU generators of reductions: row reductions (sum/max/min over trailing axes, and fused
softmax/layer_norm bodies with their elementwise work), and sum/max/min over any axes.

Start values and combine steps are ``scalar_ops.REDUCTIONS``; the float sum (reassociating) and
the float max/min (LLVM's NaN-propagating intrinsics) are this backend's vectorizable forms.
"""

from __future__ import annotations

from collections.abc import Sequence

from graphc.ir import Node, Value
from graphc.kernels.scalar_ops import REDUCTIONS as REDUCTION_STEPS
from graphc.kernels.scalar_ops import Unsupported, family, sum_dtype

from .loops import (
    ROW_CHUNKS,
    Body,
    Dims,
    Layout,
    arg_index,
    numel,
    producers,
    rng_expr,
    rng_keys,
    use_parallel,
)
from .pointwise import pointwise_source
from .scalar import is_elementwise, scalar_expr
from .source import NP_TYPE, Names, Source, literal

REDUCTIONS = tuple(REDUCTION_STEPS)
CHEAP_OPS = ("add", "sub", "mul", "neg", "maximum", "minimum", "broadcast_to", "cast")


def identity(op: str, dtype: str) -> str:
    """The start value of a sum/max/min accumulation over ``dtype``, as source."""
    acc = sum_dtype(dtype) if op == "sum" else dtype
    return literal(REDUCTION_STEPS[op].start(acc), acc)


def combine(op: str, dtype: str, acc: str, v: str) -> str:
    """Source of one accumulation step ``acc op= v`` with NumPy's NaN propagation."""
    return REDUCTION_STEPS[op].combine(dtype, acc, v)


def reduce_lines(op: str, dtype: str, result: str, array: str, src: Source, names: Names) -> list[str]:
    """Statements setting ``result`` to op (sum/max/min) over the 1-D ``array`` expression.

    Only the float sum calls a helper function; the rest are inlined (one numba function less to
    compile; the float max/min through an intrinsic).
    """
    fam = family(dtype)
    if op == "sum" and fam == "float":
        return [f"{result} = {src.need(f'sum_{dtype}')}({array})"]
    b, j = names("b"), names("j")
    lines = [f"{b} = {array}", f"{result} = {identity(op, dtype)}"]
    if fam == "float" and op in ("max", "min"):
        extremum = src.need(f"nan_{op}")
        lines += [f"for {j} in range({b}.shape[0]):", f"    {result} = {extremum}({result}, {b}[{j}])"]
        return lines
    lines.append(f"for {j} in range({b}.shape[0]):")
    lines.append(f"    {result} = {combine(op, dtype, result, f'{b}[{j}]')}")
    if fam == "int" and op == "sum":
        lines.append(f"{result} = {NP_TYPE[dtype]}({result})")
    return lines


# ---------------------------------------------------------------- row reductions
class _Offsets:
    """Axis offsets of body values in a reduction's loop space (a weighted union-find).

    Value ``v`` of rank r occupies loop axes offset(v) .. offset(v) + r - 1. NumPy broadcasting
    fixes offset differences between an op's operands and its result; reductions pin their
    input and result to offset 0. A body input takes its offset from the ops that use it, so an
    input of the rows' shape lines up with a keepdims=False row value while an input of the
    inner shape lines up with the trailing axes.
    """

    ANCHOR = "loop space"

    def __init__(self) -> None:
        self.parent: dict[object, object] = {}
        self.delta: dict[object, int] = {}  # offset(x) - offset(parent(x))

    def find(self, x: object) -> tuple[object, int]:
        """The root of x and offset(x) - offset(root)."""
        if x not in self.parent:
            self.parent[x], self.delta[x] = x, 0
        if self.parent[x] is x:
            return x, 0
        root, d = self.find(self.parent[x])
        self.parent[x], self.delta[x] = root, self.delta[x] + d
        return root, self.delta[x]

    def union(self, x: object, y: object, d: int) -> None:
        """Require offset(x) - offset(y) == d."""
        rx, dx = self.find(x)
        ry, dy = self.find(y)
        if rx is ry:
            if dx - dy != d:
                raise Unsupported("a value would sit at two places in the loop space")
            return
        if rx is self.ANCHOR:  # keep the anchor a root
            rx, ry, dx, dy, d = ry, rx, dy, dx, -d
        self.parent[rx], self.delta[rx] = ry, d + dy - dx


def _loop_dims(body: Body, full: tuple[int, ...]) -> dict[Value, Dims]:
    """Dims (loop axis, size) of every body value of a reduction body over loop space ``full``."""
    off = _Offsets()
    values = list(body.inputs) + [v for n in body.nodes for v in n.outputs]

    def spread(v: Value) -> bool:  # values of one element broadcast anywhere: no constraint
        return any(s != 1 for s in v.shape)

    for n in body.nodes:
        o = n.outputs[0]
        if n.op in REDUCTIONS:
            off.union(n.inputs[0], off.ANCHOR, 0)
            off.union(o, off.ANCHOR, 0)
        elif n.op not in ("const", "rng_uniform") and spread(o):
            for i in n.inputs:
                if spread(i):
                    off.union(i, o, len(o.shape) - len(i.shape))
    base: dict[object, int] = {off.ANCHOR: 0}
    for v in sorted(values, key=lambda v: -len(v.shape)):  # free groups: right-align the widest
        root, d = off.find(v)
        base.setdefault(root, len(full) - len(v.shape) - d)
    dims: dict[Value, Dims] = {}
    for v in values:
        root, d = off.find(v)
        start = base[root] + d
        entry: Dims = []
        for j, s in enumerate(v.shape):
            ax = start + j
            if s != 1 and not (0 <= ax < len(full) and full[ax] == s):
                raise Unsupported(f"a {v.type} value does not fit the loop space {full}")
            entry.append((ax if s != 1 else None, s))
        dims[v] = entry
    return dims


def reduction_source(
    body: Body, title: str = "reduction", function: str = "kernel", serial: bool = False
) -> str:
    """Rows of the leading axes, each in phased loops over the reduced trailing axes.

    ``function`` names the function; ``serial`` keeps it off the thread pool whatever its size (a
    kernel that another parallel kernel calls per task: attention's rows).

    Loop k over a row computes the operands of the reductions whose inputs need only results
    of loops < k (plus element outputs that become ready); values an earlier loop computed are
    kept in per-row scratch buffers rather than recomputed. Reductions run over contiguous
    buffers, so the element loops themselves stay free of loop-carried dependencies and
    vectorize. With prange, rows are split into one chunk per thread, each with its own scratch.
    """
    reds = [n for n in body.nodes if n.op in REDUCTIONS]
    if not reds:
        return pointwise_source(body, title)
    for n in body.nodes:
        if n.op not in REDUCTIONS and not is_elementwise(n):
            raise Unsupported(f"{n.op} in a reduction body")
    full = reds[0].inputs[0].shape
    red_axes = set(reds[0].attrs["axes"])
    for n in reds:
        if n.inputs[0].shape != full or set(n.attrs["axes"]) != red_axes:
            raise Unsupported("reductions over different shapes or axes")
    split = len(full) - len(red_axes)
    if red_axes != set(range(split, len(full))):
        raise Unsupported("reduced axes are not the trailing axes")
    prod, args = producers(body), arg_index(body)
    n_in = len(body.inputs)
    # x - max(x) over the row x is in: never positive (softmax, log-softmax).
    below_row_max = {
        n.outputs[0]
        for n in body.nodes
        if n.op == "sub"
        and n.inputs[1] in prod
        and prod[n.inputs[1]].op == "max"
        and prod[n.inputs[1]].inputs[0] is n.inputs[0]
    }

    dims = _loop_dims(body, full)  # where every value lives in the loop space (rows x inner)

    def is_elem(v: Value) -> bool:
        return any(s != 1 and ax >= split for ax, s in dims[v])

    # Loop number of every reduction and element output: after the loops it depends on.
    level: dict[Value, int] = {v: 0 for v in body.inputs}
    loop_of: dict[Node, int] = {}
    for n in body.nodes:
        o = n.outputs[0]
        base = max((level[i] for i in n.inputs), default=0)
        if n.op in REDUCTIONS:
            loop_of[n] = base + 1
            level[o] = base + 1
        else:
            level[o] = base
    elem_outs = [k for k, v in enumerate(body.outputs) if is_elem(v)]
    row_outs = [k for k, v in enumerate(body.outputs) if not is_elem(v)]
    n_loops = max([*loop_of.values(), *(level[body.outputs[k]] + 1 for k in elem_outs)])

    names = Names()
    src = Source(title)
    leaves: dict[object, Dims] = {}
    for k, v in enumerate(body.outputs):
        leaves[n_in + k] = dims[v]
    for v, k in sorted(args.items(), key=lambda kv: kv[1]):
        leaves[k] = dims[v]
    rngs = [n for n in body.nodes if n.op == "rng_uniform"]
    for n in rngs:
        leaves[("rng", id(n))] = dims[n.outputs[0]]
    lay = Layout(full, split, leaves, names, inner=True)
    array_keys = [k for k in leaves if isinstance(k, int)]
    head = lay.size_lines(array_keys)
    view = {}
    for key in array_keys:
        view[key] = names("v")
        head.append(f"{view[key]} = a{key}.reshape({lay.view_shape(key)})")
    keys = rng_keys(rngs, args, src, names, head)
    rows = " * ".join(lay.size_names[g] for g in lay.row_groups)
    inner = " * ".join(lay.size_names[g] for g in lay.inner_groups)
    head += [f"nrows = {rows}", f"ninner = {inner}"]

    ivars = [names("o") if not side else names("i") for side in lay.sides]
    single_inner = len(lay.inner_groups) == 1
    jvar = ivars[lay.inner_groups[0]] if single_inner else "j"

    row_env: dict[Value, str] = {}  # row-level values of the current row
    scratch: dict[Value, str] = {}  # element values kept per row: value -> buffer name
    computed_in: dict[Value, int] = {}  # element value -> loop that computed it
    loop_env: list[dict[Value, str]] = [{} for _ in range(n_loops + 1)]
    bodies: list[list[str]] = [[] for _ in range(n_loops + 1)]
    stores: list[list[str]] = [[] for _ in range(n_loops + 1)]  # scratch stores, end of loop k
    pre: list[list[str]] = [[] for _ in range(n_loops + 2)]  # row-level code before loop k

    def load(v: Value, idx_vars: Sequence[str]) -> str:
        key = args[v]
        return f"{view[key]}[{lay.index(key, idx_vars)}]"

    def row_value(v: Value, out: list[str]) -> str:
        """A row-level value, computed (once per row) into ``out``."""
        if v in row_env:
            return row_env[v]
        stack = [v]
        order: list[Value] = []
        seen: set[Value] = set()
        while stack:  # post-order so operands come first
            u = stack[-1]
            if u in row_env or u in seen:
                stack.pop()
                continue
            leaf = u in args or prod[u].op in REDUCTIONS
            pending = [] if leaf else [i for i in prod[u].inputs if i not in row_env and i not in seen]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            seen.add(u)
            order.append(u)
        for u in order:
            if u in args:
                name = names()
                out.append(f"{name} = {load(u, ivars)}")
            else:
                n = prod[u]
                if n.op in REDUCTIONS:
                    raise AssertionError("reduction result used before its loop")
                if n.op == "const":
                    row_env[u] = literal(n.attrs["value"], u.dtype)
                    continue
                name = names()
                if n.op == "rng_uniform":
                    out.append(f"{name} = {rng_expr(n, lay, ivars, keys)}")
                else:
                    out.append(f"{name} = {scalar_expr(n, [row_env[i] for i in n.inputs], src)}")
            row_env[u] = name
        return row_env[v]

    def cheap_again(v: Value) -> bool:
        # One cheap op whose element operands are at hand (inputs or kept values): computing
        # it again costs a load and an op, keeping it costs a store too (stores are the
        # scarcer port). layer_norm's d = y - mean is recomputed from the kept y.
        n = prod[v]
        if v in scratch or n.op not in CHEAP_OPS:
            return False
        return all(not is_elem(i) or i in args or i in scratch for i in n.inputs)

    def elem_value(v: Value, k: int) -> str:
        """An element value inside loop k (row values are hoisted into pre[k])."""
        env = loop_env[k]
        if v in env:
            return env[v]
        if not is_elem(v):
            env[v] = row_value(v, pre[k])
            return env[v]
        if v in args:
            env[v] = names()
            bodies[k].append(f"{env[v]} = {load(v, ivars)}")
            return env[v]
        earlier = computed_in.get(v)
        if earlier is not None and earlier < k and not cheap_again(v):
            if v not in scratch:
                scratch[v] = names("s")
                stores[earlier].append(f"{scratch[v]}[{jvar}] = {loop_env[earlier][v]}")
            env[v] = names()
            bodies[k].append(f"{env[v]} = {scratch[v]}[{jvar}]")
            return env[v]
        n = prod[v]
        if n.op == "rng_uniform":
            expr = rng_expr(n, lay, ivars, keys)
        else:
            operands = [elem_value(i, k) for i in n.inputs]
            expr = scalar_expr(n, operands, src, nonpositive=n.inputs[0] in below_row_max)
        env[v] = names()
        bodies[k].append(f"{env[v]} = {expr}")
        computed_in[v] = k
        return env[v]

    after: list[list[str]] = [[] for _ in range(n_loops + 1)]
    for k in range(1, n_loops + 1):
        for n in reds:
            if loop_of[n] != k:
                continue
            operand = n.inputs[0]
            direct = (
                operand in args
                and single_inner
                and lay.full_on(args[operand], lay.inner_groups[0])
                and operand not in scratch
            )
            if direct:
                key = args[operand]
                idx = [ivars[g] if lay.full_on(key, g) else "0" for g in lay.row_groups] + [":"]
                row_env[n.outputs[0]] = res = names("r")
                after[k] += reduce_lines(
                    n.op, operand.dtype, res, f"{view[key]}[{', '.join(idx)}]", src, names
                )
                continue
            earlier = computed_in.get(operand)
            if operand in scratch:
                pass
            elif earlier is not None and earlier < k and operand not in args:
                scratch[operand] = names("s")
                stores[earlier].append(f"{scratch[operand]}[{jvar}] = {loop_env[earlier][operand]}")
            else:
                name = elem_value(operand, k)
                scratch[operand] = names("s")
                stores[k].append(f"{scratch[operand]}[{jvar}] = {name}")
                computed_in[operand] = k
            row_env[n.outputs[0]] = res = names("r")
            after[k] += reduce_lines(n.op, operand.dtype, res, scratch[operand], src, names)
        for idx_out in elem_outs:
            v = body.outputs[idx_out]
            if level[v] + 1 != k:
                continue
            name = elem_value(v, k)
            key = n_in + idx_out
            bodies[k].append(f"{view[key]}[{lay.index(key, ivars)}] = {name}")
    post: list[str] = []
    for idx_out in row_outs:
        key = n_in + idx_out
        name = row_value(body.outputs[idx_out], post)
        post.append(f"{view[key]}[{lay.index(key, ivars)}] = {name}")

    # Assemble: chunks of rows (prange) > rows > phased inner loops.
    par = not serial and use_parallel(numel(full)) and numel([full[a] for a in range(split)]) > 1
    lines = list(head)
    # A fixed chunk count: get_num_threads() here would make numba refuse to cache the kernel.
    lines.append(f"nch = min(nrows, {ROW_CHUNKS if par else 1})")
    lines.append(f"for c in {'prange' if par else 'range'}(nch):")
    ind = "    "
    dtypes = {v: v.dtype for v in scratch}
    for v, buf in scratch.items():
        lines.append(f"{ind}{buf} = np.empty(ninner, {NP_TYPE[dtypes[v]]})")
    lines.append(f"{ind}for r in range(c * nrows // nch, (c + 1) * nrows // nch):")
    ind += "    "
    rest = "r"
    row_g = lay.row_groups
    for pos, g in enumerate(row_g):  # unravel the row index into the row groups
        if pos == len(row_g) - 1:
            lines.append(f"{ind}{ivars[g]} = {rest}")
        else:
            tail = " * ".join(lay.size_names[h] for h in row_g[pos + 1 :])
            lines.append(f"{ind}{ivars[g]} = {rest} // ({tail})")
            lines.append(f"{ind}q{pos} = {rest} % ({tail})")
            rest = f"q{pos}"
    for k in range(1, n_loops + 1):
        lines += [ind + s for s in pre[k]]
        if not bodies[k] and not stores[k]:  # only direct reductions over input rows
            lines += [ind + s for s in after[k]]
            continue
        li = ind
        for g in lay.inner_groups:
            lines.append(f"{li}for {ivars[g]} in range({lay.size_names[g]}):")
            li += "    "
        if not single_inner:
            flat = ""
            for g in lay.inner_groups:
                flat = ivars[g] if not flat else f"({flat} * {lay.size_names[g]} + {ivars[g]})"
            lines.append(f"{li}j = {flat}")
        loop_lines = bodies[k] + stores[k]
        lines += [li + s for s in loop_lines] or [li + "pass"]
        lines += [ind + s for s in after[k]]
    lines += [ind + s for s in post]
    return src.render(n_in + len(body.outputs), lines, par, function)


# ---------------------------------------------------------------- reductions over any axes
def accumulate_source(node: Node) -> str:
    """sum/max/min over arbitrary axes: outputs start at the identity and every input element
    is folded in, in the input's C order (NumPy's order for non-trailing axes). A trailing
    reduced run is folded with the vectorized row reducer."""
    x = node.inputs[0]
    op, dtype = node.op, x.dtype
    axes = set(node.attrs["axes"])
    groups: list[tuple[bool, list[int]]] = []
    for d, size in enumerate(x.shape):
        if size == 1:
            continue
        red = d in axes
        if groups and groups[-1][0] == red:
            groups[-1][1].append(d)
        else:
            groups.append((red, [d]))
    if not groups:
        groups = [(False, [])]
    src = Source(f"{op} over axes {sorted(axes)}")
    T = NP_TYPE[dtype]
    lines = []
    sizes = []
    for g, (_, dims) in enumerate(groups):
        expr = " * ".join(f"a0.shape[{d}]" for d in dims) or "1"
        lines.append(f"n{g} = {expr}")
        sizes.append(f"n{g}")
    tup = ", ".join(sizes) + ","
    keep = ", ".join("1" if red else f"n{g}" for g, (red, _) in enumerate(groups)) + ","
    lines.append(f"x = a0.reshape(({tup}))")
    lines.append(f"o = a1.reshape(({keep}))")
    lines.append("of = a1.reshape((a1.size,))")
    lines.append("for k in range(of.shape[0]):")
    lines.append(f"    of[k] = {identity(op, dtype)}")
    last_red = groups[-1][0]
    loop_groups = groups[:-1] if last_red else groups
    par = use_parallel(x.type.numel) and not groups[0][0] and len(loop_groups) > 0
    ind = ""
    for g in range(len(loop_groups)):
        lines.append(f"{ind}for i{g} in {'prange' if par and g == 0 else 'range'}(n{g}):")
        ind += "    "
    oidx = ", ".join("0" if red else f"i{g}" for g, (red, _) in enumerate(groups) if g < len(loop_groups))
    if last_red:
        oidx = (oidx + ", 0") if oidx else "0"
        xidx = ", ".join([f"i{g}" for g in range(len(loop_groups))] + [":"])
        lines += [ind + line for line in reduce_lines(op, dtype, "v", f"x[{xidx}]", src, Names())]
    else:
        lines.append(f"{ind}v = x[{', '.join(f'i{g}' for g in range(len(groups)))}]")
    step = combine(op, dtype, f"o[{oidx}]", "v")
    if dtype == "bool":
        lines.append(f"{ind}o[{oidx}] = {step}")
    else:
        lines.append(f"{ind}o[{oidx}] = {T}({step})")
    return src.render(2, lines, par)
