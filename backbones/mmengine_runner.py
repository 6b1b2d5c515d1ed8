"""Shared mmengine Runner set-up for every task's training tool.

* ``torch.load`` in torch >= 2.6 only unpickles allow-listed types. mmengine 0.10.7 saves
  its resume checkpoints with ``torch.save`` and loads them with a plain ``torch.load``, so
  a resume fails on its own message-hub and numpy objects. We allow-list exactly those
  types (``allow_mmengine_checkpoint_globals``) and keep ``weights_only`` on. mmengine's
  ``HistoryBuffer`` also pickles its class-level statistics functions through
  ``builtins.getattr``, which must never be allow-listed (it reaches any attribute of any
  allowed object); we save buffers without them instead, and ``HistoryBuffer.__setstate__``
  re-registers the defaults on load. Checkpoints written by an unpatched mmengine therefore
  still fail to resume, with torch's error naming ``getattr``.
* Under ``torchrun`` (WORLD_SIZE > 1) the launcher defaults to ``pytorch``. Without CUDA the
  process group uses gloo, and we open it ourselves from torchrun's environment before the
  Runner exists: mmengine 0.10.7's pytorch launcher calls ``torch.cuda.set_device`` first,
  which fails on CPU-only machines; given an initialised group it uses that one.
* Every run is guarded (``build_runner_cfg`` adds the hooks of ``backbones.mmengine_hooks``):
  a non-finite loss stops training before anything of that state is saved; checkpoints
  are written atomically, with finite weights only, and ``max_keep_ckpts`` never removes
  the last good one; ``--cfg-options`` keys and values are checked against the config
  (``check_cfg_options``); one training run per work dir (``WorkDirLock``); ``--resume``
  skips a truncated or corrupt latest checkpoint (``find_resume_checkpoint``).
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .errors import InputError

__all__ = ['allow_mmengine_checkpoint_globals', 'build_runner_cfg', 'check_cfg_options', 'find_resume_checkpoint',
           'checkpoint_problem', 'WorkDirLock', 'train_from_command_line', 'train_parser']


def _history_buffer_state(self) -> dict:
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)  # functions: pickled via getattr, see module docstring
    return state


def allow_mmengine_checkpoint_globals() -> None:
    """Allow-list the non-tensor types found in mmengine 0.10.7 resume checkpoints."""
    import collections

    import numpy as np
    import torch
    from mmengine.logging import HistoryBuffer

    HistoryBuffer.__getstate__ = _history_buffer_state
    safe = [HistoryBuffer, collections.OrderedDict, np.dtype, np.ndarray]
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    safe += [_reconstruct, scalar]
    # numpy >= 1.25 pickles dtypes through their classes (numpy.dtypes.Float64DType, ...)
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        safe += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith('DType')]
    torch.serialization.add_safe_globals(safe)


# Top-level keys mmengine's Runner (``from_cfg``, ``train``) and Config read although a
# config may leave them out; any other top-level key must exist in the config.
_RUNNER_KEYS = frozenset({
    'model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'train_cfg', 'val_cfg', 'test_cfg',
    'auto_scale_lr', 'optim_wrapper', 'param_scheduler', 'val_evaluator', 'test_evaluator', 'default_hooks',
    'custom_hooks', 'data_preprocessor', 'load_from', 'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level',
    'visualizer', 'default_scope', 'randomness', 'experiment_name', 'model_wrapper_cfg', 'compile',
    'activation_checkpointing', 'efficient_conv_bn_eval', 'custom_imports', 'runner_type'})
# A new key this close (difflib ratio) to an existing key beside it is taken for a typo of it.
_TYPO_CUTOFF = 0.8


def _config_paths(node, prefix: str = '') -> List[str]:
    """Every dotted key path of a config tree (list entries by index)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, (list, tuple)) else ()
    paths = []
    for key, value in items:
        path = f'{prefix}{key}'
        paths.append(path)
        paths += _config_paths(value, path + '.')
    return paths


