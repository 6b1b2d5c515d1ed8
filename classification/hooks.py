"""Hooks that make a classification run produce the shared artefacts: the TopoNet
checkpoint (``backbones.checkpoint``), the topology export and pictures, and a progress bar."""
from __future__ import annotations

import os
from typing import Dict, Optional

import torch
from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

__all__ = ['ExportCheckpointHook', 'ProgressBarHook']


@HOOKS.register_module()
class ExportCheckpointHook(Hook):
    """After every validation (and at the end of training) write, under ``work_dir``:

    * ``<out_name>.safetensors``: the shared checkpoint other tasks load, with the
      validation metrics, epoch and iteration in its metadata;
    * ``topology.json`` / ``topology.npz``: graphs and alpha per stage;
    * ``adjacency.png`` (alpha heatmaps per stage) and ``alpha_hist.png``.

    Every file is written atomically, so a killed run never leaves a broken one.
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
        self._exported_iter = runner.iter
        from backbones.checkpoint import save_checkpoint
        from backbones.topology_export import extract_topology, save_topology_json, save_topology_npz
        model = getattr(runner.model, 'module', runner.model)
        meta = dict(task='classification', epoch=runner.epoch, iter=runner.iter,
                    metrics=self._last_metrics, experiment=runner.experiment_name)
        path = os.path.join(runner.work_dir, f'{self.out_name}.safetensors')
        save_checkpoint(path, model.backbone, model.model_name, model_kwargs=model.model_kwargs, meta=meta)
        try:
            stages = extract_topology(model.backbone)
        except ValueError:
            return  # no DAG stages: nothing more to draw
        save_topology_json(stages, os.path.join(runner.work_dir, 'topology.json'))
        save_topology_npz(stages, os.path.join(runner.work_dir, 'topology.npz'))
        if self.pictures:
            from backbones.viz import plot_adjacency, plot_alpha_histogram
            title = f'{model.model_name}, epoch {runner.epoch}'
            plot_adjacency(stages, os.path.join(runner.work_dir, 'adjacency.png'), title=title)
            plot_alpha_histogram({'learned': stages}, os.path.join(runner.work_dir, 'alpha_hist.png'), title=title)
        runner.logger.info(f'exported {path} and the topology pictures to {runner.work_dir}')


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """A tqdm bar per training epoch and per validation run (rank 0 only)."""

    priority = 'VERY_LOW'

    def __init__(self):
        self._bar = None

    def _open(self, runner, total: int, desc: str) -> None:
        from mmengine.dist import get_rank
        from tqdm import tqdm
        self._close()
        if get_rank() == 0:
            # disable=None: bars on a terminal, none in redirected logs (the LoggerHook covers those)
            self._bar = tqdm(total=total, desc=desc, unit='it', dynamic_ncols=True, leave=False, disable=None,
                             mininterval=1.0)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def before_train_epoch(self, runner) -> None:
        self._open(runner, len(runner.train_dataloader), f'epoch {runner.epoch + 1}/{runner.max_epochs}')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if outputs and 'loss' in outputs:
                loss = outputs['loss']
                loss = loss.detach().item() if isinstance(loss, torch.Tensor) else float(loss)
                self._bar.set_postfix(loss=f'{loss:.3f}')

    def after_train_epoch(self, runner) -> None:
        self._close()

    def before_val_epoch(self, runner) -> None:
        self._open(runner, len(runner.val_dataloader), 'validation')

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._close()

    def before_test_epoch(self, runner) -> None:
        self._open(runner, len(runner.test_dataloader), 'test')

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._close()
