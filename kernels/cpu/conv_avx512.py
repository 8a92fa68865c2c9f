"""The AVX-512 micro-kernel of the convolution GEMM (``conv_gemm``): ``sgemm_tile``, epilogue in the store.

``conv_tile(a, ia, rows, p0, kc, bp, b0, ldb, c, ic, jc, cols, add, final, program, ops, consts)``
computes the ``ROWS`` x ``COLS`` block of ``sgemm_avx512.sgemm_tile`` (the same FMA chains in ``p``
order, the same ``add``: the block plus what ``c`` holds), and where ``final`` is nonzero (the
last ``kc`` block of the depth) runs the pointwise ``program`` on each vector while it is still in
registers, before the one store: a convolution's ``+ bias``, ``maximum(., 0)`` (relu), ``minimum(.,
6)`` (relu6), a residual ``+ x`` never make a second pass over the output. ``conv_tile_copy`` is
``sgemm_tile_copy`` with that store: B's rows read as they lie and packed into the panel meanwhile.
``conv_tile_narrow`` and ``conv_tile_narrow_copy`` are the same with ``NARROW`` (16) columns, for a
last panel of few columns (14 x 14 = 196 pixels: 6 panels of 32 and one of 4). The tiles prefetch
what comes next (``llvm.prefetch``, a hint): every other step a line of the next row tile's rows
of ``a`` (a weight read once a call, 1-9 MiB in a late layer, streams in ahead of its use: 10-25%
off those GEMMs in a plan, a few % slower where all is in cache), and with each row of B and of
the output, that row's lines of the next panel.

``program`` is a string literal (compiled in), one letter a step, applied in order:

- ``r``: ``x + ops[t][i, 0]``, the next array operand's element of the output row (a bias, per
  output channel, splatted); ``R``: ``x * ops[t][i, 0]``;
- ``v``: ``x + ops[t][i, j:j + 16]``, a vector of the next array operand (row stride 0: a row
  vector broadcast down the output; unit column stride); ``V``: ``x * ops[t][i, j:j + 16]``;
- ``x`` / ``X``: ``maximum(x, k)`` / ``maximum(k, x)`` with the next constant ``k = consts[s]``;
  ``n`` / ``N``: ``minimum(x, k)`` / ``minimum(k, x)``;
- ``a``, ``b``, ``c``, ``d``: ``where(x < k, k2, x)`` (``<=``, ``>``, ``>=``) with the next two
  constants (graphc's relu is ``where(x <= 0, 0, x)``, its hardtanh three such steps);
  ``e``: ``where(x != x, k2, x)`` with the next one.

Each step is rounded to float32 as the separate elementwise kernel rounds it, and ``maximum`` and
``minimum`` are the pointwise generator's (``scalar_ops._extremum``): ``a if (a > b or a != a)
else b`` (NumPy's NaN propagation, and its choice between signed zeros), so the bits are those of
the GEMM followed by the epilogue's own loop. Operand rows are addressed through their strides
(bytes), so ``ops`` may be broadcast views (``np.broadcast_to``).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from .sgemm_avx512 import (
    COLS,
    HAVE_AVX512,
    ROWS,
    _a_row_pointers,
    _declare,
    _fma_rows,
    _lane_mask,
    _masked_load,
    _masked_store,
    _panel_row,
    _splat,
    _vf,
    _vptr,
    prefetch,
)

_LANES = 16
NARROW = _LANES  # columns of the narrow tiles (``conv_tile_narrow``), for a last panel of few columns
ADDS = "rv"  # program letters adding an array operand (per row, vector)
MULS = "RV"  # ... multiplying by one
EXTREMA = "xXnN"  # letters taking a constant: maximum(x, k), maximum(k, x), minimum(x, k), minimum(k, x)
SELECTS = "abcde"  # where(x < k, k2, x), <=, >, >= (two constants each); where(x != x, k2, x) (one)
CONSTANTS = {**dict.fromkeys(EXTREMA, 1), **dict.fromkeys("abcd", 2), "e": 1}  # constants a letter takes
LETTERS = ADDS + MULS + EXTREMA + SELECTS
_COMPARE = {"a": "<", "b": "<=", "c": ">", "d": ">="}

__all__ = [
    "COLS",
    "CONSTANTS",
    "EXTREMA",
    "HAVE_AVX512",
    "LETTERS",
    "NARROW",
    "ROWS",
    "SELECTS",
    "conv_tile",
    "conv_tile_copy",
    "conv_tile_narrow",
    "conv_tile_narrow_copy",
]


def _extremum(builder: ir.IRBuilder, a: ir.Value, b: ir.Value, greater: bool) -> ir.Value:
    """``a if (a > b or a != a) else b`` (``<`` where not ``greater``), lane by lane."""
    cmp = builder.fcmp_ordered(">" if greater else "<", a, b)
    nan = builder.fcmp_unordered("!=", a, a)
    return builder.select(builder.or_(cmp, nan), a, b)


def _epilogue(
    builder: ir.IRBuilder,
    program: str,
    val: ir.Value,
    row_ops: list[ir.Value],
    consts: list[ir.Value],
    col_byte: ir.Value,
    mask: ir.Value,
) -> ir.Value:
    """``val`` through ``program``: ``row_ops[t]`` the i8* of array operand t's row (its element
    ``[i, 0]``), ``consts[s]`` splatted constants, ``col_byte`` the byte offset of the vector's first
    column within a row, ``mask`` its live lanes (the loads of ``v`` read no further)."""
    i32 = ir.IntType(32)
    f32p = ir.FloatType().as_pointer()
    load = _masked_load(builder)
    t = s = 0
    for letter in program:
        if letter in "rR":
            operand = _splat(builder, builder.load(builder.bitcast(row_ops[t], f32p), align=4))
        elif letter in "vV":
            ptr = _vptr(builder, row_ops[t], col_byte)
            operand = builder.call(load, [ptr, i32(4), mask, ir.Constant(_vf(), None)])
        if letter in "rv":
            val, t = builder.fadd(val, operand), t + 1
        elif letter in "RV":
            val, t = builder.fmul(val, operand), t + 1
        elif letter in EXTREMA:
            k, s = consts[s], s + 1
            greater = letter in "xX"
            val = (
                _extremum(builder, val, k, greater) if letter in "xn" else _extremum(builder, k, val, greater)
            )
        elif letter == "e":
            val, s = builder.select(builder.fcmp_unordered("!=", val, val), consts[s], val), s + 1
        else:
            cond = builder.fcmp_ordered(_COMPARE[letter], val, consts[s])
            val, s = builder.select(cond, consts[s + 1], val), s + 2
    return val


def _check_program(program: types.Type, ops: types.Type, consts: types.Type) -> str:
    """The program string of a ``conv_tile`` call, checked against its operand tuples."""
    if not isinstance(program, types.StringLiteral):
        raise TypingError(f"conv_tile takes its program as a string literal, got {program}")
    text = program.literal_value
    if any(ch not in LETTERS for ch in text):
        raise TypingError(f"conv_tile program {text!r} has a letter outside {LETTERS!r}")
    if not (
        isinstance(ops, types.UniTuple)
        and isinstance(ops.dtype, types.Array)
        and ops.dtype.dtype == types.float32
        and ops.dtype.ndim == 2
    ):
        raise TypingError(f"conv_tile takes a tuple of f32 matrices as its operands, got {ops}")
    if not (isinstance(consts, types.UniTuple) and consts.dtype == types.float32):
        raise TypingError(f"conv_tile takes a tuple of float32 constants, got {consts}")
    if (
        sum(ch in ADDS + MULS for ch in text) > ops.count
        or sum(CONSTANTS.get(ch, 0) for ch in text) > consts.count
    ):
        raise TypingError(f"conv_tile program {text!r} takes more operands than given")
    return text


def _tile(copy: bool, cols_: int = COLS):
    """The typer of ``conv_tile`` (``copy``: ``conv_tile_copy``) with ``cols_`` columns; see the
    module docstring."""
    nvec = cols_ // _LANES

    def typer(typingctx, a, ia, rows, p0, kc, bp, b0, ldb, c, ic, jc, cols, add, final, program, ops, consts):
        f32 = types.float32
        name = typer.__name__
        arrays = (a, bp, ldb, c) if copy else (a, bp, c)
        ndims = (2, 2, 1, 2) if copy else (2, 1, 2)
        if not all(
            isinstance(x, types.Array) and x.dtype == f32 and x.ndim == d for x, d in zip(arrays, ndims)
        ):
            raise TypingError(f"{name} takes f32 arrays of {ndims} dimensions; got {arrays}")
        ints = (ia, rows, p0, kc, b0, ic, jc, cols, add, final) + (() if copy else (ldb,))
        if not all(isinstance(t, types.Integer) for t in ints):
            raise TypingError(f"{name} takes integer offsets and counts, got {ints}")
        text = _check_program(program, ops, consts)
        ip = types.intp
        sig = types.void(
            a, ip, ip, ip, ip, bp, ip, ldb if copy else ip, c, ip, ip, ip, ip, ip, program, ops, consts
        )

        def codegen(context, builder, signature, args):
            a_arr = context.make_array(signature.args[0])(context, builder, value=args[0])
            b_arr = context.make_array(signature.args[5])(context, builder, value=args[5])
            c_arr = context.make_array(signature.args[8])(context, builder, value=args[8])
            arrays_at = (5, 7, 8) if copy else (5, 8)
            vals = [
                context.cast(builder, args[i], signature.args[i], ip) if i not in arrays_at else None
                for i in range(1, 14)
            ]
            ia_v, rows_v, p0_v, kc_v, _, b0_v, ldb_v, _, ic_v, jc_v, cols_v, add_v, final_v = vals
            i64, i32 = ir.IntType(64), ir.IntType(32)
            vf = _vf()
            byte_ptr = ir.IntType(8).as_pointer()
            fma = _declare(builder, "llvm.fma.v16f32", ir.FunctionType(vf, [vf, vf, vf]))
            mload, mstore = _masked_load(builder), _masked_store(builder)
            sa_r, sa_p = cgutils.unpack_tuple(builder, a_arr.strides, 2)  # bytes
            sc_r = cgutils.unpack_tuple(builder, c_arr.strides, 2)[0]
            a_base = builder.bitcast(a_arr.data, byte_ptr)
            a_rows = _a_row_pointers(builder, a_base, ia_v, rows_v, p0_v, sa_r, sa_p, ROWS)
            masks = [_lane_mask(builder, cols_v, v * _LANES) for v in range(nvec)]
            if copy:  # bp is B itself: rows p0 + p, columns b0 + j (unit stride), masked past cols
                sb_p = cgutils.unpack_tuple(builder, b_arr.strides, 2)[0]
                start = builder.add(builder.mul(p0_v, sb_p), builder.mul(b0_v, i64(4)))
                b_base = builder.gep(builder.bitcast(b_arr.data, byte_ptr), [start])
                out_arr = context.make_array(signature.args[7])(context, builder, value=args[7])
                out_base = builder.bitcast(out_arr.data, byte_ptr)
            else:
                b_base = builder.gep(b_arr.data, [b0_v])
            slots = [cgutils.alloca_once_value(builder, ir.Constant(vf, None)) for _ in range(ROWS * nvec)]
            # The next row tile's rows of a (ia + ROWS + r, columns p0 on), one line of them a step:
            # row p % ROWS, the 16 columns from p0 + 16 (p // 16); a hint, past a's end harmless.
            next_rows = builder.gep(a_base, [builder.add(builder.mul(builder.add(ia_v, i64(ROWS)), sa_r),
                                                         builder.mul(p0_v, sa_p))])  # fmt: skip
            with cgutils.for_range(builder, kc_v) as loop:
                p = loop.index
                at = builder.mul(p, sa_p)
                with builder.if_then(builder.icmp_signed("==", builder.and_(p, i64(1)), i64(0))):
                    half = builder.lshr(p, i64(1))  # a line every other step: kc / 2 = ROWS x kc / 16
                    ahead = builder.add(
                        builder.mul(builder.and_(half, i64(ROWS - 1)), sa_r),
                        builder.mul(builder.and_(p, i64(-_LANES)), sa_p),
                    )
                    prefetch(builder, builder.gep(next_rows, [ahead]), write=False)
                if copy:  # load B's row (zeros past cols) and store it into the panel
                    row = builder.gep(b_base, [builder.mul(p, sb_p)])
                    for line in range(cols_ * 4 // 64):  # the next panel's part of the row, ahead
                        prefetch(builder, builder.gep(row, [i64(cols_ * 4 + 64 * line)]), write=False)
                    bv = []
                    for v in range(nvec):
                        ptr = _vptr(builder, row, i64(v * _LANES * 4))
                        val = builder.call(mload, [ptr, i32(4), masks[v], ir.Constant(vf, None)])
                        to = builder.add(builder.mul(p, i64(cols_ * 4)), i64(v * _LANES * 4))
                        builder.store(val, _vptr(builder, out_base, to), align=4)
                        bv.append(val)
                else:
                    bv = _panel_row(builder, b_base, p, ldb_v, nvec)
                _fma_rows(builder, fma, a_rows, at, bv, slots)
            # The store: the block (plus c's value where adding), through the program where final.
            c_base = builder.bitcast(c_arr.data, byte_ptr)
            adding = builder.icmp_signed("!=", add_v, i64(0))
            finishing = builder.icmp_signed("!=", final_v, i64(0))
            add_lanes, fin_lanes = _splat(builder, adding), _splat(builder, finishing)
            ops_t, consts_t = signature.args[15], signature.args[16]
            op_arrays = [
                context.make_array(ops_t.dtype)(context, builder, value=builder.extract_value(args[15], t))
                for t in range(ops_t.count)
            ]
            ksplat = [_splat(builder, builder.extract_value(args[16], s)) for s in range(consts_t.count)]
            col_byte = builder.mul(jc_v, i64(4))
            zero = ir.Constant(vf, None)
            for r in range(ROWS):
                with builder.if_then(builder.icmp_signed("<", i64(r), rows_v)):
                    i = builder.add(ic_v, i64(r))
                    at = builder.add(builder.mul(i, sc_r), col_byte)
                    for line in range(cols_ * 4 // 64):  # the next panel's part of the output row
                        prefetch(builder, builder.gep(c_base, [builder.add(at, i64(cols_ * 4 + 64 * line))]))
                    row_ops = []
                    for arr in op_arrays:
                        s0, s1 = cgutils.unpack_tuple(builder, arr.strides, 2)
                        base = builder.gep(builder.bitcast(arr.data, byte_ptr), [builder.mul(i, s0)])
                        row_ops.append(base)
                    for v in range(nvec):
                        ptr = _vptr(builder, c_base, builder.add(at, i64(v * _LANES * 4)))
                        acc = builder.load(slots[r * nvec + v])
                        old = builder.call(mload, [ptr, i32(4), builder.and_(masks[v], add_lanes), zero])
                        val = builder.select(adding, builder.fadd(acc, old), acc)
                        if text:
                            live = builder.and_(masks[v], fin_lanes)
                            vcol = builder.add(col_byte, i64(v * _LANES * 4))
                            done = _epilogue(builder, text, val, row_ops, ksplat, vcol, live)
                            val = builder.select(finishing, done, val)
                        builder.call(mstore, [val, ptr, i32(4), masks[v]])
            return context.get_dummy_value()

        return sig, codegen

    typer.__name__ = ("conv_tile_copy" if copy else "conv_tile") + ("" if cols_ == COLS else f"_{cols_}")
    return typer


# c[ic + r, jc + j] = program(sum_p a[ia + r, p0 + p] * panel[p, j] (+ c[...] where add))
conv_tile = intrinsic(_tile(False))
# conv_tile reading B's rows p0 + p, columns j0 + j as they lie, each stored into the panel meanwhile
conv_tile_copy = intrinsic(_tile(True))
# the same with one vector of columns (NARROW): a ragged last panel of at most 16 columns
conv_tile_narrow = intrinsic(_tile(False, NARROW))
conv_tile_narrow_copy = intrinsic(_tile(True, NARROW))
