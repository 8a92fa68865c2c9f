"""ONNX export: a graphc model's traced graph as an ONNX model, one table entry per primitive op.

``export(model, *examples, path=..., opset=...)`` traces the model (primitive ops only), maps
each node through ``EMITTERS`` (fused nodes, in graphs that have them, are expanded from their
bodies), writes params and constants as initializers, and checks the result with
``onnx.checker``. Training-only ops (rng_uniform, scatter_add, max_pool2d_grad) have no entry:
exporting a graph that uses them is a GraphcError naming them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from graphc.ir import DTYPES, Graph, GraphcError, Node
from graphc.ir.types import FLOAT_DTYPES

from .lowbit_ops import FLOAT8_DTYPES, check_export
from .proto import GRAPHC_TO_ONNX, sanitize

DEFAULT_OPSET = 17
TRAINING_ONLY = ("rng_uniform", "scatter_add", "max_pool2d_grad")
MIN_OPSET, MAX_OPSET = 13, 21
_NP = {name: dtype.type for name, dtype in DTYPES.items()}  # graphc dtype -> NumPy scalar type


class _Builder:
    """Collects ONNX nodes and initializers with unique names."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list = []
        self.initializers: list = []
        self.names: set[str] = set()

    def fresh(self, hint: str) -> str:
        base = sanitize(hint, "t")
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def const(self, hint: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def ints(self, hint: str, values) -> str:
        return self.const(hint, np.asarray(list(values), dtype=np.int64))

    def node(
        self, op_type: str, inputs: list[str], outputs: list[str] | None = None, **attrs: Any
    ) -> list[str]:
        from onnx import helper

        outputs = outputs or [self.fresh(f"{op_type.lower()}_out")]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=self.fresh(op_type), **attrs))
        return outputs


Emitter = Callable[[_Builder, Node, list[str], list[str]], None]
EMITTERS: dict[str, Emitter] = {}

_SIMPLE = {
    "exp": "Exp",
    "log": "Log",
    "sqrt": "Sqrt",
    "tanh": "Tanh",
    "erf": "Erf",
    "sin": "Sin",
    "cos": "Cos",
    "acos": "Acos",
    "asin": "Asin",
    "atan": "Atan",
    "acosh": "Acosh",
    "asinh": "Asinh",
    "atanh": "Atanh",
    "reciprocal": "Reciprocal",
    "neg": "Neg",
    "abs": "Abs",
    "sign": "Sign",
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "pow": "Pow",
    "maximum": "Max",
    "minimum": "Min",
    "lt": "Less",
    "le": "LessOrEqual",
    "eq": "Equal",
    "gt": "Greater",
    "ge": "GreaterOrEqual",
    "where": "Where",
    "matmul": "MatMul",
    "floor": "Floor",
    "ceil": "Ceil",
    "round": "Round",
}


