"""Hooks every mmengine run of this project gets (classification, detection, face).

* ``ProgressBarHook``: the console while a run works: one bar over all training
  iterations (epoch, loss, learning rate, rate, ETA), one per validation and test pass, and
  the validation metrics; plain progress lines instead of bars when the console is not a
  terminal (``backbones.console`` keeps the rest of mmengine's logging in the log file).
* ``NonFiniteLossHook``: stops training at the first iteration whose loss terms are not
  finite, before any checkpoint or export of that state is written.
* ``SafeCheckpointHook``: mmengine's ``CheckpointHook`` with safe saves: weights are checked
  finite first, the ``.pth`` is written to a temporary file and renamed (a killed or failed
  save leaves no half-written checkpoint), ``last_checkpoint`` is replaced atomically, and
  ``max_keep_ckpts`` removes old checkpoints only after the new one is complete.
* ``WorkDirLockHook``: one training run per work dir (``backbones.mmengine_runner.WorkDirLock``).
* ``ResumeCheckpointHook``: ``--resume`` skips a truncated or corrupt latest checkpoint for
  the newest good one, with a warning.

``backbones.mmengine_runner.build_runner_cfg`` adds them all to every config (the checkpoint
hook replacing mmengine's), so no config can forget them.
"""
from __future__ import annotations

import glob
import math
import os
import re
from collections import deque
from typing import Optional

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS

from .errors import InputError

