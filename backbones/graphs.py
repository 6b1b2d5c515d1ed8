"""Stage topologies as serializable graph specs.

A stage of a TopoNet ("Diving into optimization of topology in neural networks",
ICLR 2020 submission, section 2.1) is a DAG over ``num_nodes`` nodes in topological
order: node 0 is the stage input, node ``num_nodes - 1`` the stage output, and the
nodes in between are computing nodes. An edge ``(j, i)`` with ``j < i`` carries node
j's output into node i's weighted input sum.

Generators (all deterministic given their arguments and seed):

* ``complete``: every ``j < i`` pair, ``C(N, 2)`` edges (the search space).
* ``residual``: the topological view of a residual network with blocks of ``interval``
  layers (Figure 1). The computing nodes are cut into consecutive blocks; a block's
  layers form a chain; the stage input and every block's last layer feed every later
  block's first layer and the output node. With ``B`` blocks this gives
  ``(N - 2 - B) + C(B + 2, 2)`` edges. When ``interval`` does not divide ``N - 2`` the
  last block is shorter (``B = ceil((N - 2) / interval)``). Only ``B`` matters for the
  count, so no split of 18 nodes into blocks of at most 4 gives Table 4's 36 edges for
  N=20, l=4: we give 34 (B=5); merging the remainder into the last block would give 29.
* ``random``: RandWire-style Bernoulli(p) edges over the ``N - 2`` computing nodes;
  the input node feeds every computing node without predecessors and every computing
  node without successors feeds the output node.
* ``er``, ``ba``, ``ws``: Xie et al.'s generators via networkx over the computing nodes,
  undirected edges oriented from lower to higher index, with their node indexing: ER
  indices in a random order, BA in the order nodes were added, WS clockwise around the
  ring. Input and output nodes are attached as for ``random``.
"""
from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .io_utils import atomic_write_text

__all__ = [
    'GraphSpec', 'GRAPH_KINDS', 'XIE_BEST_SETTINGS', 'build_graph', 'complete_graph',
    'residual_graph', 'random_graph', 'er_graph', 'ba_graph', 'ws_graph', 'derive_seed',
    'expected_residual_edges',
]

GRAPH_KINDS = ('complete', 'residual', 'random', 'er', 'ba', 'ws')

# Xie et al. (2019), best settings of each generator, as used in Table 7 of the paper.
XIE_BEST_SETTINGS: Dict[str, Dict[str, float]] = {
    'er': {'p': 0.2},
    'ba': {'m': 5},
    'ws': {'k': 4, 'p': 0.75},
}

_SERIAL_VERSION = 1


