"""TopoNet: a backbone of DAG stages with learnable topology.

Paper: "Diving into optimization of topology in neural networks", ICLR 2020 submission,
Table 1 (architecture), Table 4 (topologies), Table 7 (random-graph generators).

Architecture (Table 1): a 7x7 conv head with C channels at stride 2, four DAG stages of
{N1..N4} nodes with 2C, 4C, 8C, 16C channels each halving the resolution, and a
classifier. The classifier is RandWire's (Xie et al., 2019, whom the paper follows):
ReLU -> 1x1 conv to 1280 -> BN -> ReLU -> global average pool -> FC. Table 1 lists only
"GAP, 1k-d FC", but the paper's own numbers require the 1280-d conv: with it, C=64 and
N={14,20,26,14} give 23.90M parameters (Table 4: 23.23M, +2.9%) and, for the face model,
Conv/BN of 21.30M beside an FC of 12.85M (Table 6: 20.64M / 12.85M, +3.2% / 0%); without
it the ImageNet model would have 22.59M.

Stage inputs (``backbones/dag.py``): every TopoNet uses ``input_path='projection'``. Each
stage projects its input once to the new resolution and width, every edge out of the stage
input reads that projection, and every computing node maps the stage width to itself, so
all topologies of the family have the same weights (23,901,160 for C=64, 424,682 for the
Fashion-MNIST models) and differ only by their edge weights. ``input_path='node1'`` builds
the earlier wiring, in which node 1 carries the stage's shape change: 23.20M for the
complete C=64 network (-0.1%) and 20.60M face Conv/BN (-0.2%), but fewer parameters for
graphs whose stage input feeds node 1 alone (BA: 22.49M), which confounds comparisons of
topologies.

Origin: this project. Licence: Apache-2.0.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead
from timm.models import build_model_with_cfg, register_model, generate_default_cfgs
from timm.models._features import feature_take_indices

from .dag import INPUT_PATHS, DAGStage
from .dagnet import DAGFeatureListNet, DAGNetMixin, checkpoint_filter_fn, factory_device, follow_in_chans
from .errors import InputError
from .graphs import GRAPH_KINDS, GraphSpec, build_graph, derive_seed
from .ops import NODE_OPS, ConvBnSequential

__all__ = ['TopologyCfg', 'TopoNetCfg', 'TopoNet', 'model_cfgs', 'FASHION_MNIST_MEAN', 'FASHION_MNIST_STD']

FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


@dataclass(frozen=True)
class TopologyCfg:
    """Which graph generator wires every stage.

    Args:
        kind (str): One of ``backbones.graphs.GRAPH_KINDS``.
        params (tuple): Generator arguments as ``(name, value)`` pairs.
        seed (int): Network-level seed; stage s uses ``derive_seed(seed, s)``.
    """

    kind: str = 'complete'
    params: Tuple[Tuple[str, Any], ...] = ()
    seed: int = 0

    def __post_init__(self):
        if self.kind not in GRAPH_KINDS:
            raise ValueError(f'unknown topology {self.kind!r}; expected one of {GRAPH_KINDS}')

    def build(self, nodes: Sequence[int]) -> List[GraphSpec]:
        return [build_graph(self.kind, n, seed=derive_seed(self.seed, s), **dict(self.params))
                for s, n in enumerate(nodes)]


@dataclass(frozen=True)
class TopoNetCfg:
    """Architecture of a TopoNet variant (Table 1 of the paper)."""

    nodes: Tuple[int, ...] = (14, 20, 26, 14)
    stage_chs: Tuple[int, ...] = (128, 256, 512, 1024)
    stage_strides: Tuple[int, ...] = (2, 2, 2, 2)
    stem_chs: int = 64
    stem_kernel_size: int = 7
    stem_stride: int = 2
    node_op: str = 'sep'
    proj_op: Optional[str] = None  # input projection op; None: same as node_op
    head_chs: int = 1280
    topology: TopologyCfg = field(default_factory=TopologyCfg)
    # How a stage input reaches nodes at the new shape (backbones.dag): 'projection' feeds
    # every edge out of the stage input from one projection, so every topology has the same
    # ops; 'node1' lets node 1 carry the shape change (parameters then follow the graph).
    input_path: str = 'projection'

    def __post_init__(self):
        if not (len(self.nodes) == len(self.stage_chs) == len(self.stage_strides)) or not self.nodes:
            raise ValueError(
                f'nodes, stage_chs and stage_strides need one entry per stage, got {len(self.nodes)}, '
                f'{len(self.stage_chs)} and {len(self.stage_strides)}')
        for name in ('nodes', 'stage_chs', 'stage_strides'):
            for v in getattr(self, name):
                if isinstance(v, bool) or not isinstance(v, int) or v < (3 if name == 'nodes' else 1):
                    minimum = 3 if name == 'nodes' else 1
                    raise ValueError(f'{name} entries must be ints >= {minimum}, got {getattr(self, name)}')
        for name in ('node_op', 'proj_op'):
            op = getattr(self, name)
            if op not in NODE_OPS and not (name == 'proj_op' and op is None):
                raise ValueError(f'unknown node op {op!r}; expected one of {tuple(NODE_OPS)}')
        if self.input_path not in INPUT_PATHS:
            raise ValueError(f'unknown input_path {self.input_path!r}; expected one of {INPUT_PATHS}')
        if self.head_chs < 0:
            raise ValueError(f'head_chs must be >= 0 (0: no 1x1 conv head), got {self.head_chs}')


def toponet_cfg(channels: int = 64, nodes=(14, 20, 26, 14), kind: str = 'complete', **params) -> TopoNetCfg:
    """The ImageNet family of Table 1: head C, stages 2C/4C/8C/16C."""
    return TopoNetCfg(nodes=tuple(nodes), stage_chs=tuple(channels * m for m in (2, 4, 8, 16)),
                      stem_chs=channels, topology=TopologyCfg(kind, tuple(sorted(params.items()))))


def toponet_fmnist_cfg(kind: str = 'complete', **params) -> TopoNetCfg:
    """A small TopoNet for 28x28 grayscale input (Fashion-MNIST): 3x3 stride-1 head with
    C=16, stages of 32, 64, 128 and 160 channels at 14, 7, 4 and 4 pixels (no stride in the
    last stage: a 4x4 map is small enough). The last stage is 10C rather than Table 1's 16C:
    at 4x4 its pointwise convolutions cost most of the time of a CPU training step, and the
    narrower stage trains to higher accuracy within the demo's time budget. Eight nodes or
    more per stage leave the 6 computing nodes that BA (m=5) and WS (k=4) need. 10.1M MACs
    per image for complete DAGs, 424,682 parameters without alpha for every topology."""
    return TopoNetCfg(nodes=(8, 10, 12, 8), stage_chs=(32, 64, 128, 160), stage_strides=(2, 2, 2, 1),
                      stem_chs=16, stem_kernel_size=3, stem_stride=1, head_chs=0,
                      topology=TopologyCfg(kind, tuple(sorted(params.items()))))


_TOPOLOGIES: Dict[str, Tuple[str, Dict[str, Any]]] = {
    'complete': ('complete', {}),
    'residual_l2': ('residual', {'interval': 2}),
    'residual_l3': ('residual', {'interval': 3}),
    'residual_l4': ('residual', {'interval': 4}),
    'random_p04': ('random', {'p': 0.4}),
    'random_p06': ('random', {'p': 0.6}),
    'random_p08': ('random', {'p': 0.8}),
    'er': ('er', {'p': 0.2}),
    'ba': ('ba', {'m': 5}),
    'ws': ('ws', {'k': 4, 'p': 0.75}),
}

model_cfgs: Dict[str, TopoNetCfg] = {}
for _suffix, (_kind, _params) in _TOPOLOGIES.items():
    model_cfgs[f'toponet_{_suffix}'] = toponet_cfg(64, kind=_kind, **_params)
    model_cfgs[f'toponet_fmnist_{_suffix}'] = toponet_fmnist_cfg(_kind, **_params)


class TopoNet(DAGNetMixin, nn.Module):
    """TopoNet backbone and classifier.

    Args:
        cfg (TopoNetCfg): Architecture.
        num_classes (int): Classifier outputs; 0 for no classifier.
        in_chans (int): Input image channels.
        global_pool (str): timm pooling type of the classifier head.
        drop_rate (float): Dropout before the classifier (the paper uses none).
        alpha_trainable (bool): Learn edge weights; ``False`` keeps them at 1.
        graphs (sequence, optional): One ``GraphSpec`` (or its dict) per stage, overriding
            the generator of ``cfg.topology`` (used when loading a checkpoint).
        seed (int, optional): Overrides ``cfg.topology.seed`` for random generators.
        aggregation (str): Eager formulation of the alpha-weighted sums
            (``backbones.dag.AGGREGATIONS``); speed and memory only, results are the same.
        input_path (str, optional): Overrides ``cfg.input_path`` (``'projection'``, the
            default of every TopoNet, or ``'node1'``, the wiring in which node 1 carries the
            stage's shape change; ``backbones/dag.py``). Its weights do not load into the
            other wiring.
        device, dtype: Where and in which floating-point type parameters and buffers are
            created (timm's factory passes both to every model; ``'meta'`` allocates
            nothing). None: the default device, float32.

    Example:
        >>> model = TopoNet(model_cfgs['toponet_fmnist_complete'], num_classes=10, in_chans=1)
        >>> model(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, cfg: TopoNetCfg, num_classes: int = 1000, in_chans: int = 3, global_pool: str = 'avg',
                 drop_rate: float = 0.0, alpha_trainable: bool = True,
                 graphs: Optional[Sequence[Union[GraphSpec, Dict]]] = None, seed: Optional[int] = None,
                 aggregation: str = 'auto', input_path: Optional[str] = None,
                 device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None):
        super().__init__()
        if seed is not None:
            cfg = replace(cfg, topology=replace(cfg.topology, seed=int(seed)))
        if input_path is not None:
            if input_path not in INPUT_PATHS:
                raise InputError(f'unknown input_path {input_path!r}', 'TopoNet', f'one of {INPUT_PATHS}')
            cfg = replace(cfg, input_path=input_path)
        if graphs is None:
            graphs = cfg.topology.build(cfg.nodes)
        else:
            graphs = [g if isinstance(g, GraphSpec) else GraphSpec.from_dict(g) for g in graphs]
            if len(graphs) != len(cfg.nodes):
                raise ValueError(f'{len(graphs)} graphs given for a {len(cfg.nodes)}-stage network')
        self.cfg = cfg
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        with factory_device(device):
            self.stem = ConvBnSequential()
            self.stem.add_module('conv', nn.Conv2d(in_chans, cfg.stem_chs, cfg.stem_kernel_size,
                                                   stride=cfg.stem_stride, padding=cfg.stem_kernel_size // 2,
                                                   bias=False))
            self.stem.add_module('bn', nn.BatchNorm2d(cfg.stem_chs))
            reduction = cfg.stem_stride
            self.feature_info = [dict(num_chs=cfg.stem_chs, reduction=reduction, module='stem.bn')]

            stages = []
            prev_chs = cfg.stem_chs
            for s, (graph, chs, stride) in enumerate(zip(graphs, cfg.stage_chs, cfg.stage_strides)):
                stages.append(DAGStage(graph, prev_chs, chs, stride=stride, node_op=cfg.node_op,
                                       alpha_trainable=alpha_trainable, proj_op=cfg.proj_op, aggregation=aggregation,
                                       input_path=cfg.input_path))
                prev_chs = chs
                reduction *= stride
                self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f'stages.{s}'))
            self.stages = nn.Sequential(*stages)

            # Stage outputs are sums of BN outputs (pre-activation), hence the leading ReLU.
            self.final_conv = ConvBnSequential()
            self.final_conv.add_module('act', nn.ReLU())
            if cfg.head_chs:
                self.final_conv.add_module('conv', nn.Conv2d(prev_chs, cfg.head_chs, 1, bias=False))
                self.final_conv.add_module('bn', nn.BatchNorm2d(cfg.head_chs))
                self.final_conv.add_module('act2', nn.ReLU())
                prev_chs = cfg.head_chs
            self.num_features = self.head_hidden_size = prev_chs
            self.head = ClassifierHead(prev_chs, num_classes, pool_type=global_pool, drop_rate=drop_rate)
            self._init_weights()
        if dtype is not None:
            self.to(dtype=dtype)

    # -- timm interface beyond DAGNetMixin -------------------------------------------
    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False):
        """Features of the stem (index 0) and of each stage (indices 1..4)."""
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        intermediates = []
        x = self.stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        stages = self.stages if not stop_early else self.stages[:max_index]
        for i, stage in enumerate(stages):
            x = stage(x)
            if i + 1 in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return self.final_conv(x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True):
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        self.stages = self.stages[:max_index]
        if prune_head:
            self.final_conv = nn.Identity()
            self.reset_classifier(0, '')
        return take_indices






