"""Checks that turn bad detection inputs into errors naming what was wrong and what was expected.

* ``check_coco_annotations``: a COCO instance file that is missing, not JSON, not COCO-shaped,
  whose categories are not the classes the config names, whose annotations point at unknown
  images or categories, or whose image files are missing.
* ``detector_num_classes`` / ``check_num_classes``: the detector's head must predict as many
  classes as the dataset has (mmdet itself would train a head of the wrong size silently).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence

from torch import nn

__all__ = ['DetectionDataError', 'check_coco_annotations', 'detector_num_classes', 'check_num_classes']


class DetectionDataError(ValueError):
    """Detection data or configuration that cannot be trained or evaluated as given."""


def _names(items: Sequence[str], n: int = 5) -> str:
    return ', '.join(repr(x) for x in items[:n]) + (f' ... ({len(items)} in all)' if len(items) > n else '')


def check_coco_annotations(ann_file: str, classes: Optional[Sequence[str]] = None,
                           img_dir: Optional[str] = None) -> Dict[str, Any]:
    """Read and validate a COCO instance annotation file; returns the parsed JSON.

    Args:
        ann_file (str): The annotation JSON.
        classes (Sequence[str], optional): Class names the config expects, in order; the
            file's categories (sorted by id) must be exactly these.
        img_dir (str, optional): Folder of the images (``file_name`` is relative to it);
            every listed image must exist.
    """
    if not os.path.isfile(ann_file):
        raise DetectionDataError(f'annotation file not found: {ann_file}')
    try:
        with open(ann_file, 'rb') as f:
            coco = json.loads(f.read())
    except json.JSONDecodeError as err:
        raise DetectionDataError(f'{ann_file} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno} '
                                 f'(expected a COCO instance annotation file)') from err
    except UnicodeDecodeError as err:
        raise DetectionDataError(f'{ann_file} is not UTF-8 JSON text: {err}') from err
    if not isinstance(coco, dict):
        raise DetectionDataError(f'{ann_file}: top level is a {type(coco).__name__}, expected a COCO object '
                                 f'with "images", "annotations" and "categories"')
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(coco.get(key), list):
            found = 'missing' if key not in coco else f'a {type(coco[key]).__name__}'
            raise DetectionDataError(f'{ann_file}: "{key}" is {found}, expected a list (COCO instance format)')

    categories = coco['categories']
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or 'id' not in cat or 'name' not in cat:
            raise DetectionDataError(f'{ann_file}: categories[{i}] = {cat!r} needs an "id" and a "name"')
    names = [c['name'] for c in sorted(categories, key=lambda c: c['id'])]
    if classes is not None and list(names) != list(classes):
        raise DetectionDataError(
            f'{ann_file} has {len(names)} categories ({_names(names)}), the config expects {len(classes)} '
            f'({_names(list(classes))}); set the dataset metainfo classes (and the head\'s num_classes) to match')

    image_ids = set()
    for i, img in enumerate(coco['images']):
        if not isinstance(img, dict) or not {'id', 'file_name', 'width', 'height'} <= set(img):
            raise DetectionDataError(f'{ann_file}: images[{i}] needs id, file_name, width and height, got {img!r}')
        image_ids.add(img['id'])
    category_ids = {c['id'] for c in categories}
    for i, ann in enumerate(coco['annotations']):
        if not isinstance(ann, dict):
            raise DetectionDataError(f'{ann_file}: annotations[{i}] is a {type(ann).__name__}, expected an object')
        bbox = ann.get('bbox')
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            raise DetectionDataError(f'{ann_file}: annotations[{i}] (id {ann.get("id")}) has bbox {bbox!r}, '
                                     f'expected [x, y, width, height]')
        if ann.get('image_id') not in image_ids:
            raise DetectionDataError(f'{ann_file}: annotations[{i}] (id {ann.get("id")}) refers to image_id '
                                     f'{ann.get("image_id")!r}, which is not in "images"')
        if ann.get('category_id') not in category_ids:
            raise DetectionDataError(f'{ann_file}: annotations[{i}] (id {ann.get("id")}) has category_id '
                                     f'{ann.get("category_id")!r}, expected one of {sorted(category_ids)}')

    if img_dir is not None:
        missing = [img['file_name'] for img in coco['images']
                   if not os.path.isfile(os.path.join(img_dir, img['file_name']))]
        if missing:
            raise DetectionDataError(f'{len(missing)} of {len(coco["images"])} images listed in {ann_file} are '
                                     f'missing from {img_dir}: {_names(missing)}')
    return coco


def detector_num_classes(model: nn.Module) -> Optional[int]:
    """Classes predicted by an mmdet detector's box head (Faster R-CNN's RoI head, or the
    single-stage head); ``None`` when the model has neither."""
    model = getattr(model, 'module', model)
    roi_head = getattr(model, 'roi_head', None)
    head = getattr(roi_head, 'bbox_head', None) if roi_head is not None else getattr(model, 'bbox_head', None)
    if isinstance(head, (list, tuple, nn.ModuleList)):  # cascade heads: all predict the same classes
        head = head[-1]
    return getattr(head, 'num_classes', None)


def check_num_classes(model: nn.Module, classes: Sequence[str], where: str) -> None:
    """Raise when the detector's head and the dataset's classes disagree."""
    num_classes = detector_num_classes(model)
    if num_classes is not None and num_classes != len(classes):
        raise DetectionDataError(
            f'the detector predicts {num_classes} classes but the {where} dataset has {len(classes)} '
            f'({_names(list(classes))}); set the head\'s num_classes '
            f'(model.roi_head.bbox_head.num_classes or model.bbox_head.num_classes) to {len(classes)}')
