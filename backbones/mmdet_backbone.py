"""DAG-stage networks (TopoNet, ResNet-CIFAR, MobileNetV2 with alpha) as MMDetection backbones.

Importing this module registers ``TopoNetBackbone`` in mmdet's ``MODELS`` registry; configs
pull it in with ``custom_imports = dict(imports=['backbones.mmdet_backbone'])`` (importing
mmdet is slow, so ``backbones/__init__.py`` does not).

The backbone keeps the network's ``stem`` and ``stages`` under the same names as the
classification network, so the shared checkpoint (``backbones.checkpoint``) loads key for
key; the classifier (``final_conv``, ``head``) is dropped. ``out_indices``,
``frozen_stages`` and ``norm_eval`` follow mmdet's ``ResNet``.

Loading is strict. mmengine's ``Pretrained`` initialiser loads non-strictly and only logs
missing keys; here ``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` is handled by the
backbone's own ``init_weights``: every backbone weight, BN statistic and edge weight (alpha)
must come from the checkpoint, the checkpoint's graphs must be this backbone's graphs, and
anything else raises naming what was wrong. The backbone then marks itself initialised,
so mmengine's recursive ``init_weights`` of the detector never re-randomises it.

Origin: this project. Licence: Apache-2.0.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch.nn.modules.batchnorm import _BatchNorm
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmdet.registry import MODELS

from .console import CONSOLE

__all__ = ['TopoNetBackbone', 'adapt_stem_weight']

# Classifier parts of a classification checkpoint that a detection backbone does not use.
_CLASSIFIER_PREFIXES = ('final_conv.', 'head.')


def adapt_stem_weight(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a stem convolution trained on ``weight.shape[1]`` input channels to ``in_chans``.

    A grayscale (1-channel) kernel is repeated over the colour channels and divided by
    their number, so an image whose channels are equal (a grey image in RGB) gives exactly
    the response the pretrained network gave. That is the only adaptation offered: any
    other change of input channels has no meaning-preserving answer and raises.
    """
    have = weight.shape[1]
    if have == in_chans:
        return weight
    if have == 1:
        return weight.repeat(1, in_chans, 1, 1) / in_chans
    raise ValueError(f'cannot adapt a stem convolution trained on {have} input channels to {in_chans} '
                     f'(only 1 -> N is supported)')


