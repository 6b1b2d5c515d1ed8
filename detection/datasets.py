"""``CheckedCocoDataset``: mmdet's ``CocoDataset`` that validates its annotation file first.

mmdet reads a COCO file with a bare ``json.load`` (a malformed file fails with no file name),
silently drops categories that are not in the config's ``metainfo.classes``, and only notices
a missing image when the data loader reaches it mid-epoch. This dataset runs
``detection.checks.check_coco_annotations`` when it loads (same file, parsed once) and
raises before training starts.
"""
from __future__ import annotations

import functools

from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmdet.registry import DATASETS

from .checks import check_coco_annotations

__all__ = ['CheckedCocoDataset']


class _ParsedCOCO(COCO):
    """mmdet's COCO API over an already parsed (and checked) annotation dict."""

    def __init__(self, dataset: dict, annotation_file=None):
        super().__init__()
        self.dataset = dataset
        self.createIndex()
        self.img_ann_map = self.imgToAnns
        self.cat_img_map = self.catToImgs


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """``CocoDataset`` whose annotation file, class names and image files are checked.

    Args:
        check_images (bool): Check that every listed image file exists (one ``stat`` per
            image; about a second for COCO train2017).
        Everything else as mmdet's ``CocoDataset``.
    """

    def __init__(self, *args, check_images: bool = True, **kwargs):
        self.check_images = check_images
        super().__init__(*args, **kwargs)

    def load_data_list(self):
        img_dir = self.data_prefix.get('img') if self.check_images else None
        coco = check_coco_annotations(self.ann_file, classes=self.metainfo['classes'], img_dir=img_dir)
        self.COCOAPI = functools.partial(_ParsedCOCO, coco)
        try:
            return super().load_data_list()
        finally:
            del self.COCOAPI  # back to the class attribute; the parsed dict is not kept
