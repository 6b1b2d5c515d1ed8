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
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

__all__ = ['allow_mmengine_checkpoint_globals', 'build_runner_cfg', 'train_from_command_line']


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


def build_runner_cfg(config: str, work_dir: Optional[str] = None, cfg_options: Optional[dict] = None,
                     resume: bool = False, launcher: Optional[str] = None, amp: bool = False):
    """Load ``config`` and apply the command-line settings every tool shares."""
    import torch
    from mmengine.config import Config

    if not os.path.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = os.path.join('work_dirs', os.path.splitext(os.path.basename(config))[0])
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
        cfg.load_from = None  # the latest checkpoint in work_dir
    if amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        cfg.optim_wrapper.type = {'TopologySparsityOptimWrapper': 'TopologySparsityAmpOptimWrapper',
                                  'OptimWrapper': 'AmpOptimWrapper'}.get(wrapper, wrapper)
    allow_mmengine_checkpoint_globals()
    return cfg


def train_from_command_line(argv: Optional[Sequence[str]], description: str, config_help: str = 'mmengine config file',
                            imports: Sequence[str] = ()) -> int:
    """The one command line of every task's training tool (``tools/train_{cls,det,face}.py``):
    ``CONFIG [--work-dir] [--cfg-options k=v ...] [--resume] [--amp] [--launcher]``, then
    ``build_runner_cfg`` and mmengine's ``Runner.train``. ``imports`` are modules to import
    before the config is read (registrations, config-path lookups)."""
    import argparse
    import importlib

    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help=config_help)
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys: key=value')
    parser.add_argument('--resume', action='store_true', help='resume from the latest checkpoint in work-dir')
    parser.add_argument('--amp', action='store_true', help='mixed precision (AMP optimizer wrapper)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default=None,
                        help='distributed launcher (default: pytorch under torchrun, else none)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from mmengine.runner import Runner
    for module in imports:
        importlib.import_module(module)
    cfg = build_runner_cfg(args.config, args.work_dir, args.cfg_options, args.resume, args.launcher, args.amp)
    Runner.from_cfg(cfg).train()
    return 0
