"""Graph, Node and Value: the SSA data structure every stage passes to the next."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .errors import GraphcError
from .ops import get_op, infer_types, normalize_attrs
from .types import TensorType

INPUT_KINDS = ("data", "param", "const", "state")


class Value:
    """One SSA value: a unique name within its graph and a static type."""

    __slots__ = ("name", "type")

    def __init__(self, name: str, type: TensorType) -> None:
        self.name = name
        self.type = type

    @property
    def shape(self) -> tuple[int, ...]:
        """The value's shape."""
        return self.type.shape

    @property
    def dtype(self) -> str:
        """The value's dtype name."""
        return self.type.dtype

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    """One op application: inputs, attributes, outputs and the user's file:line that made it."""

    __slots__ = ("op", "inputs", "attrs", "outputs", "source", "subgraph", "_bodies")

    def __init__(
        self,
        op: str,
        inputs: list[Value],
        attrs: dict,
        outputs: list[Value],
        source: str | None = None,
        subgraph: Graph | None = None,
        bodies: Sequence[Graph] = (),
    ) -> None:
        self.op = op
        self.inputs = list(inputs)
        self.attrs = attrs
        self.outputs = list(outputs)
        self.source = source
        # A fused node's body: a Graph whose data inputs bind to ``inputs`` in order.
        self.subgraph = subgraph
        # A control-flow node's bodies (cond: two branches, while_loop: cond and body, scan: one).
        self._bodies = tuple(bodies)

    @property
    def bodies(self) -> tuple[Graph, ...]:
        """Every nested graph of the node: a fused node's ``subgraph``, a control-flow node's bodies."""
        return (self.subgraph,) if self.subgraph is not None else self._bodies

    @bodies.setter
    def bodies(self, value: Sequence[Graph]) -> None:
        self._bodies = tuple(value)

    @property
    def output(self) -> Value:
        """The single output of a one-output node."""
        assert len(self.outputs) == 1, f"{self.op} has {len(self.outputs)} outputs"
        return self.outputs[0]

    def __repr__(self) -> str:
        ins = ", ".join(f"%{v.name}" for v in self.inputs)
        outs = ", ".join(f"%{v.name}" for v in self.outputs)
        return f"<Node {outs} = {self.op}({ins})>"


