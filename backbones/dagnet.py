"""The timm model interface shared by every network built from DAG stages (TopoNet,
ResNet-CIFAR, MobileNetV2): a ``stem``, ``stages`` of ``DAGStage``, a ``final_conv`` and a
timm ``ClassifierHead`` named ``head``."""
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from timm.models._manipulate import checkpoint_seq

from .graphs import GraphSpec

__all__ = ['DAGNetMixin', 'checkpoint_filter_fn']


class DAGNetMixin:
    """Mixed into an ``nn.Module`` that defines ``stem``, ``stages``, ``final_conv``, ``head``,
    ``num_classes`` and ``grad_checkpointing``."""

    __jit_unused_properties__ = ['graphs']

    @property
    def graphs(self) -> List[GraphSpec]:
        return [stage.graph for stage in self.stages]

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else [
            (r'^stages\.(\d+)\.(?:input_proj|edge_weights)', (0,)),
            (r'^stages\.(\d+)\.nodes\.(\d+)', None),
            (r'^final_conv', (99999,)),
        ])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def set_aggregation(self, mode: str) -> None:
        """Switch every stage's eager aggregation formulation (``backbones.dag.AGGREGATIONS``)."""
        for stage in self.stages:
            stage.aggregation = mode

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {f'stages.{i}.edge_weights' for i in range(len(self.stages))}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)
        return self.final_conv(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Accept a bare state dict or one nested under 'state_dict'/'model', and strip DDP's
    'module.' prefix. A checkpoint of another topology is refused when loaded (each
    stage's ``edge_index`` buffer is compared, see ``DAGStage``)."""
    for key in ('state_dict', 'model'):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
    return {(k[7:] if k.startswith('module.') else k): v for k, v in state_dict.items()}