def _kind(value) -> str:
    if value is None:
        return 'None'
    if isinstance(value, bool):
        return 'a bool'
    if isinstance(value, (int, float)):
        return 'a number'
    if isinstance(value, str):
        return 'a string'
    if isinstance(value, (list, tuple)):
        return 'a list'
    if isinstance(value, dict):
        return 'a dict'
    return type(value).__name__


def check_cfg_options(cfg, options: Dict[str, object], where: str = '--cfg-options') -> None:
    """Check ``--cfg-options`` against the loaded config before they are merged into it.

    The rule:

    * a key whose full path exists must get a value of the same kind: a number for a
      number (ints where floats are, and floats where ints are), a bool for a bool, a
      string for a string, a list or tuple for a list or tuple, a dict for a dict; ``None``
      is accepted anywhere (mmengine's "unset": ``load_from=None``, ``transform=None``, a
      disabled default hook), and any value where the default is ``None``;
    * a key may add *one new entry and anything below it* under an existing dict (the
      keyword arguments a config leaves at their defaults: ``model.backbone.drop_path_rate``,
      ``optim_wrapper.clip_grad.max_norm``, ``default_hooks.checkpoint.save_best``,
      ``env_cfg.mp_cfg.mp_start_method``), unless the new entry is a near-miss of a key
      already there (difflib ratio >= 0.8: ``train_cfg.max_epoch`` for ``max_epochs``),
      which is a typo;
    * a new top-level key must be one mmengine's Runner reads (``model_wrapper_cfg``,
      ``load_from``, ``compile``...), since nothing else reads it;
    * list entries are addressed by an index within the list, and a key cannot pass
      through a value that is not a dict or a list.

    A key breaking the rule raises ``InputError`` naming it and the nearest existing keys.
    A key that really is new but this close to an existing one can go into a config file
    that inherits this one (config files are not checked).
    """
    import difflib

    tree = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
    paths = None
    for key, value in options.items():
        parts = str(key).split('.')
        node = tree
        for depth, part in enumerate(parts):
            here = '.'.join(parts[:depth])
            if isinstance(node, (list, tuple)):
                if not part.isdigit() or int(part) >= len(node):
                    raise InputError(f'unknown config key {key!r}', where,
                                     f'{here} is a list of {len(node)} entries: an index 0..{len(node) - 1} after it')
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise InputError(f'config key {key!r} goes below {here}, which is {_kind(node)} ({node!r})', where,
                                 f'a key ending at {here}, or one below a dict')
            if part in node:
                node = node[part]
                continue
            close = difflib.get_close_matches(part, [str(k) for k in node], n=3, cutoff=_TYPO_CUTOFF)
            if depth == 0 and part in _RUNNER_KEYS:
                break  # a Runner setting the config leaves at its default
            if depth > 0 and not close:
                break  # a new entry under an existing dict: an argument left at its default
            paths = paths if paths is not None else _config_paths(tree)
            nearest = difflib.get_close_matches(str(key), paths, n=3, cutoff=0.6)
            nearest = nearest or ['.'.join(parts[:depth] + [c]) for c in close]
            place = f'{here} has no key {part!r}' if depth else f'the config has no top-level key {part!r}'
            raise InputError(f'unknown config key {key!r}', where,
                             f'{place}; nearest existing keys: {", ".join(nearest) if nearest else "none"}')
        else:
            _check_option_type(key, node, value, where)


def _check_option_type(key: str, default, value, where: str) -> None:
    if value is None or default is None:
        return
    same = (isinstance(default, bool) == isinstance(value, bool)
            and (not isinstance(default, (int, float)) or isinstance(value, (int, float)))
            and (not isinstance(default, str) or isinstance(value, str))
            and (not isinstance(default, (list, tuple)) or isinstance(value, (list, tuple)))
            and (not isinstance(default, dict) or isinstance(value, dict)))
    if not same:
        raise InputError(f'config key {key!r} is given {_kind(value)} ({value!r})', where,
                         f'{_kind(default)}, like its value in the config ({default!r})')


