"""Edge pruning of learned topologies and the compact static network it leaves (paper
section 3.2.3: "After pruning edges, nodes with zero in-degree or zero out-degree may be
safely removed. It can be used to reduce the parameters and accelerate inference").

Three steps, each usable on its own:

1. **Edge masks.** ``prune_masks`` keeps the edges whose score reaches a threshold, or the
   best-scored fraction of edges (over the network, or per stage). The score is ``|alpha|``
   (the paper's) or ``|alpha|`` relative to the strongest input of the same node (see
   ``edge_scores`` for why). A mask is one boolean per edge of a stage, in ``graph.edges``
   order.
2. **Node removal** (``close_mask``). A computing node left with no kept input or no kept
   output edge is removed together with all its edges, repeatedly, until none is left.
   Removal matters for *input*-less nodes too: every node op ends in batch norm, so a node
   whose inputs are all zero outputs BN's per-channel shift, not zero. Dropping such a node's
   output edges is therefore part of pruning, and the "masked original" against which the
   compact model is exact zeroes alpha on every edge the closed mask drops
   (``apply_edge_masks``), not only on the edges under the threshold.
3. **Compact model** (``build_compact_model``). The same TopoNet class is rebuilt with one
   pruned ``GraphSpec`` per stage (``graphs=``) and the surviving weights are copied, so the
   result is an ordinary static TopoNet: it saves in the shared checkpoint format and loads
   through ``create_model_from_checkpoint`` or timm with nothing new in the format.

Renumbering. Kept nodes keep their topological order and are numbered 0..M-1. How node 1
is handled depends on the stage's ``input_path`` (``backbones/dag.py``):

* ``'projection'`` (TopoNet's default): every edge out of the stage input reads the input
  projection and node 1 is an ordinary node, so everything maps one to one. Node 1 can be
  removed like any other node (the first kept computing node becomes the new node 1), and
  the projection stays as long as the stage keeps an edge out of its input, which a
  connected stage always does.
* ``'node1'``: node 1 alone reads the raw stage input and carries the stride and channel
  change, while every other edge out of the stage input reads the shared input projection.
  When node 1 survives, everything maps one to one (the input projection stays if some
  other edge still leaves the stage input). When node 1 is removed but other edges still
  leave the stage input, the input projection becomes the new node 1: it is built exactly
  like a stride-carrying node (same op, stride and widths), so its weights move into node 1
  unchanged, the new edge (0, 1) gets alpha 1, and every kept edge (0, j) becomes (1, j')
  with its alpha: the same function, computed once, with no projection left over.

A stage whose shape does not change has no projection in either mode; there the first kept
computing node simply becomes node 1 (its op has the same shape). A stage whose output keeps
no input edge cannot be built (the network would be cut) and is refused (``max_threshold``
gives the largest ``|alpha|`` threshold that keeps every stage connected).

Deployment helpers: ``export_torchscript``, ``export_onnx``, ``measure_cpu_latency``, and
``prune_checkpoint`` (checkpoint in, verified compact checkpoint out).
"""
from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .graphs import GraphSpec
from .sparsity import dag_stages
from .topology_export import StageTopology, check_finite_state_dict, check_finite_topology

__all__ = ['StagePruning', 'threshold_masks', 'keep_ratio_threshold', 'close_mask', 'prune_masks',
           'node_removal_masks', 'apply_edge_masks', 'masked_alpha', 'prune_stage_graph', 'build_compact_model',
           'max_threshold', 'export_torchscript', 'export_onnx', 'measure_cpu_latency',
           'prune_checkpoint', 'edge_scores', 'keep_a_computing_path', 'PRUNE_CRITERIA']


def _stage_alphas(model_or_alphas) -> List[np.ndarray]:
    if isinstance(model_or_alphas, nn.Module):
        alphas = [s.edge_weights.detach().float().cpu().numpy().copy() for s in dag_stages(model_or_alphas)]
        if not alphas:
            raise ValueError(f'{type(model_or_alphas).__name__} has no DAG stages to prune')
        return alphas
    return [np.asarray(a, dtype=np.float32).reshape(-1) for a in model_or_alphas]


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) or not threshold >= 0:
        raise ValueError(f'threshold must be a number >= 0 (edges with |alpha| below it are dropped), '
                         f'got {threshold!r}')
    return float(threshold)


