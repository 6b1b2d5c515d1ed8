"""Export of learned topologies: per stage, the graph spec and its edge weights.

One format for every task: ``{"format": "toponet-topology", "version": 1, "stages":
[{"graph": GraphSpec.to_dict(), "alpha": [one float per edge]}, ...]}`` as JSON, the
same content as NPZ arrays (``stage{s}_edges``, ``stage{s}_alpha``, ``stage{s}_alpha_matrix``,
``stage{s}_num_nodes`` and ``graphs_json``), or one ``networkx.DiGraph`` per stage with an
``alpha`` attribute on every edge. Alpha matrices are ``M[dst, src]``: rows hold a node's
input edges and columns its output edges, as in the paper's Figure 3.

A model's state dict holds the same facts as tensors: per stage ``<prefix>.edge_index``
(the edges) and ``<prefix>.edge_weights`` (alpha). ``topology_from_state_dict`` reads them
and checks them against a recorded topology; it is the one source of alpha for every
reader of a checkpoint. ``check_finite_topology`` and ``check_finite_state_dict`` refuse
non-finite alpha and weights, naming the stage and edge (``stages.2 edge (0, 5)``) or the
tensor. A malformed file raises ``InputError`` naming the file and the field.
"""
from __future__ import annotations

import io
import json
import numbers
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .errors import InputError
from .graphs import GraphSpec
from .io_utils import atomic_write, atomic_write_text
from .sparsity import dag_stages

__all__ = ['StageTopology', 'extract_topology', 'topology_to_dict', 'topology_from_dict', 'save_topology_json',
           'load_topology_json', 'save_topology_npz', 'load_topology_npz', 'topology_to_networkx',
           'stage_prefixes', 'topology_from_state_dict', 'check_finite_topology', 'check_finite_state_dict']

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


def topology_from_dict(data: Any, where: str = 'topology') -> List[StageTopology]:
    """Parse ``topology_to_dict``'s layout; ``where`` (a file, a metadata field) is named in
    every error, with the field that is wrong (``stages[2].alpha``)."""
    if not isinstance(data, dict):
        raise InputError(f'not a TopoNet topology export (a JSON {type(data).__name__})', where,
                         f'an object with "format": "{_FORMAT}"')
    if data.get('format') != _FORMAT:
        raise InputError(f'not a TopoNet topology export (format {data.get("format")!r})', where,
                         f'expected format {_FORMAT!r}')
    if data.get('version') != _VERSION:
        raise InputError(f'topology export version {data.get("version")!r} is not supported', f'{where} "version"',
                         f'version {_VERSION}')
    stages = data.get('stages')
    if not isinstance(stages, list) or not stages:
        raise InputError('topology export has no stages', f'{where} "stages"', 'a non-empty list of stages')
    out = []
    for i, stage in enumerate(stages):
        field = f'{where} stages[{i}]'
        if not isinstance(stage, dict) or not {'graph', 'alpha'} <= set(stage):
            found = sorted(stage) if isinstance(stage, dict) else f'a {type(stage).__name__}'
            raise InputError(f'malformed stage (found {found})', field, 'an object with "graph" and "alpha"')
        graph = _graph_from_dict(stage['graph'], f'{field}.graph')
        out.append(_stage(graph, _alpha_values(stage['alpha'], f'{field}.alpha'), f'{field}.alpha'))
    return out


def _graph_from_dict(data: Any, where: str) -> GraphSpec:
    try:
        return GraphSpec.from_dict(data)
    except (ValueError, TypeError) as err:
        raise InputError(f'malformed graph spec: {err}', where, 'a GraphSpec.to_dict() object') from err


def _alpha_values(values: Any, where: str) -> np.ndarray:
    if not isinstance(values, list) or any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in values):
        raise InputError('alpha is not a list of numbers', where, 'one number per edge')
    return np.asarray(values, dtype=np.float32)


def _stage(graph: GraphSpec, alpha: np.ndarray, where: str) -> StageTopology:
    alpha = np.asarray(alpha)
    if alpha.ndim != 1 or alpha.shape[0] != graph.num_edges:
        raise InputError(f'{alpha.size} alpha values for a graph of {graph.num_edges} edges', where,
                         'one alpha value per edge')
    return StageTopology(graph, alpha)


def save_topology_json(stages: Sequence[StageTopology], path: str) -> None:
    atomic_write_text(path, json.dumps(topology_to_dict(stages), indent=1))


