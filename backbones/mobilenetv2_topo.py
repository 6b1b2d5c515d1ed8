"""MobileNetV2 (Sandler et al., 2018) as DAG stages, original and topology-optimised, with
the paper's depth extensions.

Paper: "Diving into optimization of topology in neural networks", section 3.1, Table 3.

A MobileNetV2 stage (one row ``t, c, n, s`` of its Table 2) is a DAG: its first inverted
bottleneck changes the shape and has no shortcut, every later block adds its input back.
Unrolled, block i's input is the sum of the outputs of blocks 1..i-1, so the blocks and the
stage output form a complete DAG that the stage input reaches only through block 1:
``residual_graph(n + 2, 1, input_shortcuts=False)``. The original network fixes every
weight at 1 (a plain sum: exactly MobileNetV2); the optimised one learns alpha.

Depth extensions (the paper's "2N/4N/6N", "nodes per stage multiplied"): see
``stage_depths`` for the rule and how close it comes to Table 3.

Origin: this project. Licence: Apache-2.0.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from timm.layers import ClassifierHead
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from .dag import DAGStage
from .dagnet import DAGFeatureListNet, DAGNetMixin, checkpoint_filter_fn, factory_device, follow_in_chans
from .toponet import _cfg
from .graphs import GraphSpec, complete_graph, residual_graph
from .ops import ConvBnSequential

__all__ = ['MobileNetV2Topo', 'MBV2_SETTINGS', 'stage_depths']

# (expand ratio t, channels c, blocks n, stride s) of MobileNetV2-1.0
MBV2_SETTINGS: Tuple[Tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def stage_depths(multiplier: int) -> List[int]:
    """Blocks per stage for depth extension ``multiplier`` (1, 2, 4, 6): every stage's block
    count times the multiplier, except the last (320-channel) stage, which gets at most 2.

    Why: Table 3 prints 6.43M/0.62G (2N), 9.62M/1.10G (4N), 12.00M/2.06G (6N). Multiplying
    every stage gives 6.35M/0.61G, 12.05M/1.22G, 17.75M/1.83G: right for 2N, far off for 4N.
    Capping the 320-channel stage (1.25M parameters a block) at 2 blocks gives 9.54M/1.10G
    for 4N. No per-stage multiplication (1 to 8 per stage, searched exhaustively) comes within
    6% of the 6N figures, which also grow FLOPs faster than parameters unlike any depth
    scaling of MobileNetV2; our 6N (12.73M/1.59G) follows the same rule and does not match.
    """
    if multiplier not in (1, 2, 4, 6):
        raise ValueError(f"depth multiplier must be 1, 2, 4 or 6 (the paper's N, 2N, 4N, 6N), got {multiplier!r}")
    last = len(MBV2_SETTINGS) - 1
    return [n * (min(multiplier, 2) if i == last else multiplier) for i, (_, _, n, _) in enumerate(MBV2_SETTINGS)]


class MobileNetV2Topo(DAGNetMixin, nn.Module):
    """MobileNetV2-1.0 with DAG stages.

    Args:
        depth_multiplier (int): 1, 2, 4 or 6 (the paper's N, 2N, 4N, 6N).
        topology (str): ``'residual'`` (MobileNetV2's own wiring) or ``'complete'`` (every
            block also reads the stage input through a projection: a larger search space).
        num_classes, in_chans, global_pool, drop_rate: as in timm (dropout 0.2 as in the paper).
        alpha_trainable (bool): Learn the edge weights (the paper's optimised network).
        graphs (sequence, optional): One ``GraphSpec`` (or dict) per stage, overriding the
            generated ones (used when loading a checkpoint).
        device, dtype: Where and in which floating-point type parameters and buffers are
            created (timm's factory passes both; ``'meta'`` allocates nothing).
    """

    def __init__(self, depth_multiplier: int = 1, topology: str = 'residual', num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = 'avg', drop_rate: float = 0.2, alpha_trainable: bool = True,
                 graphs: Optional[Sequence[Union[GraphSpec, Dict]]] = None,
                 device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None):
        super().__init__()
        if topology not in ('residual', 'complete'):
            raise ValueError(f"MobileNetV2 topology must be 'residual' or 'complete', got {topology!r}")
        depths = stage_depths(depth_multiplier)
        if graphs is None:
            graphs = [residual_graph(n + 2, 1, input_shortcuts=False) if topology == 'residual'
                      else complete_graph(n + 2) for n in depths]
        else:
            graphs = [g if isinstance(g, GraphSpec) else GraphSpec.from_dict(g) for g in graphs]
            if len(graphs) != len(MBV2_SETTINGS):
                raise ValueError(f'{len(graphs)} graphs given for a {len(MBV2_SETTINGS)}-stage MobileNetV2')
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        with factory_device(device):
            self.stem = ConvBnSequential()
            self.stem.add_module('conv', nn.Conv2d(in_chans, 32, 3, stride=2, padding=1, bias=False))
            self.stem.add_module('bn', nn.BatchNorm2d(32))
            self.stem.add_module('act', nn.ReLU6())
            # features at the last stage of each stride, as timm's MobileNetV2: 16/24/32/96/320 channels
            self.feature_info = []
            stages, prev, reduction = [], 32, 2
            for i, ((t, c, _, s), graph) in enumerate(zip(MBV2_SETTINGS, graphs)):
                stages.append(DAGStage(graph, prev, c, stride=s, node_op='inverted_bottleneck',
                                       alpha_trainable=alpha_trainable, node_kwargs={'expand_ratio': t}))
                prev, reduction = c, reduction * s
                if i == len(MBV2_SETTINGS) - 1 or MBV2_SETTINGS[i + 1][3] == 2:
                    self.feature_info.append(dict(num_chs=c, reduction=reduction, module=f'stages.{i}'))
            self.stages = nn.Sequential(*stages)
            self.final_conv = ConvBnSequential()
            self.final_conv.add_module('conv', nn.Conv2d(prev, 1280, 1, bias=False))
            self.final_conv.add_module('bn', nn.BatchNorm2d(1280))
            self.final_conv.add_module('act', nn.ReLU6())
            self.num_features = self.head_hidden_size = 1280
            self.head = ClassifierHead(1280, num_classes, pool_type=global_pool, drop_rate=drop_rate)
            self._init_weights()
        if dtype is not None:
            self.to(dtype=dtype)

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False):
        """Outputs of the last stage at each stride (``feature_info`` order)."""
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        feature_stages = [int(f['module'].split('.')[1]) for f in self.feature_info]
        last_stage = feature_stages[max_index] if stop_early else len(self.stages) - 1
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            if i > last_stage:
                break
            x = stage(x)
            if i in feature_stages and feature_stages.index(i) in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return self.final_conv(x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True):
        """Drop the stages after the last feature of ``indices`` (``feature_info`` order) and,
        with ``prune_head``, the final conv and the classifier; returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        last_stage = int(self.feature_info[max_index]['module'].split('.')[1])
        self.stages = self.stages[:last_stage + 1]
        if prune_head:
            self.final_conv = nn.Identity()
            self.reset_classifier(0, '')
        return take_indices


def _create(variant: str, pretrained: bool, depth_multiplier: int, optimized: bool, **kwargs) -> MobileNetV2Topo:
    kwargs.setdefault('alpha_trainable', optimized)
    model = build_model_with_cfg(
        MobileNetV2Topo, variant, pretrained, depth_multiplier=depth_multiplier,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3, 4), feature_cls=DAGFeatureListNet),
        **kwargs)
    return follow_in_chans(model)


default_cfgs = generate_default_cfgs({
    f'mobilenetv2_100{suffix}{topo}.untrained': _cfg()
    for suffix in ('', '_2n', '_4n', '_6n') for topo in ('_orig', '_topo')
})


@register_model
def mobilenetv2_100_orig(pretrained: bool = False, **kwargs) -> MobileNetV2Topo:
    """MobileNetV2-1.0, original topology (alpha fixed at 1), Table 3."""
    return _create('mobilenetv2_100_orig', pretrained, 1, False, **kwargs)


@register_model
def mobilenetv2_100_topo(pretrained: bool = False, **kwargs) -> MobileNetV2Topo:
    """MobileNetV2-1.0 with learnable alpha on its residual DAGs, Table 3 (optimized)."""
    return _create('mobilenetv2_100_topo', pretrained, 1, True, **kwargs)


@register_model
def mobilenetv2_100_2n_orig(pretrained: bool = False, **kwargs) -> MobileNetV2Topo:
    """MobileNetV2-1.0-2N (twice the blocks per stage), original topology, Table 3."""
    return _create('mobilenetv2_100_2n_orig', pretrained, 2, False, **kwargs)


@register_model
def mobilenetv2_100_2n_topo(pretrained: bool = False, **kwargs) -> MobileNetV2Topo:
    """MobileNetV2-1.0-2N with learnable alpha, Table 3 (optimized)."""
    return _create('mobilenetv2_100_2n_topo', pretrained, 2, True, **kwargs)


@register_model
def mobilenetv2_100_4n_orig(pretrained: bool = False, **kwargs) -> MobileNetV2Topo:
    """MobileNetV2-1.0-4N, original topology, Table 3."""
    return _create('mobilenetv2_100_4n_orig', pretrained, 4, False, **kwargs)


@register_model
def mobilenetv2_100_4n_topo(pretrained: bool = False, **kwargs) -> MobileNetV2Topo:
    """MobileNetV2-1.0-4N with learnable alpha, Table 3 (optimized)."""
    return _create('mobilenetv2_100_4n_topo', pretrained, 4, True, **kwargs)


@register_model
def mobilenetv2_100_6n_orig(pretrained: bool = False, **kwargs) -> MobileNetV2Topo:
    """MobileNetV2-1.0-6N, original topology, Table 3."""
    return _create('mobilenetv2_100_6n_orig', pretrained, 6, False, **kwargs)


@register_model
def mobilenetv2_100_6n_topo(pretrained: bool = False, **kwargs) -> MobileNetV2Topo:
    """MobileNetV2-1.0-6N with learnable alpha, Table 3 (optimized)."""
    return _create('mobilenetv2_100_6n_topo', pretrained, 6, True, **kwargs)