def threshold_masks(alphas: Sequence[np.ndarray], threshold) -> List[np.ndarray]:
    """Per stage, ``|alpha| >= threshold`` (before node removal); ``threshold`` is one
    number or one per stage."""
    thresholds = _per_stage(threshold, len(alphas))
    return [np.abs(np.asarray(a, dtype=np.float32)) >= t for a, t in zip(alphas, thresholds)]


def _per_stage(threshold, num_stages: int) -> List[float]:
    if isinstance(threshold, (list, tuple, np.ndarray)):
        if len(threshold) != num_stages:
            raise ValueError(f'{len(threshold)} thresholds given for {num_stages} stages')
        return [_check_threshold(t) for t in threshold]
    return [_check_threshold(threshold)] * num_stages


def keep_ratio_threshold(alphas: Sequence[np.ndarray], keep_ratio: float) -> float:
    """The global threshold keeping ``round(keep_ratio * num_edges)`` edges with the largest
    ``|alpha|`` over all stages (ties at the threshold are all kept).

    Example:
        >>> keep_ratio_threshold([np.array([0.1, -0.5]), np.array([0.3, 0.9])], 0.5)
        0.5
    """
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f'keep_ratio must be in (0, 1], got {keep_ratio!r}')
    magnitudes = np.sort(np.abs(np.concatenate([np.asarray(a, dtype=np.float32).reshape(-1) for a in alphas])))[::-1]
    if magnitudes.size == 0:
        raise ValueError('no edges to prune')
    keep = max(1, int(round(keep_ratio * magnitudes.size)))
    return float(magnitudes[keep - 1])


def close_mask(graph: GraphSpec, mask: Sequence[bool]) -> np.ndarray:
    """Drop, until none is left, every edge of a computing node that has no kept input or
    no kept output edge. The output node is never removed (a stage without it is cut; see
    ``prune_stage_graph``).

    Example:
        >>> from backbones.graphs import complete_graph
        >>> g = complete_graph(4)            # edges (0,1) (0,2) (1,2) (0,3) (1,3) (2,3)
        >>> close_mask(g, [False, True, True, True, True, True]).astype(int).tolist()
        [0, 1, 0, 1, 0, 1]
    """
    mask = np.array(mask, dtype=bool).reshape(-1)
    if mask.shape[0] != graph.num_edges:
        raise ValueError(f'mask has {mask.shape[0]} entries, the stage has {graph.num_edges} edges')
    src = np.array([s for s, _ in graph.edges])
    dst = np.array([d for _, d in graph.edges])
    last = graph.num_nodes - 1
    while True:
        in_deg = np.bincount(dst[mask], minlength=graph.num_nodes)
        out_deg = np.bincount(src[mask], minlength=graph.num_nodes)
        dead = [i for i in range(1, last) if (in_deg[i] == 0 or out_deg[i] == 0) and (
            in_deg[i] + out_deg[i] > 0)]
        if not dead:
            return mask
        drop = np.isin(src, dead) | np.isin(dst, dead)
        mask = mask & ~drop


PRUNE_CRITERIA = ('abs', 'relative')


