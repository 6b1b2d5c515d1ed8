"""The face TopoNet: a TopoNet body for 112x112 aligned faces with a 7x7 final map, and
the paper's embedding head (appendix A.2.3, Table 6).

Body: the TopoNet of Table 1 with a 3x3 stride-1 stem (faces are already cropped to
112x112, as in ArcFace's IResNet) and no 1x1 head conv, so four stride-2 stages end at
7x7 with 16C channels. Head (ArcFace's "E" output): BN2d -> Dropout -> flatten -> FC to
the 256-d feature -> BN1d (scale fixed at 1). For C=64, N={14,20,26,14} this gives
21.30M Conv/BN parameters and an FC of 1024 * 7 * 7 * 256 + 256 = 12.85M, against Table
6's 20.64M / 12.85M: Conv/BN is 3.2% over because, with TopoNet's default
``input_path='projection'`` (``backbones/dag.py``), node 1 of each stage reads the input
projection at the new width (every topology then has the same weights);
``input_path='node1'``, where node 1 carries the stage's shape change, gives 20.60M (-0.2%).

The network is described by plain keyword arguments (``channels``, ``nodes``,
``topology``, ...) so that the shared checkpoint (``backbones.checkpoint``) stores them
as JSON and ``load_face_checkpoint`` rebuilds it.

Origin: this project. Licence: Apache-2.0.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import nn

from backbones.graphs import GraphSpec
from backbones.toponet import TopoNet, TopologyCfg, toponet_cfg

__all__ = ['FaceTopoNet', 'count_face_parameters', 'load_face_checkpoint', 'load_backbone_weights']


class FaceTopoNet(nn.Module):
    """Face embedding network: TopoNet body + BN-Dropout-FC-BN head.

    Args:
        channels (int): C; stages have 2C, 4C, 8C, 16C channels.
        nodes (sequence of int): Nodes per stage (input and output nodes included).
        topology (str): Graph generator (``backbones.graphs.GRAPH_KINDS``).
        topology_params (dict): Its arguments (e.g. ``{'interval': 2}`` for residual).
        seed (int): Topology seed (random generators).
        input_size (int): Square input side; must be divisible by the total stride.
        stem_stride (int): 1 for 112x112 faces (7x7 final map).
        stem_kernel_size (int): 3 (IResNet style).
        stage_strides (sequence of int): Per-stage strides.
        embedding_size (int): Feature dimension (256 in the paper).
        dropout (float): Dropout before the FC.
        alpha_trainable (bool): Learn the edge weights.
        graphs (sequence, optional): Explicit stage graphs (checkpoint loading).
        in_chans (int): Image channels.
        input_path (str): How each stage input reaches its nodes (``backbones/dag.py``):
            ``'projection'`` (the TopoNet default: every topology has the same ops) or
            ``'node1'`` (node 1 carries the stage's shape change).

    Example:
        >>> net = FaceTopoNet(channels=8, nodes=(4, 4, 4, 4))
        >>> net(torch.randn(2, 3, 112, 112)).shape
        torch.Size([2, 256])
    """

    def __init__(self, channels: int = 64, nodes: Sequence[int] = (14, 20, 26, 14), topology: str = 'complete',
                 topology_params: Optional[Dict[str, Any]] = None, seed: int = 0, input_size: int = 112,
                 stem_stride: int = 1, stem_kernel_size: int = 3, stage_strides: Sequence[int] = (2, 2, 2, 2),
                 embedding_size: int = 256, dropout: float = 0.0, alpha_trainable: bool = True,
                 graphs: Optional[Sequence[Union[GraphSpec, Dict]]] = None, in_chans: int = 3,
                 input_path: str = 'projection'):
        super().__init__()
        if embedding_size < 1:
            raise ValueError(f'embedding_size must be >= 1, got {embedding_size}')
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'dropout must be in [0, 1), got {dropout}')
        stride = stem_stride
        for s in stage_strides:
            stride *= s
        if input_size % stride:
            raise ValueError(f'input_size {input_size} is not divisible by the total stride {stride} '
                             f'(stem {stem_stride} x stages {tuple(stage_strides)})')
        cfg = toponet_cfg(channels, nodes, topology, **dict(topology_params or {}))
        cfg = replace(cfg, stem_stride=stem_stride, stem_kernel_size=stem_kernel_size, head_chs=0,
                      stage_strides=tuple(stage_strides),
                      topology=TopologyCfg(topology, tuple(sorted((topology_params or {}).items())), seed),
                      input_path=input_path)
        self.body = TopoNet(cfg, num_classes=0, in_chans=in_chans, alpha_trainable=alpha_trainable, graphs=graphs)
        self.input_size = input_size
        self.final_size = input_size // stride
        self.embedding_size = embedding_size
        final_chs = cfg.stage_chs[-1]
        self.bn = nn.BatchNorm2d(final_chs)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(final_chs * self.final_size ** 2, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)
        # ArcFace keeps the feature BN's scale at 1: the embedding's norm is not learned twice.
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad_(False)

    @property
    def graphs(self):
        return self.body.graphs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 7x7 map of the last stage (pre-activation sum of its node outputs)."""
        if not torch.jit.is_tracing() and x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f'expected {self.input_size}x{self.input_size} faces, got {tuple(x.shape[-2:])}')
        return self.body.stages(self.body.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.forward_features(x))
        x = self.fc(torch.flatten(self.dropout(x), 1))
        return self.features(x)

    def no_weight_decay(self) -> set:
        return {f'body.{k}' for k in self.body.no_weight_decay()}


