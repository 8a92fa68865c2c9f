"""Graph.users() / producers(): computed once, right after every kind of mutation."""

import numpy as np
import pytest
from graph_testing import graphs, mlp_graph
from hypothesis import HealthCheck, given, settings

from graphc.ir import Graph, Node, TensorType, Value


def _scan_users(g: Graph) -> dict[Value, list[Node]]:
    """The oracle: every value of the graph, and each node reading it once per operand, in order."""
    values = list(g.inputs) + [v for n in g.nodes for v in n.outputs]
    out: dict[Value, list[Node]] = {v: [] for v in values}
    for n in g.nodes:
        for v in n.inputs:
            out.setdefault(v, []).append(n)
    return out


def _assert_current(g: Graph) -> None:
    assert g.users() == _scan_users(g)
    assert g.producers() == {v: n for n in g.nodes for v in n.outputs}


def _small() -> tuple[Graph, Value, Value, Value]:
    g = Graph("g")
    x = g.add_input("x", TensorType((4,)))
    a = g.op("exp", x)
    b = g.op("add", a, a)
    g.add_output(b)
    return g, x, a, b


def test_users_list_each_reading_node_once_per_operand():
    g, x, a, b = _small()
    users = g.users()
    assert [n.op for n in users[x]] == ["exp"]
    assert [n.op for n in users[a]] == ["add", "add"]
    assert users[b] == []
    assert g.producers()[b].op == "add"
    assert g.users() is users  # cached while nothing changes


def test_users_follow_every_graph_mutation():
    g, x, a, b = _small()
    _assert_current(g)
    c = g.op("mul", b, x)  # add_node
    assert [n.op for n in g.users()[x]] == ["exp", "mul"]
    _assert_current(g)
    y = g.add_input("y", TensorType((4,)))  # add_input
    _assert_current(g)
    g.replace_uses(x, y)  # every reader of x reads y
    assert g.users()[x] == [] and [n.op for n in g.users()[y]] == ["exp", "mul"]
    _assert_current(g)
    g.remove_input(x)
    assert x not in g.users()
    _assert_current(g)
    node = Node("neg", [c], {}, [Value("d", TensorType((4,)))])
    g.adopt(node)  # adopt
    assert g.users()[c] == [node]
    _assert_current(g)
    g.set_nodes([n for n in g.nodes if n is not node])  # set_nodes
    assert g.users()[c] == [] and "d" not in {v.name for v in g.producers()}
    _assert_current(g)


def test_fused_nodes_and_copies_have_their_own_users():
    g, x, a, b = _small()
    body = Graph("body")
    p = body.add_input("p", TensorType((4,)))
    body.add_output(body.op("neg", p))
    fused = g.add_fused([b], body, {"kind": "pointwise"})  # add_fused
    assert g.users()[b] == [fused]
    _assert_current(g)
    h = g.copy()
    _assert_current(h)
    assert all(n not in g.nodes for ns in h.users().values() for n in ns)


def test_direct_edits_are_seen_after_invalidate_uses_or_a_new_node_list():
    g, x, a, b = _small()
    _assert_current(g)
    adder = g.nodes[1]
    adder.inputs = [x, x]  # behind the graph's back
    g.invalidate_uses()
    assert [n.op for n in g.users()[x]] == ["exp", "add", "add"]
    _assert_current(g)
    g.nodes.pop()  # the list shrank: recomputed without being told
    _assert_current(g)
    g.nodes = list(g.nodes)  # another list object
    _assert_current(g)


@pytest.mark.parametrize("kind", ["cse", "dce", "fusion", "simplify"])
def test_users_are_current_after_a_pipeline_pass(kind):
    from graphc import passes

    g = mlp_graph(batch=8, sizes=(6, 16, 4))
    g.users()  # cached before the passes run
    out = passes.PassManager([passes.PASSES[kind]]).run(g)
    _assert_current(out)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(max_ops=12))
def test_users_match_a_scan_on_random_graphs_through_edits(g):
    _assert_current(g)
    rng = np.random.default_rng(len(g.nodes))
    # Rewire a random node's operand to an input of the same type, through the graph's method.
    for n in g.nodes:
        same = [v for v in g.inputs if n.inputs and v.type == n.inputs[0].type and v is not n.inputs[0]]
        if same:
            g.replace_uses(n.inputs[0], same[int(rng.integers(len(same)))], nodes=[n])
            break
    _assert_current(g)
    g.set_nodes(g.nodes[: len(g.nodes) // 2] + g.nodes[len(g.nodes) // 2 :])
    _assert_current(g)
