"""Parameter and multiply-add counts.

MACs are counted by tracing the model with mmengine.analysis' ``FlopAnalyzer`` (one unit
per multiply-add of convolutions and linear layers, taken from output shapes) plus the
DAG aggregation: ``sum_j alpha_ji * x_j`` over k input edges is k multiply-adds per output
element (traced as DAGStage's fused ``_WeightedSum``, or ``aten::mul``/``aten::addcmul`` in
the scripted path). Edge weights fixed at 1 run as plain additions and are not counted. Batch norm is
not counted (it folds into the preceding conv at inference), nor are ReLU and pooling,
the convention of torchvision's and timm's published GFLOPs (ResNet-50: 4.1G).

Every DAG stage is traced through its ``weighted_sum`` formulation, whatever its
``aggregation`` setting: the ``stacked`` one computes the same sums inside custom autograd
functions the analyzer cannot see into. With either ``input_path`` every edge is counted,
(0, 1) included: at the stage input's shape when node 1 reads the raw input (``'node1'``),
at the new shape when it reads the projection (``'projection'``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ['count_parameters', 'count_macs']


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _output_numel(inputs, outputs) -> int:
    from mmengine.analysis.jit_handles import get_shape
    shape = get_shape(outputs[0])
    numel = 1
    for dim in shape:
        numel *= dim
    return numel


def _weighted_sum_macs(inputs, outputs) -> int:
    # inputs: alpha slice, then the k summed tensors -> k multiply-adds per output element
    return _output_numel(inputs, outputs) * (len(inputs) - 1)


def _no_macs(inputs, outputs) -> int:
    return 0


def count_macs(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224)) -> int:
    """Multiply-adds of one forward pass at ``input_size`` (N, C, H, W), per batch."""
    from mmengine.analysis import FlopAnalyzer
    if len(input_size) != 4:
        raise ValueError(f'input_size must be (N, C, H, W), got {tuple(input_size)}')
    from .dag import DAGStage
    was_training = model.training
    model.eval()
    stages = [m for m in model.modules() if isinstance(m, DAGStage)]
    aggregations = [stage.aggregation for stage in stages]
    for stage in stages:
        stage.aggregation = 'weighted_sum'
    try:
        param = next(model.parameters())
        inputs = (torch.zeros(tuple(input_size), dtype=param.dtype, device=param.device),)
        analyzer = FlopAnalyzer(model, inputs)
        # a None handle only marks the op ignored while its default handle keeps counting
        analyzer.set_op_handle('aten::batch_norm', _no_macs)
        analyzer.set_op_handle('aten::mul', _output_numel)
        analyzer.set_op_handle('aten::addcmul', _output_numel)
        analyzer.set_op_handle('prim::PythonOp._WeightedSum', _weighted_sum_macs)  # DAGStage's fused sum
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        return int(analyzer.total())
    finally:
        model.train(was_training)
        for stage, mode in zip(stages, aggregations):
            stage.aggregation = mode