def checkpoint_problem(path: str) -> Optional[str]:
    """Why the mmengine checkpoint ``path`` cannot be resumed from, or ``None`` when it can:
    missing, truncated or corrupt (the zip archive ``torch.save`` writes is read through and
    its CRCs checked), not loadable with ``torch.load(weights_only=True)``, not an mmengine
    checkpoint, or holding non-finite weights."""
    import zipfile

    import torch

    from .checkpoint import non_finite_tensors
    if not os.path.isfile(path):
        return 'the file does not exist'
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
        if broken is not None:
            return f'corrupt: the CRC of its record {broken} does not match'
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f'truncated or corrupt: {err}'
    allow_mmengine_checkpoint_globals()
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 (whatever torch raises, the file cannot be resumed from)
        return f'cannot be loaded: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}'
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get('state_dict'), dict) \
            or 'meta' not in checkpoint:
        return 'not an mmengine checkpoint (no meta and state_dict)'
    bad = non_finite_tensors(checkpoint['state_dict'])
    if bad:
        return f'non-finite weights ({", ".join(bad[:3])})'
    return None


def _checkpoint_step(name: str) -> Optional[Tuple[str, int]]:
    import re
    match = re.fullmatch(r'(epoch|iter)_(\d+)\.pth', name)
    return (match.group(1), int(match.group(2))) if match else None


def find_resume_checkpoint(work_dir: str, warn: Callable[[str], None] = print) -> Optional[str]:
    """The checkpoint ``--resume`` continues from: the one ``work_dir/last_checkpoint``
    names when it is complete and loadable (``checkpoint_problem``); otherwise, with a
    warning through ``warn`` per skipped file, the newest good ``epoch_N.pth`` /
    ``iter_N.pth`` of ``work_dir`` (also when ``last_checkpoint`` names a file in a work dir
    that has since moved). ``None`` without ``last_checkpoint`` (mmengine starts afresh);
    ``InputError`` naming ``last_checkpoint``'s file when no checkpoint is good."""
    marker = os.path.join(work_dir, 'last_checkpoint')
    if not os.path.isfile(marker):
        return None
    with open(marker) as f:
        named = f.read().strip()
    candidates = [named] if named else []
    if named and os.path.join(work_dir, os.path.basename(named)) != named:
        candidates.append(os.path.join(work_dir, os.path.basename(named)))
    kind = (_checkpoint_step(os.path.basename(named)) or ('epoch', 0))[0]
    steps = {name: _checkpoint_step(name) for name in os.listdir(work_dir)}
    others = sorted((name for name, step in steps.items() if step), reverse=True,
                    key=lambda name: (steps[name][0] == kind, steps[name][1]))
    candidates += [os.path.join(work_dir, name) for name in others]
    skipped = []
    for path in dict.fromkeys(candidates):  # unique, in order
        problem = checkpoint_problem(path)
        if problem is None:
            for bad, why in skipped:
                warn(f'not resuming from {bad}: {why}; resuming from {path} instead')
            return path
        skipped.append((path, problem))
    reasons = '; '.join(f'{p}: {why}' for p, why in skipped) or f'{marker} is empty'
    raise InputError(f'no checkpoint to resume from in {work_dir}', named or marker,
                     f'a complete checkpoint ({reasons}); start afresh in another --work-dir, or delete '
                     f'{marker}')


def _launcher_rank() -> int:
    """This process's global rank from the launcher's environment (before any process group)."""
    for name in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK'):
        if os.environ.get(name, '').strip():
            return int(os.environ[name])
    return 0


