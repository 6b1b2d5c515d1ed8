"""The project's one checkpoint format, produced by classification and read by every task.

A checkpoint is a single ``.safetensors`` file: the model's full state dict (weights,
alpha and each stage's ``edge_index``) plus string metadata:

* ``format``: ``toponet-checkpoint``, ``version``: ``1``
* ``model``: the timm name to rebuild it with (e.g. ``toponet_fmnist_complete``)
* ``model_kwargs``: JSON of the keyword arguments it was built with (``num_classes``...)
* ``topology``: JSON of ``backbones.topology_export`` (graph specs and alpha per stage)
* ``meta``: JSON of free-form facts (task, dataset, epoch, accuracy, versions)

Loading never unpickles anything. The same file loads through timm with
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))``, as
long as ``name``'s default topology is the one saved (otherwise pass ``graphs=``;
``create_model_from_checkpoint`` does that for you).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .io_utils import atomic_write
from .topology_export import StageTopology, extract_topology, topology_from_dict, topology_to_dict

__all__ = ['TopoCheckpoint', 'save_checkpoint', 'export_run', 'read_checkpoint', 'create_model_from_checkpoint']

_FORMAT = 'toponet-checkpoint'
_VERSION = '1'


@dataclass
class TopoCheckpoint:
    state_dict: Dict[str, torch.Tensor]
    model_name: str
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    topology: List[StageTopology] = field(default_factory=list)
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def graphs(self):
        return [s.graph for s in self.topology]


def save_checkpoint(path: str, model: nn.Module, model_name: str, model_kwargs: Optional[Dict[str, Any]] = None,
                    meta: Optional[Dict[str, Any]] = None) -> None:
    """Write ``model`` atomically to ``path`` (a ``.safetensors`` file)."""
    from safetensors.torch import save_file

    if not path.endswith('.safetensors'):
        raise ValueError(f'checkpoint path must end with .safetensors, got {path!r}')
    model = getattr(model, 'module', model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:
        topology = topology_to_dict(extract_topology(model))
    except ValueError:
        topology = None  # a network without DAG stages (e.g. a plain baseline)
    metadata = {
        'format': _FORMAT, 'version': _VERSION, 'model': model_name,
        'model_kwargs': json.dumps(model_kwargs or {}, sort_keys=True),
        'topology': json.dumps(topology),
        'meta': json.dumps(meta or {}, sort_keys=True, default=str),
    }
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def export_run(work_dir: str, out_name: str, model: nn.Module, model_name: str,
               model_kwargs: Optional[Dict[str, Any]] = None, meta: Optional[Dict[str, Any]] = None,
               title: str = '', pictures: bool = True) -> str:
    """What every training run of the project leaves in ``work_dir``: the checkpoint
    ``<out_name>.safetensors``, ``topology.{json,npz}`` and, with ``pictures``,
    ``adjacency.png`` and ``alpha_hist.png`` (all written atomically). A network without DAG
    stages gets the checkpoint only. Returns the checkpoint path."""
    from .topology_export import save_topology_json, save_topology_npz

    path = os.path.join(work_dir, f'{out_name}.safetensors')
    save_checkpoint(path, model, model_name, model_kwargs=model_kwargs, meta=meta)
    try:
        stages = extract_topology(getattr(model, 'module', model))
    except ValueError:
        return path  # no DAG stages: nothing more to write
    save_topology_json(stages, os.path.join(work_dir, 'topology.json'))
    save_topology_npz(stages, os.path.join(work_dir, 'topology.npz'))
    if pictures:
        from .viz import plot_adjacency, plot_alpha_histogram
        plot_adjacency(stages, os.path.join(work_dir, 'adjacency.png'), title=title)
        plot_alpha_histogram({'learned': stages}, os.path.join(work_dir, 'alpha_hist.png'), title=title)
    return path


def read_checkpoint(path: str) -> TopoCheckpoint:
    """Read and validate a checkpoint written by ``save_checkpoint``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        with safe_open(path, framework='pt') as f:
            metadata = f.metadata() or {}
        state_dict = load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f'{path} is not a readable safetensors checkpoint: {err}') from err
    if metadata.get('format') != _FORMAT:
        raise ValueError(f'{path} is not a TopoNet checkpoint (metadata format={metadata.get("format")!r}, '
                         f'expected {_FORMAT!r})')
    if metadata.get('version') != _VERSION:
        raise ValueError(f'{path}: checkpoint version {metadata.get("version")!r} is not supported '
                         f'(expected {_VERSION})')
    try:
        kwargs = json.loads(metadata.get('model_kwargs', '{}'))
        topology = json.loads(metadata.get('topology', 'null'))
        meta = json.loads(metadata.get('meta', '{}'))
    except json.JSONDecodeError as err:
        raise ValueError(f'{path}: corrupt checkpoint metadata: {err}') from err
    if not metadata.get('model'):
        raise ValueError(f'{path}: checkpoint metadata names no model')
    return TopoCheckpoint(state_dict=state_dict, model_name=metadata['model'], model_kwargs=kwargs,
                          topology=topology_from_dict(topology) if topology else [], meta=meta)


def create_model_from_checkpoint(path: str, features_only: bool = False, out_indices=None,
                                 **overrides) -> nn.Module:
    """Rebuild the saved network through timm (with its saved graphs) and load every
    weight. ``overrides`` replace saved keyword arguments; a different ``num_classes``
    starts a fresh classifier (and only the classifier). ``features_only=True`` returns
    timm's feature extractor over the loaded network."""
    import timm
    from timm.models import FeatureListNet
    from . import toponet  # noqa: F401  (registers the models)

    ckpt = read_checkpoint(path)
    kwargs = dict(ckpt.model_kwargs)
    if ckpt.topology:
        kwargs['graphs'] = ckpt.graphs
    kwargs.update(overrides)
    model = timm.create_model(ckpt.model_name, **kwargs)
    state = dict(ckpt.state_dict)
    classifier = model.pretrained_cfg.get('classifier')
    new_head = 'num_classes' in overrides and overrides['num_classes'] != ckpt.model_kwargs.get('num_classes')
    if new_head and classifier:
        state = {k: v for k, v in state.items() if not k.startswith(classifier + '.')}
        result = model.load_state_dict(state, strict=False)
        unexpected = list(result.unexpected_keys)
        missing = [k for k in result.missing_keys if not k.startswith(classifier + '.')]
        if missing or unexpected:
            raise ValueError(f'{path}: weights do not fit {ckpt.model_name}: missing {missing}, '
                             f'unexpected {unexpected}')
    else:
        model.load_state_dict(state, strict=True)
    if features_only:
        indices = tuple(out_indices) if out_indices is not None else tuple(range(len(model.feature_info)))
        model = FeatureListNet(model, out_indices=indices, flatten_sequential=True)
    return model