@MODELS.register_module()
class TopoNetBackbone(BaseModule):
    """A DAG-stage network of ``backbones`` as a multi-level feature extractor.

    Args:
        name (str): A timm model registered by ``backbones`` (``toponet_complete``,
            ``toponet_fmnist_residual_l2``, ``mobilenetv2_100_topo``, ``resnet56_cifar_topo``...).
        out_indices (Sequence[int]): Feature levels to return. A level is a stage output at
            which the resolution is about to change (``feature_info`` of the network,
            without the stem): the 4 stages of TopoNet, strides 2/4/8/16/32 for MobileNetV2,
            the 3 stages of ResNet-CIFAR. Stages after the last requested level are not run
            (under DDP, their parameters then need ``find_unused_parameters``).
        frozen_stages (int): As in mmdet's ResNet: -1 freezes nothing, 0 the stem, k >= 1
            the stem and the first k stages (``stages[:k]``, their alpha included).
            Frozen parts stay in eval mode.
        norm_eval (bool): Keep every BatchNorm in eval mode while training (frozen
            statistics, as mmdet does with ImageNet-pretrained backbones).
        alpha_trainable (bool): Learn the edge weights while fine-tuning. ``False`` keeps
            them at their loaded values (at 1 without a checkpoint: the "Complete" and
            residual baselines).
        in_chans (int): Input channels. A 1-channel pretrained stem is adapted to it
            (``adapt_stem_weight``).
        stem_stride (int, optional): Override the stem stride (TopoNet family only).
        stage_strides (Sequence[int], optional): Override the stage strides (TopoNet
            family only). Convolution weights do not depend on strides, so a checkpoint of
            the same network loads into a re-strided one (the input projection of each
            stage carries its stride, ``backbones/dag.py``).
        input_path (str, optional): Override the TopoNet's ``input_path`` (TopoNet family
            only): ``'node1'`` builds the wiring in which node 1 carries each stage's shape
            change, to load checkpoints trained that way.
        seed (int, optional): Graph seed of random topologies.
        graphs (Sequence, optional): Explicit ``GraphSpec`` (or dicts) per stage.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH)`` with a
            ``.safetensors`` file of ``backbones.checkpoint``: loaded strictly (module
            docstring). Other mmengine initialisers are applied as usual; without
            ``init_cfg`` the network keeps its own initialisation.

    Example:
        >>> backbone = TopoNetBackbone('toponet_fmnist_complete', stem_stride=2, stage_strides=(2, 2, 2, 2))
        >>> [tuple(f.shape) for f in backbone(torch.randn(1, 3, 64, 64))]
        [(1, 32, 16, 16), (1, 64, 8, 8), (1, 128, 4, 4), (1, 160, 2, 2)]
    """

    def __init__(self, name: str, out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = True, alpha_trainable: bool = True, in_chans: int = 3,
                 stem_stride: Optional[int] = None, stage_strides: Optional[Sequence[int]] = None,
                 seed: Optional[int] = None, graphs: Optional[Sequence[Any]] = None,
                 init_cfg: Optional[dict] = None, input_path: Optional[str] = None):
        super().__init__(init_cfg=init_cfg)
        network = _build_network(name, alpha_trainable=alpha_trainable, in_chans=in_chans, stem_stride=stem_stride,
                                 stage_strides=stage_strides, seed=seed, graphs=graphs, input_path=input_path)
        levels = [info for info in network.feature_info if info['module'].startswith('stages.')]
        num_levels = len(levels)
        out_indices = tuple(out_indices)
        if not out_indices or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < num_levels
                                  for i in out_indices) or list(out_indices) != sorted(set(out_indices)):
            raise ValueError(f'out_indices must be increasing feature levels in [0, {num_levels}) for {name}, '
                             f'got {out_indices}')
        num_stages = len(network.stages)
        if (isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int)
                or not -1 <= frozen_stages <= num_stages):
            raise ValueError(f'frozen_stages must be an int in [-1, {num_stages}] for {name}, got {frozen_stages!r}')
        self.model_name = name
        self.in_chans = in_chans
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.stem = network.stem
        self.stages = network.stages
        # per returned level: the stage that produces it, its channels and stride
        self._level_stage = [int(levels[i]['module'].split('.')[1]) for i in out_indices]
        self.out_channels = [levels[i]['num_chs'] for i in out_indices]
        self.out_strides = [levels[i]['reduction'] for i in out_indices]
        self._last_stage = self._level_stage[-1]
        self._freeze_stages()

    # -- mmdet's backbone contract ----------------------------------------------------
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.shape[1] != self.in_chans:
            raise ValueError(f'{self.model_name} backbone expects {self.in_chans}-channel images, '
                             f'got input of shape {tuple(x.shape)}')
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            if i > self._last_stage:
                break
            x = stage(x)
            if i in self._level_stage:
                outs.append(x)
        return tuple(outs)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self.stem] + [self.stages[i] for i in range(self.frozen_stages)]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'TopoNetBackbone':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    # -- strict checkpoint loading ----------------------------------------------------
    def init_weights(self) -> None:
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            unknown = set(cfg) - {'type', 'checkpoint', 'map_location'}
            if unknown:
                raise ValueError(f'{self.model_name} backbone: Pretrained init_cfg takes "checkpoint" only, '
                                 f'got unknown keys {sorted(unknown)}')
            if not cfg.get('checkpoint'):
                raise ValueError(f'{self.model_name} backbone: Pretrained init_cfg needs a "checkpoint" path '
                                 f'(a .safetensors file written by classification)')
            self.load_checkpoint(cfg['checkpoint'])
            self._is_init = True
        elif cfg:
            super().init_weights()
        else:
            self._is_init = True  # the network initialised itself when built

    def load_checkpoint(self, path: str) -> Dict[str, List[str]]:
        """Load a shared classification checkpoint strictly; returns the keys it skipped
        (the classifier's) and the keys whose stem weights were adapted."""
        from .checkpoint import read_checkpoint

        ckpt = read_checkpoint(path)
        self._check_topology(ckpt, path)
        own = self.state_dict()
        state, skipped, adapted = {}, [], []
        for key, value in ckpt.state_dict.items():
            if key.startswith(_CLASSIFIER_PREFIXES):
                skipped.append(key)
                continue
            if key == 'stem.conv.weight' and key in own and value.shape != own[key].shape:
                if value.shape[0] != own[key].shape[0] or value.shape[2:] != own[key].shape[2:]:
                    raise ValueError(f'{path}: stem.conv.weight has shape {tuple(value.shape)}, this '
                                     f'{self.model_name} backbone has {tuple(own[key].shape)}')
                value = adapt_stem_weight(value, self.in_chans)
                adapted.append(key)
            state[key] = value
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(
                f'{path} (model {ckpt.model_name!r}) does not fit the {self.model_name} backbone: '
                f'missing {_first(missing)} ({len(missing)} keys), unexpected {_first(unexpected)} '
                f'({len(unexpected)} keys); every backbone weight and edge weight must come from the checkpoint')
        rewired = [f'{k} ({state[k].shape[0]} edges vs {own[k].shape[0]})' for k in own
                   if k.endswith('edge_index') and not torch.equal(state[k], own[k])]
        if rewired:
            raise ValueError(f'{path}: checkpoint of {ckpt.model_name!r} was trained with another topology than '
                             f'the {self.model_name} backbone: {rewired[:3]}; set model.backbone.name (and seed) '
                             f'to the checkpoint\'s network')
        mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs backbone {tuple(own[k].shape)}'
                      for k, v in state.items() if v.shape != own[k].shape]
        if mismatched:
            raise ValueError(f'{path} (model {ckpt.model_name!r}) does not fit the {self.model_name} backbone: '
                             f'shape mismatch in {len(mismatched)} tensors, first {mismatched[:3]}')
        self.load_state_dict(state, strict=True)
        MMLogger.get_current_instance().info(
            f'{self.model_name} backbone: loaded all {len(state)} tensors from {path} '
            f'(alpha of {len(self.stages)} stages included; skipped {len(skipped)} classifier tensors'
            f'{", adapted the stem to %d input channels" % self.in_chans if adapted else ""})', extra=CONSOLE)
        return dict(skipped=skipped, adapted=adapted)

    def _check_topology(self, ckpt, path: str) -> None:
        if not ckpt.topology:
            return
        ours = [stage.graph for stage in self.stages]
        theirs = ckpt.graphs
        if len(theirs) != len(ours):
            raise ValueError(f'{path}: checkpoint of {ckpt.model_name!r} has {len(theirs)} DAG stages, the '
                             f'{self.model_name} backbone has {len(ours)}')
        for s, (a, b) in enumerate(zip(theirs, ours)):
            if a.num_nodes != b.num_nodes or sorted(map(tuple, a.edges)) != sorted(map(tuple, b.edges)):
                raise ValueError(
                    f'{path}: checkpoint of {ckpt.model_name!r} was trained with another topology: stage {s} is '
                    f'{a.kind} with {a.num_nodes} nodes and {a.num_edges} edges, the {self.model_name} backbone '
                    f'has {b.kind} with {b.num_nodes} nodes and {b.num_edges} edges; set model.backbone.name '
                    f'(and seed) to the checkpoint\'s network')


