"""Post-training int8 quantization: ``quantize_static`` and ``quantize_dynamic`` return plans.

Both quantize the weights of every linear layer (a matmul of an activation by a 2-D parameter or
its transpose: ``nn.Linear``, ``F.linear``) and every convolution (``conv2d`` with groups 1: a
4-D parameter reshaped, times ``im2col`` of an activation) to int8, symmetrically (zero point
0), per output channel or per tensor, and store them as int8 arrays in the plan (the float
weights are gone). Activations entering those layers are quantized per tensor to uint8 with a
zero point (ONNX's QDQ convention), with ranges

- ``quantize_static``: fixed, from calibration batches run through the float model: ``minmax``
  (the extremes seen) or ``percentile`` (the ``percentile``-th and ``100 - percentile``-th
  percentiles of all values, clipping outliers); the range always includes 0;
- ``quantize_dynamic``: computed in the graph from each call's own minimum and maximum.

The graph then holds ``dequantize(quantize(x)) @ dequantize(w_int8)`` (QDQ form; for a
convolution ``reshape(dequantize(w_int8)) @ im2col(dequantize(quantize(x)))``), which the
``quantize_matmuls`` pass (graphc.passes.quantize) turns into the int8 kernels ``qlinear`` and
``qconv2d``, each with its dequantizing epilogue and the bias add, ReLU and next quantize that
follow folded in. Other layers (grouped convolutions, attention) stay in float. Quantization
semantics are ONNX's QuantizeLinear/DequantizeLinear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from graphc import passes
from graphc.calibration import entropy_range
from graphc.compiler import compile_graph
from graphc.ir import Graph, GraphcError, Node, Value
from graphc.kernels.reference import KERNELS as _REFERENCE
from graphc.passes.quantize import quantize_matmuls
from graphc.tracing import trace

__all__ = ["LinearSite", "find_linear_sites", "quantize_dynamic", "quantize_static", "quantize_weights"]

METHODS = ("minmax", "percentile", "entropy")  # entropy: graphc.calibration (KL divergence)
_TINY_SCALE = 1e-12  # the scale of an all-zero range (any positive value quantizes 0 exactly)


@dataclass
class LinearSite:
    """One matmul of an activation by a float parameter: ``x @ w`` or ``x @ w.T`` (w 2-D), or a
    convolution ``reshape(w) @ im2col(x)`` (w [O, C, kh, kw]; ``reader`` is the im2col)."""

    node: Node
    weight: Value
    transposed: bool
    reader: Node | None = None  # the node reading the activation (its first operand); None: node

    @property
    def activation(self) -> Value:
        """The float activation: the matmul's left operand, or the image under im2col."""
        return (self.reader or self.node).inputs[0]

    @property
    def is_conv(self) -> bool:
        """Whether the site is a convolution (an im2col matmul)."""
        return self.reader is not None


def _is_param(graph: Graph, v: Value, rank: int) -> bool:
    return graph.kinds.get(v.name) == "param" and v.type.rank == rank and v.name in graph.initializers


def _conv_site(graph: Graph, node: Node, prod: dict) -> LinearSite | None:
    """``matmul(reshape(w), im2col(x))`` with w a 4-D param (conv2d with groups 1), or None."""
    wr, cols = (prod.get(v) for v in node.inputs)
    if wr is None or cols is None or wr.op != "reshape" or cols.op != "im2col":
        return None
    w, x = wr.inputs[0], cols.inputs[0]
    if not _is_param(graph, w, 4) or x.dtype not in ("f32", "f64") or node.output.type.rank != 3:
        return None
    return LinearSite(node, w, False, cols)


def find_linear_sites(graph: Graph) -> list[LinearSite]:
    """Every quantizable matmul of ``graph``: a float activation on the left and a 2-D param
    weight, or a convolution (a 4-D param weight reshaped, times im2col of a float activation)."""
    prod = {v: n for n in graph.nodes for v in n.outputs}
    sites = []
    for node in graph.nodes:
        if node.op != "matmul":
            continue
        conv = _conv_site(graph, node, prod)
        if conv is not None:
            sites.append(conv)
            continue
        if node.inputs[0].dtype not in ("f32", "f64"):
            continue
        right = node.inputs[1]
        transposed = False
        src = prod.get(right)
        if src is not None and src.op == "transpose" and tuple(src.attrs["perm"]) == (1, 0):
            right, transposed = src.inputs[0], True
        if _is_param(graph, right, 2):
            sites.append(LinearSite(node, right, transposed))
    return sites


