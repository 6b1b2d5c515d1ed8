"""Hooks of a face training run: periodic verification on ``.bin`` sets (10-fold accuracy
with flipped images), the shared checkpoint and topology export, and a progress bar over
the iteration-based loop."""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from backbones.console import CONSOLE
from backbones.mmengine_hooks import ProgressBarHook  # noqa: F401  (registers it for the configs)

__all__ = ['FaceVerificationHook', 'FaceExportHook', 'VERIFICATION_INFO_KEY']

VERIFICATION_INFO_KEY = 'face_verification'


def _unwrap(runner):
    return getattr(runner.model, 'module', runner.model)


@HOOKS.register_module()
class FaceVerificationHook(Hook):
    """Every ``interval`` iterations (and after training) score the embedding network on
    each verification set; on rank 0 only (other ranks wait at their next all-reduce).

    Args:
        bins (sequence of str): ``.bin`` files (LFW, CFP-FP, AgeDB-30, ...).
        interval (int): Iterations between evaluations.
        batch_size (int): Images per forward.
        flip (bool): Add the mirrored image's feature (the standard protocol).
        image_size (int, optional): Resize the stored faces (for networks with other inputs).

    The sets are read before the first iteration (rank 0), so a missing or corrupt file stops
    the run at once, with an error naming it, instead of at the first evaluation. Results go
    to the log, to the message hub as scalars ``verification/<set>`` and as the info dict
    ``face_verification`` (which ``FaceExportHook`` stores in the checkpoint).
    """

    priority = 'NORMAL'

    def __init__(self, bins: Sequence[str], interval: int = 2000, batch_size: int = 128, flip: bool = True,
                 image_size: Optional[int] = None):
        if interval < 1:
            raise ValueError(f'interval must be >= 1, got {interval}')
        missing = [b for b in bins if not os.path.isfile(b)]
        if missing:
            raise FileNotFoundError(f'verification sets not found: {missing}')
        self.bins = list(bins)
        self.interval = interval
        self.batch_size = batch_size
        self.flip = flip
        self.image_size = image_size
        self._sets = None
        self._done_iter = -1

    def before_train(self, runner) -> None:
        self._load_sets()

    @master_only
    def _load_sets(self) -> None:
        from .verification import VerificationSet
        if self._sets is None:
            self._sets = [VerificationSet(path, image_size=self.image_size) for path in self.bins]

    # runner.iter counts finished iterations only after the after_train_iter hooks ran
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.every_n_train_iters(runner, self.interval):
            self._evaluate(runner, runner.iter + 1)

    def after_train(self, runner) -> None:
        if self._done_iter != runner.iter:
            self._evaluate(runner, runner.iter)

    @master_only
    def _evaluate(self, runner, iteration: int) -> None:
        self._done_iter = iteration
        self._load_sets()
        backbone = _unwrap(runner).backbone
        results: Dict[str, dict] = {}
        for vset in self._sets:
            res = vset.evaluate(backbone, batch_size=self.batch_size, flip=self.flip)
            results[vset.name] = res
            runner.message_hub.update_scalar(f'verification/{vset.name}', res['accuracy'])
            runner.logger.info(f'iter {iteration}: {vset.name} verification accuracy {res["accuracy"]:.2f} '
                               f'+- {res["std"]:.2f}% ({len(vset.issame)} pairs, 10 folds)', extra=CONSOLE)
        runner.message_hub.update_info(VERIFICATION_INFO_KEY, dict(iter=iteration, results=results))


@HOOKS.register_module()
class FaceExportHook(Hook):
    """Every ``interval`` iterations and after training write, under ``work_dir``, the
    shared checkpoint ``<out_name>.safetensors`` of the embedding network (model name
    ``face_toponet``; ``face.model.load_face_checkpoint`` rebuilds it) with the latest
    verification results in its metadata, plus ``topology.{json,npz}``, ``adjacency.png``
    and ``alpha_hist.png`` (``backbones.checkpoint.export_run``)."""

    priority = 'BELOW_NORMAL'  # after the verification of the same iteration

    def __init__(self, out_name: str = 'toponet_face', interval: int = 2000, pictures: bool = True):
        self.out_name = out_name
        self.interval = interval
        self.pictures = pictures
        self._exported_iter = -1

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.every_n_train_iters(runner, self.interval):
            self._export(runner, runner.iter + 1)

    def after_train(self, runner) -> None:
        if self._exported_iter != runner.iter:
            self._export(runner, runner.iter)

    @master_only
    def _export(self, runner, iteration: int) -> None:
        from backbones.checkpoint import export_run
        self._exported_iter = iteration
        model = _unwrap(runner)
        verification = runner.message_hub.get_info(VERIFICATION_INFO_KEY) or {}
        meta = dict(task='face', iter=iteration, verification=verification, experiment=runner.experiment_name,
                    num_classes=model.head.num_classes, margins=list(model.head.margins), scale=model.head.scale)
        path = export_run(runner.work_dir, self.out_name, model.backbone, 'face_toponet', model.model_kwargs, meta,
                          title=f'face TopoNet, iteration {iteration}', pictures=self.pictures)
        runner.logger.info(f'exported {path}', extra=CONSOLE)
