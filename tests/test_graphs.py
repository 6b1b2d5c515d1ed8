import json
import math
import statistics

import networkx as nx
import pytest

from backbones.graphs import (GraphSpec, XIE_BEST_SETTINGS, ba_graph, build_graph, complete_graph, er_graph,
                              expected_residual_edges, random_graph, residual_graph, ws_graph)

TABLE4_NODES = (14, 20, 26, 14)


def test_complete_edges_match_table4():
    assert [complete_graph(n).num_edges for n in TABLE4_NODES] == [91, 190, 325, 91]


@pytest.mark.parametrize('interval, expected', [
    (2, [34, 64, 103, 34]),
    (3, [23, 40, 61, 23]),
    # Table 4 prints 36 for N=20, l=4; no block partition of 18 nodes gives 36 (see graphs.py),
    # a shorter last block gives 34.
    (4, [19, 34, 46, 19]),
])
def test_residual_edges_match_table4(interval, expected):
    assert [residual_graph(n, interval).num_edges for n in TABLE4_NODES] == expected


@pytest.mark.parametrize('n', range(3, 30))
@pytest.mark.parametrize('interval', range(1, 7))
def test_residual_edges_follow_closed_form(n, interval):
    assert residual_graph(n, interval).num_edges == expected_residual_edges(n, interval)


def test_residual_structure_small():
    # 4 computing nodes in blocks {1,2},{3,4}: chains 1->2, 3->4; sources {0,2,4} feed later heads {1,3,5}
    g = residual_graph(6, 2)
    assert set(g.edges) == {(1, 2), (3, 4), (0, 1), (0, 3), (2, 3), (0, 5), (2, 5), (4, 5)}


def test_residual_interval_one_is_complete():
    for n in (3, 7, 14):
        assert residual_graph(n, 1).edges == complete_graph(n).edges


def _expected_random_edges(n, p):
    k = n - 2
    unattached = sum((1 - p) ** i for i in range(k))  # expected nodes with no predecessor (same for successors)
    return p * math.comb(k, 2) + 2 * unattached


@pytest.mark.parametrize('p, table', [(0.8, (56, 130, 221, 56)), (0.6, (44, 104, 172, 44)),
                                      (0.4, (31, 64, 117, 31))])
def test_random_edge_counts_near_table4(p, table):
    for n, paper in zip(TABLE4_NODES[:3], table[:3]):
        counts = [random_graph(n, p, seed=s).num_edges for s in range(300)]
        mean, std = statistics.mean(counts), statistics.pstdev(counts)
        expected = _expected_random_edges(n, p)
        assert abs(mean - expected) < 0.03 * expected, (n, p, mean, expected)
        # the paper's count is one draw of this distribution
        assert abs(paper - mean) < 3 * std, (n, p, paper, mean, std)


def test_random_wiring_rules():
    g = random_graph(20, 0.3, seed=3)
    preds = {i: set() for i in range(20)}
    succs = {i: set() for i in range(20)}
    for s, d in g.edges:
        preds[d].add(s)
        succs[s].add(d)
    for node in range(1, 19):
        assert (0 in preds[node]) == (preds[node] == {0}), 'input feeds exactly the nodes without predecessors'
        assert (19 in succs[node]) == (succs[node] == {19}), 'output collects exactly the nodes without successors'


@pytest.mark.parametrize('kind, params', [('random', {'p': 0.5}), ('er', {}), ('ba', {}), ('ws', {})])
def test_same_seed_same_graph(kind, params):
    a = build_graph(kind, 20, seed=7, **params)
    b = build_graph(kind, 20, seed=7, **params)
    c = build_graph(kind, 20, seed=8, **params)
    assert a == b and a.seed == 7
    assert a.edges != c.edges


