"""Pictures of topologies: per-stage adjacency / alpha heatmaps as PNG."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from .io_utils import atomic_write
from .topology_export import StageTopology

__all__ = ['plot_adjacency', 'plot_alpha_histogram']


def _save_png(fig, path: str) -> None:
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
    _save_png(fig, path)


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
    _save_png(fig, path)
