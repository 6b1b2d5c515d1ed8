"""Node operations: the transformation ``o_i`` a computing node applies to its input sum.

The paper keeps one operation type per network (section 2.1):

* ``sep``: the TopoNet triplet ReLU -> 3x3 depthwise + 1x1 pointwise -> BN (section 3.2.1,
  after Xie et al.'s ReLU-conv-BN unit).
* ``conv3x3``: ReLU -> 3x3 conv -> BN, the layer of ResNet-CIFAR (section 3.1).
* ``conv1x1``: ReLU -> 1x1 conv -> BN, used as the light input projection of ResNet-CIFAR.
* ``inverted_bottleneck``: MobileNetV2's 1x1 expand -> BN -> ReLU6 -> 3x3 depthwise -> BN
  -> ReLU6 -> 1x1 linear projection -> BN (section 3.1).

Every op takes ``(in_chs, out_chs, stride)``; only a stage's input projection (and, with
``input_path='node1'``, its first computing node; ``backbones/dag.py``) is built with
``stride > 1`` or ``in_chs != out_chs``.

For inference every op's ``reparameterize()`` folds each batch norm into the convolution
before it (``fuse_conv_bn``; timm's ``reparameterize_model`` convention): the BN becomes an
``nn.Identity`` and the convolution gets its scale and shift, with the BN's running
statistics. ``ConvBnSequential`` (the networks' stems and final convs) does the same.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
from torch import nn

__all__ = ['SeparableNode', 'ConvNode', 'Conv1x1Node', 'InvertedBottleneckNode', 'NODE_OPS', 'create_node_op',
           'fuse_conv_bn', 'ConvBnSequential']


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution computing ``bn(conv(x))`` with ``bn`` in eval mode (its running
    statistics): weight scaled per output channel by ``gamma / sqrt(var + eps)``, bias the
    shifted BN bias. Same device and dtype as ``conv``."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                      padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
    weight = conv.weight * scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype)
    if conv.weight.dim() == 4 and not conv.weight.is_contiguous() \
            and conv.weight.is_contiguous(memory_format=torch.channels_last):
        fused.weight.data = fused.weight.data.contiguous(memory_format=torch.channels_last)  # keep the layout
    fused.weight.copy_(weight)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    fused.train(conv.training)
    return fused


class _FoldsBatchNorm:
    """``reparameterize()`` for a module whose ``(conv, bn)`` attribute pairs are listed in
    ``_conv_bn_pairs``; folding twice is a no-op (the BN is already an ``nn.Identity``)."""

    _conv_bn_pairs = ()

    def reparameterize(self) -> None:
        for conv_name, bn_name in self._conv_bn_pairs:
            conv, bn = getattr(self, conv_name), getattr(self, bn_name)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(self, conv_name, fuse_conv_bn(conv, bn))
                setattr(self, bn_name, nn.Identity())


class ConvBnSequential(nn.Sequential):
    """An ``nn.Sequential`` whose ``reparameterize()`` folds every batch norm that directly
    follows a convolution into it (child names, and so state dict keys, are unchanged until
    then; the folded BN's place holds an ``nn.Identity``)."""

    def reparameterize(self) -> None:
        names = list(self._modules)
        for conv_name, bn_name in zip(names, names[1:]):
            conv, bn = self._modules[conv_name], self._modules[bn_name]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                self._modules[conv_name] = fuse_conv_bn(conv, bn)
                self._modules[bn_name] = nn.Identity()


class SeparableNode(_FoldsBatchNorm, nn.Module):
    """ReLU -> 3x3 depthwise (carries the stride) -> 1x1 pointwise -> BN."""

    _conv_bn_pairs = (('conv_pw', 'bn'),)

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.act = nn.ReLU()
        self.conv_dw = nn.Conv2d(in_chs, in_chs, 3, stride=stride, padding=1, groups=in_chs, bias=False)
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv_pw(self.conv_dw(self.act(x))))


class ConvNode(_FoldsBatchNorm, nn.Module):
    """ReLU -> 3x3 conv -> BN."""

    _conv_bn_pairs = (('conv', 'bn'),)

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.act(x)))


class Conv1x1Node(_FoldsBatchNorm, nn.Module):
    """ReLU -> 1x1 conv -> BN: the light input projection of classic residual networks
    (ResNet's projection shortcut, in the project's ReLU-conv-BN order)."""

    _conv_bn_pairs = (('conv', 'bn'),)

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.act(x)))


class InvertedBottleneckNode(_FoldsBatchNorm, nn.Module):
    """MobileNetV2 inverted bottleneck without its own shortcut (the DAG provides it).

    Args:
        expand_ratio (int): Hidden width is ``in_chs * expand_ratio``; 1 drops the
            expansion conv, as in MobileNetV2's first block.
    """

    _conv_bn_pairs = (('conv_pw', 'bn1'), ('conv_dw', 'bn2'), ('conv_pwl', 'bn3'))

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, expand_ratio: int = 6):
        super().__init__()
        if isinstance(expand_ratio, bool) or not isinstance(expand_ratio, int) or expand_ratio < 1:
            raise ValueError(f'expand_ratio must be an int >= 1, got {expand_ratio!r}')
        hidden = in_chs * expand_ratio
        if expand_ratio == 1:
            self.conv_pw = nn.Identity()
            self.bn1 = nn.Identity()
            self.act1 = nn.Identity()
        else:
            self.conv_pw = nn.Conv2d(in_chs, hidden, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(hidden)
            self.act1 = nn.ReLU6()
        self.conv_dw = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.act2 = nn.ReLU6()
        self.conv_pwl = nn.Conv2d(hidden, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_pw(x)))
        x = self.act2(self.bn2(self.conv_dw(x)))
        return self.bn3(self.conv_pwl(x))


NODE_OPS: Dict[str, Callable[..., nn.Module]] = {
    'sep': SeparableNode,
    'conv3x3': ConvNode,
    'conv1x1': Conv1x1Node,
    'inverted_bottleneck': InvertedBottleneckNode,
}


def create_node_op(name: str, in_chs: int, out_chs: int, stride: int = 1, **kwargs) -> nn.Module:
    """Build a node op by name (see ``NODE_OPS``)."""
    if name not in NODE_OPS:
        raise ValueError(f'unknown node op {name!r}; expected one of {tuple(NODE_OPS)}')
    for arg, value in (('in_chs', in_chs), ('out_chs', out_chs), ('stride', stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'node op {arg} must be an int >= 1, got {value!r}')
    return NODE_OPS[name](in_chs, out_chs, stride, **kwargs)
