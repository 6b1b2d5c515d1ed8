"""A progress bar for any mmengine run of this project (classification, detection, face).

Epoch-based loops get one bar per epoch, iteration-based loops one bar over all iterations
(starting where a resumed run left off); validation and test runs get their own bars. Bars
appear on rank 0 only and only on a terminal (``disable=None``): redirected logs rely on
mmengine's LoggerHook lines instead.
"""
from __future__ import annotations

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

__all__ = ['ProgressBarHook']


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """tqdm bars for training, validation and test loops."""

    priority = 'VERY_LOW'

    def __init__(self):
        self._bar = None
        self._by_iter = False

    def _open(self, total: int, desc: str, initial: int = 0) -> None:
        from mmengine.dist import get_rank
        from tqdm import tqdm
        self._close()
        if get_rank() == 0:
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit='it', dynamic_ncols=True,
                             leave=self._by_iter, disable=None, mininterval=1.0)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _step(self, outputs=None) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        loss = outputs.get('loss') if isinstance(outputs, dict) else None
        if loss is not None:
            loss = loss.detach().item() if isinstance(loss, torch.Tensor) else float(loss)
            self._bar.set_postfix(loss=f'{loss:.3f}')

    def before_train(self, runner) -> None:
        from mmengine.runner import IterBasedTrainLoop
        self._by_iter = isinstance(runner.train_loop, IterBasedTrainLoop)
        if self._by_iter:
            self._open(runner.max_iters, 'training', initial=runner.iter)

    def before_train_epoch(self, runner) -> None:
        if not self._by_iter:
            self._open(len(runner.train_dataloader), f'epoch {runner.epoch + 1}/{runner.max_epochs}')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._step(outputs)

    def after_train_epoch(self, runner) -> None:
        if not self._by_iter:
            self._close()

    def after_train(self, runner) -> None:
        self._close()

    def before_val_epoch(self, runner) -> None:
        if not self._by_iter:
            self._open(len(runner.val_dataloader), 'validation')

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self._by_iter:
            self._step()

    def after_val_epoch(self, runner, metrics=None) -> None:
        if not self._by_iter:
            self._close()

    def before_test_epoch(self, runner) -> None:
        self._open(len(runner.test_dataloader), 'test')

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._step()

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._close()
