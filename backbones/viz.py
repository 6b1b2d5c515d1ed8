"""Pictures of topologies as PNG: per-stage adjacency / alpha heatmaps, alpha histograms,
and the analysis figures (graph damage, stand-alone snapshot accuracy, run similarity)."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from .io_utils import atomic_write
from .topology_export import StageTopology

__all__ = ['save_png', 'plot_adjacency', 'plot_alpha_histogram', 'plot_adjacency_grid', 'plot_similarity_matrices',
           'plot_node_damage', 'plot_edge_damage', 'plot_snapshot_accuracy']


def save_png(fig, path: str) -> None:
    """Write ``fig`` atomically as PNG and release it."""
    import matplotlib.pyplot as plt
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format='png'))
    finally:
        plt.close(fig)


def plot_adjacency(stages: Sequence[StageTopology], path: str, title: Optional[str] = None) -> None:
    """One heatmap per stage: row i holds node i's input edges, column j node j's output
    edges (Figure 3 of the paper); colour is alpha, blank where there is no edge."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    cols = len(stages)
    fig, axes = plt.subplots(1, cols, figsize=(3.0 * cols + 1.2, 3.4), squeeze=False, layout='constrained')
    vmax = max(float(np.abs(s.alpha).max()) for s in stages) or 1.0
    image = None
    for ax, (i, stage) in zip(axes[0], enumerate(stages)):
        mat = np.ma.masked_where(stage.graph.adjacency() == 0, stage.alpha_matrix())
        image = ax.imshow(mat, cmap='coolwarm', vmin=-vmax, vmax=vmax, interpolation='nearest')
        n = stage.graph.num_nodes
        ax.set_title(f'stage {i + 1}: {stage.graph.num_edges} edges', fontsize=9)
        ticks = list(range(0, n, max(1, int(math.ceil(n / 7)))))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xlabel('source node (output edges)', fontsize=8)
        if i == 0:
            ax.set_ylabel('node (input edges)', fontsize=8)
        ax.tick_params(labelsize=7)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9, label='alpha')
    if title:
        fig.suptitle(title, fontsize=10)
    save_png(fig, path)


def plot_alpha_histogram(runs: dict, path: str, title: Optional[str] = None, bins: int = 60) -> None:
    """Histogram of edge weights, one series per named run (Figure 3, left: e.g.
    ``{'w/o sparsity': stages_a, 'adaptive': stages_b}``)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if not runs:
        raise ValueError('plot_alpha_histogram needs at least one run')
    values = {name: np.concatenate([s.alpha for s in stages]) for name, stages in runs.items()}
    lo = min(float(v.min()) for v in values.values())
    hi = max(float(v.max()) for v in values.values())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.6), layout='constrained')
    for name, v in values.items():
        ax.hist(v, bins=edges, alpha=0.6, label=f'{name} ({v.size} edges)')
    ax.set_xlabel('alpha')
    ax.set_ylabel('edges')
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    save_png(fig, path)


def plot_adjacency_grid(runs: dict, path: str, title: Optional[str] = None) -> None:
    """Alpha heatmaps of several runs, one row per run and one column per stage, on one
    colour scale (Figure 5: ``{'run1 @78.51': stages, ...}``)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if not runs:
        raise ValueError('plot_adjacency_grid needs at least one run')
    names = list(runs)
    cols = max(len(runs[n]) for n in names)
    fig, axes = plt.subplots(len(names), cols, figsize=(2.6 * cols + 1.2, 2.5 * len(names) + 0.4), squeeze=False,
                             layout='constrained')
    vmax = max(float(np.abs(s.alpha).max()) for n in names for s in runs[n]) or 1.0
    image = None
    for r, name in enumerate(names):
        for c in range(cols):
            ax = axes[r][c]
            ax.tick_params(labelsize=6)
            if c >= len(runs[name]):
                ax.axis('off')
                continue
            stage = runs[name][c]
            mat = np.ma.masked_where(stage.graph.adjacency() == 0, stage.alpha_matrix())
            image = ax.imshow(mat, cmap='coolwarm', vmin=-vmax, vmax=vmax, interpolation='nearest')
            if r == 0:
                ax.set_title(f'stage {c + 1}', fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label='alpha')
    if title:
        fig.suptitle(title, fontsize=10)
    save_png(fig, path)