def edge_scores(alphas: Sequence[np.ndarray], graphs: Sequence[GraphSpec], criterion: str = 'abs') -> List[np.ndarray]:
    """Per stage, the score an edge is pruned by: ``|alpha|`` (``'abs'``, the paper's), or
    ``|alpha|`` over the largest ``|alpha|`` into the same node (``'relative'``).

    Why ``relative``: every node op ends in batch norm and starts with ReLU and a
    convolution, so scaling all inputs of a node by c > 0 leaves the network's function
    nearly unchanged, and the sparsity penalty shrinks the input weights of dense nodes
    (the stage output above all) as a block. Absolute thresholds then cut whole stages; a
    relative score keeps each node's strongest input (score 1), and ``prune_masks`` keeps,
    where node removal would leave a stage's output fed by its input alone, the best path
    through computing nodes (``keep_a_computing_path``), so no stage is ever cut.

    Example:
        >>> from backbones.graphs import complete_graph
        >>> edge_scores([np.array([2., 1., 0.5])], [complete_graph(3)], 'relative')[0].tolist()
        [1.0, 1.0, 0.5]
    """
    if criterion not in PRUNE_CRITERIA:
        raise ValueError(f'unknown pruning criterion {criterion!r}; expected one of {PRUNE_CRITERIA}')
    scores = []
    for alpha, graph in zip(alphas, graphs):
        magnitude = np.abs(np.asarray(alpha, dtype=np.float32)).reshape(-1)
        if criterion == 'relative':
            dst = np.array([d for _, d in graph.edges])
            node_max = np.zeros(graph.num_nodes, dtype=np.float32)
            np.maximum.at(node_max, dst, magnitude)
            magnitude = np.where(node_max[dst] > 0, magnitude / np.maximum(node_max[dst], 1e-30), 1.0)
        scores.append(magnitude.astype(np.float32))
    return scores


def prune_masks(model_or_alphas, graphs: Optional[Sequence[GraphSpec]] = None, threshold=None,
                keep_ratio: Optional[float] = None, per_stage: bool = False,
                criterion: str = 'abs') -> Tuple[List[np.ndarray], List[float]]:
    """Closed per-stage masks for a threshold on the edge score (one number, or one per
    stage) or a keep ratio (give exactly one). The score is ``|alpha|`` or, with
    ``criterion='relative'``, ``|alpha|`` relative to the node's strongest input (see
    ``edge_scores``). A keep ratio is global over all stages, as the paper's single
    threshold, or with ``per_stage`` applied to each stage on its own (each keeps its
    ``round(R * E_s)`` best edges). Returns the masks and the threshold used in each stage."""
    if (threshold is None) == (keep_ratio is None):
        raise ValueError('give exactly one of threshold and keep_ratio')
    if per_stage and keep_ratio is None:
        raise ValueError('per_stage applies to keep_ratio; give one threshold per stage instead')
    alphas = _stage_alphas(model_or_alphas)
    if graphs is None:
        if not isinstance(model_or_alphas, nn.Module):
            raise ValueError('graphs are needed when alphas are given without a model')
        graphs = [s.graph for s in dag_stages(model_or_alphas)]
    if len(graphs) != len(alphas):
        raise ValueError(f'{len(graphs)} graphs for {len(alphas)} stages of alpha')
    check_finite_topology([StageTopology(g, a) for g, a in zip(graphs, alphas)], 'alpha to prune')
    scores = edge_scores(alphas, graphs, criterion)
    if keep_ratio is not None:
        threshold = ([keep_ratio_threshold([a], keep_ratio) for a in scores] if per_stage
                     else keep_ratio_threshold(scores, keep_ratio))
    thresholds = _per_stage(threshold, len(alphas))
    masks = [close_mask(g, m) for g, m in zip(graphs, threshold_masks(scores, thresholds))]
    if criterion == 'relative':
        direct_ok = _direct_edge_ok(model_or_alphas, len(graphs))
        masks = [m if ok else keep_a_computing_path(g, m, s)
                 for g, m, s, ok in zip(graphs, masks, scores, direct_ok)]
    return masks, thresholds


