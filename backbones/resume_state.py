"""Random streams in mmengine checkpoints, so that a resumed run continues exactly where the
killed one stopped: with augmentation on, with data-loader workers, in every task.

What decides the numbers of a run after a checkpoint, beyond weights, optimizer and
schedulers, and how each is kept:

* The global generators: torch (CPU, and CUDA when in use), numpy's ``np.random`` and
  Python's ``random``. Transforms draw from them in the main process (``num_workers=0``), the
  model from torch's (dropout, drop-path), and every ``iter(DataLoader)`` takes a base seed
  from torch's. ``ResumeStateHook`` captures them when a checkpoint is written and stores them
  under ``checkpoint['resume_state']`` as tensors, ints and floats (``torch.load`` keeps
  ``weights_only=True``, no new allow-listed types). The training stream then continues from
  exactly that state at a fixed point, in the uninterrupted run as in the resumed one: the
  start of the next epoch (epoch-based loops), or the data fetch of the next iteration
  (iteration-based loops). Whatever ran in between (validation, exports) no longer leaves
  its draws in the training stream, so both runs agree by construction.
* The sampler position. mmengine's ``DefaultSampler`` order is a function of
  ``(seed, epoch)`` (``DistSamplerSeedHook`` sets the epoch) and ``InfiniteSampler`` is a
  generator seeded once; ``IterBasedTrainLoop`` replays the iterations already trained to
  reach the position. Its replay re-runs the transforms and draws from the global
  generators, which is why the restore waits for the first fetch after the replay. The saved
  sampler seed is compared on resume (a run with ``randomness.seed=None`` draws a new one).
* Worker processes. Each worker's torch, numpy and ``random`` seeds are derived from
  ``(seed, epoch, rank, worker id)`` (``seed_worker``; mmengine's default leaves the epoch out
  and repeats every worker's stream each epoch). A persistent worker cannot be reseeded, so in
  epoch-based loops persistent workers are restarted at each epoch. Iteration-based loops
  start their workers once, before any hook runs (mmengine's seeds), and the replay on resume
  passes the workers through the same batches again.

Under ``torchrun`` every rank's generators are gathered before a checkpoint is written (when
a ``CheckpointHook`` is due) and each rank restores its own. ``build_runner_cfg`` adds the
hook to every run. Bit-identical weights also need the same machine, library versions and
thread count, and deterministic kernels (``cudnn_benchmark=False`` on GPU). Epoch-based loops
resume at epoch ends (mmengine restarts a partially trained epoch from its first batch).

Origin: this project. Licence: Apache-2.0.
"""
from __future__ import annotations

import functools
import random
from typing import Optional, Tuple

import numpy as np
import torch
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS

from .errors import InputError

__all__ = ['RESUME_STATE_KEY', 'capture_random_state', 'restore_random_state', 'seed_worker', 'WorkerSeeder',
           'ResumeStateHook']

RESUME_STATE_KEY = 'resume_state'
_FORMAT_VERSION = 1
_SEED_MASK = (1 << 64) - 1


def capture_random_state() -> dict:
    """The global random generators of this process, as tensors and numbers only.

    Returns:
        dict: ``torch`` (CPU generator state), ``cuda`` (one state per visible device, empty
        when CUDA is not in use), numpy's MT19937 ``numpy_keys``/``numpy_pos`` and its cached
        Gaussian, Python's ``random`` state.
    """
    kind, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    if kind != 'MT19937':
        raise RuntimeError(f'numpy global generator is {kind}, expected MT19937')
    version, internal, gauss_next = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return dict(torch=torch.get_rng_state(), cuda=list(cuda),
                numpy_keys=torch.from_numpy(keys.astype(np.int64)), numpy_pos=int(pos),
                numpy_has_gauss=int(has_gauss), numpy_gauss=float(cached_gauss),
                python_version=int(version), python_state=torch.tensor(internal, dtype=torch.int64),
                python_gauss=None if gauss_next is None else float(gauss_next))


def restore_random_state(state: dict, where: str = RESUME_STATE_KEY) -> None:
    """Set the global generators to a ``capture_random_state`` result.

    Raises:
        InputError: ``state`` is not such a result (``where`` names it in the message).
    """
    expected = 'the random state ResumeStateHook stores'
    try:
        torch_state, cuda_states = state['torch'], list(state['cuda'])
        keys = state['numpy_keys'].numpy().astype(np.uint32)
        numpy_state = ('MT19937', keys, int(state['numpy_pos']), int(state['numpy_has_gauss']),
                       float(state['numpy_gauss']))
        python_state = (int(state['python_version']), tuple(int(v) for v in state['python_state'].tolist()),
                        state['python_gauss'])
    except (KeyError, TypeError, AttributeError) as err:
        raise InputError(f'malformed random state ({err!r})', where, expected) from err
    if not isinstance(torch_state, torch.Tensor) or torch_state.dtype != torch.uint8:
        raise InputError('malformed torch generator state', where, expected)
    try:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
        torch.set_rng_state(torch_state)
    except (ValueError, TypeError, RuntimeError) as err:
        raise InputError(f'random state cannot be restored ({err})', where, expected) from err
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) != torch.cuda.device_count():
            raise InputError(f'{len(cuda_states)} CUDA generator states for {torch.cuda.device_count()} devices',
                             where, 'as many visible devices as when the checkpoint was written')
        torch.cuda.set_rng_state_all(cuda_states)


