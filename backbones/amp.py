"""Mixed precision, one rule for every task: autocast to bfloat16 where the device runs it
natively (every CPU torch build; CUDA GPUs from Ampere, compute capability 8.0, on), else to
float16 (older GPUs), whose narrow exponent range needs loss scaling when training.

* ``amp_dtype(device)``: that dtype for a ``torch.device`` or device string.
* ``autocast(device, enabled)``: ``torch.autocast`` with it (a no-op context when disabled),
  for evaluation and feature extraction outside mmengine's loops.
* ``use_runner_amp(cfg, device)``: the settings a config needs for mmengine's Runner: the
  mixed-precision optimizer wrapper (``backbones.mmengine_optim``, which also runs on CPU)
  with that dtype, loss scaling only for float16, and autocast in the validation and test
  loops.

Example:
    >>> amp_dtype('cpu')
    torch.bfloat16
    >>> with autocast('cpu'):
    ...     torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype
    torch.bfloat16
"""
from __future__ import annotations

import contextlib
from typing import Union

import torch

__all__ = ['amp_dtype', 'autocast', 'use_runner_amp']

DeviceLike = Union[str, torch.device]


def _device(device: DeviceLike) -> torch.device:
    device = torch.device(device)
    if device.type == 'cuda' and device.index is None and torch.cuda.is_available():
        device = torch.device('cuda', torch.cuda.current_device())
    return device


def amp_dtype(device: DeviceLike) -> torch.dtype:
    """``torch.bfloat16`` where ``device`` runs it natively, else ``torch.float16``."""
    device = _device(device)
    if device.type == 'cuda':
        with torch.cuda.device(device):
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else torch.float16
    return torch.bfloat16


def autocast(device: DeviceLike, enabled: bool = True):
    """``torch.autocast`` on ``device``'s type with ``amp_dtype(device)``; a null context when
    not ``enabled``."""
    if not enabled:
        return contextlib.nullcontext()
    device = _device(device)
    return torch.autocast(device.type, dtype=amp_dtype(device))


_AMP_WRAPPERS = {'OptimWrapper': 'DeviceAmpOptimWrapper', 'AmpOptimWrapper': 'DeviceAmpOptimWrapper',
                 'TopologySparsityOptimWrapper': 'TopologySparsityAmpOptimWrapper'}
_LOOPS = {'val_cfg': ('ValLoop',), 'test_cfg': ('TestLoop',)}


def use_runner_amp(cfg, device: DeviceLike) -> torch.dtype:
    """Switch an mmengine config to mixed precision on ``device`` (the device its Runner will
    use); returns the autocast dtype.

    The optimizer wrapper becomes its mixed-precision twin (``OptimWrapper`` and mmengine's
    ``AmpOptimWrapper`` -> ``DeviceAmpOptimWrapper``, ``TopologySparsityOptimWrapper`` ->
    ``TopologySparsityAmpOptimWrapper``) with ``dtype`` set unless the config sets one; a
    bfloat16 run gets no loss scaling unless the config asks for it. mmengine's validation and
    test loops get ``fp16=True`` (autocast), and the process's default CUDA autocast dtype, which
    those loops use, becomes ``dtype``. A config's own wrapper or loop types are left alone.
    """
    from . import mmengine_optim  # noqa: F401  (registers the wrappers)
    dtype = amp_dtype(device)
    name = str(dtype).split('.')[-1]
    wrapper = cfg.get('optim_wrapper')
    if wrapper:
        wrapper_type = wrapper.get('type', 'OptimWrapper')
        wrapper.type = _AMP_WRAPPERS.get(wrapper_type, wrapper_type)
        wrapper.setdefault('dtype', name)
        if wrapper.dtype == 'bfloat16':
            wrapper.setdefault('loss_scale', dict(enabled=False))
    for key, types in _LOOPS.items():
        loop = cfg.get(key)
        if isinstance(loop, dict) and loop.get('type', types[0]) in types:
            loop['fp16'] = True
    if torch.device(device).type == 'cuda':
        torch.set_autocast_dtype('cuda', dtype)
    return dtype
