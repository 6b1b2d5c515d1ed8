"""An mmengine classifier around any timm-registered backbone of ``backbones``, its data
preprocessor, and a top-k accuracy metric."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmengine.registry import METRICS, MODELS

__all__ = ['ClsDataPreprocessor', 'TopoClassifier', 'TopKAccuracy']


@MODELS.register_module()
class ClsDataPreprocessor(BaseDataPreprocessor):
    """Stacks uint8 images, converts to float and normalises with ``mean``/``std`` given
    on the 0-1 scale. (Channels-last is the model's setting: ``TopoClassifier``.)"""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f'mean {mean} and std {std} must have one entry per channel and std > 0')
        self.register_buffer('mean', torch.tensor(mean).view(1, -1, 1, 1) * 255, persistent=False)
        self.register_buffer('std', torch.tensor(std).view(1, -1, 1, 1) * 255, persistent=False)

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs = data['inputs']
        if isinstance(inputs, (list, tuple)):
            inputs = torch.stack(list(inputs))
        if inputs.shape[1] != self.mean.shape[1]:
            raise ValueError(f'images have {inputs.shape[1]} channels, the preprocessor expects {self.mean.shape[1]}')
        inputs = (inputs.float() - self.mean) / self.std
        labels = data.get('labels')
        if labels is not None and not isinstance(labels, torch.Tensor):
            labels = torch.as_tensor(labels, device=inputs.device)
        return dict(inputs=inputs, labels=labels)


@MODELS.register_module()
class TopoClassifier(BaseModel):
    """Image classifier: a timm model (any ``backbones`` network) and cross-entropy.

    Args:
        backbone (dict): ``name`` of a timm-registered model plus its keyword arguments
            (``num_classes``, ``in_chans``, ``alpha_trainable``, ``seed``, ``drop_rate``...).
        label_smoothing (float): Cross-entropy label smoothing (0.1 in the ImageNet recipe).
        channels_last (bool): Run the network in channels-last memory format (faster on
            CPUs with oneDNN and on tensor-core GPUs).
        flip_test (bool): Predictions average the class probabilities of each image and of its
            horizontal mirror (test-time augmentation for data trained with random flips).
        data_preprocessor (dict): A ``ClsDataPreprocessor`` config.
    """

    def __init__(self, backbone: Dict[str, Any], label_smoothing: float = 0.0, channels_last: bool = False,
                 flip_test: bool = False, data_preprocessor: Optional[Union[dict, BaseDataPreprocessor]] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        import timm
        import backbones  # noqa: F401  (registers the models)
        backbone = dict(backbone)
        if 'name' not in backbone:
            raise ValueError(f'backbone config needs a timm model "name", got keys {sorted(backbone)}')
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f'label_smoothing must be in [0, 1), got {label_smoothing}')
        self.model_name = backbone.pop('name')
        self.model_kwargs = backbone
        self.backbone = timm.create_model(self.model_name, **backbone)
        self.label_smoothing = label_smoothing
        self.channels_last = channels_last
        self.flip_test = flip_test
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)

    def forward(self, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None, mode: str = 'tensor'):
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        logits = self.backbone(inputs)
        if mode == 'tensor':
            return logits
        if labels is None:
            raise ValueError(f"mode={mode!r} needs labels")
        if mode == 'loss':
            return dict(loss_cls=F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing))
        if mode == 'predict':
            if self.flip_test:
                mirrored = self.backbone(inputs.flip(3))
                logits = (logits.softmax(1) + mirrored.softmax(1)).div(2).log()
            return [dict(logits=row.detach(), label=int(lab)) for row, lab in zip(logits, labels)]
        raise ValueError(f"mode must be 'tensor', 'loss' or 'predict', got {mode!r}")


@METRICS.register_module()
class TopKAccuracy(BaseMetric):
    """Top-k accuracy (in %) over ``TopoClassifier`` predictions."""

    default_prefix = 'cls'

    def __init__(self, topk: Sequence[int] = (1,), collect_device: str = 'cpu', prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not topk or any(k < 1 for k in topk):
            raise ValueError(f'topk must be positive integers, got {topk}')
        self.topk = tuple(topk)

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            logits = sample['logits']
            k = min(max(self.topk), logits.numel())
            top = logits.topk(k).indices.tolist()
            self.results.append({f'top{t}': float(sample['label'] in top[:t]) for t in self.topk})

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        if not results:
            raise ValueError('no predictions to score')
        return {name: 100.0 * sum(r[name] for r in results) / len(results) for name in results[0]}
