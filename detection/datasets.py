"""``CheckedCocoDataset``: mmdet's ``CocoDataset`` that checks its annotation file first.

mmdet reads a COCO file with a bare ``json.load`` (a malformed file fails with no file name),
keeps NaN boxes and boxes outside their image, fails on duplicate annotation ids with a bare
assertion, numbers labels in file order whatever order the config lists its classes in, and
only notices a missing or broken image when the data loader reaches it mid-epoch. This
dataset runs ``detection.checks.check_coco_annotations`` when it loads (same file, parsed
once): errors are raised before training starts, invalid boxes are logged as one warning and
left out, and an image that does not decode is named when it is first read.
"""
from __future__ import annotations

import functools
import logging

from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmdet.registry import DATASETS
from mmengine.logging import print_log

from .checks import DetectionDataError, check_coco_annotations, image_file_problem

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
        check_images (bool): Check that every listed image file exists and is not empty
            (one ``stat`` per image; about a second for COCO train2017). A file that exists
            but does not decode is reported, by name, when it is first read.
        Everything else as mmdet's ``CocoDataset``.

    After loading, ``invalid_boxes`` lists the boxes left out (annotation index, annotation
    id, image file, reason).
    """

    def __init__(self, *args, check_images: bool = True, **kwargs):
        self.check_images = check_images
        self.invalid_boxes = []
        super().__init__(*args, **kwargs)

    def load_data_list(self):
        img_dir = self.data_prefix.get('img') if self.check_images else None
        check = check_coco_annotations(self.ann_file, classes=self.metainfo['classes'], img_dir=img_dir)
        self.invalid_boxes = list(check.invalid_boxes)
        if check.invalid_boxes:
            print_log(check.invalid_summary(), logger='current', level=logging.WARNING)
        self.COCOAPI = functools.partial(_ParsedCOCO, check.valid_coco())
        try:
            return super().load_data_list()
        finally:
            del self.COCOAPI  # back to the class attribute; the parsed dict is not kept

    def prepare_data(self, idx):
        try:
            return super().prepare_data(idx)
        except Exception as err:
            # name the image when it is what failed; anything else is not ours to rename
            path = self.get_data_info(idx).get('img_path')
            local = isinstance(path, str) and '://' not in path  # not a remote (petrel, http) backend
            problem = image_file_problem(path) if local else None
            if problem is None:
                raise
            raise DetectionDataError(f'image file {problem}', path,
                                     'an image file OpenCV can decode (JPEG, PNG, ...)') from err