def count_face_parameters(model: FaceTopoNet) -> Dict[str, int]:
    """Table 6's split: ``fc`` (the embedding FC) and ``conv_bn`` (everything else: convs,
    BNs and edge weights)."""
    fc = sum(p.numel() for p in model.fc.parameters())
    total = sum(p.numel() for p in model.parameters())
    return dict(conv_bn=total - fc, fc=fc, total=total)


def load_backbone_weights(model: FaceTopoNet, path: str) -> Dict[str, list]:
    """Initialise the face body from a classification (or face) checkpoint in the shared
    format.

    Stage weights must fit exactly (same graphs and widths: a different wiring fails on
    the stage's ``edge_index`` with an error naming it); the stem is loaded when its shape
    fits (an ImageNet 7x7 stem does not fit the 3x3 face stem and is skipped). Returns the
    loaded and skipped keys.
    """
    from backbones.checkpoint import read_checkpoint
    ckpt = read_checkpoint(path)
    own = model.body.state_dict()
    loaded, skipped, state = [], [], {}
    for key, value in ckpt.state_dict.items():
        if key.startswith('body.'):  # a face checkpoint
            key = key[len('body.'):]
        if not key.startswith(('stem.', 'stages.')):
            continue
        if key.startswith('stem.') and (key not in own or own[key].shape != value.shape):
            skipped.append(key)
            continue
        if key not in own:
            raise ValueError(f'{path}: {key} has no counterpart in the face body (different node counts?)')
        if own[key].shape != value.shape:
            raise ValueError(f'{path}: {key} has shape {tuple(value.shape)}, the face body expects '
                             f'{tuple(own[key].shape)}')
        state[key] = value
        loaded.append(key)
    missing = [k for k in own if k.startswith('stages.') and k not in state]
    if missing:
        raise ValueError(f'{path}: the checkpoint lacks {len(missing)} stage tensors of the face body, e.g. {missing[0]}')
    model.body.load_state_dict(state, strict=False)
    return dict(loaded=loaded, skipped=skipped)


def load_face_checkpoint(path: str, map_location: str = 'cpu') -> FaceTopoNet:
    """Rebuild a ``FaceTopoNet`` from a checkpoint written by the face training run. Every
    tensor must fit (``backbones.checkpoint.load_state_strictly``) and be finite; a
    classification checkpoint or a bare backbone is an ``InputError``."""
    from backbones.checkpoint import load_state_strictly, read_checkpoint
    from backbones.errors import InputError
    from backbones.topology_export import check_finite_state_dict
    ckpt = read_checkpoint(path)
    if ckpt.model_name != 'face_toponet':
        raise InputError(f'the checkpoint holds a {ckpt.model_name!r} model', path,
                         'a face_toponet checkpoint written by tools/train_face.py')
    check_finite_state_dict(ckpt.state_dict, path)
    kwargs = dict(ckpt.model_kwargs)
    if ckpt.topology:
        kwargs['graphs'] = ckpt.graphs
    model = FaceTopoNet(**kwargs)
    load_state_strictly(model, {k: v.to(map_location) for k, v in ckpt.state_dict.items()}, path, 'the face TopoNet')
    return model.eval()
