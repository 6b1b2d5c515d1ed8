"""Checks that turn bad detection inputs into errors naming what was wrong and what was expected.

* ``check_coco_annotations``: a COCO instance (or image-info) file is read once and checked
  before training; it returns the parsed file with a ``CocoCheck`` report. What is an error
  and what is a warning:

  - **errors** (``DetectionDataError``, nothing trains): a file that is missing, not JSON or
    not COCO-shaped; a record without the fields mmdet reads (``images[].id/file_name/width/
    height``, ``annotations[].id/image_id/category_id/bbox/area``, ``categories[].id/name``);
    a duplicate image, annotation or category id, or a duplicate category name; an
    annotation whose ``image_id`` is not in ``images`` or whose ``category_id`` is not in
    ``categories``; a class of the config that is not a category of the file, or classes
    listed in another order than the file's (mmdet numbers labels in file order); image
    files that are missing or empty; a split whose every box is invalid.
  - **warnings** (the box is left out, the rest trains): a box with a non-finite value, a
    width or height <= 0, or reaching more than ``BOX_TOLERANCE`` pixels outside its image.
    They are counted per file and the first few are listed with their annotation id and
    image file.
  - **accepted**: a file without ``annotations`` (COCO's ``image_info_test-dev2017.json``),
    and config classes that are a subset of the file's categories (mmdet's
    ``metainfo=dict(classes=...)``; annotations of other categories are not used).

* ``detector_num_classes`` / ``check_num_classes``: the detector's head must predict as many
  classes as the dataset has (mmdet itself would train a head of the wrong size silently).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from torch import nn

from backbones.errors import InputError

__all__ = ['DetectionDataError', 'BOX_TOLERANCE', 'CocoCheck', 'check_coco_annotations', 'image_file_problem',
           'detector_num_classes', 'check_num_classes']

# Pixels a box may reach past its image border before it counts as outside the image
# (COCO's own boxes overshoot by rounding, by less than a pixel).
BOX_TOLERANCE = 1.0
_EXAMPLES = 5
_COCO_EXPECTED = 'a COCO instance file with "images", "annotations" and "categories" lists'


class DetectionDataError(InputError):
    """Detection data or configuration that cannot be trained or evaluated as given."""


def _names(items: Sequence[Any], n: int = 5) -> str:
    items = list(items)
    return ', '.join(repr(x) for x in items[:n]) + (f' ... ({len(items)} in all)' if len(items) > n else '')


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class CocoCheck:
    """What ``check_coco_annotations`` found in one file.

    Attributes:
        ann_file (str): The file.
        coco (dict): Its parsed JSON, unchanged (``annotations`` is ``[]`` when the file has none).
        num_boxes (int): Annotations in the file.
        invalid_boxes (list): ``(index into annotations, annotation id, image file, reason)``
            of every box that is left out.
    """

    ann_file: str
    coco: Dict[str, Any]
    num_boxes: int = 0
    invalid_boxes: List[Tuple[int, Any, str, str]] = field(default_factory=list)

    def valid_coco(self) -> Dict[str, Any]:
        """The parsed file without the invalid boxes (a shallow copy; the input is kept)."""
        if not self.invalid_boxes:
            return self.coco
        dropped = {index for index, *_ in self.invalid_boxes}
        annotations = [ann for i, ann in enumerate(self.coco['annotations']) if i not in dropped]
        return dict(self.coco, annotations=annotations)

    def invalid_summary(self, n: int = _EXAMPLES) -> Optional[str]:
        """One line: how many boxes are left out and the first ``n`` of them; ``None`` if none."""
        if not self.invalid_boxes:
            return None
        listed = '; '.join(f'annotation {ann_id} (image {file_name}): {reason}'
                           for _, ann_id, file_name, reason in self.invalid_boxes[:n])
        more = f'; ... ({len(self.invalid_boxes) - n} more)' if len(self.invalid_boxes) > n else ''
        return (f'{self.ann_file}: {len(self.invalid_boxes)} of {self.num_boxes} boxes are invalid and left out: '
                f'{listed}{more}')


def _read_json(ann_file: str) -> Any:
    if not os.path.isfile(ann_file):
        raise DetectionDataError(f'annotation file not found: {ann_file}')
    try:
        with open(ann_file, 'rb') as f:
            return json.loads(f.read())
    except json.JSONDecodeError as err:
        raise DetectionDataError(f'{ann_file} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno} '
                                 f'(expected a COCO instance annotation file)') from err
    except UnicodeDecodeError as err:
        raise DetectionDataError(f'{ann_file} is not UTF-8 JSON text: {err}') from err


def _box_problem(bbox: Sequence[float], width: float, height: float) -> Optional[str]:
    """Why a well-formed ``[x, y, w, h]`` box cannot be trained on, or ``None``."""
    x, y, w, h = bbox
    if not all(math.isfinite(v) for v in bbox):
        return f'bbox {list(bbox)} is not finite'
    if w <= 0 or h <= 0:
        return f'bbox {list(bbox)} has width {w} and height {h}, expected both > 0'
    tol = BOX_TOLERANCE
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        return f'bbox {list(bbox)} reaches outside the {width}x{height} image'
    return None


def _check_records(ann_file: str, coco: Dict[str, Any]) -> Tuple[Dict[Any, Dict], Dict[Any, Dict]]:
    """Required fields and unique ids of images and categories; returns both by id."""
    images: Dict[Any, Dict] = {}
    for i, img in enumerate(coco['images']):
        if not isinstance(img, dict) or not {'id', 'file_name', 'width', 'height'} <= set(img):
            raise DetectionDataError(f'{ann_file}: images[{i}] needs id, file_name, width and height, got {img!r}')
        if not all(_is_number(img[k]) and img[k] > 0 for k in ('width', 'height')):
            raise DetectionDataError(f'image width and height must be positive numbers, got '
                                     f'{img["width"]!r} x {img["height"]!r}', f'{ann_file} images[{i}] '
                                     f'(id {img["id"]!r}, {img["file_name"]!r})')
        try:
            first = images.setdefault(img['id'], img)
        except TypeError:
            raise DetectionDataError(f'image id {img["id"]!r} is not a number or string', f'{ann_file} images[{i}]')
        if first is not img:
            raise DetectionDataError(f'duplicate image id {img["id"]!r}', f'{ann_file} images[{i}] '
                                     f'({img["file_name"]!r})', f'unique ids; {first["file_name"]!r} has it too')

    categories: Dict[Any, Dict] = {}
    names: Dict[Any, Any] = {}
    for i, cat in enumerate(coco['categories']):
        if not isinstance(cat, dict) or 'id' not in cat or 'name' not in cat:
            raise DetectionDataError(f'{ann_file}: categories[{i}] = {cat!r} needs an "id" and a "name"')
        try:
            first = categories.setdefault(cat['id'], cat)
            first_name = names.setdefault(cat['name'], cat['id'])
        except TypeError:
            raise DetectionDataError(f'category id {cat["id"]!r} or name {cat["name"]!r} is not a number or string',
                                     f'{ann_file} categories[{i}]')
        if first is not cat:
            raise DetectionDataError(f'duplicate category id {cat["id"]!r}', f'{ann_file} categories[{i}] '
                                     f'({cat["name"]!r})', f'unique ids; {first["name"]!r} has it too')
        if first_name != cat['id']:
            raise DetectionDataError(f'duplicate category name {cat["name"]!r}', f'{ann_file} categories[{i}] '
                                     f'(id {cat["id"]!r})', f'unique names; id {first_name!r} has it too')
    return images, categories


def _check_classes(ann_file: str, categories: Sequence[Dict], classes: Sequence[str]) -> None:
    """The config's classes must be categories of the file, in the file's order: mmdet's
    ``CocoDataset`` numbers labels in the order the file lists the chosen categories."""
    file_names = [c['name'] for c in categories]
    unknown = [c for c in classes if c not in file_names]
    if unknown:
        raise DetectionDataError(
            f'{ann_file} has {len(file_names)} categories ({_names(file_names)}), the config expects '
            f'{len(classes)} ({_names(list(classes))}) and {_names(unknown)} is not among them; set the dataset '
            f'metainfo classes (and the head\'s num_classes) to the file\'s categories or a subset of them')
    if len(set(classes)) != len(classes):
        repeated = sorted({c for c in classes if list(classes).count(c) > 1})
        raise DetectionDataError(f'the config lists class {_names(repeated)} more than once', ann_file,
                                 'each class once')
    in_file_order = [name for name in file_names if name in set(classes)]
    if in_file_order != list(classes):
        raise DetectionDataError(
            f'the config\'s classes ({_names(list(classes))}) are not in the order of the file\'s categories',
            ann_file, f'({_names(in_file_order)}): mmdet numbers labels in file order')


def check_coco_annotations(ann_file: str, classes: Optional[Sequence[str]] = None,
                           img_dir: Optional[str] = None) -> CocoCheck:
    """Read and check a COCO instance (or image-info) file; the module docstring lists the
    errors and warnings.

    Args:
        ann_file (str): The annotation JSON.
        classes (Sequence[str], optional): Class names the config trains, in order: the
            file's categories or a subset of them, in the file's order.
        img_dir (str, optional): Folder of the images (``file_name`` is relative to it);
            every listed image must exist and not be empty (one ``stat`` per image).

    Returns:
        CocoCheck: the parsed file and the boxes to leave out (``valid_coco()``,
        ``invalid_summary()``).
    """
    coco = _read_json(ann_file)
    if not isinstance(coco, dict):
        raise DetectionDataError(f'{ann_file}: top level is a {type(coco).__name__}, expected a COCO object '
                                 f'with "images", "annotations" and "categories"')
    # an image-info file (COCO test-dev) has no "annotations": nothing to train on, all to test
    required = ('images', 'annotations', 'categories') if 'annotations' in coco else ('images', 'categories')
    for key in required:
        if not isinstance(coco.get(key), list):
            found = 'missing' if key not in coco else f'a {type(coco[key]).__name__}'
            raise DetectionDataError(f'{ann_file}: "{key}" is {found}, expected a list (COCO instance format)')
    images, categories = _check_records(ann_file, coco)
    if classes is not None:
        _check_classes(ann_file, coco['categories'], classes)

    report = CocoCheck(ann_file, coco, num_boxes=len(coco.get('annotations', [])))
    ann_ids: Dict[Any, int] = {}
    for i, ann in enumerate(coco.get('annotations', [])):
        if not isinstance(ann, dict):
            raise DetectionDataError(f'{ann_file}: annotations[{i}] is a {type(ann).__name__}, expected an object')
        where = f'{ann_file} annotations[{i}] (id {ann.get("id")!r})'
        if 'id' not in ann:
            raise DetectionDataError('annotation without an "id"', f'{ann_file} annotations[{i}]',
                                     'every annotation has a unique id')
        try:
            first = ann_ids.setdefault(ann['id'], i)
        except TypeError:
            raise DetectionDataError(f'annotation id {ann["id"]!r} is not a number or string', where)
        if first != i:
            raise DetectionDataError(f'duplicate annotation id {ann["id"]!r}', where,
                                     f'unique ids; annotations[{first}] has it too')
        bbox = ann.get('bbox')
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise DetectionDataError(f'{ann_file}: annotations[{i}] (id {ann.get("id")}) has bbox {bbox!r}, '
                                     f'expected [x, y, width, height]')
        image = images.get(ann.get('image_id')) if _hashable(ann.get('image_id')) else None
        if image is None:
            raise DetectionDataError(f'{ann_file}: annotations[{i}] (id {ann.get("id")}) refers to image_id '
                                     f'{ann.get("image_id")!r}, which is not in "images"')
        if not _hashable(ann.get('category_id')) or ann.get('category_id') not in categories:
            known = _names(sorted(categories, key=str), 20)
            raise DetectionDataError(f'{ann_file}: annotations[{i}] (id {ann.get("id")}) has category_id '
                                     f'{ann.get("category_id")!r}, expected one of {known}')
        if not _is_number(ann.get('area')):
            raise DetectionDataError(f'annotation has area {ann.get("area")!r}', where,
                                     'a number (the object\'s area in pixels; mmdet reads it)')
        problem = _box_problem(bbox, image['width'], image['height'])
        if problem is not None:
            report.invalid_boxes.append((i, ann['id'], image['file_name'], problem))
    if report.num_boxes and len(report.invalid_boxes) == report.num_boxes:
        raise DetectionDataError(f'every one of the {report.num_boxes} boxes is invalid', ann_file,
                                 f'boxes [x, y, width, height] inside their images; {report.invalid_summary()}')

    if img_dir is not None:
        missing, empty = [], []
        for img in coco['images']:
            problem = image_file_problem(os.path.join(img_dir, img['file_name']), decode=False)
            if problem == 'is missing':
                missing.append(img['file_name'])
            elif problem is not None:
                empty.append(img['file_name'])
        if missing:
            raise DetectionDataError(f'{len(missing)} of {len(coco["images"])} images listed in {ann_file} are '
                                     f'missing from {img_dir}: {_names(missing)}')
        if empty:
            raise DetectionDataError(f'{len(empty)} of {len(coco["images"])} images listed in {ann_file} are empty '
                                     f'files or unreadable', img_dir, f'image files with their content: '
                                     f'{_names(empty)}')
    return report


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def image_file_problem(path: str, decode: bool = True) -> Optional[str]:
    """Why an image file cannot be read (``'is missing'``, ``'is empty'``, ``'cannot be
    decoded'``, ...), or ``None``. Without ``decode`` only one ``stat`` is made."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return 'is missing'
    except OSError as err:
        return f'cannot be read: {err.strerror}'
    if not os.path.isfile(path):
        return 'is not a file'
    if size == 0:
        return 'is empty'
    if decode:
        import cv2
        import numpy as np
        try:
            with open(path, 'rb') as f:
                data = np.frombuffer(f.read(), np.uint8)
        except OSError as err:
            return f'cannot be read: {err.strerror}'
        if cv2.imdecode(data, cv2.IMREAD_UNCHANGED) is None:
            return 'cannot be decoded'
    return None


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
