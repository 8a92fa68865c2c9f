"""fusion's cycle test: bounded two-way searches over a topological order kept across merges.

The fuser merges a producer group into a reader group only when no other path leads from one
to the other. Its answer must equal networkx's on the contracted graph, merge after merge, and
the positions it keeps must stay a topological order of that graph (the searches rely on it).
"""

import networkx as nx
import numpy as np
import pytest

from graphc.ir import Graph, TensorType
from graphc.passes.fusion import _Fuser

OPS = ("add", "mul", "maximum", "sub")


def _random_dag(seed: int, n: int) -> Graph:
    """Pointwise ops of one shape, each reading one or two earlier values (often far back)."""
    rng = np.random.default_rng(seed)
    g = Graph(f"dag{seed}")
    pool = [g.add_input(f"x{i}", TensorType((3,))) for i in range(3)]
    for _ in range(n):
        if rng.random() < 0.3:
            a = pool[int(rng.integers(len(pool)))]
            pool.append(g.op("exp", a))
            continue
        a, b = (pool[int(i)] for i in rng.integers(len(pool), size=2))
        if rng.random() < 0.6:  # mostly recent values: long chains with side branches
            a = pool[-1 - int(rng.integers(min(4, len(pool))))]
        pool.append(g.op(OPS[int(rng.integers(len(OPS)))], a, b))
    g.add_output(pool[-1])
    return g


def _contracted(fuser: _Fuser) -> nx.DiGraph:
    dag = nx.DiGraph()
    dag.add_nodes_from(fuser.succ)
    dag.add_edges_from((u, s) for u, ss in fuser.succ.items() for s in ss)
    return dag


def _another_path(dag: nx.DiGraph, a: int, b: int) -> bool:
    """networkx's answer: a path from ``a`` to ``b`` other than the edge between them."""
    return any(nx.has_path(dag, s, b) for s in dag.successors(a) if s != b)


@pytest.mark.parametrize("seed", range(12))
def test_merge_test_equals_networkx_and_positions_stay_topological(seed):
    g = _random_dag(seed, 60)
    fuser = _Fuser(g)
    rng = np.random.default_rng(seed)
    refused = merged = 0
    for _ in range(120):
        dag = _contracted(fuser)
        edges = sorted(dag.edges)
        if not edges:
            break
        a, b = edges[int(rng.integers(len(edges)))]
        expected = not _another_path(dag, a, b)
        assert fuser._can_merge(a, b) == expected, (a, b)
        if not expected:
            refused += 1
            continue
        nodes = sorted(fuser.groups[a].nodes + fuser.groups[b].nodes, key=fuser.index.__getitem__)
        fuser._merge(a, b, "pointwise", nodes)
        merged += 1
        dag = _contracted(fuser)
        assert nx.is_directed_acyclic_graph(dag)
        assert set(fuser.pos) == set(dag.nodes)
        assert all(fuser.pos[u] < fuser.pos[s] for u, s in dag.edges)
    assert merged > 10 and refused > 0  # both answers were exercised


def test_positions_are_renumbered_when_fractions_run_out():
    g = _random_dag(0, 30)
    fuser = _Fuser(g)
    units = sorted(fuser.pos, key=fuser.pos.__getitem__)
    # Squeeze two units into a gap too narrow for a float step: the order is spread out again.
    first, second = units[0], units[1]
    fuser.pos[second] = np.nextafter(fuser.pos[first], np.inf)
    fuser._spread([units[-1]], first, second)
    order = sorted(fuser.pos, key=fuser.pos.__getitem__)
    assert order.index(first) < order.index(units[-1]) < order.index(second)
    assert len(set(fuser.pos.values())) == len(fuser.pos)
