"""Margin-based softmax losses for face recognition: ArcFace, CosFace and their combined
form, over a normalised classifier of any number of identities (85,742 for MS1MV2).

The target logit of sample i is ``s * (cos(m1 * theta + m2) - m3)`` and the others
``s * cos(theta_j)``, theta being the angle between the L2-normalised feature and class
centre: ArcFace is ``(m1, m2, m3) = (1, 0.5, 0)``, CosFace ``(1, 0, 0.35)``, SphereFace-like
``m1 > 1``; any mix is the "combined" margin. Where ``m1 * theta + m2`` passes pi the
cosine stops decreasing; as in ArcFace's reference implementation the target logit then
becomes ``cos(theta) - m3 - m2 * sin(m2)`` (still decreasing in theta, so a wrong class
far away keeps being pushed back).

Origin: this project, after Deng et al., "ArcFace", CVPR 2019. Licence: Apache-2.0.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['MARGIN_PRESETS', 'MarginSoftmaxLoss', 'NormalizedClassifier', 'margin_target_logits']

MARGIN_PRESETS = {
    'arcface': (1.0, 0.5, 0.0),
    'cosface': (1.0, 0.0, 0.35),
    'combined': (1.0, 0.3, 0.2),
}


def margin_target_logits(cosine: torch.Tensor, labels: torch.Tensor, margins: Tuple[float, float, float]) -> torch.Tensor:
    """Apply the combined margin to each row's target column of ``cosine`` (unscaled)."""
    m1, m2, m3 = margins
    index = torch.arange(cosine.shape[0], device=cosine.device)
    target = cosine[index, labels].clamp(-1.0, 1.0)
    if m1 == 1.0 and m2 == 0.0:
        new_target = target - m3
    else:
        theta = torch.acos(target.clamp(-1.0 + 1e-7, 1.0 - 1e-7))
        angle = m1 * theta + m2
        new_target = torch.where(angle <= math.pi, torch.cos(angle) - m3, target - m3 - m2 * math.sin(m2))
    out = cosine.clone()
    out[index, labels] = new_target.to(out.dtype)
    return out


class NormalizedClassifier(nn.Module):
    """Cosine similarities between L2-normalised features and class centres."""

    def __init__(self, embedding_size: int, num_classes: int):
        super().__init__()
        if embedding_size < 1 or num_classes < 2:
            raise ValueError(f'need embedding_size >= 1 and num_classes >= 2, got {embedding_size}, {num_classes}')
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(features.float(), dim=1), F.normalize(self.weight.float(), dim=1))


class MarginSoftmaxLoss(nn.Module):
    """Cross-entropy over ``s *`` margin-adjusted cosines.

    Args:
        embedding_size (int): Feature dimension (256 in the paper).
        num_classes (int): Training identities (85,742 for MS1MV2).
        margin (str | tuple): ``'arcface'`` (default, m=0.5), ``'cosface'``, ``'combined'``
            or explicit ``(m1, m2, m3)``.
        scale (float): s (64).
    """

    def __init__(self, embedding_size: int, num_classes: int, margin='arcface', scale: float = 64.0):
        super().__init__()
        if isinstance(margin, str):
            if margin not in MARGIN_PRESETS:
                raise ValueError(f'unknown margin {margin!r}; expected one of {sorted(MARGIN_PRESETS)} or (m1, m2, m3)')
            margin = MARGIN_PRESETS[margin]
        margin = tuple(float(m) for m in margin)
        if len(margin) != 3 or margin[0] <= 0 or margin[1] < 0 or margin[2] < 0:
            raise ValueError(f'margin must be (m1 > 0, m2 >= 0, m3 >= 0), got {margin}')
        if scale <= 0:
            raise ValueError(f'scale must be > 0, got {scale}')
        self.margins = margin
        self.scale = float(scale)
        self.num_classes = num_classes
        self.classifier = NormalizedClassifier(embedding_size, num_classes)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f'labels must lie in [0, {self.num_classes}), got [{int(labels.min())}, '
                             f'{int(labels.max())}]')
        cosine = self.classifier(features)
        logits = margin_target_logits(cosine, labels, self.margins) * self.scale
        return F.cross_entropy(logits, labels)

    def extra_repr(self) -> str:
        return f'num_classes={self.num_classes}, margins={self.margins}, scale={self.scale}'