class WorkDirLock:
    """One training run per work dir: ``<work_dir>/train.lock``, holding the PID, host, start
    time and command of the run that holds it.

    The lock is a POSIX record lock (``fcntl.lockf``) on that file: the operating system
    drops it when the process ends, however it ends, and data-loader workers forked from the
    run do not inherit it. A second run finds the file locked and gets ``InputError``
    naming the first run's PID and host. A lock file left by a run that died (unlocked,
    written on this host) is taken over with a warning; one written on another host is
    refused (that host's run may be alive on a shared file system): delete it once that run
    is gone. Released (the file removed) by ``release`` and at interpreter exit. Without
    ``fcntl`` (Windows) the file's PID decides: a lock whose PID is dead on this host is
    stale.

    ``WorkDirLockHook`` takes it on rank 0 when training starts; ``build_runner_cfg``
    checks it on rank 0 before the Runner writes into the work dir.
    """

    NAME = 'train.lock'
    _held: Dict[str, int] = {}  # lock files this process holds -> their descriptors
    _atexit = False

    def __init__(self, work_dir: str):
        self.work_dir = work_dir
        self.path = os.path.join(work_dir, self.NAME)

    def _key(self) -> str:
        return os.path.realpath(self.path)

    @staticmethod
    def _this_run() -> dict:
        import socket
        import sys
        import time
        return dict(pid=os.getpid(), host=socket.gethostname(), started=time.strftime('%Y-%m-%d %H:%M:%S %z'),
                    command=' '.join(sys.argv))

    @staticmethod
    def _read(fd: int) -> dict:
        import json
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            info = json.loads(os.read(fd, 1 << 16).decode('utf-8', 'replace') or '{}')
        except ValueError:
            return {}
        return info if isinstance(info, dict) else {}

    @staticmethod
    def _pid_alive(pid) -> bool:
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError, TypeError, OverflowError):
            return False
        except PermissionError:
            return True  # alive, another user's
        return True

    def _busy(self, info: dict) -> InputError:
        return InputError(f'another training run is using this work dir: PID {info.get("pid", "?")} on host '
                          f'{info.get("host", "?")}, started {info.get("started", "?")}', self.path,
                          'one run per work dir: wait for that run to end or stop it, or choose another --work-dir')

    def _foreign(self, info: dict) -> InputError:
        return InputError(f'this work dir is locked by PID {info.get("pid", "?")} on host {info.get("host", "?")}, '
                          f'started {info.get("started", "?")}', self.path,
                          'one run per work dir; a run on another host cannot be checked from here: delete the '
                          'lock file once that run has ended, or choose another --work-dir')

    def check(self) -> None:
        """Raise ``InputError`` if another run holds the lock; takes nothing."""
        import socket
        if self._key() in self._held or not os.path.isfile(self.path):
            return
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError:
            return  # unreadable here: acquire() reports it
        try:
            info = self._read(fd)
            if not self._try_lock(fd, info):
                raise self._busy(info)
            if info and info.get('host') != socket.gethostname():
                raise self._foreign(info)
        finally:
            os.close(fd)  # also drops the test lock taken above

    @staticmethod
    def _try_lock(fd: int, info: dict) -> bool:
        try:
            import fcntl
        except ImportError:  # no record locks: the PID decides
            import socket
            return not (info and info.get('host') == socket.gethostname() and WorkDirLock._pid_alive(info.get('pid')))
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def acquire(self, warn: Callable[[str], None] = print) -> None:
        """Take the lock, or raise ``InputError`` naming the run that holds it."""
        import atexit
        import json
        import socket
        if self._key() in self._held:
            return
        for _ in range(5):
            try:
                os.makedirs(self.work_dir, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0), 0o644)
            except OSError as err:
                raise InputError(f'cannot create the work dir lock: {err.strerror or err}', self.path,
                                 'a writable work dir (see --work-dir)') from err
            info = self._read(fd)
            if not self._try_lock(fd, info):
                os.close(fd)
                raise self._busy(info)
            try:  # the file may have been removed (released) between open and lock: lock the new one
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            if info and (info.get('pid'), info.get('host')) != (os.getpid(), socket.gethostname()):
                if info.get('host') != socket.gethostname():
                    os.close(fd)
                    raise self._foreign(info)
                state = 'is no longer running' if not self._pid_alive(info.get('pid')) else 'no longer holds it'
                warn(f'taking over the stale lock {self.path} of PID {info.get("pid")} (started '
                     f'{info.get("started", "?")}): that run {state}')
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(self._this_run()).encode())
            os.fsync(fd)
            self._held[self._key()] = fd
            if not WorkDirLock._atexit:
                atexit.register(WorkDirLock._release_all)
                WorkDirLock._atexit = True
            return
        raise InputError('cannot take the work dir lock: it keeps changing', self.path,
                         'one run per work dir; another run is starting there')

    def release(self) -> None:
        """Remove the lock file and drop the lock (nothing if this process does not hold it)."""
        fd = self._held.pop(self._key(), None)
        if fd is None:
            return
        try:
            if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                os.unlink(self.path)  # while still locked: no one can take the old file meanwhile
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)

    @classmethod
    def _release_all(cls) -> None:
        for key in list(cls._held):
            WorkDirLock(os.path.dirname(key)).release()


