"""mmengine glue for the topology optimisation: optimizer wrappers that add the sparsity
penalty of ``backbones.sparsity`` to the loss, and a constructor that keeps edge weights
out of weight decay and hands the wrapper its model.

Config (any mmengine Runner: classification, detection, face)::

    custom_imports = dict(imports=['backbones.mmengine_optim'], allow_failed_imports=False)
    optim_wrapper = dict(
        type='TopologySparsityOptimWrapper',        # or 'TopologySparsityAmpOptimWrapper'
        sparsity=dict(mode='adaptive', lam=1e-4),   # 'none' | 'uniform' | 'adaptive'
        constructor='TopologyOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.4, momentum=0.9, nesterov=True, weight_decay=1e-4))

``paramwise_cfg=dict(alpha_decay_mult=1.0)`` puts weight decay back on the edge weights.
The penalty is logged as ``train/loss_sparsity``.

Every config of the project imports this module, so importing it also allow-lists the types
of mmengine's checkpoints for ``torch.load(weights_only=True)``
(``backbones.mmengine_runner.allow_mmengine_checkpoint_globals``): mmengine's and mmdet's own
tools (``tools/test.py``, ``tools/train.py --resume``, ``DetInferencer``) then load the
project's checkpoints with ``weights_only`` kept on.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn
from mmengine.logging import MessageHub
from mmengine.optim import AmpOptimWrapper, DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS

from .mmengine_runner import allow_mmengine_checkpoint_globals
from .sparsity import TopologySparsity

allow_mmengine_checkpoint_globals()

__all__ = ['TopologySparsityOptimWrapper', 'TopologySparsityAmpOptimWrapper', 'DeviceAmpOptimWrapper',
           'TopologyOptimWrapperConstructor']

_SPARSITY_WRAPPERS = ('TopologySparsityOptimWrapper', 'TopologySparsityAmpOptimWrapper')


class _SparsityMixin:
    """Adds ``TopologySparsity(model)`` to the loss before the wrapper's backward."""

    def __init__(self, *args, sparsity=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sparsity = TopologySparsity.from_config(sparsity)
        self._sparsity_model: Optional[nn.Module] = None

    def bind_model(self, model: nn.Module) -> None:
        self._sparsity_model = getattr(model, 'module', model)

    def update_params(self, loss: torch.Tensor, step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        if self.sparsity.active:
            if self._sparsity_model is None:
                raise RuntimeError(
                    f'{type(self).__name__} has no model to regularise: build it with '
                    f"constructor='TopologyOptimWrapperConstructor' or call bind_model(model)")
            penalty = self.sparsity(self._sparsity_model)
            MessageHub.get_current_instance().update_scalar('train/loss_sparsity', float(penalty.detach()))
            loss = loss + penalty
        super().update_params(loss, step_kwargs=step_kwargs, zero_kwargs=zero_kwargs)


@OPTIM_WRAPPERS.register_module()
class TopologySparsityOptimWrapper(_SparsityMixin, OptimWrapper):
    """``OptimWrapper`` with the paper's sparsity constraint on edge weights."""


class _AnyDeviceAmpMixin:
    """mmengine's ``AmpOptimWrapper`` refuses to be built without an accelerator. On CPU
    autocast runs bfloat16, which needs no loss scaling (it has float32's exponent range):
    there the wrapper gets bfloat16 autocast and a disabled ``GradScaler``."""

    def __init__(self, *args, loss_scale='dynamic', dtype=None, use_fsdp=False, **kwargs):
        from mmengine.device import get_device
        if get_device() != 'cpu':
            super().__init__(*args, loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp, **kwargs)
            return
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, None)
        if dtype not in (None, torch.bfloat16):
            raise ValueError(f'optim_wrapper.dtype={dtype}: autocast on CPU runs bfloat16 only')
        OptimWrapper.__init__(self, *args, **kwargs)
        self._scale_update_param = None
        self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)
        self.cast_dtype = torch.bfloat16


@OPTIM_WRAPPERS.register_module()
class DeviceAmpOptimWrapper(_AnyDeviceAmpMixin, AmpOptimWrapper):
    """``AmpOptimWrapper`` that also runs on CPU (bfloat16 autocast)."""


@OPTIM_WRAPPERS.register_module()
class TopologySparsityAmpOptimWrapper(_SparsityMixin, _AnyDeviceAmpMixin, AmpOptimWrapper):
    """``AmpOptimWrapper`` with the paper's sparsity constraint on edge weights; also runs on
    CPU (bfloat16 autocast)."""


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TopologyOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` that exempts edge weights from weight decay
    (``paramwise_cfg.alpha_decay_mult``, default 0) and binds sparsity wrappers to the
    model."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        wrapper_type = optim_wrapper_cfg.get('type', 'OptimWrapper')
        if 'sparsity' in optim_wrapper_cfg and wrapper_type not in _SPARSITY_WRAPPERS:
            raise ValueError(f'optim_wrapper has a sparsity setting but type={wrapper_type!r}; '
                             f'use one of {_SPARSITY_WRAPPERS}')
        paramwise_cfg = dict(paramwise_cfg or {})
        alpha_decay_mult = paramwise_cfg.pop('alpha_decay_mult', 0.0)
        if isinstance(alpha_decay_mult, bool) or not isinstance(alpha_decay_mult, (int, float)) or alpha_decay_mult < 0:
            raise ValueError(f'paramwise_cfg.alpha_decay_mult must be a number >= 0, got {alpha_decay_mult!r}')
        custom_keys = dict(paramwise_cfg.get('custom_keys', {}))
        custom_keys.setdefault('.edge_weights', dict(decay_mult=float(alpha_decay_mult)))
        paramwise_cfg['custom_keys'] = custom_keys
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def __call__(self, model: nn.Module) -> OptimWrapper:
        optim_wrapper = super().__call__(model)
        if isinstance(optim_wrapper, _SparsityMixin):
            optim_wrapper.bind_model(model)
        return optim_wrapper