def seed_worker(seed: int, epoch: int, rank: int, worker_id: int) -> None:
    """Seed torch, numpy and ``random`` of a data-loader worker from ``(seed, epoch, rank,
    worker_id)`` (independent streams through numpy's ``SeedSequence``)."""
    words = np.random.SeedSequence([int(seed) & _SEED_MASK, int(epoch), int(rank), int(worker_id)]).generate_state(8)
    torch.manual_seed(int(words[0]) | int(words[1]) << 32)
    random.seed(int(words[2]) | int(words[3]) << 32)
    np.random.seed(words[4:])


class WorkerSeeder:
    """A ``DataLoader.worker_init_fn`` calling ``seed_worker`` with the current ``epoch``
    (the hook sets it before each epoch's workers start; a forked or pickled worker keeps the
    value it started with)."""

    def __init__(self, seed: int, rank: int, epoch: int = 0):
        self.seed, self.rank, self.epoch = int(seed), int(rank), int(epoch)

    def __call__(self, worker_id: int) -> None:
        seed_worker(self.seed, self.epoch, self.rank, worker_id)


class _FetchRestoringIterator:
    """Wraps ``IterBasedTrainLoop.dataloader_iterator``: before fetch number ``n`` (0-based; it
    loads the data of iteration ``n + 1``, replayed ones included) the hook may restore the
    random state saved with the checkpoint of iteration ``n``."""

    def __init__(self, iterator, hook: 'ResumeStateHook'):
        self._iterator = iterator
        self._hook = hook
        self.fetches = 0

    def __iter__(self):
        return self

    def __next__(self):
        self._hook._restore_if_due(0, self.fetches)
        self.fetches += 1
        return next(self._iterator)

    def __getattr__(self, name):  # the wrapped iterator's attributes (mmengine's _epoch, ...)
        if name == '_iterator':
            raise AttributeError(name)
        return getattr(self._iterator, name)


def _train_sampler(loader):
    batch_sampler = getattr(loader, 'batch_sampler', None)
    sampler = getattr(batch_sampler, 'sampler', None)
    return sampler if sampler is not None else getattr(loader, 'sampler', None)


def _is_default_worker_init(fn) -> bool:
    from mmengine.dataset import worker_init_fn
    return fn is None or (isinstance(fn, functools.partial) and fn.func is worker_init_fn)