def _check_work_dir_writable(work_dir: str) -> None:
    import tempfile
    try:
        os.makedirs(work_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix='.write-test-', dir=work_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputError(f'the work dir is not writable: {err.strerror or err}', work_dir,
                         'a folder this user can create files in (choose one with --work-dir)') from err


# The guards every run gets (backbones.mmengine_hooks); a config cannot forget them.
_GUARD_HOOKS = ('NonFiniteLossHook', 'WorkDirLockHook', 'ResumeCheckpointHook')


def _add_guard_hooks(cfg) -> None:
    from mmengine.hooks import CheckpointHook

    from . import mmengine_hooks  # noqa: F401  (registers the hooks)
    hooks = list(cfg.get('custom_hooks') or [])
    present = {h.get('type') for h in hooks if isinstance(h, dict)}
    hooks += [dict(type=name) for name in _GUARD_HOOKS if name not in present]
    cfg.custom_hooks = hooks
    checkpoint = (cfg.get('default_hooks') or {}).get('checkpoint')
    if isinstance(checkpoint, dict) and checkpoint.get('type') in ('CheckpointHook', CheckpointHook):
        checkpoint['type'] = 'SafeCheckpointHook'


def build_runner_cfg(config: str, work_dir: Optional[str] = None, cfg_options: Optional[dict] = None,
                     resume: bool = False, launcher: Optional[str] = None, amp: bool = False):
    """Load ``config`` and apply the command-line settings every tool shares.

    ``cfg_options`` (``--cfg-options``) are checked against the config first
    (``check_cfg_options``: unknown keys, near-miss typos and values of the wrong kind are
    ``InputError``), the work dir must be writable and, on rank 0, free of another training
    run (``WorkDirLock``). The run-guard hooks of ``backbones.mmengine_hooks`` are added:
    ``NonFiniteLossHook``, ``WorkDirLockHook``, ``ResumeCheckpointHook``, and the config's
    ``CheckpointHook`` becomes a ``SafeCheckpointHook`` with the same arguments; every run
    gets a ``ProgressBarHook`` and the quiet console of ``backbones.console``. ``amp``
    switches the run to mixed precision on its device (``backbones.amp.use_runner_amp``:
    bfloat16 where supported, CPU included).
    """
    import torch
    from mmengine.config import Config

    if not os.path.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    cfg = Config.fromfile(config)
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    if work_dir:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = os.path.join('work_dirs', os.path.splitext(os.path.basename(config))[0])
    _check_work_dir_writable(cfg.work_dir)
    if _launcher_rank() == 0:
        WorkDirLock(cfg.work_dir).check()
    _add_guard_hooks(cfg)
    if launcher is None:
        launcher = 'pytorch' if int(os.environ.get('WORLD_SIZE', '1')) > 1 else 'none'
    cfg.launcher = launcher
    if not torch.cuda.is_available():
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
        if launcher == 'pytorch' and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend='gloo')
        if launcher != 'none' and cfg.get('model_wrapper_cfg') is None:
            # mmengine's default wrapper pins device_ids to LOCAL_RANK, a CUDA device
            cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False)
    if resume:
        cfg.resume = True
        cfg.load_from = None  # the latest good checkpoint in work_dir (ResumeCheckpointHook)
    if amp:  # the device the Runner will use (use_runner_device has hidden or selected GPUs)
        from .amp import use_runner_amp
        use_runner_amp(cfg, 'cuda' if torch.cuda.is_available() else 'cpu')
    from . import resume_state  # registers ResumeStateHook: checkpoints keep the random streams
    hooks = cfg.setdefault('custom_hooks', [])
    if not any(hook.get('type') in ('ResumeStateHook', resume_state.ResumeStateHook) for hook in hooks):
        hooks.append(dict(type='ResumeStateHook'))
    # the console shows progress, warnings and results; the run's log file keeps everything
    from . import console, mmengine_hooks
    console.install()
    if not any(hook.get('type') in ('ProgressBarHook', mmengine_hooks.ProgressBarHook) for hook in hooks):
        hooks.append(dict(type='ProgressBarHook'))
    allow_mmengine_checkpoint_globals()
    return cfg