@dataclass(frozen=True)
class GraphSpec:
    """One stage's DAG: node count, sorted ``(src, dst)`` edges and how it was made.

    Args:
        num_nodes (int): Nodes including the input (0) and output (``num_nodes - 1``).
        edges (Sequence[Tuple[int, int]]): Directed edges with ``src < dst``. Stored
            sorted by ``(dst, src)`` so a node's input edges are contiguous.
        kind (str): Generator name (one of ``GRAPH_KINDS``, or ``'custom'``).
        params (dict): Generator arguments (``interval``, ``p``, ``m``, ``k``).
        seed (int, optional): Seed of a random generator; ``None`` for fixed graphs.

    Every computing node must have at least one input and one output edge, the output
    node at least one input edge: anything else would be a node that computes nothing
    or whose result is lost.

    Example:
        >>> g = complete_graph(5)
        >>> g.num_edges, g.in_degree
        (10, (0, 1, 2, 3, 4))
        >>> GraphSpec.from_json(g.to_json()) == g
        True
    """

    num_nodes: int
    edges: Tuple[Tuple[int, int], ...]
    kind: str = 'custom'
    params: Mapping[str, Any] = field(default_factory=dict)
    seed: Optional[int] = None

    def __post_init__(self):
        if not isinstance(self.num_nodes, int) or isinstance(self.num_nodes, bool) or self.num_nodes < 3:
            raise ValueError(
                f'num_nodes must be an int >= 3 (input, at least one computing node, output), '
                f'got {self.num_nodes!r}')
        edges = []
        for edge in self.edges:
            if len(edge) != 2:
                raise ValueError(f'edge {edge!r} must be a (src, dst) pair')
            src, dst = int(edge[0]), int(edge[1])
            if not 0 <= src < dst < self.num_nodes:
                raise ValueError(
                    f'edge ({src}, {dst}) must satisfy 0 <= src < dst < num_nodes={self.num_nodes}')
            edges.append((src, dst))
        edges = sorted(set(edges), key=lambda e: (e[1], e[0]))
        if len(edges) != len(self.edges):
            raise ValueError(f'graph has duplicate edges: {len(self.edges)} given, {len(edges)} unique')
        object.__setattr__(self, 'edges', tuple(edges))
        object.__setattr__(self, 'params', dict(self.params))
        n = self.num_nodes
        in_deg, out_deg = [0] * n, [0] * n
        for src, dst in edges:
            out_deg[src] += 1
            in_deg[dst] += 1
        dangling = [i for i in range(1, n) if in_deg[i] == 0]
        if dangling:
            raise ValueError(f'nodes {dangling} have no input edge; every node after the input needs one')
        dead = [i for i in range(0, n - 1) if out_deg[i] == 0]
        if dead:
            raise ValueError(f'nodes {dead} have no output edge; every node before the output needs one')

    # -- structure -------------------------------------------------------------------
    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def in_degree(self) -> Tuple[int, ...]:
        deg = [0] * self.num_nodes
        for _, dst in self.edges:
            deg[dst] += 1
        return tuple(deg)

    @property
    def out_degree(self) -> Tuple[int, ...]:
        deg = [0] * self.num_nodes
        for src, _ in self.edges:
            deg[src] += 1
        return tuple(deg)

    def input_edges(self, node: int) -> List[Tuple[int, int]]:
        """``(edge_index, src)`` of every edge into ``node``, in ``edges`` order."""
        return [(e, src) for e, (src, dst) in enumerate(self.edges) if dst == node]

    def adjacency(self) -> np.ndarray:
        """Binary matrix ``A[dst, src]``: rows are a node's input edges, columns its
        output edges (the layout of the paper's Figure 3)."""
        adj = np.zeros((self.num_nodes, self.num_nodes), dtype=np.float32)
        for src, dst in self.edges:
            adj[dst, src] = 1.0
        return adj

    def to_networkx(self, edge_weights: Optional[Sequence[float]] = None):
        """``networkx.DiGraph`` with node attribute ``role`` and edge attribute ``alpha``."""
        import networkx as nx
        if edge_weights is not None and len(edge_weights) != self.num_edges:
            raise ValueError(f'edge_weights has {len(edge_weights)} values, graph has {self.num_edges} edges')
        graph = nx.DiGraph(kind=self.kind, seed=self.seed, **{f'param_{k}': v for k, v in self.params.items()})
        for i in range(self.num_nodes):
            role = 'input' if i == 0 else 'output' if i == self.num_nodes - 1 else 'compute'
            graph.add_node(i, role=role)
        for e, (src, dst) in enumerate(self.edges):
            graph.add_edge(src, dst, alpha=1.0 if edge_weights is None else float(edge_weights[e]))
        return graph

    # -- serialization (the one graph serializer of the project) --------------------
    def to_dict(self) -> Dict[str, Any]:
        return {
            'version': _SERIAL_VERSION, 'kind': self.kind, 'num_nodes': self.num_nodes,
            'params': dict(self.params), 'seed': self.seed, 'edges': [list(e) for e in self.edges],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> 'GraphSpec':
        if not isinstance(data, Mapping):
            raise ValueError(f'graph spec must be a mapping, got {type(data).__name__}')
        missing = {'num_nodes', 'edges'} - set(data)
        if missing:
            raise ValueError(f'graph spec is missing keys {sorted(missing)}; has {sorted(data)}')
        version = data.get('version', _SERIAL_VERSION)
        if version != _SERIAL_VERSION:
            raise ValueError(f'graph spec version {version!r} is not supported (expected {_SERIAL_VERSION})')
        edges = data['edges']
        if not isinstance(edges, (list, tuple)) or any(
                not isinstance(e, (list, tuple)) or len(e) != 2 for e in edges):
            raise ValueError('graph spec "edges" must be a list of [src, dst] pairs')
        seed = data.get('seed')
        return cls(num_nodes=data['num_nodes'], edges=tuple(tuple(e) for e in edges),
                   kind=str(data.get('kind', 'custom')), params=dict(data.get('params') or {}),
                   seed=None if seed is None else int(seed))

    def to_json(self, path: Optional[str] = None) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True)
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str) -> 'GraphSpec':
        text = text_or_path
        if not text_or_path.lstrip().startswith('{'):
            if not os.path.isfile(text_or_path):
                raise FileNotFoundError(f'graph spec file not found: {text_or_path}')
            with open(text_or_path, 'r', encoding='utf-8') as f:
                text = f.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f'graph spec is not valid JSON: {err}') from err
        return cls.from_dict(data)


