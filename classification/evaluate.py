"""Evaluate a shared TopoNet checkpoint with a classification config's test split."""
from __future__ import annotations

from typing import Dict, Optional

__all__ = ['evaluate_checkpoint']


def evaluate_checkpoint(config: str, checkpoint: str, work_dir: Optional[str] = None,
                        cfg_options: Optional[dict] = None) -> Dict[str, float]:
    """Rebuild the config's classifier with the checkpoint's graphs, load its weights
    (strictly: every key must match) and run the test loop. Returns the metrics."""
    import os
    from mmengine.runner import Runner

    from backbones.checkpoint import read_checkpoint
    from backbones.mmengine_runner import build_runner_cfg

    ckpt = read_checkpoint(checkpoint)
    cfg = build_runner_cfg(config, work_dir or os.path.join(os.path.dirname(os.path.abspath(checkpoint)), 'test'),
                           cfg_options)
    if cfg.model.backbone.get('name') != ckpt.model_name:
        raise ValueError(f'{checkpoint} holds a {ckpt.model_name} but {config} builds a '
                         f'{cfg.model.backbone.get("name")}')
    if ckpt.topology:
        cfg.model.backbone.graphs = [g.to_dict() for g in ckpt.graphs]
    runner = Runner.from_cfg(cfg)
    runner.model.backbone.load_state_dict(ckpt.state_dict, strict=True)
    return runner.test()
