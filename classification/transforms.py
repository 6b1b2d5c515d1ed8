"""Training/evaluation transforms on uint8 CHW tensors, by preset name (config-friendly)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torchvision.transforms import v2

from backbones.resnet_cifar import CIFAR100_MEAN

__all__ = ['Cutout', 'build_transform', 'TRANSFORM_PRESETS']


class Cutout:
    """DeVries & Taylor (2017): fill one ``size x size`` square, centred anywhere in the
    image (clipped at borders), with the dataset mean (zero after normalisation)."""

    def __init__(self, size: int, fill: Sequence[float]):
        if size < 1:
            raise ValueError(f'cutout size must be >= 1, got {size}')
        self.size = size
        self.fill = torch.tensor([round(255 * f) for f in fill], dtype=torch.uint8).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        _, h, w = image.shape
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, y1 = max(0, cy - self.size // 2), min(h, cy + self.size // 2)
        x0, x1 = max(0, cx - self.size // 2), min(w, cx + self.size // 2)
        image = image.clone()
        image[:, y0:y1, x0:x1] = self.fill.to(image.dtype)
        return image

    def __repr__(self) -> str:
        return f'Cutout(size={self.size})'


TRANSFORM_PRESETS = {
    'fmnist_train': lambda: v2.Compose([v2.RandomCrop(28, padding=2), v2.RandomHorizontalFlip()]),
    'cifar_train': lambda: v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                                       Cutout(16, CIFAR100_MEAN)]),
    'imagenet_train': lambda: v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip()]),
    'imagenet_val': lambda: v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224)]),
}


def build_transform(transform: Union[None, str, Callable]) -> Optional[Callable]:
    """``None``, a callable, or a preset name from ``TRANSFORM_PRESETS``."""
    if transform is None or callable(transform):
        return transform
    if transform not in TRANSFORM_PRESETS:
        raise ValueError(f'unknown transform preset {transform!r}; expected one of {sorted(TRANSFORM_PRESETS)}')
    return TRANSFORM_PRESETS[transform]()
