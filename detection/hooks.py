"""Hooks of detection runs: the data/model consistency check."""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop

from .checks import check_num_classes

__all__ = ['DetectionDataCheckHook']


@HOOKS.register_module()
class DetectionDataCheckHook(Hook):
    """Before a run, compare the detector head's class count with every built dataset's
    classes and raise ``DetectionDataError`` when they differ. (The datasets themselves
    have been checked against their annotation files by ``CheckedCocoDataset``.)"""

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        for where, attr in (('train', '_train_loop'), ('val', '_val_loop'), ('test', '_test_loop')):
            loop = getattr(runner, attr, None)
            if isinstance(loop, BaseLoop):
                check_num_classes(runner.model, loop.dataloader.dataset.metainfo['classes'], where)
