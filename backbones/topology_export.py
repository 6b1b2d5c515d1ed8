"""Export of learned topologies: per stage, the graph spec and its edge weights.

One format for every task: ``{"format": "toponet-topology", "version": 1, "stages":
[{"graph": GraphSpec.to_dict(), "alpha": [one float per edge]}, ...]}`` as JSON, the
same content as NPZ arrays (``stage{s}_edges``, ``stage{s}_alpha``, ``stage{s}_alpha_matrix``,
``stage{s}_num_nodes`` and ``graphs_json``), or one ``networkx.DiGraph`` per stage with an
``alpha`` attribute on every edge. Alpha matrices are ``M[dst, src]``: rows hold a node's
input edges and columns its output edges, as in the paper's Figure 3.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import numpy as np
from torch import nn

from .graphs import GraphSpec
from .io_utils import atomic_write, atomic_write_text
from .sparsity import dag_stages

__all__ = ['StageTopology', 'extract_topology', 'topology_to_dict', 'topology_from_dict', 'save_topology_json',
           'load_topology_json', 'save_topology_npz', 'load_topology_npz', 'topology_to_networkx']

_FORMAT = 'toponet-topology'
_VERSION = 1


@dataclass(frozen=True)
class StageTopology:
    """A stage's graph and its edge weights (in ``graph.edges`` order)."""

    graph: GraphSpec
    alpha: np.ndarray

    def __post_init__(self):
        # a snapshot: never a view of a live parameter that training keeps changing
        alpha = np.array(self.alpha, dtype=np.float32, copy=True).reshape(-1)
        if alpha.shape[0] != self.graph.num_edges:
            raise ValueError(f'stage has {self.graph.num_edges} edges but {alpha.shape[0]} alpha values')
        object.__setattr__(self, 'alpha', alpha)

    def alpha_matrix(self) -> np.ndarray:
        mat = np.zeros((self.graph.num_nodes, self.graph.num_nodes), dtype=np.float32)
        for value, (src, dst) in zip(self.alpha, self.graph.edges):
            mat[dst, src] = value
        return mat

    def to_networkx(self):
        return self.graph.to_networkx(self.alpha.tolist())


def extract_topology(model: nn.Module) -> List[StageTopology]:
    """The current graphs and alpha of every DAG stage of ``model``, in module order."""
    stages = [StageTopology(stage.graph, stage.edge_weights.detach().float().cpu().numpy())
              for stage in dag_stages(model)]
    if not stages:
        raise ValueError(f'{type(model).__name__} has no DAG stages to export')
    return stages


def topology_to_dict(stages: Sequence[StageTopology]) -> Dict[str, Any]:
    return {'format': _FORMAT, 'version': _VERSION,
            'stages': [{'graph': s.graph.to_dict(), 'alpha': [float(a) for a in s.alpha]} for s in stages]}


def topology_from_dict(data: Dict[str, Any]) -> List[StageTopology]:
    if not isinstance(data, dict) or data.get('format') != _FORMAT:
        raise ValueError(f'not a TopoNet topology export: expected format {_FORMAT!r}, '
                         f'got {data.get("format") if isinstance(data, dict) else type(data).__name__!r}')
    if data.get('version') != _VERSION:
        raise ValueError(f'topology export version {data.get("version")!r} is not supported (expected {_VERSION})')
    stages = data.get('stages')
    if not isinstance(stages, list) or not stages:
        raise ValueError('topology export has no "stages" list')
    return [StageTopology(GraphSpec.from_dict(s['graph']), np.asarray(s['alpha'], dtype=np.float32))
            for s in stages]


def save_topology_json(stages: Sequence[StageTopology], path: str) -> None:
    atomic_write_text(path, json.dumps(topology_to_dict(stages), indent=1))


def load_topology_json(path: str) -> List[StageTopology]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f'topology file not found: {path}')
    with open(path, 'r', encoding='utf-8') as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f'{path} is not valid JSON: {err}') from err
    return topology_from_dict(data)


def save_topology_npz(stages: Sequence[StageTopology], path: str) -> None:
    arrays = {'graphs_json': np.array(json.dumps([s.graph.to_dict() for s in stages]))}
    for i, s in enumerate(stages):
        arrays[f'stage{i}_num_nodes'] = np.array(s.graph.num_nodes)
        arrays[f'stage{i}_edges'] = np.asarray(s.graph.edges, dtype=np.int64).reshape(-1, 2)
        arrays[f'stage{i}_alpha'] = s.alpha
        arrays[f'stage{i}_alpha_matrix'] = s.alpha_matrix()

    def write(tmp: str) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        with open(tmp, 'wb') as f:
            f.write(buf.getvalue())
    atomic_write(path, write)


def load_topology_npz(path: str) -> List[StageTopology]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f'topology file not found: {path}')
    with np.load(path, allow_pickle=False) as data:  # never unpickle
        if 'graphs_json' not in data:
            raise ValueError(f'{path} is not a TopoNet topology NPZ (no graphs_json array)')
        graphs = [GraphSpec.from_dict(g) for g in json.loads(str(data['graphs_json']))]
        return [StageTopology(g, data[f'stage{i}_alpha']) for i, g in enumerate(graphs)]


def topology_to_networkx(stages: Sequence[StageTopology]) -> list:
    return [s.to_networkx() for s in stages]