def _weight_params(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 scale (per channel along ``axis``, else per tensor) and the int8 weight."""
    w = np.asarray(w)
    others = tuple(a for a in range(w.ndim) if a != axis)
    amax = np.abs(w).max() if axis is None else np.abs(w).max(axis=others, keepdims=True)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(w.dtype)
    zero = np.zeros(scale.shape, np.int8)
    (q,) = _REFERENCE["quantize"]([w, scale, zero], {})
    return scale, q.astype(np.int8)


def quantize_weights(graph: Graph, per_channel: bool = True) -> list[LinearSite]:
    """Replace each linear site's float weight by ``dequantize`` of an int8 const (in place).

    Returns the sites; their matmuls now read the dequantized weight (through the transpose).
    """
    sites = find_linear_sites(graph)
    done: dict[str, Value] = {}
    for site in sites:
        w = site.weight
        if w.name in done:
            continue
        axis = (0 if site.transposed or site.is_conv else 1) if per_channel else None
        scale, q = _weight_params(graph.initializers[w.name], axis)
        qv = graph.add_input(graph.fresh_name(f"{w.name}.int8"), _type(q), "const", q)
        sv = graph.add_input(graph.fresh_name(f"{w.name}.scale"), _type(scale), "const", scale)
        zv = graph.add_input(
            graph.fresh_name(f"{w.name}.zero"), _type(np.zeros((), np.int8)), "const", np.int8(0)
        )
        deq = graph.op("dequantize", qv, sv, zv, source=site.node.source)
        _move_before(graph, deq, _first_reader(graph, w))
        graph.replace_uses(w, deq)
        graph.remove_input(w)
        done[w.name] = deq
    return sites


def _type(arr: np.ndarray):
    from graphc.ir import TensorType

    return TensorType.of(np.asarray(arr))


def _first_reader(graph: Graph, v: Value) -> Node:
    return next(n for n in graph.nodes if v in n.inputs)


def _move_before(graph: Graph, value: Value, anchor: Node, count: int = 1) -> None:
    """Move the last ``count`` appended nodes (the one making ``value`` last) before ``anchor``."""
    moved = graph.nodes[-count:]
    assert moved[-1].outputs[0] is value
    rest = graph.nodes[:-count]
    at = rest.index(anchor)
    graph.set_nodes(rest[:at] + moved + rest[at:])


def _insert_qdq(
    graph: Graph, site: LinearSite, make_params: Callable[[Graph, Value], tuple[Value, Value, int]]
) -> None:
    """Make ``site``'s matmul read ``dequantize(quantize(x))`` of its activation."""
    x = site.activation
    start = len(graph.nodes)
    scale, zero, _ = make_params(graph, x)
    q = graph.op("quantize", x, scale, zero, source=site.node.source)
    deq = graph.op("dequantize", q, scale, zero, source=site.node.source)
    reader = site.reader or site.node
    _move_before(graph, deq, reader, len(graph.nodes) - start)
    reader.inputs = [deq, *reader.inputs[1:]]
    graph.invalidate_uses()


def _range_params(lo: float, hi: float, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """uint8 scale and zero point covering [lo, hi] (widened to include 0), ONNX's formula."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = np.asarray(max((hi - lo) / 255.0, _TINY_SCALE), dtype)
    zero = int(np.clip(np.rint(-lo / float(scale)), 0, 255))
    return scale, np.asarray(zero, np.uint8)


def _batches(calibration_batches: Sequence, n_inputs: int) -> list[tuple[np.ndarray, ...]]:
    out = []
    for i, batch in enumerate(calibration_batches):
        arrays = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
        if len(arrays) != n_inputs:
            raise GraphcError(
                f"quantize_static: calibration batch {i} has {len(arrays)} arrays, the model takes {n_inputs}"
            )
        out.append(tuple(np.asarray(a) for a in arrays))
    if not out:
        raise GraphcError("quantize_static: calibration_batches is empty; pass at least one batch of inputs")
    return out


def _calibrate(model: Callable, count: int, batches: list[tuple[np.ndarray, ...]]) -> list[np.ndarray]:
    """The values of the ``count`` linear sites' activations over the calibration batches
    (flattened, concatenated). Batches of another shape than the examples get their own trace."""
    plans: dict[tuple, tuple[object, int]] = {}
    seen: list[list[np.ndarray]] = [[] for _ in range(count)]
    for i, batch in enumerate(batches):
        key = tuple((a.shape, a.dtype.str) for a in batch)
        if key not in plans:
            probe = trace(model, *batch)
            sites = find_linear_sites(probe)
            if len(sites) != count:
                raise GraphcError(
                    f"quantize_static: calibration batch {i} traces to {len(sites)} linear layers, "
                    f"the examples to {count}"
                )
            first = len(probe.outputs)
            for site in sites:
                probe.add_output(site.activation)
            plans[key] = (compile_graph(probe), first)
        plan, first = plans[key]
        try:
            outs = plan(*batch)
        except GraphcError as err:
            raise GraphcError(f"quantize_static: calibration batch {i}: {err}") from None
        outs = outs if isinstance(outs, tuple) else (outs,)
        for k in range(count):
            seen[k].append(np.asarray(outs[first + k]).reshape(-1))
    return [np.concatenate(s) for s in seen]


def quantize_static(
    model: Callable,
    calibration_batches: Sequence,
    *examples: np.ndarray,
    per_channel: bool = True,
    method: str = "minmax",
    percentile: float = 99.99,
):
    """A plan of ``model`` with int8 linear layers and activation ranges fixed by calibration.

    ``calibration_batches``: a list of inputs (one array per batch, or a tuple of arrays for a
    model of several inputs), of any batch size. ``method``: ``minmax`` or
    ``percentile`` (with ``percentile`` in (50, 100]) or ``entropy`` (TensorRT's KL-divergence
    threshold, ``graphc.calibration``).
    """
    if method not in METHODS:
        raise GraphcError(f"quantize_static: method must be one of {list(METHODS)}, got {method!r}")
    if not 50.0 < float(percentile) <= 100.0:
        raise GraphcError(f"quantize_static: percentile must lie in (50, 100], got {percentile}")
    graph = trace(model, *examples)
    batches = _batches(calibration_batches, len(graph.data_inputs))
    sites = find_linear_sites(graph)
    values = _calibrate(model, len(sites), batches)
    quantize_weights(graph, per_channel)
    for site, vals in zip(sites, values):
        finite = vals[np.isfinite(vals)]
        if finite.size == 0:
            lo = hi = 0.0
        elif method == "minmax":
            lo, hi = finite.min(), finite.max()
        elif method == "entropy":
            lo, hi = entropy_range(finite)
        else:
            lo, hi = np.percentile(finite, 100.0 - percentile), np.percentile(finite, percentile)
        _insert_qdq(graph, site, fixed_params(*_range_params(lo, hi, site.activation.type.np_dtype)))
    return _compile(graph)


def fixed_params(scale: np.ndarray, zero: np.ndarray) -> Callable[[Graph, Value], tuple[Value, Value, int]]:
    """The parameter maker ``_insert_qdq`` takes for an activation of a known range: ``scale`` and
    ``zero`` as constants of the graph."""

    def make(g: Graph, x: Value) -> tuple[Value, Value, int]:
        sv = g.add_input(g.fresh_name(f"{x.name}.scale"), _type(scale), "const", scale)
        zv = g.add_input(g.fresh_name(f"{x.name}.zero"), _type(zero), "const", zero)
        return sv, zv, 0

    return make


def _dynamic_params(graph: Graph, x: Value) -> tuple[Value, Value, int]:
    """In-graph per-call uint8 parameters of ``x``: its range (with 0) over 255, ONNX's zero point."""
    axes = tuple(range(x.type.rank))
    zero_f = graph.op("const", value=0.0, dtype=x.dtype)
    lo = graph.op("minimum", graph.op("min", x, axes=axes), zero_f)
    hi = graph.op("maximum", graph.op("max", x, axes=axes), zero_f)
    span = graph.op("div", graph.op("sub", hi, lo), graph.op("const", value=255.0, dtype=x.dtype))
    scale = graph.op("maximum", span, graph.op("const", value=_TINY_SCALE, dtype=x.dtype))
    zero = graph.op("quantize", graph.op("neg", lo), scale, graph.op("const", value=0, dtype="u8"))
    return scale, zero, 0


def quantize_dynamic(model: Callable, *examples: np.ndarray, per_channel: bool = True):
    """A plan of ``model`` with int8 linear layers whose activation ranges are measured per call."""
    graph = trace(model, *examples)
    for site in quantize_weights(graph, per_channel):
        _insert_qdq(graph, site, _dynamic_params)
    return _compile(graph)


def _compile(graph: Graph):
    return compile_graph(graph, passes_=[quantize_matmuls, *passes.default_pipeline()])
