"""Strict loading of a trained detector for evaluation.

mmengine's ``Runner.load_checkpoint`` (what ``load_from`` does) loads non-strictly: a
checkpoint of another detector, of another backbone topology, or a bare backbone leaves
most of the detector at its random initialisation, logs a warning and goes on to score it
(mAP 0.0, exit status 0). ``load_detector_checkpoint`` instead requires every tensor of the
detector to come from the checkpoint with its shape (and each DAG stage's wiring), no
tensor to be left over, and the detector's state to have changed from its initialisation;
anything else is an ``InputError`` naming the file.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from typing import Any, Dict, Optional

import torch
from torch import nn

from backbones.checkpoint import load_state_strictly
from backbones.errors import InputError

__all__ = ['load_detector_checkpoint']

_EXPECTED = 'a detector checkpoint (.pth) written by tools/train_det.py with this config'


def _is_safetensors(path: str) -> bool:
    # safetensors: an 8-byte little-endian header length, then the JSON header
    with open(path, 'rb') as f:
        head = f.read(9)
    return path.endswith('.safetensors') or (len(head) == 9 and head[8:9] == b'{')


def load_detector_checkpoint(model: nn.Module, path: str, runner: Optional[Any] = None) -> Dict:
    """Load ``path`` into ``model`` (an mmdet detector) strictly.

    Args:
        model (nn.Module): The detector built from the config, possibly wrapped (DDP,
            mmdet's ``DetTTAModel``): the checkpoint is loaded into the detector inside.
        path (str): A checkpoint written by mmengine (``epoch_12.pth``): a dict with a
            ``state_dict``, or a bare state dict.
        runner (Runner, optional): Its hooks get ``after_load_checkpoint``, as in
            mmengine's own loading (an EMA hook swaps in its averaged weights there).

    Returns:
        dict: The loaded checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if _is_safetensors(path):
        raise InputError('a TopoNet backbone checkpoint (.safetensors), not a detector checkpoint', path,
                         f'{_EXPECTED}; a classification checkpoint initialises a detector for training '
                         f'(model.backbone.init_cfg)')
    from mmengine.runner.checkpoint import CheckpointLoader
    try:
        checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise InputError(f'not a readable torch checkpoint: {err}', path, _EXPECTED) from err
    if runner is not None:
        runner.call_hook('after_load_checkpoint', checkpoint=checkpoint)
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError('no state_dict of tensors in the checkpoint', path, _EXPECTED)
    state = {re.sub(r'^module\.', '', key): value for key, value in state.items()}  # saved from a DDP wrapper
    detector = model
    while isinstance(getattr(detector, 'module', None), nn.Module):  # DDP and test-time-augmentation wrappers
        detector = detector.module
    before = {key: value.detach().clone() for key, value in detector.state_dict().items()}
    load_state_strictly(detector, state, path, f'this config\'s {type(detector).__name__}')
    if all(torch.equal(value, before[key]) for key, value in detector.state_dict().items()):
        raise InputError('loading the checkpoint changed no tensor of the detector (it holds the weights the '
                         'detector is initialised with: an untrained detector)', path, _EXPECTED)
    return checkpoint
