"""Pruning: unstructured magnitude pruning in place, and structured pruning that shrinks the model.

- ``magnitude(model, amount, scope="layer")`` zeroes the ``amount`` fraction of smallest-magnitude
  entries of every weight (each parameter of rank >= 2), per layer or over all of them together
  (``scope="global"``), in place, and returns the masks (``apply_masks`` re-applies them, e.g.
  after a training step).
- ``structured(model, amount, *examples)`` returns a copy of the model with whole units removed:
  the ``amount`` fraction of each prunable layer's output units (Linear rows, Conv2d output
  channels) with the smallest L2 weight norm, together with the parameters that follow them
  elementwise (bias) and the input columns/channels of every layer that reads them. The model's
  traced graph says which layers are prunable: a layer whose output reaches, through elementwise
  ops and max pooling only, nothing but the inputs of Linear/Conv2d layers (groups=1). Others (the
  output layer, layers feeding a reshape, a reduction such as a norm, or a residual sum) stay
  whole. The result computes exactly what the original computes with the removed units' outgoing
  weights set to zero.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from graphc.ir import Graph, GraphcError, Node, Value
from graphc.ir.ops import REGISTRY
from graphc.tracing import trace

__all__ = ["apply_masks", "magnitude", "structured"]

SCOPES = ("layer", "global")


def _check_amount(amount: float, what: str) -> float:
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0.0 <= float(amount) <= 1.0:
        raise GraphcError(f"{what}: amount must be a fraction in [0, 1], got {amount!r}")
    return float(amount)


def _weights(model) -> dict[str, np.ndarray]:
    return {name: p for name, p in model.named_parameters() if np.ndim(p) >= 2}


def _smallest(scores: np.ndarray, k: int) -> np.ndarray:
    """A boolean mask of the ``k`` smallest scores (ties broken by position)."""
    mask = np.zeros(scores.size, bool)
    mask[np.argsort(scores.reshape(-1), kind="stable")[:k]] = True
    return mask.reshape(scores.shape)


def magnitude(model, amount: float, scope: str = "layer") -> dict[str, np.ndarray]:
    """Zero the ``amount`` fraction of smallest-|w| entries of each weight (rank >= 2) in place.

    ``scope="layer"`` prunes that fraction of every weight; ``"global"`` ranks all weights'
    entries together. Returns ``{parameter name: keep mask}`` (True = kept).
    """
    amount = _check_amount(amount, "pruning.magnitude")
    if scope not in SCOPES:
        raise GraphcError(f"pruning.magnitude: scope must be one of {list(SCOPES)}, got {scope!r}")
    weights = _weights(model)
    if not weights:
        raise GraphcError("pruning.magnitude: the model has no weight of rank >= 2 to prune")
    if scope == "layer":
        masks = {n: ~_smallest(np.abs(w), int(round(amount * w.size))) for n, w in weights.items()}
    else:
        flat = np.concatenate([np.abs(w).reshape(-1) for w in weights.values()])
        pruned = _smallest(flat, int(round(amount * flat.size)))
        masks, at = {}, 0
        for n, w in weights.items():
            masks[n] = ~pruned[at : at + w.size].reshape(w.shape)
            at += w.size
    apply_masks(model, masks)
    return masks


def apply_masks(model, masks: dict[str, np.ndarray]) -> None:
    """Zero the masked-out entries (mask False) of the named parameters in place."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params or np.shape(params[name]) != np.shape(mask):
            raise GraphcError(f"pruning.apply_masks: no parameter {name!r} of shape {np.shape(mask)}")
        params[name][~np.asarray(mask, bool)] = 0


# ---------------------------------------------------------------- structured
@dataclass
class _Layer:
    """A prunable layer: its weight (units on axis 0) and the slices its units imply elsewhere."""

    weight: str
    units: int
    axis: int  # the unit axis of the layer's matmul output
    output: Value
    slices: dict[str, int] = field(default_factory=dict)  # param name -> axis to slice
    consumers: list[str] = field(default_factory=list)  # the weights reading the units


def _param_of(graph: Graph, prod: dict[Value, Node], v: Value, through: str | None = None) -> str | None:
    """The param input ``v`` is (or that ``v`` is a ``through`` op of), else None."""
    if through is not None:
        node = prod.get(v)
        if node is None or node.op != through:
            return None
        v = node.inputs[0]
    return v.name if graph.kinds.get(v.name) == "param" else None


def _producers(graph: Graph, prod: dict[Value, Node]) -> list[_Layer]:
    layers = []
    for node in graph.nodes:
        if node.op != "matmul":
            continue
        a, b = node.inputs
        w = _param_of(graph, prod, b, "transpose")
        if w is not None and prod[b].attrs["perm"] == (1, 0) and graph.value(w).type.rank == 2:
            layers.append(_Layer(w, b.shape[-1], node.output.type.rank - 1, node.output))
            continue
        w = _param_of(graph, prod, a, "reshape")
        if w is not None and graph.value(w).type.rank == 4 and node.output.type.rank == 3:
            layers.append(_Layer(w, a.shape[0], 1, node.output))
    return layers


