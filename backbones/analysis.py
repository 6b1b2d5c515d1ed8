"""Analysis of learned topologies (paper section 3.2.3 and appendix A.4-A.5).

* ``graph_statistics``: per stage, density, in/out-degree, the share of edges whose
  ``|alpha|`` is near zero and the longest input-to-output path, both for the full graph
  and for the *effective* graph that keeps only edges with ``|alpha| >= near_zero``.
* ``alpha_similarity``: how alike the alpha matrices of repeated runs are (Figure 5):
  per stage, the cosine similarity and Pearson correlation between every pair of runs.
* ``node_damage`` and ``edge_damage``: the graph-damage experiments of Figure 4, generic
  over the model and over an ``evaluate(model) -> accuracy`` callable (and, for edge
  damage, an optional ``retrain(model)`` callable that trains weights with alpha frozen).
  Dataset glue for Fashion-MNIST lives in ``classification/damage.py``.

Removing a node or pruning edges uses the masks of ``backbones.pruning`` (one definition
of "removed" everywhere: a node's edges go, then every node left without input or output).
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from torch import nn

from .pruning import build_compact_model, masked_alpha, node_removal_masks, prune_masks
from .sparsity import dag_stages
from .topology_export import StageTopology, check_finite_state_dict, check_finite_topology, extract_topology

__all__ = ['stage_statistics', 'graph_statistics', 'alpha_similarity', 'node_damage', 'edge_damage',
           'DEFAULT_PRUNE_FRACTIONS', 'load_topology', 'statistics_markdown', 'relative_alpha', 'within_node_spread',
           'relative_alpha_vector', 'relative_alpha_agreement']

DEFAULT_PRUNE_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _longest_path(num_nodes: int, edges: Sequence) -> int:
    """Edges on the longest path from node 0 to the output node; 0 if none exists."""
    length = [-math.inf] * num_nodes
    length[0] = 0
    for src, dst in sorted(edges, key=lambda e: (e[1], e[0])):
        length[dst] = max(length[dst], length[src] + 1)
    return int(length[-1]) if length[-1] > 0 else 0


def stage_statistics(stage: StageTopology, near_zero: float = 1e-2) -> Dict:
    """Graph statistics of one stage (see the module docstring).

    Example:
        >>> from backbones.graphs import complete_graph
        >>> s = stage_statistics(StageTopology(complete_graph(4), np.array([1, 1, 0, 1, 0, 1.])))
        >>> s['density'], round(s['near_zero_share'], 3), s['longest_path'], s['effective']['longest_path']
        (1.0, 0.333, 3, 2)
    """
    if not near_zero >= 0:
        raise ValueError(f'near_zero must be >= 0, got {near_zero!r}')
    graph, alpha = stage.graph, np.abs(stage.alpha)
    n = graph.num_nodes
    strong = [e for e, a in zip(graph.edges, alpha) if a >= near_zero]

    def degrees(edges):
        ins, outs = np.zeros(n, dtype=int), np.zeros(n, dtype=int)
        for src, dst in edges:
            outs[src] += 1
            ins[dst] += 1
        return ins, outs

    def summary(edges):
        ins, outs = degrees(edges)
        computing = slice(1, n - 1)
        return {
            'num_edges': len(edges), 'density': len(edges) / (n * (n - 1) / 2),
            'in_degree': ins.tolist(), 'out_degree': outs.tolist(),
            'mean_in_degree': float(ins[computing].mean()), 'max_in_degree': int(ins[computing].max()),
            'mean_out_degree': float(outs[computing].mean()), 'max_out_degree': int(outs[computing].max()),
            'longest_path': _longest_path(n, edges),
            'isolated_nodes': [i for i in range(1, n - 1) if ins[i] == 0 or outs[i] == 0],
        }

    full = summary(list(graph.edges))
    full.pop('isolated_nodes')  # a GraphSpec has none by construction
    return {
        'kind': graph.kind, 'num_nodes': n, **full,
        'near_zero': float(near_zero), 'near_zero_share': float(np.mean(alpha < near_zero)) if alpha.size else 0.0,
        'alpha_abs_mean': float(alpha.mean()), 'alpha_abs_max': float(alpha.max()),
        'alpha_min': float(stage.alpha.min()), 'alpha_max': float(stage.alpha.max()),
        'effective': summary(strong),
    }


def graph_statistics(model_or_stages, near_zero: float = 1e-2) -> List[Dict]:
    """``stage_statistics`` for every stage of a model or of a list of ``StageTopology``."""
    stages = extract_topology(model_or_stages) if isinstance(model_or_stages, nn.Module) else list(model_or_stages)
    check_finite_topology(stages, 'graph statistics')
    return [stage_statistics(s, near_zero) for s in stages]


def alpha_similarity(runs: Sequence[Sequence[StageTopology]]) -> List[Dict]:
    """Per stage, pairwise similarity of the runs' alpha vectors (Figure 5).

    The runs must share their graphs (edge sets). Returns per stage ``cosine`` and
    ``pearson`` (R x R lists) and their mean over distinct pairs.

    Example:
        >>> from backbones.graphs import complete_graph
        >>> g = complete_graph(3)
        >>> runs = [[StageTopology(g, np.array([1., 2, 3]))], [StageTopology(g, np.array([2., 4, 6]))]]
        >>> round(alpha_similarity(runs)[0]['mean_cosine'], 6), round(alpha_similarity(runs)[0]['mean_pearson'], 6)
        (1.0, 1.0)
    """
    if len(runs) < 2:
        raise ValueError(f'alpha similarity needs at least two runs, got {len(runs)}')
    num_stages = len(runs[0])
    for r, run in enumerate(runs):
        check_finite_topology(run, f'alpha similarity run {r}')
        if len(run) != num_stages:
            raise ValueError(f'run {r} has {len(run)} stages, run 0 has {num_stages}')
        for s, stage in enumerate(run):
            if stage.graph.edges != runs[0][s].graph.edges:
                raise ValueError(f'run {r} stage {s} is wired differently from run 0 ({stage.graph.num_edges} vs '
                                 f'{runs[0][s].graph.num_edges} edges); alpha can only be compared on one graph')
    out = []
    pairs = [(i, j) for i in range(len(runs)) for j in range(i + 1, len(runs))]
    for s in range(num_stages):
        vecs = np.stack([run[s].alpha.astype(np.float64) for run in runs])
        norms = np.linalg.norm(vecs, axis=1)
        cosine = (vecs @ vecs.T) / np.maximum(np.outer(norms, norms), 1e-12)
        centred = vecs - vecs.mean(axis=1, keepdims=True)
        cnorm = np.linalg.norm(centred, axis=1)
        pearson = (centred @ centred.T) / np.maximum(np.outer(cnorm, cnorm), 1e-12)
        out.append({
            'stage': s, 'num_edges': int(vecs.shape[1]), 'cosine': cosine.tolist(), 'pearson': pearson.tolist(),
            'mean_cosine': float(np.mean([cosine[i, j] for i, j in pairs])),
            'mean_pearson': float(np.mean([pearson[i, j] for i, j in pairs])),
        })
    return out


def _progress(iterable, total: int, desc: str, enabled: bool):
    from tqdm import tqdm
    # disable=None: bars on a terminal, none in redirected logs (as the training's ProgressBarHook)
    return tqdm(iterable, total=total, desc=desc, disable=None if enabled else True, leave=False, dynamic_ncols=True)


def node_damage(model: nn.Module, evaluate: Callable[[nn.Module], float], progress: bool = True) -> Dict:
    """Accuracy after removing each single computing node, stage by stage, without
    retraining (Figure 4, left). ``model`` is restored afterwards.

    Returns ``{'baseline': acc, 'nodes': [{'stage', 'node', 'accuracy', 'edges_removed',
    'nodes_removed'}, ...]}`` in stage, then topological order.
    """
    graphs = [s.graph for s in dag_stages(model)]
    if not graphs:
        raise ValueError(f'{type(model).__name__} has no DAG stages')
    check_finite_state_dict(model.state_dict(), 'node damage model')
    baseline = float(evaluate(model))
    jobs = [(s, i) for s, g in enumerate(graphs) for i in range(1, g.num_nodes - 1)]
    rows = []
    for s, node in _progress(jobs, len(jobs), 'node damage', progress):
        masks = node_removal_masks(graphs, s, node)
        removed_nodes = sorted({n for e, keep in zip(graphs[s].edges, masks[s]) if not keep for n in e}
                               - {n for e, keep in zip(graphs[s].edges, masks[s]) if keep for n in e} - {0})
        with masked_alpha(model, masks):
            acc = float(evaluate(model))
        rows.append({'stage': s, 'node': node, 'accuracy': acc, 'edges_removed': int((~masks[s]).sum()),
                     'nodes_removed': removed_nodes})
    return {'baseline': baseline, 'nodes': rows}


def edge_damage(model: nn.Module, evaluate: Callable[[nn.Module], float],
                fractions: Sequence[float] = DEFAULT_PRUNE_FRACTIONS,
                retrain: Optional[Callable[[nn.Module], None]] = None, per_stage: bool = False,
                criterion: str = 'abs', progress: bool = True) -> Dict:
    """Accuracy versus the fraction of edges pruned by ``|alpha|`` (Figure 4, right),
    without retraining and, when ``retrain`` is given, after retraining.

    For a fraction f one global threshold keeps the ``1 - f`` largest ``|alpha|`` (with
    ``per_stage``, every stage keeps its own ``1 - f`` largest; ``criterion='relative'``
    ranks ``|alpha|`` relative to each node's strongest input, see
    ``backbones.pruning.edge_scores``); node removal may drop more
    edges, so each row records the fraction actually pruned. Retraining runs on a copy: the
    compact model when one can be built (a TopoNet whose stages all stay connected),
    otherwise the masked full model; its alpha is frozen (``requires_grad`` off), so
    ``retrain`` trains the weights only. ``model`` is restored afterwards.
    """
    stages = list(dag_stages(model))
    if not stages:
        raise ValueError(f'{type(model).__name__} has no DAG stages')
    check_finite_state_dict(model.state_dict(), 'edge damage model')
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f < 1.0:
            raise ValueError(f'prune fractions must be in [0, 1), got {f!r}')
    total = sum(s.graph.num_edges for s in stages)
    rows = []
    for fraction in _progress(fractions, len(fractions), 'edge damage', progress):
        masks, thresholds = prune_masks(model, keep_ratio=1.0 - fraction, per_stage=per_stage, criterion=criterion)
        kept = int(sum(m.sum() for m in masks))
        row = {'fraction': float(fraction), 'thresholds': thresholds,
               'fraction_pruned': 1.0 - kept / total, 'edges_kept': kept,
               'nodes_kept': [int(len({n for e, k in zip(s.graph.edges, m) if k for n in e})) for s, m in
                              zip(stages, masks)],
               'stages_cut': [s for s, (stage, m) in enumerate(zip(stages, masks))
                              if not any(k and dst == stage.graph.num_nodes - 1
                                         for k, (_, dst) in zip(m, stage.graph.edges))]}
        with masked_alpha(model, masks):
            row['accuracy'] = float(evaluate(model))
            if retrain is not None:
                pruned, row['retrained_model'] = _retrain_copy(model, masks)
        if retrain is not None:
            retrain(pruned)
            pruned.eval()
            row['accuracy_retrained'] = float(evaluate(pruned))
            from .complexity import count_parameters
            row['retrained_params'] = count_parameters(pruned)
            del pruned
        rows.append(row)
    return {'num_edges': total, 'per_stage': per_stage, 'criterion': criterion, 'rows': rows}


def _retrain_copy(masked_model: nn.Module, masks):
    """A trainable copy of the masked model with frozen alpha: compact if possible."""
    from .toponet import TopoNet
    pruned, kind = None, 'masked'
    if isinstance(masked_model, TopoNet):
        try:
            pruned, _ = build_compact_model(masked_model, masks)
            kind = 'compact'
        except ValueError:
            pruned = None  # a stage is cut: only the masked network exists
    if pruned is None:
        pruned = copy.deepcopy(masked_model)
    for stage in dag_stages(pruned):
        stage.edge_weights.requires_grad_(False)
    return pruned, kind


def load_topology(path: str) -> List[StageTopology]:
    """Graphs and alpha from a shared checkpoint (``.safetensors``: alpha from its
    ``edge_weights`` tensors, checked against its metadata) or a topology export
    (``.json`` / ``.npz``). Non-finite alpha is refused, naming the stage and edge."""
    import os
    from .errors import InputError
    from .topology_export import load_topology_json, load_topology_npz
    ext = os.path.splitext(path)[1].lower()
    if ext == '.safetensors':
        from .checkpoint import read_checkpoint
        stages = read_checkpoint(path).topology
        if not stages:
            raise InputError('no topology (a network without DAG stages)', path, 'a checkpoint of a DAG-stage network')
    elif ext == '.json':
        stages = load_topology_json(path)
    elif ext == '.npz':
        stages = load_topology_npz(path)
    else:
        raise InputError(f'unknown file type {ext or "(none)"!r}', path,
                         'expected a .safetensors checkpoint or a .json/.npz topology export')
    check_finite_topology(stages, path)
    return stages


def statistics_markdown(stats: Sequence[Dict], title: str = 'Topology statistics') -> str:
    """A markdown table of ``graph_statistics`` (one row per stage)."""
    near_zero = stats[0]['near_zero'] if stats else 0.0
    lines = [f'## {title}', '',
             f'Effective graph: edges with |alpha| >= {near_zero:g}. Degrees are over computing nodes.', '',
             '| stage | nodes | edges | density | in-degree mean/max | out-degree mean/max | |alpha| < '
             f'{near_zero:g} | longest path | effective edges | effective density | effective longest path '
             '| nodes cut off (effective) | |alpha| mean / max |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for s, st in enumerate(stats):
        eff = st['effective']
        lines.append(
            f"| {s + 1} | {st['num_nodes']} | {st['num_edges']} | {st['density']:.3f} | "
            f"{st['mean_in_degree']:.2f} / {st['max_in_degree']} | {st['mean_out_degree']:.2f} / "
            f"{st['max_out_degree']} | {100 * st['near_zero_share']:.1f}% | {st['longest_path']} | "
            f"{eff['num_edges']} | {eff['density']:.3f} | {eff['longest_path']} | "
            f"{eff['isolated_nodes'] or '-'} | {st['alpha_abs_mean']:.3f} / {st['alpha_abs_max']:.3f} |")
    return '\n'.join(lines) + '\n'


# -- alpha relative to each node's mean ------------------------------------------------
# Every computing node is ReLU-conv-BN: scaling all of a node's input weights by one factor
# leaves its output unchanged, so only alpha *relative to the node's mean input weight*
# changes the function. These views remove the free per-node scale before alpha is compared
# across runs or called "learned".

def _input_groups(stage: StageTopology, min_in_degree: int = 2) -> List[np.ndarray]:
    """Per destination node with at least ``min_in_degree`` inputs: its edge positions."""
    dst = np.array([d for _, d in stage.graph.edges])
    return [np.flatnonzero(dst == node) for node in np.unique(dst) if (dst == node).sum() >= min_in_degree]


def relative_alpha(stage: StageTopology) -> np.ndarray:
    """``alpha_ji / mean_j(alpha_ji)`` per edge, the mean over the edges into the same node;
    NaN for edges into nodes with a single input (nothing to compare) or a zero mean.

    Example:
        >>> from backbones.graphs import complete_graph
        >>> relative_alpha(StageTopology(complete_graph(3), np.array([1., 1, 3]))).tolist()
        [nan, 0.5, 1.5]
    """
    alpha = stage.alpha.astype(np.float64)
    out = np.full(alpha.shape, np.nan)
    for group in _input_groups(stage):
        mean = alpha[group].mean()
        if mean != 0:
            out[group] = alpha[group] / mean
    return out


def within_node_spread(stage: StageTopology) -> np.ndarray:
    """Per node with two or more inputs: the coefficient of variation of its input weights,
    ``std / |mean|`` (population std). 0 means uniform alpha: the node weighs its inputs
    as the fixed graph does, whatever their common scale.

    Example:
        >>> from backbones.graphs import complete_graph
        >>> within_node_spread(StageTopology(complete_graph(3), np.array([1., 1, 3]))).tolist()
        [0.5]
    """
    alpha = stage.alpha.astype(np.float64)
    spreads = []
    for group in _input_groups(stage):
        mean = abs(alpha[group].mean())
        spreads.append(alpha[group].std() / mean if mean > 0 else math.inf)
    return np.array(spreads)


def relative_alpha_vector(stages: Sequence[StageTopology]) -> np.ndarray:
    """All stages' ``relative_alpha - 1`` (the deviation from uniform weighting) on the
    edges where it is defined, concatenated in stage and edge order."""
    parts = [relative_alpha(stage) - 1.0 for stage in stages]
    flat = np.concatenate(parts)
    return flat[np.isfinite(flat)]


def relative_alpha_agreement(runs: Sequence[Sequence[StageTopology]], n_resamples: int = 999,
                             seed: int = 0) -> Dict:
    """Do repeated runs learn the same *relative* alpha? The mean over run pairs of the
    Pearson correlation of their ``relative_alpha - 1`` vectors, and a permutation p-value
    (``scipy.stats.permutation_test``, ``permutation_type='pairings'``: the edges of each
    run are shuffled independently, which breaks any agreement tied to edge identity).

    The same on ranks (mean pairwise Spearman correlation, ``mean_rank_correlation`` and
    ``rank_p_value``). Read that one where sparsity drives a node's mean alpha towards 0:
    its relative alpha then takes extreme values that dominate a Pearson correlation.
    Also returns the raw-alpha cosine similarity the paper's Figure 5 reads.
    """
    from scipy import stats

    if len(runs) < 2:
        raise ValueError(f'agreement needs at least two runs, got {len(runs)}')
    for r, run in enumerate(runs[1:], 1):
        if [s.graph.edges for s in run] != [s.graph.edges for s in runs[0]]:
            raise ValueError(f'run {r} is wired differently from run 0; alpha can only be compared on one graph')
    vectors = [relative_alpha_vector(run) for run in runs]
    if len({v.size for v in vectors}) != 1 or vectors[0].size < 3:
        raise ValueError('runs have different or too few comparable edges (nodes with two or more inputs)')
    pairs = [(i, j) for i in range(len(runs)) for j in range(i + 1, len(runs))]

    def mean_pairwise_correlation(*samples, axis=-1):
        data = np.stack(samples)  # runs x [resamples x] edges
        data = data - data.mean(axis=axis, keepdims=True)
        norm = np.sqrt((data ** 2).sum(axis=axis))
        values = [(data[i] * data[j]).sum(axis=axis) / np.maximum(norm[i] * norm[j], 1e-300) for i, j in pairs]
        return np.mean(values, axis=0)

    def agreement(samples):
        return stats.permutation_test(samples, mean_pairwise_correlation, permutation_type='pairings',
                                      alternative='greater', n_resamples=n_resamples, vectorized=True,
                                      rng=np.random.default_rng(seed))

    test = agreement(vectors)
    ranked = agreement([stats.rankdata(v) for v in vectors])
    raw = [np.concatenate([s.alpha.astype(np.float64) for s in run]) for run in runs]
    cosine = [float(raw[i] @ raw[j] / max(np.linalg.norm(raw[i]) * np.linalg.norm(raw[j]), 1e-300)) for i, j in pairs]
    return dict(runs=len(runs), edges=int(vectors[0].size), mean_correlation=float(test.statistic),
                p_value=float(test.pvalue), mean_rank_correlation=float(ranked.statistic),
                rank_p_value=float(ranked.pvalue), n_resamples=n_resamples, mean_raw_cosine=float(np.mean(cosine)))