def _first(keys: List[str], n: int = 5) -> str:
    return str(keys[:n]) + (' ...' if len(keys) > n else '')


def _build_network(name: str, alpha_trainable: bool, in_chans: int, stem_stride: Optional[int],
                   stage_strides: Optional[Sequence[int]], seed: Optional[int], graphs: Optional[Sequence[Any]],
                   input_path: Optional[str] = None):
    import timm
    from .dagnet import DAGNetMixin
    from .toponet import TopoNet, model_cfgs

    kwargs: Dict[str, Any] = dict(num_classes=0, in_chans=in_chans, alpha_trainable=alpha_trainable)
    if seed is not None:
        kwargs['seed'] = seed
    if graphs is not None:
        kwargs['graphs'] = list(graphs)
    if not timm.is_model(name):
        raise ValueError(f'unknown backbone {name!r}: not a timm model registered by backbones')
    if input_path is not None:
        if name not in model_cfgs:
            raise ValueError(f'input_path can only be set for the TopoNet family (backbones.toponet.model_cfgs), '
                             f'not {name!r}')
        kwargs['input_path'] = input_path
    if stem_stride is not None or stage_strides is not None:
        if name not in model_cfgs:
            raise ValueError(f'stem_stride/stage_strides can only be overridden for the TopoNet family '
                             f'(backbones.toponet.model_cfgs), not {name!r}')
        cfg = model_cfgs[name]
        if stem_stride is not None:
            cfg = replace(cfg, stem_stride=int(stem_stride))
        if stage_strides is not None:
            cfg = replace(cfg, stage_strides=tuple(int(s) for s in stage_strides))
        network = TopoNet(cfg, **kwargs)
    else:
        network = timm.create_model(name, **kwargs)
    if not isinstance(network, DAGNetMixin):
        raise ValueError(f'{name!r} is not a DAG-stage network of backbones (TopoNet, ResNet-CIFAR, MobileNetV2)')
    return network
