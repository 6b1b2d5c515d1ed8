"""The mmengine training data set over an insightface RecordIO set (MS1MV2 or the toy
set): decoded RGB faces as uint8 CHW tensors with a random horizontal flip, resized when
the network's input differs from the stored 112x112."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from mmengine.registry import DATASETS
from torch.utils.data import Dataset

from .recordio import FaceRecordSet

__all__ = ['FaceRecordDataset']


@DATASETS.register_module()
class FaceRecordDataset(Dataset):
    """Args:
        root (str): Folder with ``train.rec``, ``train.idx`` and ``property``.
        image_size (int, optional): Resize faces to this square size.
        flip (bool): Random horizontal flip (ArcFace's only augmentation).
        num_classes (int, optional): Expected identities; checked against ``property``.
    """

    def __init__(self, root: str, image_size: Optional[int] = None, flip: bool = True,
                 num_classes: Optional[int] = None):
        self.records = FaceRecordSet(root)
        if num_classes is not None and self.records.num_classes and self.records.num_classes != num_classes:
            raise ValueError(f'{root}/property says {self.records.num_classes} identities, the config expects '
                             f'{num_classes}')
        self.image_size = image_size
        self.flip = flip
        self.metainfo = dict(num_classes=self.records.num_classes)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        import cv2
        image, label = self.records.read(index)
        if self.image_size and image.shape[:2] != (self.image_size, self.image_size):
            image = cv2.resize(image, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        if self.flip and np.random.rand() < 0.5:
            image = image[:, ::-1]
        return dict(inputs=torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), labels=label)
