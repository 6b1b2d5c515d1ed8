"""The mmengine model of a face training run: ``FaceTopoNet`` embeddings under a margin
softmax loss, and the data preprocessor (RGB uint8 -> ``(x - 127.5) / 127.5``, the input
insightface's ``ArcFaceONNX`` feeds at inference)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Union

import torch
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmengine.registry import MODELS

from .losses import MarginSoftmaxLoss
from .model import FaceTopoNet, load_backbone_weights

__all__ = ['FaceDataPreprocessor', 'FaceRecognizer']


@MODELS.register_module()
class FaceDataPreprocessor(BaseDataPreprocessor):
    """Stacks uint8 CHW faces and scales them to [-1, 1]."""

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs = data['inputs']
        if isinstance(inputs, (list, tuple)):
            inputs = torch.stack(list(inputs))
        if inputs.ndim != 4 or inputs.shape[1] != 3:
            raise ValueError(f'expected a batch of RGB faces (N, 3, H, W), got {tuple(inputs.shape)}')
        labels = data.get('labels')
        if labels is not None and not isinstance(labels, torch.Tensor):
            labels = torch.as_tensor(labels, device=inputs.device)
        return dict(inputs=(inputs.float() - 127.5) / 127.5, labels=labels)


@MODELS.register_module()
class FaceRecognizer(BaseModel):
    """Args:
        backbone (dict): ``FaceTopoNet`` keyword arguments (``channels``, ``nodes``,
            ``topology``, ``alpha_trainable``, ``embedding_size``, ...).
        head (dict): ``MarginSoftmaxLoss`` arguments: ``num_classes``, ``margin``
            (``'arcface'``, ``'cosface'``, ``'combined'`` or ``(m1, m2, m3)``), ``scale``.
        pretrained (str, optional): A classification checkpoint (the shared format) to
            initialise the TopoNet body from.
    """

    def __init__(self, backbone: Dict[str, Any], head: Dict[str, Any], pretrained: Optional[str] = None,
                 data_preprocessor: Optional[Union[dict, BaseDataPreprocessor]] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor or dict(type='FaceDataPreprocessor'), init_cfg=init_cfg)
        self.model_kwargs = dict(backbone)
        self.backbone = FaceTopoNet(**backbone)
        head = dict(head)
        if 'num_classes' not in head:
            raise ValueError(f'head config needs num_classes, got keys {sorted(head)}')
        self.head = MarginSoftmaxLoss(self.backbone.embedding_size, **head)
        if pretrained:
            load_backbone_weights(self.backbone, pretrained)

    def forward(self, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None, mode: str = 'tensor'):
        features = self.backbone(inputs)
        if mode == 'tensor':
            return features
        if mode == 'loss':
            if labels is None:
                raise ValueError("mode='loss' needs labels")
            # the margin softmax in float32 under autocast too: s * cos(theta + m) needs its precision
            with torch.autocast(features.device.type, enabled=False):
                return dict(loss_margin=self.head(features.float(), labels))
        if mode == 'predict':
            return [dict(feature=f.detach()) for f in features]
        raise ValueError(f"mode must be 'tensor', 'loss' or 'predict', got {mode!r}")