def plot_similarity_matrices(similarity: Sequence[dict], names: Sequence[str], path: str,
                             title: Optional[str] = None) -> None:
    """Per stage, the run-by-run cosine similarity of alpha (``backbones.analysis.alpha_similarity``)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    cols = len(similarity)
    fig, axes = plt.subplots(1, cols, figsize=(2.8 * cols + 1.0, 3.0), squeeze=False, layout='constrained')
    image = None
    for ax, stage in zip(axes[0], similarity):
        image = ax.imshow(np.asarray(stage['cosine']), cmap='viridis', vmin=0.0, vmax=1.0)
        ax.set_title(f"stage {stage['stage'] + 1}: mean {stage['mean_cosine']:.3f}", fontsize=8)
        ax.set_xticks(range(len(names)))
        ax.set_yticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=6, rotation=90)
        ax.set_yticklabels(names, fontsize=6)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label='cosine similarity')
    if title:
        fig.suptitle(title, fontsize=10)
    save_png(fig, path)


def plot_node_damage(result: dict, path: str, title: Optional[str] = None) -> None:
    """Figure 4 (left): accuracy after removing each node, one panel per stage, nodes in
    topological order, the undamaged accuracy as a dashed line."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    stages = sorted({row['stage'] for row in result['nodes']})
    if not stages:
        raise ValueError('node damage result has no rows')
    fig, axes = plt.subplots(1, len(stages), figsize=(3.0 * len(stages), 3.0), squeeze=False, sharey=True,
                             layout='constrained')
    for ax, s in zip(axes[0], stages):
        rows = [r for r in result['nodes'] if r['stage'] == s]
        ax.bar([r['node'] for r in rows], [r['accuracy'] for r in rows], color='tab:blue')
        ax.axhline(result['baseline'], color='k', linestyle='--', linewidth=1, label='no removal')
        ax.set_title(f'stage {s + 1}', fontsize=9)
        ax.set_xlabel('removed node', fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel('top-1 accuracy (%)', fontsize=8)
    axes[0][0].legend(fontsize=7, loc='lower left')
    if title:
        fig.suptitle(title, fontsize=10)
    save_png(fig, path)


def plot_edge_damage(result: dict, path: str, title: Optional[str] = None) -> None:
    """Figure 4 (right): accuracy versus the fraction of edges pruned, without and (where
    measured) after retraining with the remaining alpha frozen."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = result['rows']
    if not rows:
        raise ValueError('edge damage result has no rows')
    fig, ax = plt.subplots(figsize=(5.0, 3.4), layout='constrained')
    x = [100 * r['fraction_pruned'] for r in rows]
    ax.plot(x, [r['accuracy'] for r in rows], 'o-', label='without retraining')
    if all('accuracy_retrained' in r for r in rows):
        ax.plot(x, [r['accuracy_retrained'] for r in rows], 's-', label='retrained, alpha frozen')
    ax.set_xlabel('edges pruned (%)')
    ax.set_ylabel('top-1 accuracy (%)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    save_png(fig, path)


def plot_snapshot_accuracy(rows: Sequence[dict], path: str, title: Optional[str] = None) -> None:
    """Figure 6: stand-alone accuracy of topologies frozen at several search iterations
    (rows with ``iteration`` and ``accuracy``)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError('no snapshot rows to plot')
    fig, ax = plt.subplots(figsize=(5.0, 3.4), layout='constrained')
    ax.plot([r['iteration'] for r in rows], [r['accuracy'] for r in rows], 'o-')
    ax.set_xlabel('search iteration of the frozen topology')
    ax.set_ylabel('stand-alone top-1 accuracy (%)')
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    save_png(fig, path)
