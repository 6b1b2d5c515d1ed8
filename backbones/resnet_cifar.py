"""ResNet-CIFAR (He et al., 2016) as DAG stages, original and topology-optimised.

Paper: "Diving into optimization of topology in neural networks", section 3.1, Table 2.

Each of the three stages (16, 32, 64 channels at 32, 16, 8 pixels) holds ``n`` basic blocks
of two 3x3 conv layers (depth ``6n + 2``). In the paper's topological view a stage is a DAG
of ``2n + 2`` nodes: the original network is the residual topology with interval 2 and
fixed weights; the optimised one is the complete DAG (interval 1) with learnable alpha.
Nodes are ReLU -> 3x3 conv -> BN (the pre-activation order); shortcuts that cross a shape
change read one 1x1 projection (ResNet's projection shortcut). Built with ``TopoNet``, so
every model has the same interface, checkpoint format and sparsity support.

Origin: this project. Licence: Apache-2.0.
"""
from __future__ import annotations

from typing import Any, Dict

from timm.models import generate_default_cfgs, register_model

from .toponet import TopoNet, TopoNetCfg, TopologyCfg, _create_toponet, _cfg, model_cfgs

__all__ = ['resnet_cifar_cfg', 'CIFAR100_MEAN', 'CIFAR100_STD']

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

_DEPTHS = (20, 32, 44, 56, 110)


def resnet_cifar_cfg(depth: int, optimized: bool) -> TopoNetCfg:
    if (depth - 2) % 6:
        raise ValueError(f'ResNet-CIFAR depth must be 6n + 2, got {depth}')
    blocks = (depth - 2) // 6
    topology = TopologyCfg('complete') if optimized else TopologyCfg('residual', (('interval', 2),))
    return TopoNetCfg(nodes=(2 * blocks + 2,) * 3, stage_chs=(16, 32, 64), stage_strides=(1, 2, 2), stem_chs=16,
                      stem_kernel_size=3, stem_stride=1, node_op='conv3x3', proj_op='conv1x1', head_chs=0,
                      topology=topology, input_path='node1')  # node 1 is the block's strided conv: He et al.'s counts


for _depth in _DEPTHS:
    model_cfgs[f'resnet{_depth}_cifar'] = resnet_cifar_cfg(_depth, optimized=False)
    model_cfgs[f'resnet{_depth}_cifar_topo'] = resnet_cifar_cfg(_depth, optimized=True)


def _cifar_cfg(**kwargs) -> Dict[str, Any]:
    return _cfg(num_classes=100, input_size=(3, 32, 32), pool_size=(8, 8), crop_pct=1.0, mean=CIFAR100_MEAN,
                std=CIFAR100_STD, **kwargs)


default_cfgs = generate_default_cfgs({
    **{f'resnet{d}_cifar.untrained': _cifar_cfg() for d in _DEPTHS},
    **{f'resnet{d}_cifar_topo.untrained': _cifar_cfg() for d in _DEPTHS},
})


def _original(variant: str, pretrained: bool, kwargs: dict) -> TopoNet:
    kwargs.setdefault('alpha_trainable', False)  # the original network: every edge weight fixed at 1
    return _create_toponet(variant, pretrained, **kwargs)


@register_model
def resnet20_cifar(pretrained: bool = False, **kwargs) -> TopoNet:
    """ResNet-20 for CIFAR, original residual topology (Table 2)."""
    return _original('resnet20_cifar', pretrained, kwargs)


@register_model
def resnet32_cifar(pretrained: bool = False, **kwargs) -> TopoNet:
    """ResNet-32 for CIFAR, original residual topology (Table 2)."""
    return _original('resnet32_cifar', pretrained, kwargs)


@register_model
def resnet44_cifar(pretrained: bool = False, **kwargs) -> TopoNet:
    """ResNet-44 for CIFAR, original residual topology (Table 2)."""
    return _original('resnet44_cifar', pretrained, kwargs)


@register_model
def resnet56_cifar(pretrained: bool = False, **kwargs) -> TopoNet:
    """ResNet-56 for CIFAR, original residual topology (Table 2)."""
    return _original('resnet56_cifar', pretrained, kwargs)


@register_model
def resnet110_cifar(pretrained: bool = False, **kwargs) -> TopoNet:
    """ResNet-110 for CIFAR, original residual topology (Table 2)."""
    return _original('resnet110_cifar', pretrained, kwargs)


@register_model
def resnet20_cifar_topo(pretrained: bool = False, **kwargs) -> TopoNet:
    """ResNet-20 for CIFAR, complete DAG per stage with learnable alpha (Table 2, optimized)."""
    return _create_toponet('resnet20_cifar_topo', pretrained, **kwargs)


@register_model
def resnet32_cifar_topo(pretrained: bool = False, **kwargs) -> TopoNet:
    """ResNet-32 for CIFAR, complete DAG per stage with learnable alpha (Table 2, optimized)."""
    return _create_toponet('resnet32_cifar_topo', pretrained, **kwargs)


@register_model
def resnet44_cifar_topo(pretrained: bool = False, **kwargs) -> TopoNet:
    """ResNet-44 for CIFAR, complete DAG per stage with learnable alpha (Table 2, optimized)."""
    return _create_toponet('resnet44_cifar_topo', pretrained, **kwargs)


@register_model
def resnet56_cifar_topo(pretrained: bool = False, **kwargs) -> TopoNet:
    """ResNet-56 for CIFAR, complete DAG per stage with learnable alpha (Table 2, optimized)."""
    return _create_toponet('resnet56_cifar_topo', pretrained, **kwargs)


@register_model
def resnet110_cifar_topo(pretrained: bool = False, **kwargs) -> TopoNet:
    """ResNet-110 for CIFAR, complete DAG per stage with learnable alpha (Table 2, optimized)."""
    return _create_toponet('resnet110_cifar_topo', pretrained, **kwargs)
