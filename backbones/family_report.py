"""The TopoNet family at a glance: edges per stage, parameters (with and without the edge
weights alpha) and MACs of every registered ImageNet topology beside the paper's Table 4 /
Table 7, plus adjacency PNGs."""
from __future__ import annotations

import json
import os
import time
from typing import Dict, List, Optional, Sequence

from .complexity import count_macs, count_parameters
from .io_utils import atomic_write_text
from .topology_export import extract_topology
from .toponet import TopoNet, model_cfgs

__all__ = ['PAPER_TABLE4', 'FAMILY', 'family_report', 'format_report']

# Paper Table 4 (edges per stage; all rows 23.23M params, 3.95 GFLOPs). Table 7's ER/BA/WS
# rows give no edge counts; the sparsity rows share the complete architecture.
PAPER_TABLE4: Dict[str, Optional[tuple]] = {
    'toponet_random_p08': (56, 130, 221, 56),
    'toponet_random_p06': (44, 104, 172, 44),
    'toponet_random_p04': (31, 64, 117, 31),
    'toponet_residual_l4': (19, 36, 46, 19),
    'toponet_residual_l3': (23, 40, 61, 23),
    'toponet_residual_l2': (34, 64, 103, 34),
    'toponet_complete': (91, 190, 325, 91),
    'toponet_er': None,
    'toponet_ba': None,
    'toponet_ws': None,
}
PAPER_PARAMS_M = 23.23
PAPER_GMACS = 3.95
FAMILY = tuple(PAPER_TABLE4)


def family_report(names: Sequence[str] = FAMILY, out_dir: Optional[str] = None, input_size: int = 224,
                  seed: int = 0, progress: bool = True, input_path: Optional[str] = None) -> List[dict]:
    """Build each model, count edges/params/MACs, and (with ``out_dir``) write one
    adjacency PNG per model plus ``report.json`` and ``report.md``. ``input_path``
    overrides the models' wiring of stage inputs (``backbones/dag.py``; default: the
    configs', ``'projection'``)."""
    from tqdm import tqdm
    from .viz import plot_adjacency

    unknown = [n for n in names if n not in model_cfgs]
    if unknown:
        raise ValueError(f'unknown models {unknown}; expected names from {sorted(model_cfgs)}')
    rows = []
    bar = tqdm(names, desc='TopoNet family', unit='model', disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        start = time.perf_counter()
        model = TopoNet(model_cfgs[name], seed=seed, input_path=input_path)
        edges = [stage.graph.num_edges for stage in model.stages]
        params = count_parameters(model)
        row = {
            'model': name, 'topology': model.cfg.topology.kind, 'params': dict(model.cfg.topology.params),
            'seed': seed, 'nodes': list(model.cfg.nodes), 'edges': edges, 'input_path': model.cfg.input_path,
            'paper_edges': list(PAPER_TABLE4[name]) if PAPER_TABLE4.get(name) else None,
            'params_m': params / 1e6, 'params_without_alpha_m': (params - sum(edges)) / 1e6,
            'gmacs': count_macs(model, (1, 3, input_size, input_size)) / 1e9,
            'input_size': input_size,
        }
        if out_dir:
            png = os.path.join(out_dir, f'{name}_adjacency.png')
            plot_adjacency(extract_topology(model), png, title=f'{name} (seed {seed}): adjacency per stage')
            row['adjacency_png'] = png
        row['seconds'] = time.perf_counter() - start
        rows.append(row)
    if out_dir:
        atomic_write_text(os.path.join(out_dir, 'report.json'), json.dumps(rows, indent=1))
        atomic_write_text(os.path.join(out_dir, 'report.md'), format_report(rows) + '\n')
    return rows


def format_report(rows: Sequence[dict]) -> str:
    lines = [
        f'| model | edges per stage | paper edges | params (M) | without alpha (M) | vs {PAPER_PARAMS_M} | GMACs | '
        f'vs {PAPER_GMACS} |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        paper = '{' + ','.join(map(str, r['paper_edges'])) + '}' if r['paper_edges'] else '-'
        lines.append(
            f"| {r['model']} | {{{','.join(map(str, r['edges']))}}} | {paper} | {r['params_m']:.3f} | "
            f"{r['params_without_alpha_m']:.3f} | {100 * (r['params_m'] / PAPER_PARAMS_M - 1):+.1f}% | "
            f"{r['gmacs']:.2f} | {100 * (r['gmacs'] / PAPER_GMACS - 1):+.1f}% |")
    return '\n'.join(lines)
