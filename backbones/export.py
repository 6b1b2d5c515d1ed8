"""Exchange and deployment formats of the DAG networks (TopoNet, ResNet-CIFAR, MobileNetV2).

* **The hub layout timm reads** (``save_hub_layout``): ``config.json`` (architecture,
  pretrained_cfg, class names and JSON model arguments, every stage's graph spec as a dict)
  and ``model.safetensors``, written by ``timm.models.save_for_hf``.
  ``timm.create_model('local-dir:DIR', pretrained=True)``, or ``'hf-hub:ORG/NAME'`` for a
  pushed copy, rebuilds the same network (after ``import backbones``, which registers the
  architectures).
* **The inference form** (``inference_model``): a copy of the network with every batch norm
  folded into the convolution before it (``reparameterize()``), optionally the compact pruned
  topology (``backbones.pruning``), and each stage's weighted sums written out with their edge
  weights as constants (``DeployStage``): the ONNX exporter turns that into a static graph.
* **ONNX** (``export_onnx``): the inference form through ``torch.onnx.export(dynamo=True)``
  (the TorchScript-based exporter only where that fails, reported), checked in onnxruntime
  against the eager network: largest absolute difference and top-1 agreement.
* **TorchScript** (``export_torchscript``): the network with its batch norms folded.

Why the inference form writes alpha-scaling as per-channel 1x1 convolutions (``aggregation=
'conv'``): onnxruntime's CPU provider runs convolutions in a blocked channel layout (NCHWc)
and keeps a tensor there through Add/Sum, ReLU and convolutions, including depthwise ones,
into which it also folds a following Add and ReLU. A scalar ``Mul`` has no blocked form, so
every edge weight written as ``Mul`` (``aggregation='mul'``, the eager graph) moves the node
outputs back to plain NCHW and every node input into the blocked layout again. A per-channel
1x1 depthwise convolution whose weights are all alpha computes the same products. Edges of
weight exactly 1 are plain additions in either form.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import warnings
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .errors import InputError
from .sparsity import dag_stages

__all__ = ['hub_model_args', 'save_hub_layout', 'DeployStage', 'prune_to_compact', 'inference_model', 'export_onnx',
           'check_onnx', 'export_torchscript', 'AGGREGATION_FORMS']

AGGREGATION_FORMS = ('conv', 'mul')


# -- hub layout --------------------------------------------------------------------------------
def hub_model_args(model: nn.Module) -> Dict[str, Any]:
    """JSON-serialisable keyword arguments that rebuild ``model`` through timm: those its
    factory recorded, with every stage's graph spec as a dict (the stages' own graphs, so a
    compact pruned network or one built with ``graphs=`` rebuilds exactly), and whether alpha
    is learned. timm adds ``num_classes``, ``in_chans`` and ``global_pool`` itself."""
    args = dict(getattr(model, '_model_args', {}))
    stages = list(dag_stages(model))
    if not stages:
        raise InputError(f'a {type(model).__name__} has no DAG stages', 'hub_model_args',
                         'a TopoNet, ResNet-CIFAR or MobileNetV2 network of backbones')
    args['graphs'] = [stage.graph.to_dict() for stage in stages]
    args['alpha_trainable'] = all(stage.alpha_trainable for stage in stages)
    cfg = getattr(model, 'cfg', None)
    if getattr(cfg, 'input_path', None) is not None:
        args['input_path'] = cfg.input_path
    for key, value in args.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as err:
            raise InputError(f'model argument {key}={value!r} is not JSON-serialisable', 'hub_model_args',
                             'JSON values (graph specs as dicts)') from err
    return args


def save_hub_layout(model: nn.Module, out_dir: str, class_names: Optional[Sequence[str]] = None,
                    check: bool = True) -> Dict[str, Any]:
    """Write ``model`` in the layout ``timm.create_model('local-dir:...')`` and the Hugging
    Face hub read: ``out_dir/config.json`` and ``out_dir/model.safetensors`` (each file
    replaced atomically; other files in ``out_dir`` are left alone).

    With ``check`` the folder is read back through timm and the rebuilt network's outputs
    compared with ``model``'s on a random batch (eval mode; an error if they differ). Returns
    the files written and the largest absolute difference of the check.
    """
    import timm
    from timm.models import save_for_hf

    from .checkpoint import check_same_outputs
    from .io_utils import atomic_write

    os.makedirs(out_dir, exist_ok=True)
    model_config = {'label_names': list(class_names)} if class_names else None
    staging = tempfile.mkdtemp(prefix='.hub-', dir=out_dir)
    try:
        save_for_hf(model, staging, model_config=model_config, model_args=hub_model_args(model),
                    safe_serialization=True)
        files = sorted(os.listdir(staging))
        for name in files:  # each file fsynced, renamed into place, with the usual permissions
            source = os.path.join(staging, name)
            atomic_write(os.path.join(out_dir, name), lambda tmp, source=source: shutil.copyfile(source, tmp))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report: Dict[str, Any] = {'dir': os.path.abspath(out_dir), 'files': files}
    if check:
        rebuilt = timm.create_model('local-dir:' + os.path.abspath(out_dir), pretrained=True).eval()
        x = _check_batch(model, 2)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            report['max_abs_diff'] = check_same_outputs(rebuilt(x), model(x), f'{out_dir} read back through timm')
        model.train(was_training)
    return report


# -- inference form ----------------------------------------------------------------------------
class DeployStage(nn.Module):
    """A ``DAGStage`` for inference: the same node ops (and input projection), with the edge
    weights of the stage at conversion time as constants.

    Node i's input is ``sum_j alpha_ji * x_j`` over its input edges, in the stage's edge
    order; an edge of weight exactly 1 adds its source as it is, another one adds it scaled
    by a per-channel 1x1 depthwise convolution (``aggregation='conv'``) or a scalar multiply
    (``'mul'``); see the module docstring. Not trainable and not scriptable (it is traced by
    the exporters).
    """

    def __init__(self, stage: nn.Module, aggregation: str = 'conv'):
        super().__init__()
        if aggregation not in AGGREGATION_FORMS:
            raise InputError(f'unknown aggregation form {aggregation!r}', 'DeployStage', f'one of {AGGREGATION_FORMS}')
        self.aggregation = aggregation
        self.num_nodes = stage.num_nodes
        self.node1_reads_input = stage._node1_reads_input
        self.input_proj = copy.deepcopy(stage.input_proj)
        self.nodes = copy.deepcopy(stage.nodes)
        alpha = stage.edge_weights.detach().float().cpu().tolist()
        channels = stage.out_chs
        # per node: (source, index of its scale or -1 for weight 1) in edge order
        self.terms: List[List[tuple]] = [[] for _ in range(stage.num_nodes)]
        scales = []
        for dst in range(1, stage.num_nodes):
            for edge, src in stage.in_edges[dst]:
                if alpha[edge] == 1.0:
                    self.terms[dst].append((src, -1))
                else:
                    self.terms[dst].append((src, len(scales)))
                    scales.append(alpha[edge])
        self.coefficients = scales
        # node 1 reading the raw stage input (input_path 'node1') scales it at the stage's input width
        scale_chs = [stage.in_chs if self.node1_reads_input and dst == 1 else channels
                     for dst in range(1, stage.num_nodes) for _, k in self.terms[dst] if k >= 0]
        reference = stage.edge_weights
        for k, (value, chs) in enumerate(zip(scales, scale_chs)):
            self.register_buffer(f'scale{k}', torch.full((chs, 1, 1, 1), value, dtype=reference.dtype,
                                                         device=reference.device))

    def _term(self, x: torch.Tensor, k: int) -> torch.Tensor:
        if k < 0:
            return x
        if self.aggregation == 'mul':
            return x * self.coefficients[k]
        weight = getattr(self, f'scale{k}')
        return F.conv2d(x, weight, groups=weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [self.input_proj(x) if self.input_proj is not None else x]
        last = self.num_nodes - 1
        for i in range(1, self.num_nodes):
            if i == 1 and self.node1_reads_input:
                (_, k), = self.terms[1]
                inp = self._term(x, k)
            else:
                inp = None
                for src, k in self.terms[i]:
                    term = self._term(outputs[src], k)
                    inp = term if inp is None else inp + term
            outputs.append(inp if i == last else self.nodes[i - 1](inp))
        return outputs[last]


def prune_to_compact(model: nn.Module, keep_ratio: Optional[float] = None, threshold: Optional[float] = None,
                     criterion: str = 'relative') -> nn.Module:
    """The compact TopoNet left by pruning ``model`` to a keep ratio or a threshold
    (``backbones.pruning.prune_masks`` and ``build_compact_model``; ``model`` unchanged)."""
    from .pruning import build_compact_model, prune_masks
    masks, used = prune_masks(model, threshold=threshold, keep_ratio=keep_ratio, criterion=criterion)
    compact, _ = build_compact_model(model, masks, graph_params=[{'criterion': criterion, 'threshold': t}
                                                                for t in used])
    return compact


def inference_model(model: nn.Module, aggregation: str = 'conv', fold_bn: bool = True,
                    keep_ratio: Optional[float] = None, threshold: Optional[float] = None,
                    criterion: str = 'relative') -> nn.Module:
    """The inference form of ``model`` (which is not modified), in eval mode.

    Args:
        model: A TopoNet, ResNet-CIFAR or MobileNetV2 network of backbones.
        aggregation (str): How edge weights other than 1 enter the graph, ``'conv'`` or
            ``'mul'`` (module docstring).
        fold_bn (bool): Fold batch norms into the convolutions (``reparameterize()``).
        keep_ratio, threshold, criterion: Prune to the compact topology first
            (``backbones.pruning.prune_masks``; TopoNets only); none given: no pruning.
    """
    form = copy.deepcopy(model).eval()
    if keep_ratio is not None or threshold is not None:
        form = prune_to_compact(form, keep_ratio, threshold, criterion).eval()
    if fold_bn:
        form.reparameterize()
    stages = getattr(form, 'stages', None)
    if stages is None or not list(dag_stages(form)):
        raise InputError(f'a {type(model).__name__} has no DAG stages', 'inference_model',
                         'a TopoNet, ResNet-CIFAR or MobileNetV2 network of backbones')
    form.stages = nn.Sequential(*[DeployStage(stage, aggregation) for stage in stages])
    form.grad_checkpointing = False
    return form.eval().requires_grad_(False)


# -- ONNX and TorchScript ------------------------------------------------------------------------
def _input_size(model: nn.Module, img_size: Optional[int] = None) -> tuple:
    channels = getattr(model, 'in_chans', None) or model.pretrained_cfg['input_size'][0]
    spatial = (img_size, img_size) if img_size else tuple(model.pretrained_cfg['input_size'][1:])
    return (channels,) + spatial


def _check_batch(model: nn.Module, batch: int, seed: int = 0, img_size: Optional[int] = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch,) + _input_size(model, img_size), generator=generator)


def _export(module: nn.Module, x: torch.Tensor, path: str, opset: int, dynamo: bool) -> None:
    kwargs = dict(input_names=['images'], output_names=['logits'], opset_version=opset)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', category=DeprecationWarning)
        warnings.filterwarnings('ignore', category=FutureWarning)
        warnings.filterwarnings('ignore', category=UserWarning)
        if dynamo:
            batch = torch.export.Dim('batch', min=1)
            program = torch.onnx.export(module, (x,), dynamo=True, dynamic_shapes=({0: batch},), optimize=True,
                                        verbose=False, **kwargs)
            program.save(path)
        else:
            torch.onnx.export(module, (x,), path, dynamo=False, do_constant_folding=True,
                              dynamic_axes={'images': {0: 'batch'}, 'logits': {0: 'batch'}}, **kwargs)


def check_onnx(path: str, model: nn.Module, x: torch.Tensor) -> Dict[str, Any]:
    """Run ``path`` in onnxruntime (CPU) on ``x`` and compare with ``model(x)`` (eval mode):
    largest absolute difference, the reference's largest magnitude, and the fraction of
    images whose top-1 class agrees (for a classifier)."""
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        want = model(x).float().numpy()
    model.train(was_training)
    report = {'max_abs_diff': float(np.abs(got - want).max()), 'max_abs_reference': float(np.abs(want).max())}
    if want.ndim == 2 and want.shape[1] > 1:
        report['top1_agreement'] = float(np.mean(got.argmax(1) == want.argmax(1)))
    return report


def export_onnx(model: nn.Module, path: str, batch_size: int = 8, aggregation: str = 'conv', fold_bn: bool = True,
                keep_ratio: Optional[float] = None, threshold: Optional[float] = None, criterion: str = 'relative',
                opset: int = 18, dynamo: bool = True, rtol: float = 1e-4,
                img_size: Optional[int] = None) -> Dict[str, Any]:
    """Export the inference form of ``model`` (``inference_model``) to ``path`` (written
    atomically), with a dynamic batch dimension, input ``images`` ``(N, C, H, W)`` at the
    network's ``pretrained_cfg`` size (or ``img_size`` square) and output ``logits``; then
    check it.

    The check runs the file in onnxruntime on a seeded random batch of ``batch_size`` images
    against the eager network as it is (pruned first when pruning is asked for: the compact
    network, which equals the masked original) and raises ``RuntimeError`` when the largest
    absolute difference exceeds ``rtol`` times the largest output magnitude (at least 1).
    ``dynamo=True`` uses ``torch.onnx.export(dynamo=True)``; if that exporter fails the
    TorchScript-based one is used and the report says why (``exporter``,
    ``dynamo_error``). Returns the report: exporter, file size, check results, edges and
    multiplies per stage.
    """
    from .io_utils import atomic_write

    reference = copy.deepcopy(model).eval()
    if keep_ratio is not None or threshold is not None:
        reference = prune_to_compact(reference, keep_ratio, threshold, criterion).eval()
    form = inference_model(reference, aggregation=aggregation, fold_bn=fold_bn)
    x = _check_batch(reference, batch_size, img_size=img_size)
    report: Dict[str, Any] = {'aggregation': aggregation, 'fold_bn': fold_bn, 'opset': opset,
                              'input_size': list(_input_size(reference, img_size)),
                              'edges': [s.graph.num_edges for s in dag_stages(reference)],
                              'scaled_edges': [len(s.coefficients) for s in form.stages]}
    if keep_ratio is not None or threshold is not None:
        report['pruned'] = {'keep_ratio': keep_ratio, 'threshold': threshold, 'criterion': criterion,
                            'edges_before': [s.graph.num_edges for s in dag_stages(model)]}

    def write(tmp: str) -> None:
        exporter = 'dynamo'
        if dynamo:
            try:
                _export(form, x, tmp, opset, dynamo=True)
            except Exception as err:  # noqa: BLE001 (any exporter failure: fall back, and say why)
                first_line = (str(err).strip().splitlines() or [''])[0]
                report['dynamo_error'] = f'{type(err).__name__}: {first_line}'
                exporter = 'torchscript'
        else:
            exporter = 'torchscript'
        if exporter == 'torchscript':
            _export(form, x, tmp, opset, dynamo=False)
        report['exporter'] = exporter
        report.update(check_onnx(tmp, reference, x))  # before the rename: a wrong graph leaves no file
        tol = rtol * max(1.0, report['max_abs_reference'])
        if not report['max_abs_diff'] <= tol:
            raise RuntimeError(f'{path}: onnxruntime differs from PyTorch by {report["max_abs_diff"]} '
                               f'(tolerance {tol:.3g})')

    atomic_write(path, write)
    report['path'] = os.path.abspath(path)
    report['bytes'] = os.path.getsize(path)
    return report


def export_torchscript(model: nn.Module, path: str, fold_bn: bool = True) -> Dict[str, Any]:
    """Script a copy of ``model`` (eval mode; batch norms folded with ``fold_bn``) and write it
    atomically to ``path``; the scripted module is checked against the eager network."""
    from .checkpoint import check_same_outputs
    from .io_utils import atomic_write

    form = copy.deepcopy(model).eval()
    if fold_bn:
        form.reparameterize()
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', category=FutureWarning)
        scripted = torch.jit.script(form)
    x = _check_batch(model, 2)
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        diff = check_same_outputs(scripted(x), reference(x), f'{path} (TorchScript)')
    atomic_write(path, lambda tmp: scripted.save(tmp))
    return {'path': os.path.abspath(path), 'fold_bn': fold_bn, 'max_abs_diff': diff, 'bytes': os.path.getsize(path)}
