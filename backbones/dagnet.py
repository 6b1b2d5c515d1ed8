"""The timm model interface shared by every network built from DAG stages (TopoNet,
ResNet-CIFAR, MobileNetV2): a ``stem``, ``stages`` of ``DAGStage``, a ``final_conv`` and a
timm ``ClassifierHead`` named ``head``.

What timm's factory and model tests rely on lives here once for every family:
``factory_device`` (``create_model(..., device=..., dtype=...)``), a ``reset_classifier`` that
keeps the network's device, dtype and train/eval mode, ``DAGFeatureListNet`` (the
``features_only=True`` wrapper, which also loads a state dict of the whole network, as
``create_model(..., features_only=True, checkpoint_path=...)`` gives it), and
``follow_in_chans`` (``pretrained_cfg`` describes the channels the network was built for).
"""
import contextlib
from typing import Any, Dict, List, Optional, Union

import torch
from torch import nn

from timm.models import FeatureListNet
from timm.models._manipulate import checkpoint_seq

from .graphs import GraphSpec

__all__ = ['DAGNetMixin', 'DAGFeatureListNet', 'checkpoint_filter_fn', 'factory_device', 'follow_in_chans']


def factory_device(device: Optional[Union[str, torch.device]]):
    """The context a network is built in: ``torch.device(device)`` (parameters and buffers
    are created there; on ``'meta'`` nothing is allocated or initialised), or no context at
    all when ``device`` is None, so a default build allocates and draws its initial weights
    exactly as it always did."""
    return torch.device(device) if device is not None else contextlib.nullcontext()


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
    def reparameterize(self) -> None:
        """Fold every batch norm into the convolution before it, in place, for inference
        (timm's ``reparameterize_model`` convention; ``timm.utils.reparameterize_model(model)``
        reaches the same parts). Uses the BN running statistics, so the result computes what
        the network computes in eval mode; it no longer trains its BN and its state dict has
        no BN keys. Idempotent."""
        for module in list(self.modules()):
            if module is not self and callable(getattr(module, 'reparameterize', None)):
                module.reparameterize()

    @torch.jit.ignore
    def fuse(self) -> nn.Module:
        """``reparameterize()``, returning the network (timm's walker replaces a child that
        has ``fuse()`` by what it returns, so a TopoNet inside another model folds too)."""
        self.reparameterize()
        return self

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {f'stages.{i}.edge_weights' for i in range(len(self.stages))}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new classifier of ``num_classes`` outputs (0: none) on the network's device and
        dtype and in its train/eval mode; ``global_pool`` None keeps the pooling."""
        reference = next(self.stem.parameters())
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, device=reference.device, dtype=reference.dtype)

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


def follow_in_chans(model: nn.Module) -> nn.Module:
    """Make ``model.pretrained_cfg`` (and its ``default_cfg`` alias) describe the channels the
    network was built with: ``input_size`` (and ``test_input_size``/``min_input_size``) take
    ``model.in_chans``, and a per-channel ``mean``/``std`` of the registered channel count is
    carried over (one value repeated, several averaged for one channel, cycled otherwise, as
    timm's ``adapt_input_conv`` cycles the stem's weights), so ``timm.data.resolve_data_config``
    prepares inputs the network accepts. Called after any pretrained weights were loaded (timm
    reads the registered channels to adapt a stem checkpoint). Returns ``model``."""
    cfg = getattr(model, 'pretrained_cfg', None)
    chans = getattr(model, 'in_chans', None)
    if not cfg or chans is None or not cfg.get('input_size') or cfg['input_size'][0] == chans:
        return model
    source = cfg['input_size'][0]
    cfg = dict(cfg)
    for key in ('input_size', 'test_input_size', 'min_input_size'):
        if cfg.get(key):
            cfg[key] = (chans, *cfg[key][1:])
    for key in ('mean', 'std'):
        values = cfg.get(key)
        if isinstance(values, (tuple, list)) and len(values) == source:
            if source == 1:
                values = tuple(values) * chans
            elif chans == 1:
                values = (sum(values) / len(values),)
            else:
                values = tuple(values[c % source] for c in range(chans))
            cfg[key] = tuple(values)
    model.pretrained_cfg = cfg
    model.default_cfg = cfg
    return model


class DAGFeatureListNet(FeatureListNet):
    """timm's ``FeatureListNet`` over a DAG network that also loads a state dict of the whole
    network.

    ``timm.create_model(name, features_only=True, checkpoint_path=path)`` (mmpretrain's timm
    backbone takes this route) loads ``path`` into the feature wrapper, whose modules are
    renamed (``stem.conv`` -> ``stem_conv``, ``stages.0`` -> ``stages_0``) and which holds no
    ``final_conv`` or ``head``. A state dict with the whole network's keys is therefore
    renamed to the wrapper's, and the keys of the modules the wrapper dropped are left out;
    every tensor the wrapper holds must still be in it (a strict load fails otherwise), and a
    stage wired differently is still refused by ``DAGStage``. A state dict with the wrapper's
    own keys loads as usual.
    """

    def __init__(self, model: nn.Module, *args, **kwargs):
        whole = {id(t): k for k, t in model.state_dict(keep_vars=True).items()}
        super().__init__(model, *args, **kwargs)
        own = {id(t): k for k, t in self.state_dict(keep_vars=True).items()}
        self._renamed = {whole[i]: own[i] for i in own if i in whole and whole[i] != own[i]}
        self._dropped = sorted(set(whole.values()) - {whole[i] for i in own if i in whole})
        self.register_load_state_dict_pre_hook(_load_whole_network_state)


def _load_whole_network_state(module: DAGFeatureListNet, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
    if not any(prefix + key in state_dict for key in module._renamed):
        return  # the wrapper's own keys
    for whole_key, own_key in module._renamed.items():
        if prefix + whole_key in state_dict:
            state_dict[prefix + own_key] = state_dict.pop(prefix + whole_key)
    for key in module._dropped:
        state_dict.pop(prefix + key, None)