# -- generators -------------------------------------------------------------------------
def _check_num_nodes(num_nodes) -> int:
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, (int, np.integer)) or num_nodes < 3:
        raise ValueError(
            f'num_nodes must be an int >= 3 (input, at least one computing node, output), got {num_nodes!r}')
    return int(num_nodes)


def _check_probability(name: str, p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < float(p) <= 1.0:
        raise ValueError(f'{name} must be a probability in (0, 1], got {p!r}')
    return float(p)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f'seed must be an int, got {seed!r}')
    return int(seed)


def _attach_io(num_nodes: int, inner_edges: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """Wire input/output nodes RandWire-style around edges over computing nodes 1..N-2."""
    has_pred = {dst for _, dst in inner_edges}
    has_succ = {src for src, _ in inner_edges}
    edges = list(inner_edges)
    for node in range(1, num_nodes - 1):
        if node not in has_pred:
            edges.append((0, node))
        if node not in has_succ:
            edges.append((node, num_nodes - 1))
    return edges


def complete_graph(num_nodes: int) -> GraphSpec:
    n = _check_num_nodes(num_nodes)
    return GraphSpec(n, tuple((j, i) for i in range(n) for j in range(i)), kind='complete')


def residual_graph(num_nodes: int, interval: int, input_shortcuts: bool = True) -> GraphSpec:
    """Residual topology; ``input_shortcuts=False`` drops the shortcuts out of the stage
    input, as in MobileNetV2 and other nets whose first block changes shape without a
    projection shortcut: the input then feeds only the first block."""
    n = _check_num_nodes(num_nodes)
    if isinstance(interval, bool) or not isinstance(interval, (int, np.integer)) or interval < 1:
        raise ValueError(f'residual interval must be an int >= 1, got {interval!r}')
    interval = int(interval)
    compute = list(range(1, n - 1))
    blocks = [compute[b:b + interval] for b in range(0, len(compute), interval)]
    edges = [(blk[k], blk[k + 1]) for blk in blocks for k in range(len(blk) - 1)]
    sources = [0] + [blk[-1] for blk in blocks]   # stage input and every block's output
    sinks = [blk[0] for blk in blocks] + [n - 1]  # every block's input and stage output
    for b, sink in enumerate(sinks):
        edges.extend((src, sink) for src in sources[:b + 1] if input_shortcuts or src != 0 or b == 0)
    params = {'interval': interval} if input_shortcuts else {'interval': interval, 'input_shortcuts': False}
    return GraphSpec(n, tuple(edges), kind='residual', params=params)


def random_graph(num_nodes: int, p: float, seed: int = 0) -> GraphSpec:
    n = _check_num_nodes(num_nodes)
    p = _check_probability('edge probability p', p)
    seed = _check_seed(seed)
    rng = random.Random(seed)
    inner = [(j, i) for i in range(1, n - 1) for j in range(1, i) if rng.random() < p]
    return GraphSpec(n, tuple(_attach_io(n, inner)), kind='random', params={'p': p}, seed=seed)


def _from_undirected(num_nodes: int, undirected, order: Sequence[int], kind: str, params, seed) -> GraphSpec:
    """Orient an undirected graph over the computing nodes from low to high index.

    ``order[v]`` is the index (0-based among computing nodes) given to networkx node v.
    """
    inner = []
    for u, v in undirected.edges():
        a, b = order[u] + 1, order[v] + 1
        inner.append((min(a, b), max(a, b)))
    return GraphSpec(num_nodes, tuple(_attach_io(num_nodes, inner)), kind=kind, params=params, seed=seed)


def er_graph(num_nodes: int, p: float = 0.2, seed: int = 0) -> GraphSpec:
    import networkx as nx
    n = _check_num_nodes(num_nodes)
    p = _check_probability('ER edge probability p', p)
    seed = _check_seed(seed)
    undirected = nx.erdos_renyi_graph(n - 2, p, seed=seed)
    order = list(range(n - 2))
    random.Random(seed).shuffle(order)  # Xie et al.: ER indices are assigned in a random order
    return _from_undirected(n, undirected, order, 'er', {'p': p}, seed)


def ba_graph(num_nodes: int, m: int = 5, seed: int = 0) -> GraphSpec:
    import networkx as nx
    n = _check_num_nodes(num_nodes)
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m < n - 2:
        raise ValueError(f'BA m must be an int with 1 <= m < {n - 2} (computing nodes), got {m!r}')
    seed = _check_seed(seed)
    undirected = nx.barabasi_albert_graph(n - 2, int(m), seed=seed)  # labels follow insertion order
    return _from_undirected(n, undirected, list(range(n - 2)), 'ba', {'m': int(m)}, seed)


def ws_graph(num_nodes: int, k: int = 4, p: float = 0.75, seed: int = 0) -> GraphSpec:
    import networkx as nx
    n = _check_num_nodes(num_nodes)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2 or k % 2 or k >= n - 2:
        raise ValueError(f'WS k must be an even int with 2 <= k < {n - 2} (computing nodes), got {k!r}')
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f'WS rewiring probability p must be in [0, 1], got {p!r}')
    seed = _check_seed(seed)
    undirected = nx.watts_strogatz_graph(n - 2, int(k), float(p), seed=seed)  # ring labels clockwise
    return _from_undirected(n, undirected, list(range(n - 2)), 'ws', {'k': int(k), 'p': float(p)}, seed)