def _create_toponet(variant: str, pretrained: bool = False, **kwargs) -> TopoNet:
    model = build_model_with_cfg(
        TopoNet, variant, pretrained, model_cfg=model_cfgs[variant],
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=tuple(range(len(model_cfgs[variant].nodes) + 1)),
                         feature_cls=DAGFeatureListNet),
        **kwargs)
    return follow_in_chans(model)


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'url': url, 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bilinear', 'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD, 'first_conv': 'stem.conv', 'classifier': 'head.fc',
        'license': 'apache-2.0', **kwargs,
    }


def _fmnist_cfg(**kwargs) -> Dict[str, Any]:
    return _cfg(num_classes=10, input_size=(1, 28, 28), pool_size=(4, 4), crop_pct=1.0,
                mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD, **kwargs)


default_cfgs = generate_default_cfgs({
    **{f'toponet_{s}.untrained': _cfg() for s in _TOPOLOGIES},
    **{f'toponet_fmnist_{s}.untrained': _fmnist_cfg() for s in _TOPOLOGIES},
})


@register_model
def toponet_complete(pretrained: bool = False, **kwargs) -> TopoNet:
    """TopoNet, complete DAG per stage, learnable alpha (Table 4 "Complete, alpha")."""
    return _create_toponet('toponet_complete', pretrained, **kwargs)


