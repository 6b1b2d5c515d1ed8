"""Mixed precision for mmdet detectors: backbone, neck and head layers under autocast, the
box heads' losses and post-processing in float32.

Target assignment, box decoding and NMS need float32: mmcv's NMS kernels (CPU and CUDA)
read float32 boxes only, its CUDA focal loss has no bfloat16 kernel, and IoUs of boxes in
bfloat16 (8 bits of mantissa) are too coarse to assign anchors. mmdet 3 dropped the
``force_fp32`` decorators of mmdet 2 that drew this line, so ``run_box_heads_in_float32``
draws it again on a built model: every dense head's ``loss_by_feat`` and
``predict_by_feat``, every RoI head's box-head ``loss_and_target`` and ``predict_by_feat``
and every RoI extractor's ``forward`` run with autocast off and their half-precision tensor
arguments cast to float32. Outside autocast they run unchanged.

``BoxHeadsInFloat32Hook`` applies it to the Runner's model (``toponet_det_runtime.py`` adds
it to every detection config).
"""
from __future__ import annotations

import functools
import types
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

__all__ = ['run_box_heads_in_float32', 'BoxHeadsInFloat32Hook']

_DEVICE_TYPES = ('cuda', 'cpu')


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.float16, torch.bfloat16) else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    return value


def _in_float32(method):
    @functools.wraps(method)
    def run(*args, **kwargs):
        active = [t for t in _DEVICE_TYPES if torch.is_autocast_enabled(t)]
        if not active:
            return method(*args, **kwargs)
        with torch.autocast(active[0], enabled=False):
            return method(*_to_float32(args), **_to_float32(kwargs))

    run.in_float32 = True
    return run


def run_box_heads_in_float32(model: torch.nn.Module) -> int:
    """Wrap the box heads' loss and post-processing entry points of every submodule of
    ``model`` (module docstring); returns how many methods were wrapped (each once)."""
    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
    from mmdet.models.roi_heads.bbox_heads import BBoxHead
    from mmdet.models.roi_heads.roi_extractors import BaseRoIExtractor

    entry_points = ((BaseDenseHead, ('loss_by_feat', 'predict_by_feat')),
                    (BBoxHead, ('loss_and_target', 'predict_by_feat')),
                    (BaseRoIExtractor, ('forward',)))
    wrapped = 0
    for module in model.modules():
        for kind, names in entry_points:
            if not isinstance(module, kind):
                continue
            for name in names:
                if getattr(getattr(module, name, None), 'in_float32', False):
                    continue
                # bound to the module, so a copy of the model (EMA) calls its own copy
                setattr(module, name, types.MethodType(_in_float32(getattr(type(module), name)), module))
                wrapped += 1
    return wrapped


@HOOKS.register_module()
class BoxHeadsInFloat32Hook(Hook):
    """``run_box_heads_in_float32`` on the Runner's model before anything runs."""

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        model = getattr(runner.model, 'module', runner.model)
        run_box_heads_in_float32(model)
