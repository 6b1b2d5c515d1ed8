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
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import nn

from .errors import InputError
from .io_utils import atomic_write
from .topology_export import (StageTopology, extract_topology, topology_from_dict, topology_from_state_dict,
                              topology_to_dict)

__all__ = ['TopoCheckpoint', 'save_checkpoint', 'export_run', 'read_checkpoint', 'create_model_from_checkpoint',
           'load_state_strictly', 'check_same_outputs', 'non_finite_tensors']

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


def non_finite_tensors(state: Mapping[str, torch.Tensor]) -> List[str]:
    """Keys of the floating-point tensors of ``state`` that hold a NaN or an infinity, in
    ``state``'s order. One device-to-host copy per device, however many tensors.

    Example:
        >>> non_finite_tensors({'w': torch.ones(2), 'b': torch.tensor([1.0, float('nan')]), 'n': torch.arange(3)})
        ['b']
    """
    by_device: Dict[torch.device, List[str]] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            by_device.setdefault(value.device, []).append(key)
    bad = set()
    for keys in by_device.values():
        finite = torch.stack([torch.isfinite(state[k].detach()).all() for k in keys]).cpu()
        bad.update(k for k, ok in zip(keys, finite.tolist()) if not ok)
    return [k for k in state if k in bad]


def save_checkpoint(path: str, model: nn.Module, model_name: str, model_kwargs: Optional[Dict[str, Any]] = None,
                    meta: Optional[Dict[str, Any]] = None) -> None:
    """Write ``model`` atomically to ``path`` (a ``.safetensors`` file).

    A model with a NaN or infinite weight (a diverged run) raises ``InputError`` naming the
    tensors, and so does a failed write (full disk, unwritable folder); either way a file
    already at ``path`` is left as it was.
    """
    from safetensors.torch import save_file

    if not path.endswith('.safetensors'):
        raise ValueError(f'checkpoint path must end with .safetensors, got {path!r}')
    model = getattr(model, 'module', model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    bad = non_finite_tensors(state)
    if bad:
        more = f' and {len(bad) - 3} more' if len(bad) > 3 else ''
        raise InputError(f'non-finite values (NaN or inf) in tensor {", ".join(bad[:3])}{more}', path,
                         'finite weights; training diverged, so the checkpoint was not written and any earlier '
                         'file there is kept')
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
    try:
        atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))
    except OSError as err:  # a full disk, a read-only folder: the temporary file is already gone
        raise InputError(f'cannot write the checkpoint: {err.strerror or err}', path,
                         'a writable folder with free space; any earlier file there is kept') from err


