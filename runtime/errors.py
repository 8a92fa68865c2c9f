"""Run-time errors located: a kernel's GraphcError given the user's file:line and the node it ran.

Kernels know their op and arrays, not where the user wrote the op: a gather with a bad index
says "gather: index 5 out of range [0, 4) on axis 0". Both runtimes (runtime.Plan and the CUDA
DevicePlan) pass such an error through ``at_node`` with the step's node, one place for both.
"""

from __future__ import annotations

from graphc.ir import GraphcError, Node


def node_source(node: Node) -> str | None:
    """The user's ``file:line`` of a node, or for a fused node without one, of its first body node
    that has one; None where nothing records it."""
    if node.source:
        return node.source
    body = node.subgraph
    if body is not None:
        return next((n.source for n in body.nodes if n.source), None)
    return None


def describe(node: Node) -> str:
    """A node as the text form names it: ``%out = op`` (a fused node with its kind)."""
    op = node.op
    if op == "fused" and node.attrs.get("kind"):
        op = f"fused {node.attrs['kind']}"
    return f"%{node.outputs[0].name} = {op}" if node.outputs else op


def at_node(err: GraphcError, node: Node) -> GraphcError:
    """A GraphcError saying ``err``'s message, prefixed with the node's source (unless the message
    already names it) and followed by the node; raise it ``from err``."""
    message = str(err)
    source = node_source(node)
    where = f"{source}: " if source and source not in message else ""
    return GraphcError(f"{where}{message} (while running node {describe(node)})")
