"""The AVX-512 micro-kernel of the small-m float32 GEMM (``sgemm``), written with numba's ``intrinsic`` API.

``sgemm_tile(a, ia, rows, p0, kc, bp, b0, ldb, c, ic, jc, cols, add)`` computes a ``ROWS`` x ``COLS``
block ``c[ic + r, jc + j] (+)= sum_p a[ia + r, p0 + p] * bp[b0 + p * ldb + j]`` for ``r < rows``,
``j < cols``, ``p < kc``: ``ROWS * COLS / 16`` = 16 zmm accumulators, each step broadcasting
``ROWS`` values of ``a`` (any strides: a transposed view costs nothing) and loading ``COLS / 16``
vectors of the panel ``bp`` (B's ``kc`` rows of ``COLS`` columns, packed by ``sgemm_pack``), one
``llvm.fma.v16f32`` per accumulator. Each output is one chain of FMAs in ``p`` order, so its bits
depend only on the ``kc`` blocking, never on how tiles are shared among threads. Rows past
``rows`` read row ``rows - 1`` again and are not stored; columns past ``cols`` are masked off the
stores (the panel holds zeros there). ``add`` (nonzero): the block is added to what ``c`` holds.
``sgemm_tile_t`` stores the block transposed, ``c[ic + j, jc + r]``: for ``c.T = W @ a.T`` with W
the broadcast operand, read as it lies. ``sgemm_tile_copy`` is ``sgemm_tile`` reading B's rows as they
lie (unit column stride) and storing them into the panel as ``sgemm_pack`` would, for the row tiles
after it. ``sgemm_add_leaves`` adds a fused epilogue's addends to a finished block of ``c``;
``sgemm_tile_leaves`` adds them in the store, and prefetches their lines (this block's and the next
panel's) before its depth loop, since an addend matrix is usually read once, from memory.
``HAVE_AVX512`` says whether numba compiles for a host with AVX-512F; callers fall back otherwise.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

ROWS = 8  # rows of a per tile
COLS = 32  # columns of B per tile (a multiple of the 16 lanes)
_LANES = 16  # float32 lanes of a zmm register


def _host_has_avx512() -> bool:
    """Whether numba compiles for this host (no NUMBA_CPU_NAME/NUMBA_CPU_FEATURES override) and
    the host has AVX-512F."""
    if numba.config.CPU_NAME or numba.config.CPU_FEATURES:
        return False
    return bool(llvm.get_host_cpu_features().get("avx512f"))


HAVE_AVX512 = _host_has_avx512()


def _declare(builder: ir.IRBuilder, name: str, fnty: ir.FunctionType) -> ir.Function:
    """The declaration of the LLVM intrinsic ``name`` (type suffixes spelled out) in the builder's
    module (llvmlite's ``declare_intrinsic`` cannot name vector overloads)."""
    module = builder.module
    fn = module.globals.get(name)
    return fn if fn is not None else ir.Function(module, fnty, name)


def _vf() -> ir.VectorType:
    """<16 x float>: a zmm register of float32."""
    return ir.VectorType(ir.FloatType(), _LANES)


def _masked_store(builder: ir.IRBuilder) -> ir.Function:
    """``llvm.masked.store`` of <16 x float> (one vmovups with a k-mask)."""
    vf = _vf()
    fnty = ir.FunctionType(
        ir.VoidType(), [vf, vf.as_pointer(), ir.IntType(32), ir.VectorType(ir.IntType(1), _LANES)]
    )
    return _declare(builder, "llvm.masked.store.v16f32.p0", fnty)


def _masked_load(builder: ir.IRBuilder) -> ir.Function:
    """``llvm.masked.load`` of <16 x float>: masked-off lanes are not read (no fault past an end)."""
    vf = _vf()
    fnty = ir.FunctionType(vf, [vf.as_pointer(), ir.IntType(32), ir.VectorType(ir.IntType(1), _LANES), vf])
    return _declare(builder, "llvm.masked.load.v16f32.p0", fnty)


def _splat(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """A vector of 16 copies of the scalar ``value``."""
    vty = ir.VectorType(value.type, _LANES)
    one = builder.insert_element(ir.Constant(vty, None), value, ir.IntType(32)(0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), _LANES), [0] * _LANES)
    return builder.shuffle_vector(one, ir.Constant(vty, None), zeros)


def _a_row_pointers(
    builder: ir.IRBuilder, a_base: ir.Value, ia: ir.Value, rows: ir.Value, p0: ir.Value,
    sa_r: ir.Value, sa_p: ir.Value, count: int,
) -> list[ir.Value]:  # fmt: skip
    """Byte pointers to ``a[ia + r, p0]`` for ``r < count`` (``a_base`` a byte pointer, ``sa_r``/
    ``sa_p`` a's strides in bytes); rows at or past ``rows`` read row ``rows - 1`` again."""
    i64 = ir.IntType(64)
    last = builder.sub(rows, i64(1))
    pointers = []
    for r in range(count):
        row = builder.add(ia, builder.select(builder.icmp_signed("<", i64(r), rows), i64(r), last))
        start = builder.add(builder.mul(row, sa_r), builder.mul(p0, sa_p))
        pointers.append(builder.gep(a_base, [start]))
    return pointers


def _panel_row(
    builder: ir.IRBuilder, b_base: ir.Value, p: ir.Value, ldb: ir.Value, nvec: int
) -> list[ir.Value]:
    """The ``nvec`` vectors of row ``p`` of a packed panel (``b_base`` a float pointer, ``ldb`` floats
    a row)."""
    i64 = ir.IntType(64)
    pointer = _vf().as_pointer()
    return [
        builder.load(
            builder.bitcast(
                builder.gep(b_base, [builder.add(builder.mul(p, ldb), i64(v * _LANES))]), pointer
            ),
            align=4,
        )
        for v in range(nvec)
    ]


def _fma_rows(
    builder: ir.IRBuilder, fma: ir.Function, a_rows: list[ir.Value], at: ir.Value, bv: list[ir.Value],
    slots: list[ir.Value],
) -> None:  # fmt: skip
    """One step of a tile: for each row pointer, broadcast ``a`` at byte offset ``at`` and add its
    products with the row vectors ``bv`` to the accumulators ``slots`` (row-major: row r, vector v
    at ``r * len(bv) + v``), one FMA each."""
    f32p = ir.FloatType().as_pointer()
    nvec = len(bv)
    for r, a_row in enumerate(a_rows):
        sv = _splat(builder, builder.load(builder.bitcast(builder.gep(a_row, [at]), f32p), align=4))
        for v in range(nvec):
            slot = slots[r * nvec + v]
            builder.store(builder.call(fma, [sv, bv[v], builder.load(slot)]), slot)


def _lane_mask(builder: ir.IRBuilder, count: ir.Value, first: int = 0) -> ir.Value:
    """The <16 x i1> mask of lanes ``l`` with ``first + l < count`` (``count`` an i64)."""
    lanes = ir.Constant(ir.VectorType(ir.IntType(64), _LANES), [first + lane for lane in range(_LANES)])
    return builder.icmp_signed("<", lanes, _splat(builder, count))


def _vptr(builder: ir.IRBuilder, base: ir.Value, at: ir.Value) -> ir.Value:
    """``base`` (an i8*) advanced ``at`` bytes, as a <16 x float>*."""
    return builder.bitcast(builder.gep(base, [at]), _vf().as_pointer())


def _transpose16(builder: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """The 16 columns of the 16 x 16 matrix whose rows are ``rows`` (16 <16 x float> vectors):
    four stages, each swapping one bit of the row index with the same bit of the column index
    through two-source shuffles (64 in all)."""
    idx = ir.VectorType(ir.IntType(32), _LANES)
    rows = list(rows)
    for t in range(4):
        bit = 1 << t
        lo = [j if not j & bit else _LANES + j - bit for j in range(_LANES)]
        hi = [j + bit if not j & bit else _LANES + j for j in range(_LANES)]
        for i in range(_LANES):
            if not i & bit:
                x, y = rows[i], rows[i | bit]
                rows[i] = builder.shuffle_vector(x, y, ir.Constant(idx, lo))
                rows[i | bit] = builder.shuffle_vector(x, y, ir.Constant(idx, hi))
    return rows


def _put(builder: ir.IRBuilder, val: ir.Value, ptr: ir.Value, mask: ir.Value, adding: ir.Value) -> None:
    """Store the lanes of ``val`` in ``mask`` at ``ptr``, plus what is there when ``adding``."""
    store, load = _masked_store(builder), _masked_load(builder)
    i32 = ir.IntType(32)
    with builder.if_else(adding) as (add, overwrite):
        with add:
            old = builder.call(load, [ptr, i32(4), mask, ir.Constant(_vf(), None)])
            builder.call(store, [builder.fadd(val, old), ptr, i32(4), mask])
        with overwrite:
            builder.call(store, [val, ptr, i32(4), mask])


def _store_rows(
    builder: ir.IRBuilder,
    accs: list[ir.Value],
    c_base: ir.Value,
    sc_r: ir.Value,
    ic: ir.Value,
    jc: ir.Value,
    rows: ir.Value,
    cols: ir.Value,
    adding: ir.Value,
) -> None:
    """Store (or add) ``accs[r * nvec + v]`` at ``c[ic + r, jc + 16 v:]`` for ``r < rows``, lanes
    ``< cols`` (``c_base`` an i8*, ``sc_r`` c's row stride in bytes)."""
    i64 = ir.IntType(64)
    nvec = COLS // _LANES
    masks = [_lane_mask(builder, cols, v * _LANES) for v in range(nvec)]
    for r in range(ROWS):
        with builder.if_then(builder.icmp_signed("<", i64(r), rows)):
            at = builder.add(builder.mul(builder.add(ic, i64(r)), sc_r), builder.mul(jc, i64(4)))
            for v in range(nvec):
                ptr = _vptr(builder, c_base, builder.add(at, i64(v * _LANES * 4)))
                _put(builder, accs[r * nvec + v], ptr, masks[v], adding)


def _store_transposed(
    builder: ir.IRBuilder,
    accs: list[ir.Value],
    c_base: ir.Value,
    sc_r: ir.Value,
    ic: ir.Value,
    jc: ir.Value,
    rows: ir.Value,
    cols: ir.Value,
    adding: ir.Value,
) -> None:
    """Store (or add) the block transposed: ``c[ic + j, jc + r] = block[r, j]`` for ``r < rows``,
    ``j < cols``. The 16 accumulators (ROWS = 8 of 2 vectors) as rows ``q = v * 8 + r`` of a 16 x 16
    matrix, transposed: its column ``l`` holds ``block[0..7, l]`` then ``block[0..7, 16 + l]``, the
    first 8 floats of two rows of ``c``."""
    assert ROWS * (COLS // _LANES) == _LANES, "the transposed store takes 16 accumulators"
    i64, i32 = ir.IntType(64), ir.IntType(32)
    nvec = COLS // _LANES
    matrix = [accs[r * nvec + v] for v in range(nvec) for r in range(ROWS)]
    high = ir.Constant(ir.VectorType(i32, _LANES), [ROWS + lane % ROWS for lane in range(_LANES)])
    keep = _lane_mask(builder, builder.select(builder.icmp_signed("<", rows, i64(ROWS)), rows, i64(ROWS)))
    for lane, column in enumerate(_transpose16(builder, matrix)):
        for half in range(nvec):
            j = half * _LANES + lane
            val = column if half == 0 else builder.shuffle_vector(column, column, high)
            with builder.if_then(builder.icmp_signed("<", i64(j), cols)):
                at = builder.add(builder.mul(builder.add(ic, i64(j)), sc_r), builder.mul(jc, i64(4)))
                _put(builder, val, _vptr(builder, c_base, at), keep, adding)


def _leaf_rows(
    context, builder: ir.IRBuilder, ic: ir.Value, jc: ir.Value, leaves_type: types.UniTuple, leaves: ir.Value
) -> tuple[list[ir.Value], list[ir.Value]]:
    """Each leaf's i8* to its element ``[ic, jc]`` and its row stride in bytes (0 for a leaf of one
    row: a row vector, broadcast down the block)."""
    i64 = ir.IntType(64)
    byte_ptr = ir.IntType(8).as_pointer()
    bases, strides = [], []
    for t in range(leaves_type.count):
        arr = context.make_array(leaves_type.dtype)(context, builder, value=builder.extract_value(leaves, t))
        one_row = builder.icmp_signed("==", cgutils.unpack_tuple(builder, arr.shape, 2)[0], i64(1))
        stride = builder.select(one_row, i64(0), cgutils.unpack_tuple(builder, arr.strides, 2)[0])
        at = builder.add(builder.mul(ic, stride), builder.mul(jc, i64(4)))
        bases.append(builder.gep(builder.bitcast(arr.data, byte_ptr), [at]))
        strides.append(stride)
    return bases, strides


def prefetch(builder: ir.IRBuilder, ptr: ir.Value, write: bool = True) -> None:
    """``llvm.prefetch`` of the cache line at the i8* ``ptr`` into L1 (for writing where ``write``):
    a hint, never a fault, so it may point past an array's end."""
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
    builder.call(_declare(builder, "llvm.prefetch.p0", fnty), [ptr, i32(int(write)), i32(3), i32(1)])


def _prefetch_leaves(
    builder: ir.IRBuilder, rows_of: tuple[list[ir.Value], list[ir.Value]], count: ir.Value
) -> None:
    """Prefetch the block's lines of the first ``count`` leaves (``rows_of``: ``_leaf_rows``), and
    the next panel's (the block ``COLS`` columns on, which a later tile stores), before the depth
    loop: an addend matrix read once (an LSTM step's slice of the input projection, 8 MiB for all
    of T=64) comes from memory, and the loop's ``kc`` steps hide the wait that the store would
    otherwise make. A row vector (row stride 0) is prefetched once, not once per row."""
    i64 = ir.IntType(64)
    lines = 2 * COLS * 4 // 64

    def row_lines(base: ir.Value, r: int, stride: ir.Value) -> None:
        row = builder.gep(base, [builder.mul(i64(r), stride)])
        for line in range(lines):
            prefetch(builder, builder.gep(row, [i64(64 * line)]), write=False)

    for t, (base, stride) in enumerate(zip(*rows_of)):
        with builder.if_then(builder.icmp_signed("<", i64(t), count)):
            row_lines(base, 0, stride)
            with builder.if_then(builder.icmp_signed("!=", stride, i64(0))):
                for r in range(1, ROWS):
                    row_lines(base, r, stride)


def _store_rows_leaves(
    builder: ir.IRBuilder,
    accs: list[ir.Value],
    c_base: ir.Value,
    sc_r: ir.Value,
    ic: ir.Value,
    jc: ir.Value,
    rows: ir.Value,
    cols: ir.Value,
    adding: ir.Value,
    rows_of: tuple[list[ir.Value], list[ir.Value]],
    count: ir.Value,
) -> None:
    """``_store_rows``, then the first ``count`` leaves (``rows_of``: their block's pointers and row
    strides, ``_leaf_rows``) added to each value before it is stored (row 0 of one with one row: a
    row vector), each addition rounded in that order: the bits of ``_store_rows`` followed by
    ``sgemm_add_leaves`` over the block."""
    i64, i32 = ir.IntType(64), ir.IntType(32)
    nvec = COLS // _LANES
    store, load = _masked_store(builder), _masked_load(builder)
    zero = ir.Constant(_vf(), None)
    masks = [_lane_mask(builder, cols, v * _LANES) for v in range(nvec)]
    bases, strides = rows_of
    totals = [cgutils.alloca_once(builder, _vf()) for _ in range(nvec)]
    for r in range(ROWS):
        with builder.if_then(builder.icmp_signed("<", i64(r), rows)):
            at = builder.add(builder.mul(builder.add(ic, i64(r)), sc_r), builder.mul(jc, i64(4)))
            for v in range(nvec):
                off = i64(v * _LANES * 4)
                ptr = _vptr(builder, c_base, builder.add(at, off))
                total = totals[v]
                builder.store(accs[r * nvec + v], total)
                with builder.if_then(adding):
                    old = builder.call(load, [ptr, i32(4), masks[v], zero])
                    builder.store(builder.fadd(builder.load(total), old), total)
                for t, (base, stride) in enumerate(zip(bases, strides)):
                    with builder.if_then(builder.icmp_signed("<", i64(t), count), likely=True):
                        row = builder.gep(base, [builder.add(builder.mul(i64(r), stride), off)])
                        addend = builder.call(load, [_vptr(builder, row, i64(0)), i32(4), masks[v], zero])
                        builder.store(builder.fadd(builder.load(total), addend), total)
                builder.call(store, [builder.load(total), ptr, i32(4), masks[v]])


def _name_of(copy: bool, leaves: bool) -> str:
    """The name of a row-stored tile intrinsic (in its typing errors)."""
    return "sgemm_tile_copy" if copy else "sgemm_tile_leaves" if leaves else "sgemm_tile"


def _tile(rows_: int, cols_: int, transposed: bool, copy: bool = False, leaves: bool = False):
    """The typer of a ``rows_`` x ``cols_`` ``sgemm_tile`` (``transposed``: ``sgemm_tile_t``; ``copy``:
    ``sgemm_tile_copy``, B read as it lies and copied into a panel; ``leaves``:
    ``sgemm_tile_leaves``, two more arguments); see the module docstring."""
    nvec = cols_ // _LANES

    def build(a, ia, rows, p0, kc, bp, b0, ldb, c, ic, jc, cols, add, extra):
        f32 = types.float32
        name = _name_of(copy, leaves)
        b_ndim = 2 if copy else 1
        if len(extra) != (2 if leaves else 0):
            raise TypingError(f"{name} takes {15 if leaves else 13} arguments")
        if leaves and not (
            isinstance(extra[0], types.UniTuple)
            and isinstance(extra[0].dtype, types.Array)
            and extra[0].dtype.dtype == f32
            and extra[0].dtype.ndim == 2
            and isinstance(extra[1], types.Integer)
        ):
            raise TypingError(f"{name} takes a tuple of f32 matrices and a count, got {extra}")
        arrays = (a, bp, c) if not copy else (a, bp, ldb, c)
        ndims = (2, b_ndim, 2) if not copy else (2, 2, 1, 2)
        if not all(
            isinstance(x, types.Array) and x.dtype == f32 and x.ndim == d for x, d in zip(arrays, ndims)
        ):
            raise TypingError(f"{name} takes f32 arrays of {ndims} dimensions; got {arrays}")
        ints = (ia, rows, p0, kc, b0, ic, jc, cols, add) + (() if copy else (ldb,))
        if not all(isinstance(t, types.Integer) for t in ints):
            raise TypingError(f"{name} takes integer offsets and counts, got {ints}")
        ip = types.intp
        sig = types.void(a, ip, ip, ip, ip, bp, ip, ldb if copy else ip, c, ip, ip, ip, ip, *extra[:1])
        if leaves:
            sig = types.void(*sig.args, ip)

        def codegen(context, builder, signature, args):
            a_arr = context.make_array(signature.args[0])(context, builder, value=args[0])
            b_arr = context.make_array(signature.args[5])(context, builder, value=args[5])
            c_arr = context.make_array(signature.args[8])(context, builder, value=args[8])
            arrays_at = (5, 7, 8) if copy else (5, 8)
            ia_v, rows_v, p0_v, kc_v, _, b0_v, ldb_v, _, ic_v, jc_v, cols_v, add_v = (
                context.cast(builder, args[i], signature.args[i], ip) if i not in arrays_at else None
                for i in range(1, 13)
            )
            i64 = ir.IntType(64)
            f32t = ir.FloatType()
            vf = ir.VectorType(f32t, _LANES)
            byte_ptr = ir.IntType(8).as_pointer()
            fma = _declare(builder, "llvm.fma.v16f32", ir.FunctionType(vf, [vf, vf, vf]))
            sa_r, sa_p = cgutils.unpack_tuple(builder, a_arr.strides, 2)  # bytes
            sc_r = cgutils.unpack_tuple(builder, c_arr.strides, 2)[0]
            a_base = builder.bitcast(a_arr.data, byte_ptr)
            a_rows = _a_row_pointers(builder, a_base, ia_v, rows_v, p0_v, sa_r, sa_p, rows_)
            if copy:  # bp is B itself: rows p0 + p, columns b0 + j (unit stride), masked past cols
                i32 = ir.IntType(32)
                sb_p = cgutils.unpack_tuple(builder, b_arr.strides, 2)[0]
                start = builder.add(builder.mul(p0_v, sb_p), builder.mul(b0_v, i64(4)))
                b_base = builder.gep(builder.bitcast(b_arr.data, byte_ptr), [start])
                masks = [_lane_mask(builder, cols_v, v * _LANES) for v in range(nvec)]
                out_arr = context.make_array(signature.args[7])(context, builder, value=args[7])
                out_base = builder.bitcast(out_arr.data, byte_ptr)
                mload = _masked_load(builder)
            else:
                b_base = builder.gep(b_arr.data, [b0_v])
            slots = [cgutils.alloca_once_value(builder, ir.Constant(vf, None)) for _ in range(rows_ * nvec)]
            if leaves:  # the addends, read only by the store: on their way during the depth loop
                count_v = context.cast(builder, args[14], signature.args[14], ip)
                leaf_rows = _leaf_rows(context, builder, ic_v, jc_v, signature.args[13], args[13])
                _prefetch_leaves(builder, leaf_rows, count_v)
            with cgutils.for_range(builder, kc_v) as loop:
                p = loop.index
                at = builder.mul(p, sa_p)
                if copy:  # load B's row (zeros past cols) and store it into the panel, as sgemm_pack
                    row = builder.gep(b_base, [builder.mul(p, sb_p)])
                    bv = []
                    for v in range(nvec):
                        zero = ir.Constant(vf, None)
                        val = builder.call(
                            mload, [_vptr(builder, row, i64(v * _LANES * 4)), i32(4), masks[v], zero]
                        )
                        to = builder.add(builder.mul(p, i64(cols_ * 4)), i64(v * _LANES * 4))
                        builder.store(val, _vptr(builder, out_base, to), align=4)
                        bv.append(val)
                else:
                    bv = _panel_row(builder, b_base, p, ldb_v, nvec)
                _fma_rows(builder, fma, a_rows, at, bv, slots)
            c_base = builder.bitcast(c_arr.data, byte_ptr)
            adding = builder.icmp_signed("!=", add_v, i64(0))
            accs = [builder.load(slot) for slot in slots]  # r-major: accs[r * nvec + v]
            if transposed:
                _store_transposed(builder, accs, c_base, sc_r, ic_v, jc_v, rows_v, cols_v, adding)
            elif leaves:
                _store_rows_leaves(
                    builder, accs, c_base, sc_r, ic_v, jc_v, rows_v, cols_v, adding, leaf_rows, count_v,
                )  # fmt: skip
            else:
                _store_rows(builder, accs, c_base, sc_r, ic_v, jc_v, rows_v, cols_v, adding)
            return context.get_dummy_value()

        return sig, codegen

    if leaves:

        def typer(typingctx, a, ia, rows, p0, kc, bp, b0, ldb, c, ic, jc, cols, add, leaves, count):
            return build(a, ia, rows, p0, kc, bp, b0, ldb, c, ic, jc, cols, add, (leaves, count))

    else:

        def typer(typingctx, a, ia, rows, p0, kc, bp, b0, ldb, c, ic, jc, cols, add):
            return build(a, ia, rows, p0, kc, bp, b0, ldb, c, ic, jc, cols, add, ())

    typer.__name__ = "sgemm_tile_t" if transposed else _name_of(copy, leaves)
    return typer


# c[ic + r, jc + j] (+)= sum_p a[ia + r, p0 + p] * panel[p, j]  (r < rows, j < cols)
sgemm_tile = intrinsic(_tile(ROWS, COLS, False))
# c[ic + j, jc + r] (+)= sum_p a[ia + r, p0 + p] * panel[p, j]: the block stored transposed
sgemm_tile_t = intrinsic(_tile(ROWS, COLS, True))
# sgemm_tile_copy(a, ia, rows, p0, kc, b, j0, panel, c, ic, jc, cols, add): sgemm_tile reading B's
# rows p0 + p, columns j0 + j as they lie (unit column stride), each stored into the panel as
# sgemm_pack(b, p0, kc, j0, cols, panel) stores it: a first row tile packs B's panel for the others
sgemm_tile_copy = intrinsic(_tile(ROWS, COLS, False, copy=True))
# sgemm_tile_leaves(a, ia, rows, p0, kc, bp, b0, ldb, c, ic, jc, cols, add, leaves, count): sgemm_tile
# whose stored values have the first ``count`` of ``leaves`` added (a fused epilogue's addends, as
# sgemm_add_leaves adds them, in the same order): for a block's last k block
sgemm_tile_leaves = intrinsic(_tile(ROWS, COLS, False, leaves=True))


@intrinsic
def sgemm_pack(typingctx, b, p0, kc, j0, cols, buf):
    """Panels of B for ``sgemm_tile``: ``buf[q * kc * COLS + p * COLS + j] = b[p0 + p, j0 + q * COLS
    + j]`` for ``p < kc`` and columns below ``cols``, zeros past them to the last panel's end.
    ``b`` has one unit stride: its rows are copied 16 floats at a time, row after row across
    all panels, or (a transposed view: columns contiguous) its 16 x 16 blocks transposed in
    registers."""
    f32 = types.float32
    if not (
        isinstance(b, types.Array)
        and b.dtype == f32
        and b.ndim == 2
        and isinstance(buf, types.Array)
        and buf.dtype == f32
        and buf.ndim == 1
    ):
        raise TypingError(f"sgemm_pack takes an f32 matrix and an f32 vector, got {b}, {buf}")
    if not all(isinstance(t, types.Integer) for t in (p0, kc, j0, cols)):
        raise TypingError(f"sgemm_pack takes integer offsets and counts, got {p0}, {kc}, {j0}, {cols}")
    ip = types.intp
    sig = types.void(b, ip, ip, ip, ip, buf)

    def codegen(context, builder, signature, args):
        b_arr = context.make_array(signature.args[0])(context, builder, value=args[0])
        o_arr = context.make_array(signature.args[5])(context, builder, value=args[5])
        p0_v, kc_v, j0_v, cols_v = (
            context.cast(builder, args[i], signature.args[i], ip) for i in (1, 2, 3, 4)
        )
        i64, i32 = ir.IntType(64), ir.IntType(32)
        mstore, mload = _masked_store(builder), _masked_load(builder)
        zero = ir.Constant(_vf(), None)
        byte_ptr = ir.IntType(8).as_pointer()
        s_p, s_j = cgutils.unpack_tuple(builder, b_arr.strides, 2)  # bytes
        start = builder.add(builder.mul(p0_v, s_p), builder.mul(j0_v, s_j))
        base = builder.gep(builder.bitcast(b_arr.data, byte_ptr), [start])
        out = builder.bitcast(o_arr.data, byte_ptr)
        groups = builder.udiv(builder.add(cols_v, i64(COLS - 1)), i64(COLS))  # panels
        groups = builder.mul(groups, i64(COLS // _LANES))  # 16-column groups, padding included
        panel_bytes = builder.mul(kc_v, i64(COLS * 4))

        def dest(p: ir.Value, g: ir.Value) -> ir.Value:
            """Byte offset in ``buf`` of row ``p`` of 16-column group ``g``."""
            panel = builder.udiv(g, i64(COLS // _LANES))
            within = builder.urem(g, i64(COLS // _LANES))
            return builder.add(
                builder.add(builder.mul(panel, panel_bytes), builder.mul(p, i64(COLS * 4))),
                builder.mul(within, i64(_LANES * 4)),
            )

        with builder.if_else(builder.icmp_signed("==", s_j, i64(4))) as (rows_case, cols_case):
            with rows_case:
                with cgutils.for_range(builder, kc_v) as row:
                    src = builder.mul(row.index, s_p)
                    with cgutils.for_range(builder, groups) as group:
                        first = builder.mul(group.index, i64(_LANES))
                        mask = _lane_mask(builder, builder.sub(cols_v, first))
                        at = builder.add(src, builder.mul(first, i64(4)))
                        val = builder.call(mload, [_vptr(builder, base, at), i32(4), mask, zero])
                        builder.store(val, _vptr(builder, out, dest(row.index, group.index)), align=4)
            with cols_case:  # b[p, j] at j * s_j + p * 4: the rows of b.T are contiguous
                blocks = builder.udiv(builder.add(kc_v, i64(_LANES - 1)), i64(_LANES))
                with cgutils.for_range(builder, groups) as group:
                    first = builder.mul(group.index, i64(_LANES))
                    with cgutils.for_range(builder, blocks) as block:
                        pb = builder.mul(block.index, i64(_LANES))
                        rem = builder.sub(kc_v, pb)
                        p_mask = _lane_mask(builder, rem)
                        loaded = []
                        for r in range(_LANES):
                            j = builder.add(first, i64(r))
                            keep = builder.and_(_splat(builder, builder.icmp_signed("<", j, cols_v)), p_mask)
                            at = builder.add(builder.mul(j, s_j), builder.mul(pb, i64(4)))
                            loaded.append(builder.call(mload, [_vptr(builder, base, at), i32(4), keep, zero]))
                        for t, col in enumerate(_transpose16(builder, loaded)):
                            live = _splat(builder, builder.icmp_signed("<", i64(t), rem))
                            at = dest(builder.add(pb, i64(t)), group.index)
                            builder.call(mstore, [col, _vptr(builder, out, at), i32(4), live])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def sgemm_add_leaves(typingctx, c, i0, rows, j0, width, leaves, count):
    """``c[i, j] = (c[i, j] + leaves[0][i, j]) + leaves[1][i, j] ...`` over the first ``count``
    matrices of the tuple ``leaves`` (row ``0`` of one with one row: a row vector broadcast), for
    ``i0 <= i < i0 + rows``, ``j0 <= j < j0 + width``, 16 lanes at a time (masked at each row's
    end), in one pass over ``c``: each addition rounded to float32 in that order, as a chain of
    elementwise adds makes it. All rows have unit strides (the callers check)."""
    f32 = types.float32
    if not (isinstance(c, types.Array) and c.dtype == f32 and c.ndim == 2):
        raise TypingError(f"sgemm_add_leaves takes an f32 matrix, got {c}")
    if not (
        isinstance(leaves, types.UniTuple)
        and isinstance(leaves.dtype, types.Array)
        and leaves.dtype.dtype == f32
        and leaves.dtype.ndim == 2
    ):
        raise TypingError(f"sgemm_add_leaves takes a tuple of f32 matrices, got {leaves}")
    if not all(isinstance(t, types.Integer) for t in (i0, rows, j0, width, count)):
        raise TypingError(f"sgemm_add_leaves takes integer indices, got {i0}, {rows}, {j0}, {width}, {count}")
    ip = types.intp
    sig = types.void(c, ip, ip, ip, ip, leaves, ip)

    def codegen(context, builder, signature, args):
        c_arr = context.make_array(signature.args[0])(context, builder, value=args[0])
        i0_v, rows_v, j0_v, width_v, count_v = (
            context.cast(builder, args[at], signature.args[at], ip) for at in (1, 2, 3, 4, 6)
        )
        i64, i32 = ir.IntType(64), ir.IntType(32)
        byte_ptr = ir.IntType(8).as_pointer()
        store, load = _masked_store(builder), _masked_load(builder)
        zero = ir.Constant(_vf(), None)
        first = builder.mul(j0_v, i64(4))
        sc = cgutils.unpack_tuple(builder, c_arr.strides, 2)[0]
        c_base = builder.gep(
            builder.bitcast(c_arr.data, byte_ptr), [builder.add(builder.mul(i0_v, sc), first)]
        )
        bases, strides = [], []  # each leaf's element [i0, j0] and row stride (0: one row, broadcast)
        for t in range(leaves.count):
            arr = context.make_array(leaves.dtype)(context, builder, value=builder.extract_value(args[5], t))
            one_row = builder.icmp_signed("==", cgutils.unpack_tuple(builder, arr.shape, 2)[0], i64(1))
            stride = builder.select(one_row, i64(0), cgutils.unpack_tuple(builder, arr.strides, 2)[0])
            at = builder.add(builder.mul(i0_v, stride), first)
            bases.append(builder.gep(builder.bitcast(arr.data, byte_ptr), [at]))
            strides.append(stride)
        chunks = builder.udiv(builder.add(width_v, i64(_LANES - 1)), i64(_LANES))
        with cgutils.for_range(builder, rows_v) as row:
            c_row = builder.gep(c_base, [builder.mul(row.index, sc)])
            rows_at = [builder.gep(base, [builder.mul(row.index, st)]) for base, st in zip(bases, strides)]
            with cgutils.for_range(builder, chunks) as chunk:
                lane0 = builder.mul(chunk.index, i64(_LANES))
                mask = _lane_mask(builder, builder.sub(width_v, lane0))
                at = builder.mul(lane0, i64(4))
                cp = _vptr(builder, c_row, at)
                total = cgutils.alloca_once_value(builder, builder.call(load, [cp, i32(4), mask, zero]))
                for t, leaf_row in enumerate(rows_at):
                    with builder.if_then(builder.icmp_signed("<", i64(t), count_v), likely=True):
                        addend = builder.call(load, [_vptr(builder, leaf_row, at), i32(4), mask, zero])
                        builder.store(builder.fadd(builder.load(total), addend), total)
                builder.call(store, [builder.load(total), cp, i32(4), mask])
        return context.get_dummy_value()

    return sig, codegen