def _simple(op_type: str) -> Emitter:
    def emit(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
        b.node(op_type, ins, outs)

    return emit


for _op, _onnx_op in _SIMPLE.items():
    EMITTERS[_op] = _simple(_onnx_op)


def _emitter(op: str) -> Callable[[Emitter], Emitter]:
    def register(fn: Emitter) -> Emitter:
        EMITTERS[op] = fn
        return fn

    return register


@_emitter("rsqrt")
def _rsqrt(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    b.node("Reciprocal", b.node("Sqrt", ins), outs)


@_emitter("ne")
def _ne(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    b.node("Not", b.node("Equal", ins), outs)


@_emitter("cast")
def _cast(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    dtype = node.attrs["dtype"]  # graphc's cast to float8 does not saturate (ONNX's saturate=0)
    b.node("Cast", ins, outs, to=GRAPHC_TO_ONNX[dtype], **({"saturate": 0} if dtype in FLOAT8_DTYPES else {}))


@_emitter("broadcast_to")
def _broadcast_to(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    b.node("Expand", [ins[0], b.ints("shape", node.attrs["shape"])], outs)


def _reduce(op_type: str) -> Emitter:
    def emit(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
        axes, keep = list(node.attrs["axes"]), int(node.attrs["keepdims"])
        if not axes:
            b.node("Identity", ins, outs)
        elif op_type == "ReduceSum" or b.opset >= 18:
            b.node(op_type, [ins[0], b.ints("axes", axes)], outs, keepdims=keep)
        else:
            b.node(op_type, ins, outs, axes=axes, keepdims=keep)

    return emit


EMITTERS["sum"] = _reduce("ReduceSum")
EMITTERS["max"] = _reduce("ReduceMax")
EMITTERS["min"] = _reduce("ReduceMin")
_WIDER = {"i8": "i32", "i16": "i32", "u8": "u32", "u16": "u32"}  # dtypes ONNX's ReduceProd lacks


@_emitter("prod")
def _prod(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    dtype = node.inputs[0].dtype
    wide = _WIDER.get(dtype)
    if wide is None:
        _reduce("ReduceProd")(b, node, ins, outs)
        return
    # the low bits of a product are those of the product of a wider type: cast there and back
    product = b.fresh("prod_out")
    _reduce("ReduceProd")(b, node, b.node("Cast", ins, to=GRAPHC_TO_ONNX[wide]), [product])
    b.node("Cast", [product], outs, to=GRAPHC_TO_ONNX[dtype])


def _bitwise(logical: str, bitwise: str) -> Emitter:
    """Bool operands: the logical op (any opset); integers: ONNX's Bitwise* (opset 18)."""

    def emit(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
        if node.inputs[0].dtype == "bool":
            b.node(logical, ins, outs)
        elif b.opset < 18:
            raise GraphcError(f"ONNX export: {node.op} of integers needs opset 18 or newer, got {b.opset}")
        else:
            b.node(bitwise, ins, outs)

    return emit


for _op, _logical, _bitwise_op in (
    ("bitwise_and", "And", "BitwiseAnd"),
    ("bitwise_or", "Or", "BitwiseOr"),
    ("bitwise_xor", "Xor", "BitwiseXor"),
    ("bitwise_not", "Not", "BitwiseNot"),
):
    EMITTERS[_op] = _bitwise(_logical, _bitwise_op)


def _select(b: _Builder, flag: str, a: str, other: str, dtype: str) -> str:
    """``a`` where ``flag`` (a 0/1 tensor of ``dtype``) is 1, else ``other``: by products, which
    ONNX Runtime has for every integer dtype (its Where lacks int16, uint16 and uint64)."""
    rest = b.node("Sub", [b.const("one", np.ones((), _NP[dtype])), flag])[0]
    return b.node("Add", [b.node("Mul", [flag, a])[0], b.node("Mul", [rest, other])[0]])[0]


def _shift(direction: str) -> Emitter:
    """ONNX's BitShift (unsigned only), times 0 for counts of the bit width or more (and negative
    ones, which the cast to unsigned makes large). Signed operands go through their unsigned twin:
    a left shift wraps the same way; a right shift of a negative x is ``-1 - ((-1 - x) >> y)``
    (arithmetic, from the logical shift of a non-negative value)."""

    def emit(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
        dtype = node.inputs[0].dtype
        np_type = np.dtype(_NP[dtype])
        unsigned = "u" + dtype[1:] if dtype.startswith("i") else dtype
        to_unsigned = GRAPHC_TO_ONNX[unsigned]
        x, y = ins
        negative = None
        if dtype != unsigned:
            minus_one = b.const("minus_one", np.array(-1, np_type))
            if direction == "RIGHT":
                below = b.node("Less", [x, b.const("zero", np.zeros((), np_type))])[0]
                negative = b.node("Cast", [below], to=GRAPHC_TO_ONNX[dtype])[0]
                x = _select(b, negative, b.node("Sub", [minus_one, x])[0], x, dtype)
            x = b.node("Cast", [x], to=to_unsigned)[0]
            y = b.node("Cast", [y], to=to_unsigned)[0]
        shifted = b.node("BitShift", [x, y], direction=direction)[0]
        fits = b.node("Less", [y, b.const("bits", np.array(8 * np_type.itemsize, _NP[unsigned]))])[0]
        guarded = [b.node("Mul", [shifted, b.node("Cast", [fits], to=to_unsigned)[0]])[0]]
        if dtype != unsigned:
            guarded = b.node("Cast", guarded, to=GRAPHC_TO_ONNX[dtype])
            if negative is not None:
                guarded = [_select(b, negative, b.node("Sub", [minus_one, guarded[0]])[0], guarded[0], dtype)]
        b.node("Identity", guarded, outs)

    return emit


EMITTERS["left_shift"] = _shift("LEFT")
EMITTERS["right_shift"] = _shift("RIGHT")


@_emitter("argmax")
def _argmax(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    b.node("ArgMax", ins, outs, axis=node.attrs["axis"], keepdims=int(node.attrs["keepdims"]))


@_emitter("reshape")
def _reshape(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    shape = node.attrs["shape"]
    if b.opset >= 14:
        b.node("Reshape", [ins[0], b.ints("shape", shape)], outs, allowzero=1)
    elif 0 in shape:
        raise GraphcError("ONNX export: a reshape to a shape with a 0 needs opset 14 or newer")
    else:
        b.node("Reshape", [ins[0], b.ints("shape", shape)], outs)


@_emitter("transpose")
def _transpose(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    b.node("Transpose", ins, outs, perm=list(node.attrs["perm"]))


@_emitter("slice")
def _slice(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    a = node.attrs
    rank = len(a["starts"])
    args = [b.ints(n, v) for n, v in (("starts", a["starts"]), ("ends", a["stops"]), ("axes", range(rank)))]
    b.node("Slice", [ins[0], *args, b.ints("steps", a["steps"])], outs)


@_emitter("pad")
def _pad(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    pads = node.attrs["pads"]
    flat = [lo for lo, _ in pads] + [hi for _, hi in pads]
    dtype = node.inputs[0].dtype
    value = b.const("pad_value", np.array(node.attrs["value"]).astype(_NP[dtype]))
    b.node("Pad", [ins[0], b.ints("pads", flat), value], outs, mode="constant")


@_emitter("concat")
def _concat(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    b.node("Concat", ins, outs, axis=node.attrs["axis"])


@_emitter("gather")
def _gather(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    b.node("Gather", ins, outs, axis=node.attrs["axis"])


def _one_hot_kernels(c: int, kh: int, kw: int, dtype: str) -> np.ndarray:
    """[c*kh*kw, 1, kh, kw] weights whose channel (ci, i, j) picks window element (i, j)."""
    eye = np.eye(kh * kw, dtype=_NP[dtype]).reshape(kh * kw, 1, kh, kw)
    return np.tile(eye, (c, 1, 1, 1))


@_emitter("im2col")
def _im2col(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    a = node.attrs
    n, c, _, _ = node.inputs[0].shape
    (kh, kw), (ph, pw) = a["kernel"], a["padding"]
    weight = b.const("im2col_kernel", _one_hot_kernels(c, kh, kw, node.inputs[0].dtype))
    (cols,) = b.node(
        "Conv",
        [ins[0], weight],
        kernel_shape=[kh, kw],
        strides=list(a["stride"]),
        dilations=list(a["dilation"]),
        pads=[ph, pw, ph, pw],
        group=c,
    )
    b.node("Reshape", [cols, b.ints("shape", node.outputs[0].shape)], outs)


@_emitter("depthwise_conv2d")
def _depthwise_conv2d(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    a, (c, _, kh, kw) = node.attrs, node.inputs[1].shape
    (ph, pw) = a["padding"]
    b.node(
        "Conv",
        ins,
        outs,
        kernel_shape=[kh, kw],
        strides=list(a["stride"]),
        dilations=list(a["dilation"]),
        pads=[ph, pw, ph, pw],
        group=c,
    )


@_emitter("col2im")
def _col2im(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    a = node.attrs
    n, c, h, w = a["image_shape"]
    (kh, kw), (sh, sw) = a["kernel"], a["stride"]
    (ph, pw), (dh, dw) = a["padding"], a["dilation"]
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    (grid,) = b.node("Reshape", [ins[0], b.ints("shape", (n, c * kh * kw, oh, ow))])
    extra = [
        h - ((oh - 1) * sh - 2 * ph + dh * (kh - 1) + 1),
        w - ((ow - 1) * sw - 2 * pw + dw * (kw - 1) + 1),
    ]
    weight = b.const("col2im_kernel", _one_hot_kernels(c, kh, kw, node.outputs[0].dtype))
    b.node(
        "ConvTranspose",
        [grid, weight],
        outs,
        kernel_shape=[kh, kw],
        strides=[sh, sw],
        dilations=[dh, dw],
        pads=[ph, pw, ph, pw],
        output_padding=extra,
        group=c,
    )


@_emitter("max_pool2d")
def _max_pool2d(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    a = node.attrs
    b.node(
        "MaxPool",
        ins,
        outs,
        kernel_shape=list(a["kernel"]),
        strides=list(a["stride"]),
        dilations=list(a["dilation"]),
        **({"pads": list(a["padding"])} if any(a["padding"]) else {}),  # (top, left, bottom, right)
    )


@_emitter("const")
def _const(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    from onnx import numpy_helper

    dtype = node.attrs["dtype"]
    value = numpy_helper.from_array(np.array(node.attrs["value"]).astype(_NP[dtype]))
    b.node("Constant", [], outs, value=value)


def _value_info(name: str, value) -> Any:
    from onnx import helper

    return helper.make_tensor_value_info(name, GRAPHC_TO_ONNX[value.dtype], list(value.shape))


def _check_lowbit(b: _Builder, node: Node) -> None:
    check_export([v.dtype for v in (*node.inputs, *node.outputs)], b.opset, node.op, f" ({node.op})")


def _is_float(value) -> bool:
    return value.dtype in FLOAT_DTYPES


@_emitter("trunc")
def _trunc(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    if not _is_float(node.inputs[0]):
        b.node("Identity", ins, outs)
        return
    # toward zero: floor of |x| with x's sign (Sign(-0.0) is 0: the product keeps x's zero)
    mag = b.node("Floor", b.node("Abs", ins))
    b.node("Mul", [mag[0], b.node("Sign", ins)[0]], outs)


@_emitter("fmod")
def _fmod(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    b.node("Mod", ins, outs, fmod=1)


def _remainder_names(b: _Builder, node: Node, ins: list[str]) -> str:
    """The remainder with the divisor's sign (ONNX Mod with fmod=0 is defined for integers only)."""
    if not _is_float(node.inputs[0]):
        return b.node("Mod", ins, fmod=0)[0]
    a, d = ins
    m = b.node("Mod", [a, d], fmod=1)[0]
    zero = b.const("zero", np.zeros((), _NP[node.inputs[0].dtype]))
    differs = b.node("Xor", [b.node("Less", [d, zero])[0], b.node("Less", [m, zero])[0]])[0]
    move = b.node("And", [b.node("Not", b.node("Equal", [m, zero]))[0], differs])[0]
    return b.node("Where", [move, b.node("Add", [m, d])[0], m])[0]


@_emitter("remainder")
def _remainder(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    b.node("Identity", [_remainder_names(b, node, ins)], outs)


@_emitter("floordiv")
def _floordiv(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    # (a - remainder(a, b)) / b is an exact integer quotient for integers; for floats it is
    # integral up to rounding, so Round makes it exact (NumPy's floor_divide does the same).
    diff = b.node("Sub", [ins[0], _remainder_names(b, node, ins)])[0]
    if _is_float(node.inputs[0]):
        b.node("Round", b.node("Div", [diff, ins[1]]), outs)
    else:
        b.node("Div", [diff, ins[1]], outs)


def _body_builder(b: _Builder) -> _Builder:
    """A builder for a body's nodes: its own node list, the model's names and initializers."""
    sub = _Builder(b.opset)
    sub.names, sub.initializers = b.names, b.initializers
    return sub


def _emit_body(b: _Builder, body: Graph, bound: list[str], prefix: str, outputs: list[str]) -> list:
    """Emit ``body`` with its data inputs named ``bound``: its nodes, ending in Identity to ``outputs``.

    Bodies are closed graphs (captures are operands), so only their inputs and constants are in
    scope; constants go to the model's initializers, which a body sees as an enclosing scope.
    """
    sub = _body_builder(b)
    inner = dict(zip((v.name for v in body.data_inputs), bound))
    for v in body.inputs:
        if body.kinds[v.name] != "data":
            inner[v.name] = b.const(prefix + v.name, body.initializers[v.name])
    _emit_nodes(sub, body.nodes, inner, prefix)
    for out_name, v in zip(outputs, body.outputs):
        sub.node("Identity", [inner[v.name]], [out_name])
    return sub.nodes


def _subgraph(b: _Builder, name: str, nodes: list, inputs: list, outputs: list) -> Any:
    from onnx import helper

    return helper.make_graph(nodes, b.fresh(name), inputs, outputs)


@_emitter("cond")
def _cond(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    pred = ins[0]
    if node.inputs[0].dtype != "bool":
        pred = b.node("Cast", [pred], to=GRAPHC_TO_ONNX["bool"])[0]
    branches = []
    for label, body in zip(("then", "else"), node.bodies):
        results = [b.fresh(f"{label}_{v.name}") for v in body.outputs]
        nodes = _emit_body(b, body, ins[1:], f"{outs[0]}.{label}.", results)
        infos = [_value_info(r, v) for r, v in zip(results, body.outputs)]
        branches.append(_subgraph(b, f"{label}_branch", nodes, [], infos))
    b.node("If", [pred], outs, then_branch=branches[0], else_branch=branches[1])


def _loop_inputs(b: _Builder, hint: str, values: list) -> tuple[list[str], list]:
    from onnx import TensorProto, helper

    it, c = b.fresh(f"{hint}.iter"), b.fresh(f"{hint}.cond")
    names = [b.fresh(f"{hint}.{v.name}") for v in values]
    infos = [
        helper.make_tensor_value_info(it, TensorProto.INT64, []),
        helper.make_tensor_value_info(c, TensorProto.BOOL, []),
        *(_value_info(n, v) for n, v in zip(names, values)),
    ]
    return [it, c, *names], infos


@_emitter("while_loop")
def _while_loop(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    # ONNX Loop tests its condition before each trip: the first test runs here, the others at the
    # end of the body, on the next carry.
    k = node.attrs["n_carry"]
    cond_body, step_body = node.bodies
    hint = outs[0]
    first = b.fresh(f"{hint}.cond0")
    b.nodes += _emit_body(b, cond_body, ins, f"{hint}.c0.", [first])
    formal, infos = _loop_inputs(b, hint, cond_body.data_inputs[:k])
    carried = formal[2:]
    nxt = [b.fresh(f"{hint}.next.{v.name}") for v in step_body.outputs]
    nodes = _emit_body(b, step_body, carried + ins[k:], f"{hint}.body.", nxt)
    again = b.fresh(f"{hint}.cond_next")
    nodes += _emit_body(b, cond_body, nxt + ins[k:], f"{hint}.cond.", [again])
    out_infos = [_value_info(again, cond_body.outputs[0])] + [
        _value_info(n, v) for n, v in zip(nxt, step_body.outputs)
    ]
    body = _subgraph(b, "while_body", nodes, infos, out_infos)
    b.node("Loop", ["", first, *ins[:k]], outs, body=body)


@_emitter("scan")
def _scan(b: _Builder, node: Node, ins: list[str], outs: list[str]) -> None:
    # An ONNX Loop of ``length`` trips: slice i of each xs gathered at the iteration number (the
    # mirrored one when reversed), ys stacked by the Loop in trip order (reversed back after).
    k, n_xs, length, reverse = (node.attrs[a] for a in ("n_carry", "n_xs", "length", "reverse"))
    (body,) = node.bodies
    hint = outs[0]
    formal, infos = _loop_inputs(b, hint, body.data_inputs[:k])
    sub = _body_builder(b)
    index = formal[0]
    if reverse:
        index = sub.node("Sub", [b.const(f"{hint}.last", np.array(length - 1, np.int64)), formal[0]])[0]
    slices = [sub.node("Gather", [x, index], axis=0)[0] for x in ins[k : k + n_xs]]
    results = [b.fresh(f"{hint}.next.{v.name}") for v in body.outputs]
    nodes = sub.nodes + _emit_body(b, body, formal[2:] + slices + ins[k + n_xs :], f"{hint}.", results)
    cond_out = b.fresh(f"{hint}.cond_out")
    nodes.append(_identity(b, formal[1], cond_out))
    out_infos = [_bool_info(cond_out)] + [_value_info(n, v) for n, v in zip(results, body.outputs)]
    loop_body = _subgraph(b, "scan_body", nodes, infos, out_infos)
    trips = b.const(f"{hint}.length", np.array(length, np.int64))
    stacked = list(outs[:k]) + [b.fresh(f"{o}.stacked") if reverse else o for o in outs[k:]]
    b.node("Loop", [trips, "", *ins[:k]], stacked, body=loop_body)
    if reverse:
        for s_name, o in zip(stacked[k:], outs[k:]):
            _reverse_leading(b, s_name, o, length)


def _identity(b: _Builder, src: str, dst: str) -> Any:
    from onnx import helper

    return helper.make_node("Identity", [src], [dst], name=b.fresh("Identity"))


def _bool_info(name: str) -> Any:
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.BOOL, [])


def _reverse_leading(b: _Builder, src: str, dst: str, length: int) -> None:
    index = b.const(f"{dst}.reversed", np.arange(length - 1, -1, -1, dtype=np.int64))
    b.node("Gather", [src, index], [dst], axis=0)


def _emit_nodes(b: _Builder, nodes: list[Node], names: dict[str, str], prefix: str) -> None:
    for node in nodes:
        ins = [names[v.name] for v in node.inputs]
        outs = [b.fresh(prefix + v.name) for v in node.outputs]
        if node.op == "fused":
            body = node.subgraph
            inner = dict(names)
            for p, arg in zip(body.data_inputs, ins):
                inner[p.name] = arg
            for v in body.inputs:
                if v.name in body.initializers and body.kinds[v.name] != "data":
                    inner[v.name] = b.const(prefix + v.name, body.initializers[v.name])
            _emit_nodes(b, body.nodes, inner, f"{prefix}{node.outputs[0].name}.")
            for out_name, v in zip(outs, body.outputs):
                b.node("Identity", [inner[v.name]], [out_name])
        else:
            _check_lowbit(b, node)  # float8/int4: casts and movement only, at an opset that has them
            emit = EMITTERS.get(node.op)
            if emit is None:
                why = "it appears only in training graphs" if node.op in TRAINING_ONLY else "not yet"
                raise GraphcError(f"ONNX export: op {node.op!r} has no ONNX translation ({why})")
            emit(b, node, ins, outs)
        for v, name in zip(node.outputs, outs):
            names[v.name] = name


def to_onnx(graph: Graph, opset: int = DEFAULT_OPSET) -> Any:
    """An onnx.ModelProto for a graphc graph (data inputs become graph inputs, the rest initializers)."""
    import onnx
    from onnx import helper, numpy_helper

    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise GraphcError(f"ONNX export: opset must be an int in [{MIN_OPSET}, {MAX_OPSET}], got {opset!r}")
    b = _Builder(opset)
    names: dict[str, str] = {}
    inputs = []
    check_export([v.dtype for v in (*graph.inputs, *graph.outputs)], opset)
    for v in graph.inputs:
        name = b.fresh(v.name)
        names[v.name] = name
        if graph.kinds[v.name] == "data":
            inputs.append(_value_info(name, v))
        else:
            arr = graph.initializers.get(v.name)
            if arr is None:
                raise GraphcError(
                    f"ONNX export: input %{v.name} ({graph.kinds[v.name]}) has no initial value"
                )
            b.initializers.append(numpy_helper.from_array(np.array(arr, order="C"), name))
    _emit_nodes(b, graph.nodes, names, "")
    update_slots = set(graph.updates.values())
    outputs = []
    for i, v in enumerate(graph.outputs):
        if i in update_slots:
            continue
        out = b.fresh(f"output{len(outputs)}")
        b.node("Identity", [names[v.name]], [out])
        outputs.append(_value_info(out, v))
    onnx_graph = helper.make_graph(b.nodes, sanitize(graph.name, "graphc"), inputs, outputs, b.initializers)
    model = helper.make_model(
        onnx_graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="graphc"
    )
    model.ir_version = min(model.ir_version, 10)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise GraphcError(f"ONNX export produced an invalid model: {err}") from None
    return model


def export(
    model: Any, *examples: Any, path: str | os.PathLike | None = None, opset: int = DEFAULT_OPSET
) -> Any:
    """Trace ``model`` on ``examples`` and write (when ``path`` is given) and return its ONNX model."""
    import onnx

    from graphc.tracing import trace

    proto = to_onnx(model if isinstance(model, Graph) else trace(model, *examples), opset)
    if path is not None:
        try:
            onnx.save(proto, os.fspath(path))
        except OSError as err:
            raise GraphcError(f"cannot write {os.fspath(path)}: {err.strerror or err}") from None
    return proto
