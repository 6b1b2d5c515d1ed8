"""The hook that makes a classification run produce the shared artefacts: the TopoNet
checkpoint (``backbones.checkpoint``), the topology export and pictures. The progress bar is
the shared ``backbones.mmengine_hooks.ProgressBarHook``."""
from __future__ import annotations

import os
from typing import Dict, Optional

from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from backbones.console import CONSOLE
from backbones.mmengine_hooks import ProgressBarHook  # noqa: F401  (registers it for the configs)

__all__ = ['ExportCheckpointHook', 'ProgressBarHook']


@HOOKS.register_module()
class ExportCheckpointHook(Hook):
    """After every validation (and at the end of training) write, under ``work_dir``:

    * ``<out_name>.safetensors``: the shared checkpoint other tasks load, with the
      validation metrics, epoch, iteration and the training set's class names in its
      metadata;
    * ``topology.json`` / ``topology.npz``: graphs and alpha per stage;
    * ``adjacency.png`` (alpha heatmaps per stage) and ``alpha_hist.png``.

    Every file is written atomically, so a killed run never leaves a broken one, and the
    checkpoint first: a model with a NaN or infinite tensor raises ``InputError`` naming it
    (``backbones.checkpoint.save_checkpoint``) before any file is touched, so a good export
    is never replaced by a diverged one. (A non-finite loss stops the run earlier still:
    ``backbones.mmengine_hooks.NonFiniteLossHook``.)
    """

    # Before EMAHook (NORMAL) swaps the raw weights back after validation, so the export holds
    # the weights that were just validated.
    priority = 'ABOVE_NORMAL'

    def __init__(self, out_name: str = 'toponet', pictures: bool = True):
        self.out_name = out_name
        self.pictures = pictures
        self._last_metrics: Dict[str, float] = {}
        self._exported_iter = -1

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        self._last_metrics = dict(metrics or {})
        self._export(runner)

    def after_train(self, runner) -> None:
        # Skip when the last validation already wrote this iteration, or when a resumed run
        # had nothing left to train (keeps the metrics stored in the existing export).
        if self._exported_iter != runner.iter and self._saved_iter(runner) != runner.iter:
            self._export(runner)

    def _saved_iter(self, runner) -> int:
        from backbones.checkpoint import read_checkpoint
        path = os.path.join(runner.work_dir, f'{self.out_name}.safetensors')
        if not os.path.isfile(path):
            return -1
        try:
            return int(read_checkpoint(path).meta.get('iter', -1))
        except ValueError:
            return -1  # unreadable: write a fresh one

    @master_only
    def _export(self, runner) -> None:
        from backbones.checkpoint import export_run
        self._exported_iter = runner.iter
        model = getattr(runner.model, 'module', runner.model)
        meta = dict(task='classification', epoch=runner.epoch, iter=runner.iter,
                    metrics=self._last_metrics, experiment=runner.experiment_name)
        # class names travel with the weights (classification.inference names its predictions)
        classes = (getattr(runner.train_dataloader.dataset, 'metainfo', None) or {}).get('classes')
        if classes:
            meta['classes'] = [str(c) for c in classes]
        path = export_run(runner.work_dir, self.out_name, model.backbone, model.model_name, model.model_kwargs, meta,
                          title=f'{model.model_name}, {_when(runner)}', pictures=self.pictures)
        runner.logger.info(f'exported {path} and the topology pictures to {runner.work_dir}', extra=CONSOLE)


def _when(runner) -> str:
    """When the export happened, in the train loop's own unit (an iteration-based run has no epochs)."""
    from mmengine.runner import IterBasedTrainLoop
    if isinstance(runner.train_loop, IterBasedTrainLoop):
        return f'iteration {runner.iter:,}'
    return f'epoch {runner.epoch}'