__all__ = ['ProgressBarHook', 'NonFiniteLossHook', 'SafeCheckpointHook', 'WorkDirLockHook', 'ResumeCheckpointHook']


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """What a run shows on the console while it works: one progress bar per phase.

    * training: one bar over all training iterations (every epoch of an epoch-based loop;
      a resumed run's bar starts where it left off), with the epoch, the loss (mean of the
      last 10 iterations), the learning rate, the rate and the ETA;
    * validation and test: one bar per pass, and after each validation one console line
      with its metrics (``validation after epoch 3: accuracy/top1 91.2``).

    Bars are drawn on the console's stream (mmengine's console handler: stdout) when it is a
    terminal; while one is open, console logging goes through ``tqdm.write``
    (``backbones.console.logging_through_bars``), so a warning never lands in the middle of a
    bar. Anywhere else (a log file, a pipe) training progress is ``lines`` plain lines
    (every ``1/lines`` of the iterations, and the last one) with the same figures, so a
    redirected log has no carriage returns. Console lines go through the run's logger marked
    ``backbones.console.CONSOLE``: they are in the log file too. Rank 0 only.

    Args:
        lines (int): Progress lines of a training run off a terminal.
    """

    priority = 'VERY_LOW'

    def __init__(self, lines: int = 10):
        if lines < 1:
            raise InputError(f'ProgressBarHook lines={lines}', 'custom_hooks', 'lines >= 1')
        self.lines = int(lines)
        self._bars = {}  # phase -> tqdm bar (terminal only)
        self._redirect = None  # console logging through tqdm.write, while a bar is open
        self._train = None  # the training phase: total iterations, first iteration, start time

    # -- console -----------------------------------------------------------------------------
    @staticmethod
    def _shows(runner) -> bool:
        return runner.rank == 0

    @staticmethod
    def _say(runner, message: str) -> None:
        from .console import CONSOLE
        runner.logger.info(message, extra=CONSOLE)

    def _open(self, runner, phase: str, total: int, initial: int = 0, desc: Optional[str] = None) -> None:
        from contextlib import ExitStack

        from tqdm import tqdm

        from .console import console_stream, is_terminal, logging_through_bars
        self._close(phase)
        stream = console_stream(runner.logger)
        if not self._shows(runner) or not is_terminal(stream) or total <= 0:
            return
        if self._redirect is None:
            self._redirect = ExitStack()
            self._redirect.enter_context(logging_through_bars(runner.logger))
        nested = bool(self._bars)  # a validation pass inside training: below the training bar
        self._bars[phase] = tqdm(total=total, initial=initial, desc=desc or phase, unit='it', dynamic_ncols=True,
                                 leave=not nested, position=1 if nested else None, mininterval=0.5, file=stream)

    def _close(self, phase: str) -> None:
        bar = self._bars.pop(phase, None)
        if bar is not None:
            bar.close()
        if not self._bars and self._redirect is not None:
            redirect, self._redirect = self._redirect, None
            redirect.close()

    # -- training ----------------------------------------------------------------------------
    def _figures(self, runner) -> dict:
        """Epoch, smoothed loss and learning rate of the iteration just trained."""
        hub = runner.message_hub
        figures = {}
        if not _is_iter_based(runner):
            figures['epoch'] = f'{runner.epoch + 1}/{runner.max_epochs}'
        loss = hub.log_scalars.get('train/loss')
        if loss is not None:
            figures['loss'] = f'{loss.mean(10):.4g}'
        lr = hub.log_scalars.get('train/lr')
        if lr is None:  # several optimizers: 'train/<name>.lr'
            lr = next((buffer for key, buffer in hub.log_scalars.items()
                       if key.startswith('train/') and key.endswith('.lr')), None)
        if lr is not None:
            figures['lr'] = f'{lr.current():.3g}'
        return figures

    def before_train(self, runner) -> None:
        import time
        total, start = runner.max_iters, runner.iter
        self._train = dict(total=total, start=start, time=time.time())
        if start >= total:  # a finished run resumed
            if self._shows(runner):
                self._say(runner, f'training finished earlier ({start:,} of {total:,} iterations): nothing to train')
            return
        if self._shows(runner):
            epochs = '' if _is_iter_based(runner) else f' ({runner.max_epochs} epochs)'
            where = f', from iteration {start:,}' if start else ''
            self._say(runner, f'training: {total:,} iterations{epochs}{where}; logs in {runner.log_dir}')
        self._open(runner, 'train', total, initial=start, desc='train')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self._shows(runner) or self._train is None:
            return
        figures = self._figures(runner)
        bar = self._bars.get('train')
        if bar is not None:
            bar.set_postfix(figures, refresh=False)
            bar.update(1)
            return
        done, state = runner.iter + 1, self._train
        step = max(1, math.ceil(state['total'] / self.lines))
        if done % step and done != state['total']:
            return
        self._say(runner, self._progress_line(done, state, figures))

    @staticmethod
    def _progress_line(done: int, state: dict, figures: dict) -> str:
        import time

        from tqdm import tqdm
        total = state['total']
        elapsed = max(time.time() - state['time'], 1e-9)
        rate = (done - state['start']) / elapsed
        eta = (total - done) / rate if rate > 0 else float('inf')
        parts = [f'train {100 * done / total:3.0f}% {done:,}/{total:,}']
        parts += [f'{key} {value}' for key, value in figures.items()]
        parts.append(f'{rate:.2f} it/s' if rate >= 1 or rate == 0 else f'{1 / rate:.2f} s/it')
        parts.append(f'elapsed {tqdm.format_interval(elapsed)}')
        if done < total:
            parts.append(f'ETA {tqdm.format_interval(eta) if math.isfinite(eta) else "?"}')
        return ' | '.join(parts)

    def after_train(self, runner) -> None:
        self._close('train')
        self._train = None

    # -- validation and test -----------------------------------------------------------------
    def before_val_epoch(self, runner) -> None:
        self._open(runner, 'val', len(runner.val_dataloader), desc='validation')

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        bar = self._bars.get('val')
        if bar is not None:
            bar.update(1)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._close('val')
        if not self._shows(runner) or not metrics:
            return
        if self._train is None:
            when = ''
        elif _is_iter_based(runner):
            when = f' at iteration {runner.iter:,}'
        else:
            when = f' after epoch {runner.epoch}'
        values = ', '.join(f'{name} {value:.4g}' if isinstance(value, float) else f'{name} {value}'
                           for name, value in metrics.items())
        self._say(runner, f'validation{when}: {values}')

    def before_test_epoch(self, runner) -> None:
        self._open(runner, 'test', len(runner.test_dataloader), desc='test')

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        bar = self._bars.get('test')
        if bar is not None:
            bar.update(1)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._close('test')