@register_model
def toponet_residual_l2(pretrained: bool = False, **kwargs) -> TopoNet:
    """TopoNet, residual topology with interval 2 (Table 4)."""
    return _create_toponet('toponet_residual_l2', pretrained, **kwargs)


@register_model
def toponet_residual_l3(pretrained: bool = False, **kwargs) -> TopoNet:
    """TopoNet, residual topology with interval 3 (Table 4)."""
    return _create_toponet('toponet_residual_l3', pretrained, **kwargs)


@register_model
def toponet_residual_l4(pretrained: bool = False, **kwargs) -> TopoNet:
    """TopoNet, residual topology with interval 4 (Table 4)."""
    return _create_toponet('toponet_residual_l4', pretrained, **kwargs)


@register_model
def toponet_random_p04(pretrained: bool = False, **kwargs) -> TopoNet:
    """TopoNet, random topology with edge probability 0.4 (Table 4)."""
    return _create_toponet('toponet_random_p04', pretrained, **kwargs)


@register_model
def toponet_random_p06(pretrained: bool = False, **kwargs) -> TopoNet:
    """TopoNet, random topology with edge probability 0.6 (Table 4)."""
    return _create_toponet('toponet_random_p06', pretrained, **kwargs)


@register_model
def toponet_random_p08(pretrained: bool = False, **kwargs) -> TopoNet:
    """TopoNet, random topology with edge probability 0.8 (Table 4)."""
    return _create_toponet('toponet_random_p08', pretrained, **kwargs)


