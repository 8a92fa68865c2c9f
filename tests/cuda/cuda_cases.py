"""Tiny nodes for the CUDA backend tests: every primitive, fused bodies, edge cases.

Shared by the simulator tests (test_kernels.py) and the GPU-free type/PTX check
(device_check_main.py), so both look at exactly the same generated kernels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphc.ir import Graph, Node, TensorType


@dataclass
class Case:
    """One node to compile, its inputs, and how to compare with the reference."""

    name: str
    node: Node
    inputs: list[np.ndarray]
    exact: bool = False  # integer/bool/movement results must match bit for bit
    rtol: float = 2e-5
    atol: float = 1e-6
    generated: bool = True  # False: a fused node expected to fall back to its body
    raises: str | None = None  # a GraphcError message fragment the run must raise
    tags: set[str] = field(default_factory=set)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _f32(*shape: int, seed: int = 0, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    return _rng(seed).uniform(low, high, size=shape).astype(np.float32)


def _i32(*shape: int, seed: int = 0, low: int = -5, high: int = 6) -> np.ndarray:
    return _rng(seed).integers(low, high, size=shape).astype(np.int32)


def _t(a: np.ndarray) -> TensorType:
    return TensorType.of(a)


def prim(op: str, arrays: list[np.ndarray], **attrs) -> Node:
    """A one-node graph applying ``op`` to inputs typed like ``arrays``."""
    g = Graph(op)
    ins = [g.add_input(f"x{k}", _t(a)) for k, a in enumerate(arrays)]
    return g.add_node(op, ins, attrs)


def fused(kind: str, arrays: list[np.ndarray], build, consts: dict[str, np.ndarray] | None = None) -> Node:
    """A fused node whose body ``build(body, *inputs)`` returns the body outputs."""
    body = Graph("body")
    ins = [body.add_input(f"b{k}", _t(a)) for k, a in enumerate(arrays)]
    extra = [body.add_input(n, _t(a), "const", a) for n, a in (consts or {}).items()]
    outs = build(body, *ins, *extra)
    for v in outs if isinstance(outs, (list, tuple)) else [outs]:
        body.add_output(v)
    g = Graph("outer")
    outer = [g.add_input(f"x{k}", _t(a)) for k, a in enumerate(arrays)]
    return g.add_fused(outer, body, {"kind": kind})


def c(body: Graph, value, dtype: str = "f32"):
    """A scalar const in a body."""
    return body.op("const", value=value, dtype=dtype)


def primitive_cases() -> list[Case]:
    """At least one case per primitive op in the registry."""
    x = _f32(4, 5)
    pos = _f32(4, 5, seed=1, low=0.1, high=3.0)
    row = _f32(5, seed=2)
    col = _f32(4, 1, seed=3)
    xi = _i32(4, 5)
    out: list[Case] = []
    for op in ("exp", "tanh", "erf", "sin", "cos", "neg", "abs", "sign"):
        out.append(Case(op, prim(op, [x]), [x]))
    for op in ("log", "sqrt", "rsqrt", "reciprocal"):
        out.append(Case(op, prim(op, [pos]), [pos]))
    x64 = x.astype(np.float64)
    out.append(Case("exp_f64", prim("exp", [x64]), [x64], rtol=1e-12))
    for op in ("neg", "abs", "sign"):
        out.append(Case(f"{op}_i32", prim(op, [xi]), [xi], exact=True))
    casts = (("f32", "i32"), ("i32", "f32"), ("f32", "bool"), ("bool", "f32"), ("f64", "f32"), ("i64", "f64"))
    for src, dst in casts:
        a = {"f32": x * 3, "i32": xi, "f64": x64, "i64": xi.astype(np.int64), "bool": x > 0}[src]
        out.append(Case(f"cast_{src}_{dst}", prim("cast", [a], dtype=dst), [a], exact=True))
    for op in ("add", "sub", "mul", "maximum", "minimum"):
        out.append(Case(f"{op}_row", prim(op, [x, row]), [x, row]))
        out.append(Case(f"{op}_outer", prim(op, [col, row]), [col, row]))
        out.append(Case(f"{op}_i32", prim(op, [xi, xi[:1]]), [xi, xi[:1]], exact=True))
    edges = np.array([[0.5, -0.5, 1.5, 2.5, -2.5], [-0.0, 1e20, -3.7, 3.7, 0.0]] * 2, np.float32)
    for op in ("floor", "ceil", "round", "trunc"):
        out.append(Case(op, prim(op, [edges]), [edges], exact=True))
    for op in ("fmod", "remainder", "floordiv"):
        out.append(Case(op, prim(op, [x * 7, pos]), [x * 7, pos], rtol=1e-6, atol=1e-6))
        ia, ib = xi * 7, np.where(xi == 0, 3, xi).astype(np.int32)
        out.append(Case(f"{op}_i32", prim(op, [ia, ib]), [ia, ib], exact=True))
    out.append(Case("div", prim("div", [x, pos]), [x, pos]))
    out.append(Case("pow", prim("pow", [pos, row]), [pos, row], rtol=1e-5))
    nan = x.copy()
    nan[0, 0] = np.nan
    out.append(Case("maximum_nan", prim("maximum", [nan, x[::-1].copy()]), [nan, x[::-1].copy()]))
    out.append(Case("minimum_nan", prim("minimum", [x[::-1].copy(), nan]), [x[::-1].copy(), nan]))
    for op in ("lt", "le", "eq", "ne", "gt", "ge"):
        b = np.where(_rng(4).random((4, 5)) < 0.3, x, row).astype(np.float32)
        out.append(Case(op, prim(op, [x, b]), [x, b], exact=True))
    out.append(Case("eq_i64", prim("eq", [xi.astype(np.int64), xi[:, :1].astype(np.int64)]),
                    [xi.astype(np.int64), xi[:, :1].astype(np.int64)], exact=True))  # fmt: skip
    cond = x > 0
    out.append(Case("where", prim("where", [cond, x, row]), [cond, x, row], exact=True))
    out.append(Case("broadcast_to", prim("broadcast_to", [row], shape=(4, 5)), [row], exact=True))
    out.append(Case("broadcast_to_3d", prim("broadcast_to", [col], shape=(2, 4, 3)), [col], exact=True))
    unit = _f32(4, 5, seed=6, low=-0.99, high=0.99)
    for op, a in (("acos", unit), ("asin", unit), ("atan", x), ("acosh", pos + 1)):
        out.append(Case(op, prim(op, [a]), [a]))
    out += [Case("asinh", prim("asinh", [x]), [x]), Case("atanh", prim("atanh", [unit]), [unit])]
    counts = np.array([[0, 1, 31, 32, 40], [-1, 3, 5, 7, 2]] * 2, np.int32)  # out of [0, 32) too
    for op in ("bitwise_and", "bitwise_or", "bitwise_xor", "left_shift", "right_shift"):
        out.append(Case(op, prim(op, [xi * 1000003, counts]), [xi * 1000003, counts], exact=True))
    out.append(Case("bitwise_and_bool", prim("bitwise_and", [cond, x < 1]), [cond, x < 1], exact=True))
    out.append(Case("bitwise_not", prim("bitwise_not", [xi]), [xi], exact=True))
    out.append(Case("bitwise_not_bool", prim("bitwise_not", [cond]), [cond], exact=True))

    x3 = _f32(2, 3, 4, seed=5)
    for op in ("sum", "max", "min"):
        for axes in ((2,), (1,), (0, 2), (0, 1, 2)):
            for keep in (False, True):
                name = f"{op}_{''.join(map(str, axes))}_{'k' if keep else 'n'}"
                out.append(Case(name, prim(op, [x3], axes=axes, keepdims=keep), [x3]))
    out.append(Case("sum_i32", prim("sum", [xi], axes=(1,)), [xi], exact=True))
    for axes in ((2,), (1,), (0, 1, 2)):
        out.append(Case(f"prod_{''.join(map(str, axes))}", prim("prod", [x3], axes=axes), [x3]))
    out.append(Case("prod_i32", prim("prod", [xi], axes=(1,)), [xi], exact=True))
    out.append(Case("max_bool", prim("max", [cond], axes=(1,)), [cond], exact=True))
    out.append(Case("min_bool", prim("min", [cond], axes=(0,)), [cond], exact=True))
    out.append(Case("max_nan", prim("max", [nan], axes=(1,)), [nan]))
    out.append(Case("sum_long_row", prim("sum", [_f32(2, 70)], axes=(1,)), [_f32(2, 70)], rtol=1e-5))
    ties = np.array([[1, 3, 3, 0], [2, 2, 2, 2], [-np.inf, -np.inf, -np.inf, -np.inf]], np.float32)
    out.append(Case("argmax_ties", prim("argmax", [ties], axis=1), [ties], exact=True))
    out.append(Case("argmax_axis0", prim("argmax", [x3], axis=0, keepdims=True), [x3], exact=True))
    nan_arg = np.array([[1, np.nan, 5, np.nan]], np.float32)
    out.append(Case("argmax_nan", prim("argmax", [nan_arg], axis=1), [nan_arg], exact=True))
    out.append(Case("argmax_i32", prim("argmax", [xi], axis=1), [xi], exact=True))
    wide = np.round(_f32(3, 20, seed=25), 1)  # rounded: ties between threads' partial results
    wide[2, 7] = np.nan
    out.append(Case("argmax_wide", prim("argmax", [wide], axis=1), [wide], exact=True))
    out.append(Case("max_wide_nan", prim("max", [wide], axes=(1,)), [wide]))
    tall = _f32(12, 3, seed=26)
    out.append(Case("sum_axis0_tall", prim("sum", [tall], axes=(0,), keepdims=True), [tall]))
    out.append(Case("argmax_axis0_tall", prim("argmax", [tall], axis=0), [tall], exact=True))

    a8, b8 = _f32(8, 8, seed=6), _f32(8, 8, seed=7)
    out.append(Case("matmul_8x8", prim("matmul", [a8, b8]), [a8, b8], rtol=1e-5, atol=1e-5))
    a, b = _f32(2, 3, 5, seed=8), _f32(5, 4, seed=9)
    out.append(Case("matmul_batch_bcast", prim("matmul", [a, b]), [a, b], atol=1e-5))
    a, b = _f32(3, 5, seed=10), _f32(2, 5, 4, seed=11)
    out.append(Case("matmul_left_bcast", prim("matmul", [a, b]), [a, b], atol=1e-5))
    a, b = _f32(2, 1, 3, 4, seed=12), _f32(3, 4, 2, seed=13)
    out.append(Case("matmul_4d", prim("matmul", [a, b]), [a, b], atol=1e-5))
    a, b = _f32(3, 20, seed=14), _f32(20, 3, seed=15)
    out.append(Case("matmul_k_tiles", prim("matmul", [a, b]), [a, b], atol=1e-5))
    a, b = _i32(3, 4, seed=16), _i32(4, 2, seed=17)
    out.append(Case("matmul_i32", prim("matmul", [a, b]), [a, b], exact=True))

    out.append(Case("reshape", prim("reshape", [x], shape=(2, 10)), [x], exact=True))
    out.append(Case("transpose", prim("transpose", [x3], perm=(2, 0, 1)), [x3], exact=True))
    out.append(Case("transpose_2d", prim("transpose", [x], perm=(1, 0)), [x], exact=True))
    out.append(Case("slice", prim("slice", [x3], starts=(0, 1, 0), stops=(2, 3, 4), steps=(1, 1, 2)), [x3],
                    exact=True))  # fmt: skip
    out.append(Case("pad", prim("pad", [x], pads=((1, 0), (2, 1)), value=-1.5), [x], exact=True))
    out.append(Case("pad_i32", prim("pad", [xi], pads=((0, 1), (0, 0))), [xi], exact=True))
    p1, p2 = _f32(4, 2, seed=18), _f32(4, 0, seed=19)
    out.append(Case("concat", prim("concat", [x, p2, p1, x], axis=1), [x, p2, p1, x], exact=True))
    out.append(Case("concat_axis0", prim("concat", [x3, x3[:1].copy()], axis=0), [x3, x3[:1].copy()],
                    exact=True))  # fmt: skip

    idx = np.array([3, 0, 3], np.int64)
    out.append(Case("gather_axis0", prim("gather", [x, idx], axis=0), [x, idx], exact=True))
    idx2 = np.array([[4, 1], [0, 0]], np.int32)
    out.append(Case("gather_axis1_2d", prim("gather", [x, idx2], axis=1), [x, idx2], exact=True))
    bad = np.array([0, 7], np.int64)
    out.append(Case("gather_out_of_range", prim("gather", [x, bad], axis=0), [x, bad], raises="out of range"))
    upd = _f32(3, 5, seed=20)
    out.append(Case("scatter_add", prim("scatter_add", [idx, upd], axis=0, shape=(4, 5)), [idx, upd]))
    updi = _i32(4, 2, 2, seed=21)
    out.append(Case("scatter_add_i32", prim("scatter_add", [idx2, updi], axis=1, shape=(4, 5)), [idx2, updi],
                    exact=True))  # fmt: skip
    neg = np.array([[4, -1], [0, 4]], np.int64)  # repeats fold in order; -1 is 4 on axis 1
    updb = _i32(3, 5, seed=23) > 0
    for red in ("mul", "max", "min"):
        node = prim("scatter_reduce", [idx, upd], axis=0, shape=(4, 5), reduction=red)
        out.append(Case(f"scatter_reduce_{red}", node, [idx, upd], exact=True))
        node = prim("scatter_reduce", [neg, updi], axis=1, shape=(4, 5), reduction=red)
        out.append(Case(f"scatter_reduce_{red}_i32", node, [neg, updi], exact=True))
        node = prim("scatter_reduce", [idx, updb], axis=0, shape=(4, 5), reduction=red)
        out.append(Case(f"scatter_reduce_{red}_bool", node, [idx, updb], exact=True))
    node = prim("scatter_reduce", [bad, upd[:2]], axis=0, shape=(4, 5), reduction="max")
    out.append(Case("scatter_reduce_out_of_range", node, [bad, upd[:2]], raises="out of range"))

    img = _f32(1, 2, 5, 5, seed=22)
    win = dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1))
    out.append(Case("im2col", prim("im2col", [img], **win), [img], exact=True))
    win2 = dict(kernel=(2, 3), stride=(2, 1), padding=(1, 0), dilation=(2, 1))
    out.append(Case("im2col_strided", prim("im2col", [img], **win2), [img], exact=True))
    cols = _f32(1, 18, 25, seed=23)
    out.append(Case("col2im", prim("col2im", [cols], image_shape=(1, 2, 5, 5), **win), [cols]))
    cols2 = _f32(*prim("im2col", [img], **win2).outputs[0].shape, seed=24)
    out.append(Case("col2im_strided", prim("col2im", [cols2], image_shape=(1, 2, 5, 5), **win2), [cols2]))
    dw3, dw23 = _f32(2, 1, 3, 3, seed=25), _f32(2, 1, 2, 3, seed=26)
    out.append(Case("depthwise_conv2d", prim("depthwise_conv2d", [img, dw3], stride=(1, 1), padding=(1, 1)),
                    [img, dw3], rtol=1e-5, atol=1e-6))  # fmt: skip
    dwin = dict(stride=(2, 1), padding=(1, 0), dilation=(2, 1))
    out.append(Case("depthwise_conv2d_strided", prim("depthwise_conv2d", [img, dw23], **dwin), [img, dw23],
                    rtol=1e-5, atol=1e-6))  # fmt: skip

    pimg = _f32(2, 2, 7, 8, seed=50)
    pool2 = dict(kernel=(2, 2), stride=(2, 2))
    out.append(Case("max_pool2d_2x2", prim("max_pool2d", [pimg], **pool2), [pimg], exact=True))
    pool3 = dict(kernel=(3, 3), stride=(2, 2))  # overlapping windows
    out.append(Case("max_pool2d_3x3_s2", prim("max_pool2d", [pimg], **pool3), [pimg], exact=True))
    pool_d = dict(kernel=(2, 3), stride=(1, 2), dilation=(2, 2))
    out.append(Case("max_pool2d_dilated", prim("max_pool2d", [pimg], **pool_d), [pimg], exact=True))
    # Ties (small integers, a window of equal values, a window of -inf) and NaNs (one window with
    # two, one with NaN first): the first maximum in row-major window order must win.
    pties = np.round(_f32(1, 2, 6, 6, seed=51, low=-2.0, high=2.0))
    pties[0, 0, 0:3, 0:3] = 1.0
    pties[0, 0, 3:5, 4:6] = -np.inf
    pties[0, 1, 2, 3] = pties[0, 1, 3, 4] = pties[0, 1, 0, 0] = np.nan
    pool_t = dict(kernel=(2, 2), stride=(1, 1))
    out.append(Case("max_pool2d_ties_nan", prim("max_pool2d", [pties], **pool_t), [pties], exact=True))
    dyt = _f32(1, 2, 5, 5, seed=52)
    grad_t = prim("max_pool2d_grad", [pties, dyt], **pool_t)
    out.append(Case("max_pool2d_grad_ties_nan", grad_t, [pties, dyt]))
    pint = _i32(1, 2, 6, 7, seed=53)  # values in [-5, 6): many ties
    pool_i = dict(kernel=(3, 2), stride=(1, 2))
    out.append(Case("max_pool2d_i32", prim("max_pool2d", [pint], **pool_i), [pint], exact=True))
    dy3 = _f32(*prim("max_pool2d", [pimg], **pool3).outputs[0].shape, seed=54)
    out.append(Case("max_pool2d_grad_3x3_s2", prim("max_pool2d_grad", [pimg, dy3], **pool3), [pimg, dy3]))
    dyd = _f32(*prim("max_pool2d", [pimg], **pool_d).outputs[0].shape, seed=55).astype(np.float64)
    grad_d = prim("max_pool2d_grad", [pimg, dyd], **pool_d)
    out.append(Case("max_pool2d_grad_dilated_f64", grad_d, [pimg, dyd], rtol=1e-12))

    out.append(Case("const_f32", prim("const", [], value=2.5), [], exact=True))
    out.append(Case("const_i64", prim("const", [], value=-7, dtype="i64"), [], exact=True))
    out.append(Case("const_bool", prim("const", [], value=True, dtype="bool"), [], exact=True))
    off = np.array(3, np.int64)
    out.append(Case("rng_uniform", prim("rng_uniform", [off], shape=(4, 5), seed=7), [off], exact=True))
    big = np.array((5 << 32) + 11, np.int64)
    out.append(Case("rng_uniform_f64", prim("rng_uniform", [big], shape=(3, 3), seed=123456789, dtype="f64"),
                    [big], exact=True))  # fmt: skip
    # Quantization (ONNX semantics): ties x / s = k + 1/2, saturation, NaN/inf; per tensor and per row.
    qx = np.concatenate(
        [
            _f32(4, 3, seed=60, low=-200, high=200),
            np.arange(-6, 6, dtype=np.float32).reshape(4, 3) * 0.5 + 0.25,
        ],
        1,
    )
    qx[0, :3] = [np.nan, np.inf, -np.inf]
    qs, qz, qzr = (
        np.array(0.5, np.float32),
        np.array(-3, np.int8),
        np.array([[0], [7], [200], [255]], np.uint8),
    )
    out.append(Case("quantize_i8", prim("quantize", [qx, qs, qz]), [qx, qs, qz], exact=True))
    out.append(Case("quantize_u8_rows", prim("quantize", [qx, qs, qzr]), [qx, qs, qzr], exact=True))
    out.append(Case("fake_quantize", prim("fake_quantize", [qx, qs, qz]), [qx, qs, qz], exact=True))
    qi = np.arange(-60, 60, 10, dtype=np.int8).reshape(4, 3)
    out.append(Case("dequantize", prim("dequantize", [qi, qs, qz]), [qi, qs, qz], exact=True))
    qa, qb = (
        np.arange(-128, 128, 9, dtype=np.int8)[:15].reshape(3, 5),
        np.arange(0, 255, 13, dtype=np.uint8)[:10].reshape(2, 5),
    )
    out.append(Case("qmatmul", prim("qmatmul", [qa, qb]), [qa, qb], exact=True))
    sh, sc, bi = np.array([3, -40], np.int32), np.array([0.25, 0.5], np.float32), np.array(-1.5, np.float32)
    ql = [qa, qb, sh, sc, bi]
    out.append(Case("qlinear_relu", prim("qlinear", ql, relu=True), ql, exact=True))
    ql_q = [*ql, np.array(0.75, np.float32), np.array(5, np.uint8)]
    out.append(Case("qlinear_requantize", prim("qlinear", ql_q), ql_q, exact=True))
    cx = np.arange(2 * 3 * 5 * 4).reshape(2, 3, 5, 4).astype(np.uint8)
    cw = (np.arange(4 * 3 * 2 * 3) % 23 - 11).reshape(4, 3, 2, 3).astype(np.int8)  # [O, kh, kw, C]
    qc = [
        cx,
        cw,
        np.array(9, np.uint8),
        np.arange(4, dtype=np.int32),
        np.array([0.5, 0.25, 1.0, 2.0], np.float32),
    ]
    qc = [*qc, np.array(0.5, np.float32)]
    conv = prim("qconv2d", qc, stride=(2, 1), padding=(1, 1), relu=True)
    out.append(Case("qconv2d", conv, qc, exact=True))
    # Collectives (graphc.distributed) run on the CPU backend only: the CUDA backend says so.
    cpu_only = "runs on the CPU backend only"
    ga, gb = _f32(2, 3, seed=70), _f32(4, seed=71)
    start = prim("allreduce_start", [ga, gb])
    out.append(Case("allreduce_start", start, [ga, gb], raises=cpu_only))
    flat = np.concatenate([ga.reshape(-1), gb])
    wait = prim("allreduce_wait", [flat], shapes=[(2, 3), (4,)])
    out.append(Case("allreduce_wait", wait, [flat], raises=cpu_only))
    out.append(Case("stop_gradient", prim("stop_gradient", [x]), [x], exact=True))
    # Control flow runs its bodies as device sub-plans (kernels/cuda/control_flow.py).
    for op, node, arrays in _control_flow_nodes():
        out.append(Case(op, node, arrays))
    return out


def _control_flow_nodes() -> list[tuple[str, Node, list[np.ndarray]]]:
    """One traced cond, while_loop and scan node each, with arrays typed like their operands."""
    import graphc

    x = _f32(3, seed=80)
    fns = {
        "cond": lambda t: graphc.cond(t.sum() > 0, lambda a: a * 2.0, lambda a: a - 1.0, t),
        "while_loop": lambda t: graphc.while_loop(lambda c: c.abs().sum() > 1.0, lambda c: c * 0.5, t),
        "scan": lambda t: graphc.scan(lambda c, v: (c + v, c * v), t[0], t)[1],
    }
    out = []
    for op, fn in fns.items():
        g = graphc.trace(fn, x)
        node = next(n for n in g.nodes if n.op == op)
        arrays = [np.full(v.shape, 1.5).astype(v.type.np_dtype) for v in node.inputs]  # loops run
        out.append((op, node, arrays))
    return out


def fusion_node(
    kind: str, arrays: list[np.ndarray], build, consts: dict[str, np.ndarray] | None = None
) -> tuple[Node, list[np.ndarray]]:
    """The one fused node of ``kind`` that ``passes.optimize`` makes of ``build(graph, *inputs)``, with
    the arrays it reads (graph inputs ``x0``, ``x1``, ... and the named consts)."""
    from graphc.passes import optimize

    g = Graph("g")
    feeds = {f"x{k}": a for k, a in enumerate(arrays)}
    ins = [g.add_input(name, _t(a)) for name, a in feeds.items()]
    extra = [g.add_input(n, _t(a), "const", a) for n, a in (consts or {}).items()]
    feeds.update(consts or {})
    outs = build(g, *ins, *extra)
    for v in outs if isinstance(outs, (list, tuple)) else [outs]:
        g.add_output(v)
    made = [n for n in optimize(g).nodes if n.op == "fused"]
    assert [n.attrs["kind"] for n in made] == [kind], [n.attrs["kind"] for n in made]
    (node,) = made
    assert all(v.name in feeds for v in node.inputs), "a fused node reads a value computed outside it"
    return node, [feeds[v.name] for v in node.inputs]


def _case(name: str, kind: str, arrays: list[np.ndarray], build, consts=None, **options) -> Case:
    node, inputs = fusion_node(kind, arrays, build, consts)
    return Case(name, node, inputs, **options)


def fused_cases() -> list[Case]:
    """Fused nodes as ``passes.optimize`` makes them of small graphs: softmax, layer_norm, gelu,
    dropout, linear layers (a transposed weight read in place), a strided operand, attention; and
    two hand-written bodies outside the fusion contract that must run node by node."""
    out: list[Case] = []
    x = _f32(2, 5, seed=30)

    def softmax(b, v):
        m = b.op("max", v, axes=(1,), keepdims=True)
        e = b.op("exp", b.op("sub", v, m))
        return b.op("div", e, b.op("sum", e, axes=(1,), keepdims=True))

    out.append(_case("softmax", "reduction", [x], softmax))
    x3 = _f32(2, 3, 4, seed=31)
    # Fusion reduces trailing axes only; the generator also takes a middle axis (hand-written bodies).
    out.append(Case("softmax_axis1_of_3", fused("reduction", [x3], softmax), [x3]))
    # Rows longer than the simulator's row_thread_max (8) take the block/shared-memory path.
    xw = _f32(3, 20, seed=42)
    out.append(_case("softmax_wide", "reduction", [xw], softmax))
    xw3 = _f32(2, 11, 3, seed=43)
    out.append(Case("softmax_wide_axis1_of_3", fused("reduction", [xw3], softmax), [xw3]))
    w, bias = _f32(5, seed=32), _f32(5, seed=33)

    def layer_norm(b, v, wv, bv):
        inv_n = c(b, 1 / v.shape[-1])
        mean = b.op("mul", b.op("sum", v, axes=(1,), keepdims=True), inv_n)
        xc = b.op("sub", v, mean)
        var = b.op("mul", b.op("sum", b.op("mul", xc, xc), axes=(1,), keepdims=True), inv_n)
        y = b.op("mul", xc, b.op("rsqrt", b.op("add", var, c(b, 1e-5))))
        return [b.op("add", b.op("mul", y, wv), bv), mean]

    out.append(_case("layer_norm", "reduction", [x, w, bias], layer_norm, rtol=1e-4, atol=1e-5))
    ww, bw = _f32(12, seed=44), _f32(12, seed=45)
    xl = _f32(2, 12, seed=46)
    out.append(_case("layer_norm_wide", "reduction", [xl, ww, bw], layer_norm, rtol=1e-4, atol=1e-5))

    def mean_rows(b, v):  # keepdims=False: per-row values written once per row
        s = b.op("sum", b.op("mul", v, v), axes=(1,))
        return [b.op("sqrt", b.op("mul", s, c(b, 0.2))), b.op("max", v, axes=(1,))]

    out.append(_case("rms_rows", "reduction", [x], mean_rows))
    out.append(_case("rms_rows_wide", "reduction", [xw], mean_rows))

    def total(b, v):  # a full reduction: a scalar broadcast back over the tensor
        s = b.op("sum", b.op("exp", v), axes=(0, 1))
        return b.op("div", b.op("exp", v), s)

    # Fusion splits this in two (a full reduction, then the division); the generator takes it whole.
    out.append(Case("global_softmax", fused("reduction", [x], total), [x]))

    def gelu(b, v):
        inner = b.op("erf", b.op("mul", v, c(b, 0.7071067811865476)))
        return b.op("mul", b.op("mul", v, c(b, 0.5)), b.op("add", inner, c(b, 1.0)))

    x45 = _f32(4, 5, seed=34)
    out.append(_case("gelu", "pointwise", [x45], gelu))

    def two_shapes(b, v, r):  # outputs of different shapes from one domain
        s = b.op("add", v, r)
        return [b.op("tanh", s), b.op("mul", r, c(b, 2.0)), b.op("gt", s, c(b, 0.0))]

    rr = _f32(5, seed=35)
    # Fusion gives each output shape its own node; the generator's several-shape path, hand-written.
    out.append(Case("pointwise_multi_out", fused("pointwise", [x45, rr], two_shapes), [x45, rr]))

    def dropout(b, v, off):
        u = b.op("rng_uniform", off, shape=(4, 5), seed=11)
        keep = b.op("lt", u, c(b, 0.5))
        return b.op("where", keep, b.op("mul", v, c(b, 2.0)), c(b, 0.0))

    off = np.array(9, np.int64)
    # Fusion leaves rng_uniform outside the body; the generator's inline RNG path, hand-written.
    out.append(Case("dropout", fused("pointwise", [x45, off], dropout), [x45, off], exact=True))
    table = _f32(4, 5, seed=36)

    def with_const(b, v, t):
        return b.op("exp", b.op("add", v, t))

    # Fusion passes a const graph input as an operand; a body's own const input is hand-written.
    out.append(_case("const_operand", "pointwise", [x45], with_const, {"table": table}))
    out.append(Case("body_const", fused("pointwise", [x45], with_const, {"table": table}), [x45]))

    a, wm, bm = _f32(3, 6, seed=37), _f32(4, 6, seed=38), _f32(4, seed=39)

    def linear_relu(b, av, wv, bv):  # nn.Linear: x @ W^T + b, W read through a transpose view
        mm = b.op("matmul", av, b.op("transpose", wv, perm=(1, 0)))
        y = b.op("add", mm, bv)
        return [b.op("maximum", y, c(b, 0.0)), mm]

    out.append(_case("matmul_epilogue", "matmul", [a, wm, bm], linear_relu, atol=1e-5))
    ab, wb = _f32(2, 3, 6, seed=40), _f32(6, 4, seed=41)

    def batched_gelu(b, av, wv):
        return gelu(b, b.op("matmul", av, wv))

    out.append(_case("matmul_batch_gelu", "matmul", [ab, wb], batched_gelu, atol=1e-5))
    xs, wk = _f32(5, 12, seed=47), _f32(3, 6, seed=48)

    def strided(b, xv, wv):  # every other column of x and a transposed weight: no BLAS layout
        cols = b.op("slice", xv, starts=(0, 0), stops=(5, 12), steps=(1, 2))
        return b.op("tanh", b.op("matmul", cols, b.op("transpose", wv, perm=(1, 0))))

    out.append(_case("matmul_strided_operand", "matmul", [xs, wk], strided, atol=1e-5))
    xk = _f32(5, 9, seed=49)

    def wide_k(b, xv, wv):  # K > the simulator's tile depth: several K tiles through the views
        return b.op("matmul", b.op("transpose", xv, perm=(1, 0)), b.op("transpose", wv, perm=(1, 0)))

    out.append(_case("matmul_both_transposed", "matmul", [xk, _f32(4, 5, seed=50)], wide_k, atol=1e-5))

    def with_transpose(b, v):  # transpose is not pointwise: the generator declines, the body runs
        return b.op("exp", b.op("transpose", v, perm=(1, 0)))

    out.append(Case("fallback_transpose", fused("pointwise", [x45], with_transpose), [x45], generated=False))

    def mixed(b, v):  # a per-row value broadcast along the wrong axis: falls back
        s = b.op("sum", v, axes=(1,))
        return b.op("add", b.op("reshape", s, shape=(4, 1)), v)

    node = fused("reduction", [x45], mixed)
    out.append(Case("fallback_reshape_in_reduction", node, [x45], generated=False))
    qkv = {"q": _f32(1, 2, 5, 4, seed=42), "k": _f32(1, 2, 6, 4, seed=43), "v": _f32(1, 2, 6, 3, seed=44)}
    node = attention_node(**qkv)
    out.append(Case("attention", node, [qkv[v.name] for v in node.inputs], atol=1e-5))
    packed = _f32(2, 5, 3, 2, 4, seed=45)
    out.append(Case("attention_packed_qkv", packed_attention_node(packed), [packed], atol=1e-5))
    long = _f32(1, 11, 3, 2, 3, seed=46)  # 11 keys: more than a simulated block's threads
    out.append(Case("attention_long_rows", packed_attention_node(long), [long], atol=1e-5))
    return out


def attention_node(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> Node:
    """The fused attention node fusion makes of softmax(q k^T / 2) v with the heads put back."""
    from graphc.passes import optimize

    g = Graph("attention")
    qv, kv, vv = (g.add_input(name, _t(a)) for name, a in zip("qkv", (q, k, v)))
    scores = g.op("mul", g.op("matmul", qv, g.op("transpose", kv, perm=(0, 1, 3, 2))), c(g, 0.5))
    e = g.op("exp", g.op("sub", scores, g.op("max", scores, axes=(3,), keepdims=True)))
    probs = g.op("div", e, g.op("sum", e, axes=(3,), keepdims=True))
    g.add_output(g.op("transpose", g.op("matmul", probs, vv), perm=(0, 2, 1, 3)))
    (node,) = [n for n in optimize(g).nodes if n.op == "fused"]
    assert node.attrs["kind"] == "attention"
    return node


def packed_attention_node(qkv: np.ndarray) -> Node:
    """The attention node of examples/transformer.py's self-attention over a packed projection
    ``qkv`` [b, s, 3, heads, dh]: q, k and v are slice/transpose/reshape views of it."""
    from graphc.passes import optimize

    b, s, _, heads, dh = qkv.shape
    g = Graph("packed_attention")
    x = g.add_input("qkv", _t(qkv))
    parts = g.op("transpose", x, perm=(2, 0, 3, 1, 4))
    q, k, v = (
        g.op("reshape", g.op("slice", parts, starts=(i, 0, 0, 0, 0), stops=(i + 1, b, heads, s, dh),
                             steps=(1,) * 5), shape=(b, heads, s, dh))
        for i in range(3)
    )  # fmt: skip
    scores = g.op("mul", g.op("matmul", q, g.op("transpose", k, perm=(0, 1, 3, 2))), c(g, dh**-0.5))
    e = g.op("exp", g.op("sub", scores, g.op("max", scores, axes=(3,), keepdims=True)))
    probs = g.op("div", e, g.op("sum", e, axes=(3,), keepdims=True))
    g.add_output(g.op("transpose", g.op("matmul", probs, v), perm=(0, 2, 1, 3)))
    (node,) = [n for n in optimize(g).nodes if n.op == "fused"]
    assert node.attrs["kind"] == "attention"
    return node


def int_dtype_cases() -> list[Case]:
    """i16/u16/u32/u64 elementwise ops, reductions and casts at the types' edge values (wrap-around)."""
    out: list[Case] = []
    for dtype in (np.int16, np.uint16, np.uint32, np.uint64):
        info = np.iinfo(dtype)
        vals = np.array([info.min, info.min + 1, 0, 1, 3, 7, info.max - 1, info.max], dtype)
        a, b = np.repeat(vals, len(vals)).reshape(8, 8), np.tile(vals, len(vals)).reshape(8, 8)
        name = np.dtype(dtype).name
        for op in ("add", "sub", "mul", "maximum", "minimum", "fmod", "remainder", "floordiv", "lt", "eq"):
            out.append(Case(f"{op}_{name}", prim(op, [a, b]), [a, b], exact=True))
        for op in ("neg", "abs", "sign"):
            out.append(Case(f"{op}_{name}", prim(op, [a]), [a], exact=True))
        out.append(Case(f"sum_{name}", prim("sum", [a], axes=(1,)), [a], exact=True))
        out.append(Case(f"cast_{name}_f64", prim("cast", [a], dtype="f64"), [a], exact=True))
        f = np.array([0.0, 1.5, 2.5, 100.7, 65535.0, 4294967295.0], np.float64)
        f = f[f <= info.max]
        dst = {np.int16: "i16", np.uint16: "u16", np.uint32: "u32", np.uint64: "u64"}[dtype]
        out.append(Case(f"cast_f64_{name}", prim("cast", [f], dtype=dst), [f], exact=True))
    return out


def all_cases() -> list[Case]:
    """Every case, primitives first."""
    return primitive_cases() + int_dtype_cases() + fused_cases()