def keep_a_computing_path(graph: GraphSpec, mask: Sequence[bool], scores: np.ndarray) -> np.ndarray:
    """A closed mask in which the stage output still receives a computing node: where the
    closed ``mask`` leaves the output fed by the direct input->output edge alone (or by
    nothing), the input->output path through computing nodes with the largest bottleneck
    score is added back. This is how the relative criterion keeps its promise that no stage
    is cut: keeping each node's strongest input does not stop node removal from emptying a
    stage whose output's strongest input is the direct edge.

    Example:
        >>> from backbones.graphs import complete_graph
        >>> g = complete_graph(4)            # edges (0,1) (0,2) (1,2) (0,3) (1,3) (2,3)
        >>> keep_a_computing_path(g, [True, True, False, True, False, False],
        ...                       np.array([1., 1., .1, 1., .2, .3])).astype(int).tolist()
        [0, 1, 0, 1, 0, 1]
    """
    mask = close_mask(graph, mask)
    last = graph.num_nodes - 1
    if any(mask[e] and 0 < src for e, (src, dst) in enumerate(graph.edges) if dst == last):
        return mask
    _, via = _widest_path(graph, scores, direct=False)
    if via[last] < 0:
        raise ValueError('the stage has no input->output path through a computing node')
    mask = mask.copy()
    node = last
    while node != 0:
        mask[via[node]] = True
        node = graph.edges[via[node]][0]
    return close_mask(graph, mask)


def _widest_path(graph: GraphSpec, scores, direct: bool) -> Tuple[float, List[int]]:
    """The best bottleneck from the stage input to its output (max over paths of the min
    score along the path) and, per node, the edge that brings its best path (-1: none).
    ``direct=False`` leaves out the direct input->output edge."""
    last = graph.num_nodes - 1
    width = [-np.inf] * graph.num_nodes
    width[0] = np.inf
    via = [-1] * graph.num_nodes
    for e, (src, dst) in enumerate(graph.edges):  # sorted by dst: sources are final
        if src == 0 and dst == last and not direct:
            continue
        w = min(width[src], float(scores[e]))
        if w > width[dst]:
            width[dst], via[dst] = w, e
    return width[last], via


def _direct_edge_ok(model_or_alphas, num_stages: int) -> List[bool]:
    """Per stage, whether the direct input->output edge alone can be built as a compact
    stage (``_direct_edge_builds_a_stage``); without a model, never (the safe side)."""
    if not isinstance(model_or_alphas, nn.Module):
        return [False] * num_stages
    cfg = getattr(model_or_alphas, 'cfg', None)
    return [_direct_edge_builds_a_stage(s, cfg) for s in dag_stages(model_or_alphas)]


def max_threshold(model_or_alphas, graphs: Optional[Sequence[GraphSpec]] = None) -> float:
    """The largest threshold that leaves every stage connected from input to output: per
    stage, the best bottleneck (max over paths of the min |alpha| along the path), then the
    minimum over stages.

    With a model, a path made of the direct input->output edge alone counts only where that
    edge can become a compact stage by itself (a shape-changing stage of ``input_path``
    ``'node1'`` whose projection is built like a node, promoted to node 1); elsewhere a
    compact stage needs a computing node, so the path must pass through one. Alphas given
    without a model: every path counts."""
    alphas = _stage_alphas(model_or_alphas)
    if isinstance(model_or_alphas, nn.Module):
        stages = list(dag_stages(model_or_alphas))
        if graphs is None:
            graphs = [s.graph for s in stages]
        direct_ok = _direct_edge_ok(model_or_alphas, len(stages))
    else:
        direct_ok = [True] * len(alphas)
    best = float('inf')
    for graph, alpha, direct in zip(graphs, alphas, direct_ok):
        best = min(best, _widest_path(graph, np.abs(alpha), direct)[0])
    return float(best)


def _direct_edge_builds_a_stage(stage, cfg) -> bool:
    """Whether a stage pruned down to its input->output edge can be built: only by promoting
    a node-like input projection to node 1 (``input_path='node1'``)."""
    proj_is_node_op = cfg is None or getattr(cfg, 'proj_op', None) in (None, getattr(cfg, 'node_op', None))
    return _stage_reshapes(stage) and stage.input_path == 'node1' and proj_is_node_op


def node_removal_masks(graphs: Sequence[GraphSpec], stage: int, node: int) -> List[np.ndarray]:
    """Masks removing one computing node of one stage (all its edges, then ``close_mask``);
    every other stage is left whole. This is Figure 4 (left)'s damage."""
    if not 0 <= stage < len(graphs):
        raise ValueError(f'stage {stage} out of range: the network has {len(graphs)} stages')
    graph = graphs[stage]
    if not 1 <= node <= graph.num_nodes - 2:
        raise ValueError(f'node {node} is not a computing node of stage {stage} (1..{graph.num_nodes - 2})')
    masks = [np.ones(g.num_edges, dtype=bool) for g in graphs]
    masks[stage] = close_mask(graph, [node not in e for e in graph.edges])
    return masks


