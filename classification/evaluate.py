"""Evaluate a shared TopoNet checkpoint with a classification config's test split."""
from __future__ import annotations

from typing import Dict, Optional

__all__ = ['evaluate_checkpoint']


def evaluate_checkpoint(config: str, checkpoint: str, work_dir: Optional[str] = None,
                        cfg_options: Optional[dict] = None, launcher: Optional[str] = None,
                        predictions: Optional[str] = None, topk: int = 5, amp: bool = False) -> Dict[str, float]:
    """Rebuild the config's classifier with the checkpoint's graphs, load its weights
    strictly and run the test loop. Returns the metrics.

    The test logs go to ``work_dir`` (default ``work_dirs/<config name>``, never beside the
    checkpoint, which may sit in a read-only cache). ``amp`` scores under autocast
    (``backbones.amp``: bfloat16 where supported). ``predictions`` (``.json`` or ``.npz``)
    also writes every test image's ``topk`` classes and scores
    (``classification.inference.write_predictions``), on rank 0 under a launcher.

    Strictly means: the checkpoint names the config's model, every tensor of the network
    (classifier included) comes from it with the same shape and wiring, none is left over,
    and all are finite; anything else raises ``InputError`` before a single image is scored.
    The config's own ``load_from`` / ``resume`` are ignored: the checkpoint given is the one
    scored.
    """
    import os
    from mmengine.runner import Runner

    from backbones.checkpoint import load_state_strictly, read_checkpoint
    from backbones.errors import InputError
    from backbones.mmengine_runner import build_runner_cfg
    from backbones.topology_export import check_finite_state_dict

    if predictions is not None and os.path.splitext(predictions)[1].lower() not in ('.json', '.npz'):
        raise InputError('unknown prediction file type', predictions, '.json or .npz')
    ckpt = read_checkpoint(checkpoint)
    cfg = build_runner_cfg(config, work_dir, cfg_options, launcher=launcher, amp=amp)
    if cfg.model.backbone.get('name') != ckpt.model_name:
        raise InputError(f'the checkpoint holds a {ckpt.model_name} but {config} builds a '
                         f'{cfg.model.backbone.get("name")}', checkpoint, f'a {cfg.model.backbone.get("name")} '
                         f'checkpoint (or set model.backbone.name)')
    check_finite_state_dict(ckpt.state_dict, checkpoint)
    if ckpt.topology:
        cfg.model.backbone.graphs = [g.to_dict() for g in ckpt.graphs]
    cfg.load_from, cfg.resume = None, False  # nothing may be loaded over the checkpoint scored here
    runner = Runner.from_cfg(cfg)
    model = getattr(runner.model, 'module', runner.model)
    load_state_strictly(model.backbone, ckpt.state_dict, checkpoint, f'the {ckpt.model_name} of {config}')
    if predictions is None:
        return runner.test()
    from backbones.cli import is_rank0
    from .inference import TopKPredictions, write_predictions
    collector = TopKPredictions(topk)
    runner.test_evaluator.metrics.append(collector)
    metrics = runner.test()
    if is_rank0():
        dataset = runner.test_dataloader.dataset
        samples = getattr(dataset, 'samples', None)  # image files of folder datasets
        write_predictions(predictions, collector.rows, (getattr(dataset, 'metainfo', None) or {}).get('classes', ()),
                          [path for path, _ in samples] if samples else None)
    return metrics