def test_xie_generators_orient_networkx_graphs():
    n, seed = 26, 5
    k = n - 2
    ba = ba_graph(n, seed=seed)
    inner = [(s, d) for s, d in ba.edges if s != 0 and d != n - 1]
    reference = nx.barabasi_albert_graph(k, XIE_BEST_SETTINGS['ba']['m'], seed=seed)
    assert sorted(inner) == sorted((min(u, v) + 1, max(u, v) + 1) for u, v in reference.edges())
    ws = ws_graph(n, seed=seed)
    reference = nx.watts_strogatz_graph(k, 4, 0.75, seed=seed)
    inner = [(s, d) for s, d in ws.edges if s != 0 and d != n - 1]
    assert sorted(inner) == sorted((min(u, v) + 1, max(u, v) + 1) for u, v in reference.edges())
    er = er_graph(n, seed=seed)
    reference = nx.erdos_renyi_graph(k, 0.2, seed=seed)
    inner = nx.Graph([(s, d) for s, d in er.edges if s != 0 and d != n - 1])
    # ER indices are a random relabelling of networkx's: same graph up to isomorphism
    inner.add_nodes_from(range(1, n - 1))
    assert nx.is_isomorphic(inner, reference)
    for g in (ba, ws, er):
        assert nx.is_directed_acyclic_graph(g.to_networkx())


def test_json_round_trip(tmp_path):
    for g in (complete_graph(14), residual_graph(20, 4), random_graph(26, 0.4, seed=11), ws_graph(14, seed=2)):
        assert GraphSpec.from_json(g.to_json()) == g
        path = str(tmp_path / f'{g.kind}.json')
        g.to_json(path)
        loaded = GraphSpec.from_json(path)
        assert loaded == g and loaded.seed == g.seed and loaded.params == g.params
    assert json.loads(random_graph(5, 0.5, seed=9).to_json())['seed'] == 9


def test_networkx_export_carries_alpha():
    g = complete_graph(5)
    weights = [0.1 * i for i in range(g.num_edges)]
    dg = g.to_networkx(weights)
    assert dg.number_of_edges() == 10 and nx.is_directed_acyclic_graph(dg)
    for e, (s, d) in enumerate(g.edges):
        assert dg.edges[s, d]['alpha'] == pytest.approx(weights[e])
    assert dg.nodes[0]['role'] == 'input' and dg.nodes[4]['role'] == 'output' and dg.nodes[2]['role'] == 'compute'


def test_adjacency_rows_are_input_edges():
    adj = residual_graph(6, 2).adjacency()
    assert adj[2, 1] == 1 and adj[1, 2] == 0  # edge 1 -> 2 sits in row 2 (node 2's inputs)
    assert adj.sum() == residual_graph(6, 2).num_edges


@pytest.mark.parametrize('call, message', [
    (lambda: build_graph('lattice', 10), "unknown topology 'lattice'"),
    (lambda: complete_graph(2), 'num_nodes must be an int >= 3'),
    (lambda: residual_graph(10, 0), 'residual interval must be an int >= 1, got 0'),
    (lambda: random_graph(10, 0.0), 'in (0, 1], got 0.0'),
    (lambda: random_graph(10, 1.5), 'in (0, 1], got 1.5'),
    (lambda: random_graph(10, -0.2), 'in (0, 1], got -0.2'),
    (lambda: build_graph('residual', 10), "needs an 'interval'"),
    (lambda: build_graph('complete', 10, p=0.3), "unknown ['p']"),
    (lambda: ba_graph(6, m=5), 'BA m must be an int with 1 <= m < 4'),
    (lambda: ws_graph(6, k=3), 'WS k must be an even int'),
    (lambda: GraphSpec(4, ((1, 0),)), 'must satisfy 0 <= src < dst'),
    (lambda: GraphSpec(4, ((0, 1), (1, 3))), 'nodes [2] have no input edge'),
    (lambda: GraphSpec(4, ((0, 1), (0, 2), (1, 3))), 'nodes [2] have no output edge'),
    (lambda: GraphSpec(3, ((0, 1), (0, 1), (1, 2))), 'duplicate edges'),
    (lambda: GraphSpec.from_json('{"num_nodes": 4}'), "missing keys ['edges']"),
    (lambda: GraphSpec.from_json('{"num_nodes": 4, "edges": [[0, 1]'), 'not valid JSON'),
    (lambda: GraphSpec.from_dict({'num_nodes': 3, 'edges': [[0, 1], [1, 2]], 'version': 9}), 'version 9'),
])
def test_bad_arguments_name_the_value(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)


def test_missing_graph_file():
    with pytest.raises(FileNotFoundError, match='no/such/graph.json'):
        GraphSpec.from_json('no/such/graph.json')