def _last_good_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``last_checkpoint`` names, if there is one (for error messages)."""
    try:
        with open(os.path.join(work_dir, 'last_checkpoint')) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _kept_note(work_dir: str) -> str:
    last = _last_good_checkpoint(work_dir)
    return (f'the last good checkpoint, {last}, is kept (continue from it with --resume)' if last
            else 'no checkpoint had been written yet')


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training when a loss term is NaN or infinite.

    After every training iteration the loss terms of the model's outputs (the keys with
    ``loss`` in them, the ones mmengine sums) are checked on their device, with a single
    host sync for all of them; the terms are scalars, and mmengine's logging syncs on each
    of them anyway. A non-finite term raises ``InputError`` naming the iteration and the
    terms (``loss_cls=nan``). The hook runs before the checkpoint, export and evaluation
    hooks of the same iteration, and the error ends the run before the epoch's or
    iteration's checkpoint and export: the last ones written hold finite weights. Under AMP
    an overflowing forward is such a term too (dynamic loss scaling skips steps whose
    gradients overflow, not losses that do).
    """

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not isinstance(outputs, dict):
            return
        terms = {k: v for k, v in outputs.items() if 'loss' in k and isinstance(v, (torch.Tensor, float, int))}
        if not terms:
            return
        tensors = [v.detach() for v in terms.values() if isinstance(v, torch.Tensor)]
        finite = all(math.isfinite(v) for v in terms.values() if not isinstance(v, torch.Tensor))
        if tensors:
            finite &= bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())
        if finite:
            return
        values = {k: (v.detach().float().mean().item() if isinstance(v, torch.Tensor) else float(v))
                  for k, v in terms.items()}
        bad = ', '.join(f'{k}={v}' for k, v in values.items() if not math.isfinite(v))
        where = f'training iteration {runner.iter + 1}'
        if not _is_iter_based(runner):
            where += f', epoch {runner.epoch + 1} batch {batch_idx + 1}'
        error = InputError(f'non-finite loss {bad}', where,
                           'finite losses: lower the learning rate (optim_wrapper.optimizer.lr) or clip gradients '
                           f'(optim_wrapper.clip_grad); nothing of this state was saved, '
                           f'{_kept_note(runner.work_dir)}')
        runner.logger.error(str(error))
        raise error