def derive_seed(seed: int, stage_index: int) -> int:
    """Seed of stage ``stage_index`` from a network-level seed (distinct per stage)."""
    return (int(seed) * 1_000_003 + int(stage_index)) % (2 ** 31 - 1)


def build_graph(kind: str, num_nodes: int, seed: int = 0, **params) -> GraphSpec:
    """Build a graph by generator name; ``params`` are the generator's arguments."""
    if kind not in GRAPH_KINDS:
        raise ValueError(f'unknown topology {kind!r}; expected one of {GRAPH_KINDS}')
    allowed = {'complete': set(), 'residual': {'interval', 'input_shortcuts'}, 'random': {'p'},
               'er': {'p'}, 'ba': {'m'}, 'ws': {'k', 'p'}}[kind]
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f'topology {kind!r} takes parameters {sorted(allowed)}, got unknown {sorted(unknown)}')
    if kind == 'complete':
        return complete_graph(num_nodes)
    if kind == 'residual':
        if 'interval' not in params:
            raise ValueError("topology 'residual' needs an 'interval' parameter")
        return residual_graph(num_nodes, params['interval'], params.get('input_shortcuts', True))
    if kind == 'random':
        if 'p' not in params:
            raise ValueError("topology 'random' needs an edge probability 'p'")
        return random_graph(num_nodes, params['p'], seed=seed)
    merged = dict(XIE_BEST_SETTINGS[kind], **params)
    return {'er': er_graph, 'ba': ba_graph, 'ws': ws_graph}[kind](num_nodes, seed=seed, **merged)


def expected_residual_edges(num_nodes: int, interval: int) -> int:
    """Closed form of the residual edge count (the paper's Table 1 entry)."""
    blocks = math.ceil((num_nodes - 2) / interval)
    return (num_nodes - 2 - blocks) + math.comb(blocks + 2, 2)