@HOOKS.register_module()
class ResumeStateHook(Hook):
    """Store the random state in every checkpoint and continue from it on resume (see the
    module docstring). ``build_runner_cfg`` adds it to every run; a config needs nothing.

    Its priority puts its ``after_train_*`` before ``CheckpointHook`` (VERY_LOW), which writes
    the checkpoint, and its ``before_train_epoch`` after ``DistSamplerSeedHook`` (NORMAL).
    """

    priority = 'LOW'

    def __init__(self):
        self._captured: Optional[dict] = None           # the state to store, per rank, with its position
        self._pending: Optional[Tuple[int, int, dict, str]] = None  # (epoch, iter, this rank's state, origin)
        self._loaded_position: Optional[Tuple[int, int]] = None
        self._loaded: Optional[dict] = None
        self._seeder: Optional[WorkerSeeder] = None
        self._by_iter = False

    # --- saving -----------------------------------------------------------------------------
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._checkpoint_due(runner, by_epoch=False):
            self._capture(runner, (runner.epoch, runner.iter + 1))

    def after_train_epoch(self, runner) -> None:
        if self._checkpoint_due(runner, by_epoch=True):
            self._capture(runner, (runner.epoch + 1, runner.iter))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        from mmengine.dist import get_world_size
        meta = checkpoint.get('meta', {})
        position = (int(meta.get('epoch', runner.epoch)), int(meta.get('iter', runner.iter)))
        if self._captured is None or self._captured['position'] != position:
            if get_world_size() > 1:  # a save no CheckpointHook announced: the other ranks' states are unknown
                runner.logger.warning('checkpoint written without the random state of every rank: a run resumed '
                                      'from it restarts the random streams')
                return
            self._capture(runner, position)
        captured = self._captured
        checkpoint[RESUME_STATE_KEY] = dict(
            version=_FORMAT_VERSION, epoch=position[0], iter=position[1], world_size=len(captured['ranks']),
            ranks=captured['ranks'], sampler_seed=captured['sampler_seed'])

    def _checkpoint_due(self, runner, by_epoch: bool) -> bool:
        """Whether a ``CheckpointHook`` writes a checkpoint at this step (its own tests)."""
        for hook in runner.hooks:
            if not isinstance(hook, CheckpointHook) or bool(hook.by_epoch) != by_epoch:
                continue
            if by_epoch:
                due = hook.every_n_epochs(runner, hook.interval, hook.save_begin)
                last = hook.is_last_train_epoch(runner)
            else:
                due = hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
                last = hook.is_last_train_iter(runner)
            if due or (hook.save_last and last):
                return True
        return False

    def _capture(self, runner, position: Tuple[int, int]) -> None:
        from mmengine.dist import all_gather_object, get_rank, get_world_size
        state = capture_random_state()
        ranks = all_gather_object(state) if get_world_size() > 1 else [state]
        seed = getattr(_train_sampler(runner.train_dataloader), 'seed', None)
        self._captured = dict(position=position, ranks=ranks, sampler_seed=None if seed is None else int(seed))
        # The uninterrupted run continues from the stored state too (see the module docstring).
        self._pending = (position[0], position[1], ranks[get_rank()], RESUME_STATE_KEY)

    # --- resuming ---------------------------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta', {})
        self._loaded_position = (int(meta.get('epoch', 0)), int(meta.get('iter', 0)))
        self._loaded = checkpoint.get(RESUME_STATE_KEY)

    def before_train(self, runner) -> None:
        from mmengine.dist import get_rank, get_world_size
        from mmengine.runner import IterBasedTrainLoop
        loop = runner.train_loop
        self._by_iter = isinstance(loop, IterBasedTrainLoop)
        if self._by_iter:
            loop.dataloader_iterator = _FetchRestoringIterator(loop.dataloader_iterator, self)
        loader = runner.train_dataloader
        if getattr(loader, 'num_workers', 0) > 0 and runner.seed is not None:
            if _is_default_worker_init(loader.worker_init_fn):
                self._seeder = WorkerSeeder(runner.seed, get_rank(), runner.epoch)
                loader.worker_init_fn = self._seeder
            else:
                runner.logger.info('train_dataloader has its own worker_init_fn: worker seeds are left to it')

        if self._loaded_position != (runner.epoch, runner.iter) or runner.iter == 0:
            return  # a fresh run, or weights loaded with load_from: nothing to continue
        saved = self._loaded
        where = f'{RESUME_STATE_KEY} of the checkpoint at epoch {runner.epoch}, iteration {runner.iter}'
        if not isinstance(saved, dict) or 'ranks' not in saved:
            runner.logger.warning(f'the checkpoint has no {RESUME_STATE_KEY}: the resumed run restarts the random '
                                  f'streams, so its augmentation differs from an uninterrupted run')
            return
        ranks = saved['ranks']
        if not isinstance(ranks, (list, tuple)) or len(ranks) != get_world_size():
            count = len(ranks) if isinstance(ranks, (list, tuple)) else ranks
            runner.logger.warning(f'the checkpoint holds the random state of {count} processes, this run has '
                                  f'{get_world_size()}: the random streams restart')
            return
        sampler_seed = getattr(_train_sampler(loader), 'seed', None)
        if saved.get('sampler_seed') is not None and sampler_seed != saved['sampler_seed']:
            runner.logger.warning(f'the train sampler is seeded {sampler_seed}, the checkpoint was written with '
                                  f'{saved["sampler_seed"]}: the data order differs from the uninterrupted run '
                                  f'(set randomness.seed)')
        self._pending = (runner.epoch, runner.iter, ranks[get_rank()], where)

    def before_train_epoch(self, runner) -> None:
        if self._by_iter:
            return
        loader = runner.train_dataloader
        if self._seeder is not None:
            self._seeder.epoch = runner.epoch
            if getattr(loader, 'persistent_workers', False) and getattr(loader, '_iterator', None) is not None:
                # restart the persistent workers: a running worker cannot take this epoch's seeds
                loader._iterator = None
        self._restore_if_due(runner.epoch, runner.iter)

    def _restore_if_due(self, epoch: int, iteration: int) -> None:
        if self._pending is None or self._pending[:2] != (epoch, iteration):
            return
        _, _, state, where = self._pending
        self._pending = None
        restore_random_state(state, where)