def _is_iter_based(runner) -> bool:
    from mmengine.runner import IterBasedTrainLoop
    return isinstance(runner.train_loop, IterBasedTrainLoop)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments), with saves that never lose the last
    good checkpoint:

    * a model with a NaN or infinite weight or buffer is not saved: ``InputError`` names
      the tensors (a run whose step made the weights non-finite, even with a finite loss);
    * the ``.pth`` is written under a temporary name (``.epoch_3.pth.<pid>.tmp``), flushed
      to disk and renamed, so ``epoch_*.pth``/``iter_*.pth`` are always complete files; a
      failed write (full disk, unwritable folder) removes the temporary file and raises
      ``InputError`` naming the checkpoint path;
    * ``last_checkpoint`` is replaced atomically, after the rename;
    * ``max_keep_ckpts`` removes the oldest checkpoints only after the new one and
      ``last_checkpoint`` are on disk (mmengine removes them first).

    Temporary files left by a killed run are removed when training starts (the work dir
    lock is held by then). Checkpoints to other storage backends than local files are saved
    as mmengine does.
    """

    _TEMPORARY = re.compile(r'^\.(.+)\.\d+\.tmp$')

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self._local() and is_main_process():
            for path in glob.glob(os.path.join(glob.escape(self.out_dir), '.*.tmp')):
                match = self._TEMPORARY.match(os.path.basename(path))
                if match and re.fullmatch(r'(epoch|iter)_\d+\.pth', match.group(1)) and os.path.isfile(path):
                    os.unlink(path)
                    runner.logger.info(f'removed {path}, a checkpoint a killed run had not finished writing')

    def _local(self) -> bool:
        from mmengine.fileio import LocalBackend
        return isinstance(getattr(self, 'file_backend', None), LocalBackend)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not self._local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        from .checkpoint import non_finite_tensors
        from .io_utils import atomic_write_text

        filename = self.filename_tmpl.format(step)
        path = os.path.join(self.out_dir, filename)
        model = getattr(runner.model, 'module', runner.model)
        bad = non_finite_tensors(model.state_dict())
        if bad:
            more = f' and {len(bad) - 3} more' if len(bad) > 3 else ''
            error = InputError(f'non-finite values (NaN or inf) in model tensor {", ".join(bad[:3])}{more}', path,
                               'finite weights: training diverged, so this checkpoint was not written; '
                               + _kept_note(runner.work_dir))
            runner.logger.error(str(error))
            raise error

        # The message hub is saved inside the checkpoint: update it first, as mmengine does,
        # so that a resumed run keeps rotating the same files.
        removed = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            kept = list(self.keep_ckpt_ids) + [step]
            removed, kept = kept[:-self.max_keep_ckpts], kept[-self.max_keep_ckpts:]
            self.keep_ckpt_ids = deque(kept, self.max_keep_ckpts)
            runner.message_hub.update_info('keep_ckpt_ids', kept)
        self.last_ckpt = path
        runner.message_hub.update_info('last_ckpt', path)

        temporary = os.path.join(self.out_dir, f'.{filename}.{os.getpid()}.tmp')
        try:
            runner.save_checkpoint(self.out_dir, os.path.basename(temporary), self.file_client_args,
                                   save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
                                   meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
            if not is_main_process():  # runner.save_checkpoint writes on rank 0 only
                return
            with open(temporary, 'rb+') as f:
                os.fsync(f.fileno())
            os.replace(temporary, path)
            atomic_write_text(os.path.join(runner.work_dir, 'last_checkpoint'), path)
        except OSError as err:
            if os.path.exists(temporary):
                os.unlink(temporary)
            error = InputError(f'cannot write the checkpoint: {err.strerror or err}', path,
                               'a writable work dir with free space (see --work-dir); '
                               + _kept_note(runner.work_dir))
            runner.logger.error(str(error))
            raise error from err
        for old in removed:
            old_path = os.path.join(self.out_dir, self.filename_tmpl.format(old))
            if old_path != path and os.path.isfile(old_path):
                os.unlink(old_path)


def _training(runner) -> bool:
    """Whether ``runner`` is in ``train()`` (``before_run`` is also called by ``val``/``test``)."""
    from mmengine.runner import BaseLoop
    return isinstance(getattr(runner, '_train_loop', None), BaseLoop)


@HOOKS.register_module()
class WorkDirLockHook(Hook):
    """Holds the work dir's lock (``train.lock``, ``backbones.mmengine_runner.WorkDirLock``)
    while a run trains, on rank 0 only: a second training run in the same work dir refuses
    to start with an error naming this run's PID and host. Taken first thing in
    ``before_run`` (before the resume checkpoint is read and old checkpoints are rotated),
    released after the run; a run that dies leaves a stale lock the next run takes over."""

    priority = 'HIGHEST'

    def __init__(self):
        self._lock = None

    def before_run(self, runner) -> None:
        from .mmengine_runner import WorkDirLock
        if _training(runner) and is_main_process():
            self._lock = WorkDirLock(runner.work_dir)
            self._lock.acquire(warn=runner.logger.warning)

    def after_run(self, runner) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


@HOOKS.register_module()
class ResumeCheckpointHook(Hook):
    """Picks the checkpoint a resumed run continues from, before mmengine loads it.

    With ``resume`` and no ``load_from`` (``--resume``): the checkpoint ``last_checkpoint``
    names when it is complete and loadable, otherwise the newest good ``epoch_N.pth`` /
    ``iter_N.pth`` of the work dir, with a warning naming the skipped file and why
    (``backbones.mmengine_runner.find_resume_checkpoint``); ``InputError`` naming the file
    when none is good. With an explicit checkpoint (``--resume CKPT``) that one must be good:
    otherwise ``InputError`` naming it, never a silent fallback.
    """

    priority = 'VERY_HIGH'  # after WorkDirLockHook, before mmengine's load_or_resume

    def before_run(self, runner) -> None:
        from .mmengine_runner import checkpoint_problem, find_resume_checkpoint
        if not (_training(runner) and runner._resume):
            return
        if runner._load_from is None:
            path = find_resume_checkpoint(runner.work_dir, warn=runner.logger.warning)
            if path is not None:
                runner._load_from = path
            return
        problem = checkpoint_problem(runner._load_from)
        if problem is not None:
            raise InputError(f'cannot resume from this checkpoint: {problem}', runner._load_from,
                             'a complete checkpoint written by a training run of this project')