def _check_masks(stages, masks) -> None:
    if len(masks) != len(stages):
        raise ValueError(f'{len(masks)} masks for {len(stages)} DAG stages')
    for i, (stage, mask) in enumerate(zip(stages, masks)):
        if np.asarray(mask).reshape(-1).shape[0] != stage.graph.num_edges:
            raise ValueError(f'stage {i}: mask has {np.asarray(mask).size} entries, the stage has '
                             f'{stage.graph.num_edges} edges')


@torch.no_grad()
def apply_edge_masks(model: nn.Module, masks: Sequence[np.ndarray]) -> None:
    """Set alpha of every dropped edge to 0, in place (the "masked original")."""
    stages = list(dag_stages(model))
    _check_masks(stages, masks)
    for stage, mask in zip(stages, masks):
        keep = torch.as_tensor(np.asarray(mask, dtype=bool).reshape(-1), device=stage.edge_weights.device)
        stage.edge_weights.mul_(keep.to(stage.edge_weights.dtype))


@contextlib.contextmanager
def masked_alpha(model: nn.Module, masks: Sequence[np.ndarray]) -> Iterator[nn.Module]:
    """``apply_edge_masks`` for the duration of a ``with`` block; alpha is restored after."""
    stages = list(dag_stages(model))
    saved = [s.edge_weights.detach().clone() for s in stages]
    try:
        apply_edge_masks(model, masks)
        yield model
    finally:
        with torch.no_grad():
            for stage, alpha in zip(stages, saved):
                stage.edge_weights.copy_(alpha)


@dataclass(frozen=True)
class StagePruning:
    """How one stage maps onto its compact version.

    Attributes:
        graph (GraphSpec): The compact stage's graph (kind ``'pruned'``).
        node_sources (tuple): Per new node, the old node it comes from; ``'proj'`` marks
            the input projection promoted to node 1 (``input_path='node1'`` only).
        edge_sources (tuple): Per new edge (in ``graph.edges`` order), the old edge index,
            or -1 for the added (0, 1) edge in front of a promoted projection (alpha 1).
        keeps_input_proj (bool): The compact stage still has an input projection.
    """

    graph: GraphSpec
    node_sources: Tuple
    edge_sources: Tuple[int, ...]
    keeps_input_proj: bool

    @property
    def promotes_input_proj(self) -> bool:
        return len(self.node_sources) > 1 and self.node_sources[1] == 'proj'