def train_from_command_line(argv: Optional[Sequence[str]], description: str, config_help: str = 'mmengine config file',
                            imports: Sequence[str] = ()) -> int:
    """The one command line of every task's training tool (``tools/train_{cls,det,face}.py``),
    mmdet's flags: ``CONFIG [--work-dir] [--cfg-options k=v ...] [--resume [CKPT]]
    [--auto-scale-lr] [--amp] [--launcher] [--local-rank] [--device]``, then
    ``build_runner_cfg`` and mmengine's ``Runner.train``. ``imports`` are modules to import
    before the config is read (registrations, config-path lookups). A user error is one
    ``error:`` line and exit status 2 (``backbones.cli.run_main``); the last stdout line is
    a JSON summary (rank 0)."""
    from .cli import run_main
    return run_main(lambda args: _train(args, description, config_help, imports), argv)


def train_parser(description: str, config_help: str = 'mmengine config file'):
    """The parser of ``train_from_command_line``."""
    from . import cli
    parser = cli.make_parser(description)
    cli.add_config(parser, config_help)
    cli.add_work_dir(parser)
    cli.add_cfg_options(parser)
    cli.add_resume(parser)
    cli.add_auto_scale_lr(parser)
    cli.add_amp(parser)
    cli.add_launcher(parser)
    cli.add_device(parser)
    return parser


def _train(argv: Sequence[str], description: str, config_help: str, imports: Sequence[str]) -> int:
    import importlib

    from . import cli
    from .errors import InputError
    args = train_parser(description, config_help).parse_args(argv)
    cli.use_runner_device(args.device, args.launcher)
    from mmengine.runner import Runner
    for module in imports:
        importlib.import_module(module)
    resume_from = None if args.resume in (None, 'auto') else args.resume
    if resume_from is not None and not os.path.isfile(resume_from):
        raise FileNotFoundError(f'checkpoint to resume from not found: {resume_from}')
    cfg = build_runner_cfg(args.config, args.work_dir, args.cfg_options, args.resume is not None, args.launcher,
                           args.amp)
    if resume_from is not None:
        cfg.load_from = resume_from  # with cfg.resume: mmengine resumes from this file, not the latest one
    if args.auto_scale_lr:
        scale = cfg.get('auto_scale_lr')
        if not scale or 'base_batch_size' not in scale:
            raise InputError('--auto-scale-lr needs auto_scale_lr.base_batch_size', args.config,
                             'a config with auto_scale_lr = dict(base_batch_size=N), or '
                             '--cfg-options auto_scale_lr.base_batch_size=N')
        cfg.auto_scale_lr.enable = True
    runner = Runner.from_cfg(cfg)
    from .console import captured_prints
    with captured_prints(runner.logger):  # library chatter (pycocotools) into the log file
        runner.train()
    cli.print_result(dict(work_dir=os.path.abspath(cfg.work_dir), epoch=runner.epoch, iter=runner.iter))
    return 0