def export_run(work_dir: str, out_name: str, model: nn.Module, model_name: str,
               model_kwargs: Optional[Dict[str, Any]] = None, meta: Optional[Dict[str, Any]] = None,
               title: str = '', pictures: bool = True) -> str:
    """What every training run of the project leaves in ``work_dir``: the checkpoint
    ``<out_name>.safetensors``, ``topology.{json,npz}`` and, with ``pictures``,
    ``adjacency.png`` and ``alpha_hist.png`` (all written atomically). A network without DAG
    stages gets the checkpoint only. Returns the checkpoint path. The checkpoint is written
    first, so a model with non-finite weights (``save_checkpoint`` raises) leaves every
    earlier export in ``work_dir`` untouched."""
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
    """Read and validate a checkpoint written by ``save_checkpoint``.

    The metadata's topology must describe the tensors exactly (each stage's graph is its
    ``edge_index``, its alpha its ``edge_weights``); the returned ``topology`` takes alpha
    from the tensors, so every reader sees the weights the network computes with. A file
    that is not such a checkpoint, or whose metadata is malformed or disagrees with its
    tensors, raises ``InputError`` naming the file and the field.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        with safe_open(path, framework='pt') as f:
            metadata = f.metadata() or {}
        state_dict = load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f'{path} is not a readable safetensors checkpoint: {err}', path,
                         'a .safetensors file written by save_checkpoint') from err
    if metadata.get('format') != _FORMAT:
        raise InputError(f'{path} is not a TopoNet checkpoint (metadata format={metadata.get("format")!r}, '
                         f'expected {_FORMAT!r})', f'{path} metadata "format"', f'{_FORMAT!r}')
    if metadata.get('version') != _VERSION:
        raise InputError(f'checkpoint version {metadata.get("version")!r} is not supported',
                         f'{path} metadata "version"', f'version {_VERSION}')
    if not metadata.get('model'):
        raise InputError('checkpoint metadata names no model', f'{path} metadata "model"', 'a timm model name')
    kwargs = _metadata_json(metadata, 'model_kwargs', '{}', dict, path)
    topology = _metadata_json(metadata, 'topology', 'null', (dict, type(None)), path)
    meta = _metadata_json(metadata, 'meta', '{}', dict, path)
    recorded = topology_from_dict(topology, f'{path} metadata "topology"') if topology else []
    stages = topology_from_state_dict(state_dict, recorded, path)
    return TopoCheckpoint(state_dict=state_dict, model_name=metadata['model'], model_kwargs=kwargs,
                          topology=stages, meta=meta)


def _metadata_json(metadata: Dict[str, str], name: str, default: str, kind, path: str):
    try:
        value = json.loads(metadata.get(name, default))
    except json.JSONDecodeError as err:
        raise InputError(f'corrupt checkpoint metadata: {err}', f'{path} metadata "{name}"', 'valid JSON') from err
    if not isinstance(value, kind):
        raise InputError(f'checkpoint metadata holds a JSON {type(value).__name__}', f'{path} metadata "{name}"',
                         'an object' + (' or null' if isinstance(kind, tuple) else ''))
    return value


def load_state_strictly(model: nn.Module, state: Dict[str, torch.Tensor], where: str,
                        what: Optional[str] = None) -> None:
    """``model.load_state_dict(state, strict=True)``, with any mismatch raised as
    ``InputError`` naming ``where``: missing or unexpected keys and stages wired differently
    (checked before anything is copied), tensors of another shape (with the model's own
    explanation where it gives one, e.g. a TopoNet of another ``input_path``). Whatever
    fails, the caller gets an error, never a partly loaded network to score."""
    own = model.state_dict()
    subject = what or type(model).__name__
    expected = 'a checkpoint of this very network (same model, topology and widths)'
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    rewired = [k[:-len('edge_index')].rstrip('.') or 'stage' for k in own
               if k.endswith('edge_index') and k in state and not torch.equal(state[k].to(own[k]), own[k])]
    shapes = [f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = [f'{", ".join(rewired)} wired differently (another topology)'] if rewired else []
    if missing:
        parts.append(f'{len(missing)} missing keys (first {missing[:3]})')
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected keys (first {unexpected[:3]})')
    if shapes:
        parts.append(f'{len(shapes)} tensors of another shape (first {shapes[:3]})')
    if rewired or missing or unexpected:
        raise InputError(f'the weights do not fit {subject}: ' + '; '.join(parts), where, expected)
    try:
        model.load_state_dict(state, strict=True)
    except InputError as err:  # the model's own explanation (it names the tensor and the fix)
        raise InputError(err.what, f'{where}: {err.where}' if err.where else where, err.expected) from err
    except (RuntimeError, ValueError) as err:
        raise InputError(f'the weights do not fit {subject}: ' + ('; '.join(parts) or str(err)), where,
                         expected) from err


def check_same_outputs(output: torch.Tensor, reference: torch.Tensor, what: str, rtol: float = 1e-4) -> float:
    """The largest absolute difference of two outputs, raising when it exceeds ``rtol`` times
    the reference's largest magnitude (at least 1). Written as ``not diff <= tol`` so a NaN
    difference fails too: a self-check never passes on NaN."""
    diff = float((output.detach().float() - reference.detach().float()).abs().max())
    tol = rtol * max(1.0, float(reference.detach().float().abs().max()))
    if not diff <= tol:
        raise RuntimeError(f'{what}: outputs differ by {diff} (tolerance {tol:.3g})')
    return diff


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
    if not timm.is_model(ckpt.model_name):
        raise InputError(f'the checkpoint holds a {ckpt.model_name!r}, not a timm model of backbones', path,
                         'a classification checkpoint (face checkpoints load with face.model.load_face_checkpoint)')
    kwargs = dict(ckpt.model_kwargs)
    if ckpt.topology:
        # as dicts: timm records the factory's arguments, and its hub export writes them as JSON
        kwargs['graphs'] = [g.to_dict() for g in ckpt.graphs]
    kwargs.update(overrides)
    model = timm.create_model(ckpt.model_name, **kwargs)
    state = dict(ckpt.state_dict)
    classifier = model.pretrained_cfg.get('classifier')
    new_head = 'num_classes' in overrides and overrides['num_classes'] != ckpt.model_kwargs.get('num_classes')
    if new_head and classifier:
        # a fresh classifier, and only the classifier: every other tensor must come from the file
        head = {k: v for k, v in model.state_dict().items() if k.startswith(classifier + '.')}
        state = {**{k: v for k, v in state.items() if not k.startswith(classifier + '.')}, **head}
    load_state_strictly(model, state, path, ckpt.model_name)
    if features_only:
        indices = tuple(out_indices) if out_indices is not None else tuple(range(len(model.feature_info)))
        model = FeatureListNet(model, out_indices=indices, flatten_sequential=True)
    return model