def _consumer(
    graph: Graph, prod: dict[Value, Node], users: dict, node: Node, v: Value, axis: int
) -> str | None:
    """The param whose input axis (1) reads unit ``axis`` of ``v`` when ``node`` is a consuming layer."""
    if node.op == "matmul" and node.inputs[0] is v and node.inputs[1] is not v and axis == v.type.rank - 1:
        w = _param_of(graph, prod, node.inputs[1], "transpose")
        if w is not None and prod[node.inputs[1]].attrs["perm"] == (1, 0):
            return w
    if node.op == "im2col" and axis == 1:
        readers = users.get(node.output, [])
        if len(readers) == 1 and readers[0].op == "matmul" and readers[0].inputs[1] is node.output:
            w = _param_of(graph, prod, readers[0].inputs[0], "reshape")
            if w is not None and graph.value(w).type.rank == 4:
                return w
    return None


def _side_param(
    graph: Graph, prod: dict[Value, Node], u: Value, out_rank: int, axis: int
) -> tuple[str, int] | None:
    """A per-unit parameter operand (a bias, maybe reshaped to broadcast) and its unit axis."""
    pad = out_rank - u.type.rank
    name = _param_of(graph, prod, u)
    if name is not None and axis - pad >= 0:
        return name, axis - pad
    name = _param_of(graph, prod, u, "reshape")
    if name is not None and graph.value(name).type.rank == 1:
        return name, 0
    return None


def _trace_units(graph: Graph, layer: _Layer) -> bool:
    """Follow the layer's units to the layers that read them; fill ``layer.slices``. False if some
    path reaches anything else."""
    prod, users = graph.producers(), graph.users()
    tracked: dict[Value, int] = {layer.output: layer.axis}
    for node in graph.nodes:
        ins = [(v, tracked[v]) for v in node.inputs if v in tracked]
        if not ins:
            continue
        v, axis = ins[0]
        w = _consumer(graph, prod, users, node, v, axis)
        if w is not None and len(ins) == 1:
            layer.slices[w] = 1
            layer.consumers.append(w)
            continue
        out = node.outputs[0]
        if len(node.outputs) != 1:
            return False
        fusion = REGISTRY[node.op].fusion
        if fusion in ("pointwise", "broadcast"):
            out_axis = axis + out.type.rank - v.type.rank
            for u in node.inputs:
                if u in tracked:
                    if tracked[u] + out.type.rank - u.type.rank != out_axis:
                        return False
                    continue
                k = out_axis - (out.type.rank - u.type.rank)
                if k < 0 or u.shape[k] == 1:
                    continue  # the same for every unit
                side = _side_param(graph, prod, u, out.type.rank, out_axis)
                if side is None:
                    return False
                layer.slices[side[0]] = side[1]
            tracked[out] = out_axis
        elif node.op == "max_pool2d" and axis == 1:
            tracked[out] = 1
        elif node.op == "reshape" and v.shape[: axis + 1] == out.shape[: axis + 1]:
            tracked[out] = axis
        else:
            return False
    return bool(layer.consumers) and not any(v in tracked for v in graph.outputs)


def structured(model, amount: float, *examples: np.ndarray):
    """A copy of ``model`` with the ``amount`` fraction of each prunable layer's units removed
    (smallest L2 norm first, at least one kept), and the layers reading them shrunk to match."""
    amount = _check_amount(amount, "pruning.structured")
    graph = trace(model, *examples)
    params = {name: np.asarray(p) for name, p in model.named_parameters()}
    new = dict(params)
    pruned_any = False
    for layer in _producers(graph, graph.producers()):
        if not _trace_units(graph, layer):
            continue
        w = params[layer.weight]
        norms = np.sqrt((w.reshape(w.shape[0], -1).astype(np.float64) ** 2).sum(axis=1))
        drop = min(int(round(amount * layer.units)), layer.units - 1)
        if drop <= 0:
            continue
        keep = np.sort(np.argsort(norms, kind="stable")[drop:])
        new[layer.weight] = np.take(new[layer.weight], keep, axis=0)
        for name, axis in layer.slices.items():
            new[name] = np.take(new[name], keep, axis=axis)
        pruned_any = True
    if not pruned_any:
        return copy.deepcopy(model)
    return _rebuilt(model, new)


def _rebuilt(model, arrays: dict[str, np.ndarray]):
    """A deep copy of ``model`` with the named parameters replaced (and layer sizes updated)."""
    from graphc.nn import Conv2d, Linear, Parameter

    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    old = dict(out.named_parameters())
    for name, arr in arrays.items():
        if arr.shape == np.shape(old[name]):
            continue
        owner, _, attr = name.rpartition(".")
        module = modules[owner]
        setattr(module, attr, Parameter(np.ascontiguousarray(arr), requires_grad=old[name].requires_grad))
    for module in modules.values():
        if isinstance(module, Linear):
            module.out_features, module.in_features = module.weight.shape
        elif isinstance(module, Conv2d):
            module.out_channels = module.weight.shape[0]
            module.in_channels = module.weight.shape[1] * module.groups
    return out