def load_topology_json(path: str) -> List[StageTopology]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f'topology file not found: {path}')
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f'not valid JSON: {err}', path, 'a topology export written by save_topology_json') from err
    return topology_from_dict(data, path)


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
    try:
        data = np.load(path, allow_pickle=False)  # never unpickle
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(f'not a readable NPZ archive: {err}', path, 'a topology export written by save_topology_npz')
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError('a single .npy array, not an NPZ archive', path, 'a topology export written by '
                         'save_topology_npz')
    with data:
        if 'graphs_json' not in data:
            raise InputError('not a TopoNet topology NPZ (no graphs_json array)', path,
                             'the arrays written by save_topology_npz')
        text = _npz_array(data, 'graphs_json', path)
        try:
            graph_dicts = json.loads(str(text))
        except json.JSONDecodeError as err:
            raise InputError(f'not valid JSON: {err}', f'{path} graphs_json', 'a JSON list of graph specs') from err
        if not isinstance(graph_dicts, list) or not graph_dicts:
            raise InputError('graphs_json is not a list of graph specs', f'{path} graphs_json',
                             'a non-empty JSON list of graph specs')
        stages = []
        for i, spec in enumerate(graph_dicts):
            graph = _graph_from_dict(spec, f'{path} graphs_json[{i}]')
            key = f'stage{i}_alpha'
            if key not in data:
                raise InputError(f'no {key} array for stage {i}', path, f'{len(graph_dicts)} stage{{s}}_alpha arrays')
            alpha = _npz_array(data, key, path)
            if not np.issubdtype(alpha.dtype, np.floating):
                raise InputError(f'{key} has dtype {alpha.dtype}', f'{path} {key}', 'float alpha values')
            edges_key = f'stage{i}_edges'
            if edges_key in data:
                edges = _npz_array(data, edges_key, path)
                if edges.shape != (graph.num_edges, 2) or [tuple(e) for e in edges.tolist()] != list(graph.edges):
                    raise InputError(f'{edges_key} are not the edges of graphs_json[{i}]', f'{path} {edges_key}',
                                     'the same edges in both (one source of truth)')
            stages.append(_stage(graph, alpha, f'{path} {key}'))
        return stages