@register_model
def toponet_er(pretrained: bool = False, **kwargs) -> TopoNet:
    """TopoNet wired by Erdos-Renyi graphs, p=0.2 (Table 7)."""
    return _create_toponet('toponet_er', pretrained, **kwargs)


@register_model
def toponet_ba(pretrained: bool = False, **kwargs) -> TopoNet:
    """TopoNet wired by Barabasi-Albert graphs, m=5 (Table 7)."""
    return _create_toponet('toponet_ba', pretrained, **kwargs)


@register_model
def toponet_ws(pretrained: bool = False, **kwargs) -> TopoNet:
    """TopoNet wired by Watts-Strogatz graphs, k=4, p=0.75 (Table 7)."""
    return _create_toponet('toponet_ws', pretrained, **kwargs)


@register_model
def toponet_fmnist_complete(pretrained: bool = False, **kwargs) -> TopoNet:
    """Small TopoNet for 28x28 grayscale input, complete DAGs, learnable alpha."""
    return _create_toponet('toponet_fmnist_complete', pretrained, **kwargs)


@register_model
def toponet_fmnist_residual_l2(pretrained: bool = False, **kwargs) -> TopoNet:
    """Small TopoNet for 28x28 grayscale input, residual interval 2."""
    return _create_toponet('toponet_fmnist_residual_l2', pretrained, **kwargs)