class Graph:
    """Named inputs with kinds, nodes in topological order, outputs.

    ``initializers`` holds the arrays of const inputs (and the initial values of param and
    state inputs when known). ``updates`` maps a param/state input name to the index of the
    output that is its new value after a call: the runtime writes it back.
    """

    def __init__(self, name: str = "main") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.kinds: dict[str, str] = {}
        self.initializers: dict[str, np.ndarray] = {}
        self.nodes: list[Node] = []
        self.outputs: list[Value] = []
        self.updates: dict[str, int] = {}
        self._names: set[str] = set()
        self._counter = 0
        # users()/producers(), computed once and dropped by every mutation method below.
        self._uses: tuple | None = None

    # ------------------------------------------------------------ building
    def fresh_name(self, hint: str | None = None) -> str:
        """A value name not yet used in this graph."""
        if hint and hint not in self._names:
            return hint
        while True:
            name = f"{hint}_{self._counter}" if hint else str(self._counter)
            self._counter += 1
            if name not in self._names:
                return name

    def _claim(self, name: str) -> str:
        if name in self._names:
            raise GraphcError(f"value name %{name} is defined twice")
        self._names.add(name)
        return name

    def add_input(
        self, name: str, type: TensorType, kind: str = "data", value: np.ndarray | None = None
    ) -> Value:
        """Append a graph input of the given kind (data, param, const, state)."""
        if kind not in INPUT_KINDS:
            raise GraphcError(f"input kind must be one of {INPUT_KINDS}, got {kind!r}")
        v = Value(self._claim(name), type)
        self._uses = None
        self.inputs.append(v)
        self.kinds[name] = kind
        if value is not None:
            arr = np.asarray(value)
            if TensorType.of(arr) != type:
                raise GraphcError(f"initializer of %{name} is {TensorType.of(arr)}, not {type}")
            self.initializers[name] = arr
        return v

    def add_node(
        self,
        op: str,
        inputs: Sequence[Value],
        attrs: dict | None = None,
        source: str | None = None,
        names: Sequence[str] | None = None,
    ) -> Node:
        """Infer the output types of ``op`` on ``inputs``, append the node and return it."""
        attrs = normalize_attrs(op, attrs)
        types = infer_types(op, [v.type for v in inputs], attrs)
        names = list(names) if names else [self.fresh_name() for _ in types]
        outputs = [Value(self._claim(n), t) for n, t in zip(names, types)]
        node = Node(op, list(inputs), attrs, outputs, source)
        self._uses = None
        self.nodes.append(node)
        return node

    def add_fused(
        self,
        inputs: Sequence[Value],
        body: Graph,
        attrs: dict | None = None,
        source: str | None = None,
    ) -> Node:
        """Append a ``fused`` node running ``body`` (data inputs bound to ``inputs``)."""
        params = body.data_inputs
        if len(params) != len(inputs) or any(p.type != v.type for p, v in zip(params, inputs)):
            raise GraphcError("fused node: operand types differ from its body's inputs")
        outputs = [Value(self._claim(self.fresh_name()), v.type) for v in body.outputs]
        node = Node("fused", list(inputs), normalize_attrs("fused", attrs), outputs, source, body)
        self._uses = None
        self.nodes.append(node)
        return node

    def add_control(
        self,
        op: str,
        inputs: Sequence[Value],
        bodies: Sequence[Graph],
        attrs: dict | None = None,
        source: str | None = None,
        names: Sequence[str] | None = None,
    ) -> Node:
        """Append a control-flow node (cond, while_loop, scan) holding ``bodies``; its output types
        come from the bodies (``ir.control.control_types`` checks their signatures)."""
        from .control import control_types

        attrs = normalize_attrs(op, attrs)
        types = control_types(op, [v.type for v in inputs], list(bodies), attrs)
        names = list(names) if names else [self.fresh_name() for _ in types]
        if len(names) != len(types):
            raise GraphcError(f"{op}: {len(names)} output names for {len(types)} outputs")
        outputs = [Value(self._claim(n), t) for n, t in zip(names, types)]
        node = Node(op, list(inputs), attrs, outputs, source, bodies=bodies)
        self._uses = None
        self.nodes.append(node)
        return node

    def op(self, op: str, *inputs: Value, source: str | None = None, **attrs: object) -> Value:
        """Append a one-output node and return its output value (a builder shorthand)."""
        return self.add_node(op, inputs, attrs, source).output

    def add_output(self, value: Value, updates: str | None = None) -> int:
        """Append a graph output; ``updates`` names the param/state input it overwrites."""
        self.outputs.append(value)
        index = len(self.outputs) - 1
        if updates is not None:
            self.updates[updates] = index
        return index

    def adopt(self, node: Node) -> Node:
        """Append an already built node whose output names are new to this graph."""
        for v in node.outputs:
            self._claim(v.name)
        self._uses = None
        self.nodes.append(node)
        return node

    # ------------------------------------------------------------ queries
    @property
    def data_inputs(self) -> list[Value]:
        """Inputs the caller supplies on every call, in order."""
        return [v for v in self.inputs if self.kinds[v.name] == "data"]

    def inputs_of_kind(self, kind: str) -> list[Value]:
        """Inputs of one kind, in order."""
        return [v for v in self.inputs if self.kinds[v.name] == kind]

    def producers(self) -> dict[Value, Node]:
        """Map each node-defined value to the node that defines it (shared: do not modify it)."""
        return self._use_maps()[1]

    def users(self) -> dict[Value, list[Node]]:
        """Map each value to the nodes that read it, in node order, a node once per operand it
        takes it as (like torch.fx's ``Node.users``; shared: do not modify it).

        Computed once and kept until the graph changes through its methods (``add_node``,
        ``adopt``, ``replace_uses``, ``set_nodes``, ...). Code that assigns ``node.inputs`` or edits
        ``graph.nodes`` directly calls ``invalidate_uses()`` before asking again (the PassManager
        does after every pass).
        """
        return self._use_maps()[0]

    def invalidate_uses(self) -> None:
        """Forget the cached ``users()``/``producers()`` after editing nodes behind the graph's back."""
        self._uses = None

    def _use_maps(self) -> tuple[dict[Value, list[Node]], dict[Value, Node]]:
        cached = self._uses
        # A replaced or resized node list is caught even without a mutation method.
        if cached is None or cached[0] is not self.nodes or cached[1] != len(self.nodes):
            users: dict[Value, list[Node]] = {v: [] for v in self.inputs}
            producers: dict[Value, Node] = {}
            for n in self.nodes:
                for v in n.outputs:
                    users.setdefault(v, [])
                    producers[v] = n
            for n in self.nodes:
                for v in n.inputs:
                    users.setdefault(v, []).append(n)
            cached = self._uses = (self.nodes, len(self.nodes), users, producers)
        return cached[2], cached[3]

    def value(self, name: str) -> Value:
        """The value with the given name."""
        for v in self.inputs:
            if v.name == name:
                return v
        for n in self.nodes:
            for v in n.outputs:
                if v.name == name:
                    return v
        raise GraphcError(f"no value %{name} in graph {self.name}")

    def op_counts(self) -> dict[str, int]:
        """How many nodes of each op the graph holds."""
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    # ------------------------------------------------------------ copying
    def copy(self) -> Graph:
        """A structural copy with fresh Value and Node objects (initializer arrays shared)."""
        g = Graph(self.name)
        g._counter = self._counter
        vmap: dict[Value, Value] = {}
        for v in self.inputs:
            vmap[v] = g.add_input(v.name, v.type, self.kinds[v.name])
        g.initializers = dict(self.initializers)
        for n in self.nodes:
            outs = [Value(v.name, v.type) for v in n.outputs]
            for old, new in zip(n.outputs, outs):
                vmap[old] = new
            body = n.subgraph.copy() if n.subgraph is not None else None
            ins = [vmap[v] for v in n.inputs]
            bodies = () if body is not None else tuple(b.copy() for b in n.bodies)
            g.adopt(Node(n.op, ins, dict(n.attrs), outs, n.source, body, bodies))
        g.outputs = [vmap[v] for v in self.outputs]
        g.updates = dict(self.updates)
        return g

    def replace_uses(self, old: Value, new: Value, nodes: Iterable[Node] | None = None) -> None:
        """Make every node (and graph output) that reads ``old`` read ``new`` instead."""
        for n in self.nodes if nodes is None else nodes:
            n.inputs = [new if v is old else v for v in n.inputs]
        self.outputs = [new if v is old else v for v in self.outputs]
        self._uses = None

    def remove_input(self, value: Value) -> None:
        """Drop an input (and its initializer) that nothing reads any more."""
        self.inputs.remove(value)
        self._uses = None
        del self.kinds[value.name]
        self.initializers.pop(value.name, None)
        self._names.discard(value.name)

    def set_nodes(self, nodes: list[Node]) -> None:
        """Replace the node list, keeping the name table in step."""
        self.nodes = list(nodes)
        self._uses = None
        self._names = {v.name for v in self.inputs} | {v.name for n in nodes for v in n.outputs}

    def __str__(self) -> str:
        from .printer import print_graph

        return print_graph(self)

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes>"


def opdef_of(node: Node):
    """The registry entry of a node's op."""
    return get_op(node.op)