def _npz_array(data, key: str, path: str) -> np.ndarray:
    """One array of an open NPZ archive; a corrupt member (bad zlib stream, truncated or
    pickled array) is an error naming the file and the array."""
    try:
        return data[key]
    except (zlib.error, zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise InputError(f'cannot read array {key!r}: {err}', f'{path} {key}',
                         'an uncorrupted array written by save_topology_npz') from err


def topology_to_networkx(stages: Sequence[StageTopology]) -> list:
    return [s.to_networkx() for s in stages]


# -- the topology inside a state dict ----------------------------------------------------------
def _natural_key(name: str):
    return tuple((0, int(part), '') if part.isdigit() else (1, 0, part) for part in name.split('.'))


def stage_prefixes(state_dict: Mapping[str, torch.Tensor]) -> List[str]:
    """The DAG stages of a state dict: the prefixes (``stages.0``, ``body.stages.3``) of its
    ``edge_index`` tensors, in module order (numbers compared as numbers)."""
    prefixes = [key[:-len('.edge_index')] if key.endswith('.edge_index') else ''
                for key in state_dict if key == 'edge_index' or key.endswith('.edge_index')]
    return sorted(prefixes, key=_natural_key)


def _join(prefix: str, name: str) -> str:
    return f'{prefix}.{name}' if prefix else name


def topology_from_state_dict(state_dict: Mapping[str, torch.Tensor],
                             recorded: Sequence[Union[GraphSpec, StageTopology]],
                             where: str = 'state dict') -> List[StageTopology]:
    """The topology the tensors hold: per stage the recorded graph (its kind, params and
    seed; the edges must be ``edge_index`` exactly) and alpha from ``edge_weights``.

    ``recorded`` is what a file's metadata says: graphs, or ``StageTopology`` whose alpha
    must then equal ``edge_weights`` exactly (both are written from the same float32
    values). Any disagreement raises ``InputError`` naming the stage.
    """
    prefixes = stage_prefixes(state_dict)
    if len(prefixes) != len(recorded):
        raise InputError(f'the metadata records {len(recorded)} DAG stages, the tensors hold {len(prefixes)} '
                         f'({", ".join(prefixes) or "none"})', where, 'one recorded topology per stage of the tensors')
    stages = []
    for prefix, record in zip(prefixes, recorded):
        graph = record.graph if isinstance(record, StageTopology) else record
        edge_index = state_dict[_join(prefix, 'edge_index')]
        weights_key = _join(prefix, 'edge_weights')
        if weights_key not in state_dict:
            raise InputError(f'{prefix} has edge_index but no edge_weights', where, f'a tensor {weights_key}')
        edges = [tuple(e) for e in edge_index.reshape(-1, 2).tolist()] if edge_index.numel() else []
        if edge_index.dim() != 2 or edges != list(graph.edges):
            differing = next((e for e, (a, b) in enumerate(zip(edges, graph.edges)) if a != b),
                             min(len(edges), graph.num_edges))
            raise InputError(f'{prefix}: the metadata graph ({graph.kind}, {graph.num_edges} edges) is not the '
                             f'edge_index tensor ({len(edges)} edges; first difference at edge {differing})', where,
                             'metadata and tensors describing the same graph')
        alpha_tensor = state_dict[weights_key]
        if tuple(alpha_tensor.shape) != (graph.num_edges,):
            raise InputError(f'{weights_key} has shape {tuple(alpha_tensor.shape)} for {graph.num_edges} edges',
                             where, 'one edge weight per edge')
        alpha = alpha_tensor.detach().float().cpu().numpy()
        if isinstance(record, StageTopology) and not np.array_equal(record.alpha, alpha, equal_nan=True):
            e = int(np.flatnonzero(~((record.alpha == alpha) | (np.isnan(record.alpha) & np.isnan(alpha))))[0])
            raise InputError(f'{prefix}: the metadata alpha differs from {weights_key} at edge {graph.edges[e]} '
                             f'({float(record.alpha[e])!r} vs {float(alpha[e])!r})', where,
                             'metadata alpha equal to the edge_weights tensor (was the file edited?)')
        stages.append(StageTopology(graph, alpha))
    return stages


def check_finite_topology(stages: Sequence[StageTopology], where: str,
                          names: Optional[Sequence[str]] = None) -> None:
    """Refuse non-finite alpha, naming the stage and edge (``stages.2 edge (0, 5)``);
    ``names`` are the stages' module prefixes (default ``stages.<i>``)."""
    for s, stage in enumerate(stages):
        bad = np.flatnonzero(~np.isfinite(stage.alpha))
        if bad.size:
            name = names[s] if names is not None else f'stages.{s}'
            e = int(bad[0])
            more = f' (and {bad.size - 1} more edges of the stage)' if bad.size > 1 else ''
            raise InputError(f'non-finite alpha {float(stage.alpha[e])}{more}',
                             f'{where}: {name} edge {stage.graph.edges[e]}', 'finite edge weights (did training diverge?)')


_EDGE_WEIGHTS = re.compile(r'(^|\.)edge_weights$')


def check_finite_state_dict(state_dict: Mapping[str, torch.Tensor], where: str) -> None:
    """Refuse a state dict (or a model's, ``model.state_dict()``) with a non-finite value:
    alpha named by stage and edge (``stages.2 edge (0, 5)``), any other tensor by its key."""
    for key, value in state_dict.items():
        if not torch.is_tensor(value) or not value.is_floating_point():
            continue
        finite = torch.isfinite(value.detach())
        if bool(finite.all()):
            continue
        bad = (~finite).reshape(-1).nonzero()
        first = int(bad[0])
        if _EDGE_WEIGHTS.search(key):
            prefix = key[:-len('edge_weights')].rstrip('.')
            edge_index = state_dict.get(_join(prefix, 'edge_index'))
            edge = (tuple(edge_index.reshape(-1, 2)[first].tolist()) if edge_index is not None
                    and edge_index.numel() // 2 > first else f'#{first}')
            more = f' (and {bad.numel() - 1} more edges of the stage)' if bad.numel() > 1 else ''
            raise InputError(f'non-finite alpha {float(value.reshape(-1)[first])}{more}',
                             f'{where}: {prefix or "stage"} edge {edge}', 'finite edge weights (did training diverge?)')
        raise InputError(f'{bad.numel()} non-finite values in {key} (first: {float(value.reshape(-1)[first])})',
                         f'{where}: {key}', 'finite weights (did training diverge?)')