def prune_stage_graph(graph: GraphSpec, mask: Sequence[bool], reshapes: bool, stage_name: str = 'stage',
                      graph_params: Optional[Dict] = None, input_path: str = 'node1') -> StagePruning:
    """The compact graph of one stage under a closed ``mask`` (see the module docstring for
    how node 1 and the input projection are handled).

    Args:
        graph (GraphSpec): The full stage graph.
        mask (sequence of bool): Kept edges, one per ``graph.edges``; closed here again.
        reshapes (bool): The stage changes stride or width (it has, or would have, an
            input projection).
        stage_name (str): Named in errors.
        graph_params (dict, optional): Stored in the new graph's ``params``.
        input_path (str): The stage's ``input_path`` (``backbones.dag.INPUT_PATHS``): with
            ``'projection'`` the projection is never promoted into node 1.
    """
    from .dag import INPUT_PATHS
    if input_path not in INPUT_PATHS:
        raise ValueError(f'unknown input_path {input_path!r}; expected one of {INPUT_PATHS}')
    mask = close_mask(graph, mask)
    last = graph.num_nodes - 1
    kept_edges = [e for e in range(graph.num_edges) if mask[e]]
    if not any(graph.edges[e][1] == last for e in kept_edges):
        raise ValueError(f'{stage_name}: no edge into the output node survives pruning, the network would be cut; '
                         f'lower the threshold (see max_threshold) or use the relative criterion')
    kept_nodes = sorted({n for e in kept_edges for n in graph.edges[e]})
    computing = [n for n in kept_nodes if 0 < n < last]
    node1_kept = 1 in computing
    params = {'pruned_from': graph.kind, 'source_num_nodes': graph.num_nodes, **dict(graph_params or {})}
    if graph.params:
        params['source_params'] = dict(graph.params)
    if graph.seed is not None:
        params['source_seed'] = graph.seed
    input_fed = [e for e in kept_edges if graph.edges[e][0] == 0]
    projection_feeds_all = input_path == 'projection'  # node 1 is an ordinary node: nothing to promote
    promote = reshapes and not node1_kept and not projection_feeds_all
    if not computing and not promote:
        why = 'the stage does not change shape' if not reshapes else "input_path='projection' promotes no projection"
        raise ValueError(f'{stage_name}: only the direct input->output edge survives and {why}, so no node would '
                         f'be left to build; lower the threshold (see max_threshold)')
    if promote:
        node_sources = [0, 'proj'] + computing + [last]
        new_id = {n: i + 2 for i, n in enumerate(computing)}
        new_id[last] = len(node_sources) - 1
        edge_pairs = [((0, 1), -1)]
        for e in kept_edges:
            src, dst = graph.edges[e]
            edge_pairs.append(((1 if src == 0 else new_id[src], new_id[dst]), e))
    else:
        node_sources = [0] + computing + [last]
        new_id = {n: i for i, n in enumerate(node_sources)}
        edge_pairs = [((new_id[graph.edges[e][0]], new_id[graph.edges[e][1]]), e) for e in kept_edges]
    new_graph = GraphSpec(num_nodes=len(node_sources), edges=tuple(p for p, _ in edge_pairs), kind='pruned',
                          params=params, seed=None)
    by_pair = dict(edge_pairs)
    edge_sources = tuple(by_pair[p] for p in new_graph.edges)
    keeps_proj = reshapes and not promote and any(projection_feeds_all or graph.edges[e][1] != 1 for e in input_fed)
    return StagePruning(new_graph, tuple(node_sources), edge_sources, keeps_proj)


def _stage_reshapes(stage) -> bool:
    return stage.stride != 1 or stage.in_chs != stage.out_chs