@register_model
def toponet_fmnist_residual_l3(pretrained: bool = False, **kwargs) -> TopoNet:
    """Small TopoNet for 28x28 grayscale input, residual interval 3."""
    return _create_toponet('toponet_fmnist_residual_l3', pretrained, **kwargs)


@register_model
def toponet_fmnist_residual_l4(pretrained: bool = False, **kwargs) -> TopoNet:
    """Small TopoNet for 28x28 grayscale input, residual interval 4."""
    return _create_toponet('toponet_fmnist_residual_l4', pretrained, **kwargs)


@register_model
def toponet_fmnist_random_p04(pretrained: bool = False, **kwargs) -> TopoNet:
    """Small TopoNet for 28x28 grayscale input, random p=0.4."""
    return _create_toponet('toponet_fmnist_random_p04', pretrained, **kwargs)


@register_model
def toponet_fmnist_random_p06(pretrained: bool = False, **kwargs) -> TopoNet:
    """Small TopoNet for 28x28 grayscale input, random p=0.6."""
    return _create_toponet('toponet_fmnist_random_p06', pretrained, **kwargs)


@register_model
def toponet_fmnist_random_p08(pretrained: bool = False, **kwargs) -> TopoNet:
    """Small TopoNet for 28x28 grayscale input, random p=0.8."""
    return _create_toponet('toponet_fmnist_random_p08', pretrained, **kwargs)


@register_model
def toponet_fmnist_er(pretrained: bool = False, **kwargs) -> TopoNet:
    """Small TopoNet for 28x28 grayscale input, Erdos-Renyi p=0.2."""
    return _create_toponet('toponet_fmnist_er', pretrained, **kwargs)


@register_model
def toponet_fmnist_ba(pretrained: bool = False, **kwargs) -> TopoNet:
    """Small TopoNet for 28x28 grayscale input, Barabasi-Albert m=5."""
    return _create_toponet('toponet_fmnist_ba', pretrained, **kwargs)


@register_model
def toponet_fmnist_ws(pretrained: bool = False, **kwargs) -> TopoNet:
    """Small TopoNet for 28x28 grayscale input, Watts-Strogatz k=4, p=0.75."""
    return _create_toponet('toponet_fmnist_ws', pretrained, **kwargs)