def build_compact_model(model: nn.Module, masks: Sequence[np.ndarray], graph_params=None):
    """A new TopoNet with the pruned graphs and the surviving weights of ``model``.

    In eval mode its outputs equal ``model``'s under ``apply_edge_masks(model, masks)`` up
    to float rounding (the equality is a test). ``model`` is not modified.

    Args:
        model (TopoNet): The full network.
        masks (sequence of array): One edge mask per stage (closed here).
        graph_params (dict or list of dict, optional): Recorded in each pruned graph's
            ``params`` (e.g. the threshold); a list gives one dict per stage.

    Returns:
        (TopoNet, list of StagePruning)
    """
    from .toponet import TopoNet
    if not isinstance(model, TopoNet):
        raise TypeError(f'build_compact_model rebuilds TopoNets, got {type(model).__name__}')
    cfg = model.cfg
    stages = list(model.stages)
    _check_masks(stages, masks)
    if graph_params is None or isinstance(graph_params, dict):
        graph_params = [graph_params] * len(stages)
    if len(graph_params) != len(stages):
        raise ValueError(f'{len(graph_params)} graph_params for {len(stages)} stages')
    plans = []
    for s, (stage, mask) in enumerate(zip(stages, masks)):
        plan = prune_stage_graph(stage.graph, mask, _stage_reshapes(stage), f'stage {s}', graph_params[s],
                                 input_path=stage.input_path)
        if plan.promotes_input_proj and cfg.proj_op not in (None, cfg.node_op):
            raise ValueError(f'stage {s}: node 1 is pruned and the input projection ({cfg.proj_op}) is not built '
                             f'like a node ({cfg.node_op}), so it cannot take node 1\'s place; lower the threshold')
        plans.append(plan)
    compact = TopoNet(cfg, num_classes=model.num_classes, in_chans=model.stem.conv.in_channels,
                      global_pool=model.head.global_pool.pool_type if model.num_classes else 'avg',
                      drop_rate=model.drop_rate, alpha_trainable=stages[0].alpha_trainable,
                      graphs=[p.graph for p in plans])
    source = model.state_dict()
    state = {k: v for k, v in source.items() if not k.startswith('stages.')}
    for s, (stage, plan) in enumerate(zip(stages, plans)):
        old, new = f'stages.{s}.', f'stages.{s}.'
        for i, origin in enumerate(plan.node_sources[1:-1], start=1):
            prefix = f'{old}input_proj.' if origin == 'proj' else f'{old}nodes.{origin - 1}.'
            for key, value in source.items():
                if key.startswith(prefix):
                    state[f'{new}nodes.{i - 1}.' + key[len(prefix):]] = value
        if plan.keeps_input_proj:
            prefix = f'{old}input_proj.'
            state.update({k: v for k, v in source.items() if k.startswith(prefix)})
        alpha = stage.edge_weights.detach()
        state[f'{new}edge_weights'] = torch.stack([alpha[e] if e >= 0 else torch.ones((), dtype=alpha.dtype)
                                                   for e in plan.edge_sources])
        state[f'{new}edge_index'] = compact.stages[s].edge_index
    compact.load_state_dict(state, strict=True)
    for attr in ('pretrained_cfg', 'default_cfg'):  # timm's data config (mean, std, input size)
        if hasattr(model, attr):
            setattr(compact, attr, copy.deepcopy(getattr(model, attr)))
    for p_new, p_old in ((compact.stages[s].edge_weights, stages[s].edge_weights) for s in range(len(stages))):
        p_new.requires_grad_(p_old.requires_grad)
    compact.train(model.training)
    return compact, plans


# -- deployment of the compact model ------------------------------------------------------
def export_torchscript(model: nn.Module, path: str) -> torch.jit.ScriptModule:
    """Script ``model`` (eval mode) and write it atomically to ``path``."""
    from .io_utils import atomic_write
    scripted = torch.jit.script(model.eval())
    atomic_write(path, lambda tmp: scripted.save(tmp))
    return scripted


def export_onnx(model: nn.Module, path: str, input_size: Sequence[int], opset: int = 17) -> None:
    """Export ``model`` (eval mode) to ONNX at ``input_size`` (N, C, H, W) with a dynamic
    batch dimension, written atomically. Uses the TorchScript-based exporter, which needs
    no extra packages."""
    import io
    import warnings
    from .io_utils import atomic_write_bytes
    if len(input_size) != 4:
        raise ValueError(f'input_size must be (N, C, H, W), got {tuple(input_size)}')
    model = model.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', category=DeprecationWarning)
        warnings.filterwarnings('ignore', category=FutureWarning)
        torch.onnx.export(model, (torch.zeros(tuple(input_size)),), buffer, dynamo=False, opset_version=opset,
                          input_names=['images'], output_names=['logits'],
                          dynamic_axes={'images': {0: 'batch'}, 'logits': {0: 'batch'}})
    atomic_write_bytes(path, buffer.getvalue())


def measure_cpu_latency(model: nn.Module, input_size: Sequence[int], runs: int = 30, warmup: int = 5,
                        channels_last: bool = False) -> Dict:
    """Wall time of ``model(x)`` (eval mode, inference mode, one fixed batch) over ``runs``
    timed calls after ``warmup`` untimed ones: median, 10th and 90th percentile in ms.
    ``channels_last`` converts ``model`` (in place) and the input to that memory format. The
    batch lives on the model's device (on CUDA every call is synchronised before the clock
    stops)."""
    import time
    if runs < 1 or warmup < 0:
        raise ValueError(f'runs must be >= 1 and warmup >= 0, got {runs} and {warmup}')
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device('cpu'))
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    x = torch.randn(tuple(input_size), device=device)
    if channels_last:  # outside inference mode: the converted parameters must stay usable for autograd
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            sync()
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                model(x)
                sync()
                times.append(1000.0 * (time.perf_counter() - start))
    finally:
        model.train(was_training)
    return {'median_ms': float(np.median(times)), 'p10_ms': float(np.percentile(times, 10)),
            'p90_ms': float(np.percentile(times, 90)), 'runs': runs, 'batch': int(input_size[0]),
            'threads': torch.get_num_threads(), 'channels_last': channels_last}


def prune_checkpoint(path: str, out_path: str, threshold: Optional[float] = None,
                     keep_ratio: Optional[float] = None, per_stage: bool = False, criterion: str = 'abs',
                     check_batch: int = 4) -> Tuple[nn.Module, nn.Module, Dict]:
    """Prune a shared checkpoint and save the compact model as a shared checkpoint.

    The compact model is checked against the masked original on a random batch before it
    is written, and the written file is reloaded (``create_model_from_checkpoint``) and
    checked again. Returns ``(full_model, compact_model, report)``, both in eval mode; the
    report holds the thresholds, per-stage edges and nodes before/after, and both checks'
    largest absolute output difference.
    """
    from .checkpoint import check_same_outputs, create_model_from_checkpoint, read_checkpoint, save_checkpoint
    ckpt = read_checkpoint(path)
    check_finite_state_dict(ckpt.state_dict, path)
    model = create_model_from_checkpoint(path).eval()
    if keep_ratio is None and threshold is not None and criterion == 'abs':
        limit = max_threshold(model)
        if _check_threshold(threshold) > limit:
            raise ValueError(f'threshold {threshold} cuts a stage off: the largest threshold that keeps every stage '
                             f'connected is {limit:.6g}')
    masks, used = prune_masks(model, threshold=threshold, keep_ratio=keep_ratio, per_stage=per_stage,
                              criterion=criterion)
    record = {'criterion': criterion, 'thresholds': used}
    if keep_ratio is not None:
        record.update(keep_ratio=keep_ratio, per_stage=per_stage)
    try:
        compact, plans = build_compact_model(model, masks, graph_params=[{'criterion': criterion, 'threshold': t}
                                                                         for t in used])
    except ValueError as err:
        hint = (' (|alpha| thresholds cut stages whose inputs to the output are all small; the relative '
                'criterion never does)' if criterion == 'abs' else '')
        raise ValueError(f'{err}{hint}') from err
    compact.eval()
    # the built channels, which may differ from the registered default's (a 3-channel toponet_fmnist)
    channels = next(m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    input_size = (channels,) + tuple(model.pretrained_cfg.get('input_size', (3, 224, 224)))[1:]
    x = torch.randn((check_batch,) + input_size)
    with torch.no_grad(), masked_alpha(model, masks):
        reference = model(x)
    with torch.no_grad():
        diff_built = check_same_outputs(compact(x), reference, 'compact model vs masked original')
    meta = {'task': 'pruned', 'pruned_from': os.path.abspath(path), **record, 'source_meta': ckpt.meta}
    save_checkpoint(out_path, compact, ckpt.model_name, model_kwargs=ckpt.model_kwargs, meta=meta)
    reloaded = create_model_from_checkpoint(out_path).eval()
    with torch.no_grad():
        diff_reloaded = check_same_outputs(reloaded(x), reference, 'reloaded compact model vs masked original')
    report = {
        'checkpoint': os.path.abspath(path), 'pruned_checkpoint': os.path.abspath(out_path),
        'model': ckpt.model_name, **record,
        'edges_before': [s.graph.num_edges for s in model.stages], 'edges_after': [p.graph.num_edges for p in plans],
        'nodes_before': [s.graph.num_nodes for s in model.stages], 'nodes_after': [p.graph.num_nodes for p in plans],
        'input_proj_promoted': [p.promotes_input_proj for p in plans],
        'max_abs_diff_vs_masked': diff_built, 'max_abs_diff_reloaded': diff_reloaded,
    }
    return model, reloaded, report
