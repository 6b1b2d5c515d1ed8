"""A toy detection dataset in the real COCO format: images of coloured shapes and their boxes.

Layout written under ``root``::

    root/train/000000.png ...              root/val/000000.png ...
    root/annotations/instances_train.json  root/annotations/instances_val.json

The JSON files are ordinary COCO instance annotations (``info``, ``licenses``, ``images``,
``annotations`` with ``bbox`` as ``[x, y, w, h]``, polygon ``segmentation``, ``area``,
``iscrowd``, and ``categories``), so mmdet's ``CocoDataset`` and pycocotools' evaluation read
them unchanged. Each image holds 1 to ``max_objects`` non-overlapping filled shapes (one
category per shape kind) on a smooth coloured background with mild noise; everything is
drawn from one seed, so the same arguments give byte-identical files.
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Tuple

import numpy as np

from backbones.io_utils import atomic_write_text

__all__ = ['TOY_CLASSES', 'make_toy_coco', 'toy_coco_paths']

TOY_CLASSES = ('square', 'circle', 'triangle')
_SPLIT_SEED_OFFSET = {'train': 0, 'val': 1_000_003}


def toy_coco_paths(root: str, split: str) -> Tuple[str, str]:
    """(annotation file, image folder) of a split."""
    return os.path.join(root, 'annotations', f'instances_{split}.json'), os.path.join(root, split)


def _polygon(kind: str, cx: float, cy: float, size: float, rng: np.random.Generator) -> np.ndarray:
    """Outline of a shape whose axis-aligned box is about ``size`` wide, as (K, 2) points."""
    half = size / 2
    if kind == 'square':
        w, h = half * rng.uniform(0.75, 1.0), half * rng.uniform(0.75, 1.0)
        return np.array([[cx - w, cy - h], [cx + w, cy - h], [cx + w, cy + h], [cx - w, cy + h]])
    if kind == 'circle':
        angles = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        return np.stack([cx + half * np.cos(angles), cy + half * np.sin(angles)], axis=1)
    if kind == 'triangle':
        return np.array([[cx, cy - half], [cx + half, cy + half], [cx - half, cy + half]])
    raise ValueError(f'unknown toy shape {kind!r}; expected one of {TOY_CLASSES}')


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _draw_image(rng: np.random.Generator, size: int, max_objects: int, min_size: int, max_size: int):
    import cv2

    # a smooth two-colour gradient background with noise, so shapes are not found by colour alone
    top, bottom = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    image = (top * (1 - ramp) + bottom * ramp) * np.ones((1, size, 1))
    image = image + rng.normal(0, 6, image.shape)
    objects: List[Tuple[int, np.ndarray]] = []
    boxes: List[Tuple[float, float, float, float]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            kind = int(rng.integers(len(TOY_CLASSES)))
            extent = float(rng.uniform(min_size, max_size))
            cx, cy = rng.uniform(extent / 2 + 1, size - extent / 2 - 1, 2)
            points = _polygon(TOY_CLASSES[kind], cx, cy, extent, rng)
            x0, y0 = points.min(0)
            x1, y1 = points.max(0)
            # keep shapes apart (a 3-pixel margin) so every box is unambiguous
            if all(x0 > bx1 + 3 or x1 < bx0 - 3 or y0 > by1 + 3 or y1 < by0 - 3 for bx0, by0, bx1, by1 in boxes):
                break
        else:
            continue
        colour = rng.uniform(0, 255, 3)
        while np.abs(colour - image[int(cy), int(cx)]).max() < 60:  # visible against the background
            colour = rng.uniform(0, 255, 3)
        cv2.fillPoly(image, [np.round(points * 16).astype(np.int32)], colour.tolist(), lineType=cv2.LINE_AA, shift=4)
        boxes.append((x0, y0, x1, y1))
        objects.append((kind, points))
    return np.clip(image, 0, 255).astype(np.uint8), objects


def _write_split(root: str, split: str, num_images: int, image_size: int, max_objects: int, min_size: int,
                 max_size: int, seed: int, info: Dict) -> None:
    import cv2
    from tqdm import tqdm

    ann_file, img_dir = toy_coco_paths(root, split)
    os.makedirs(img_dir, exist_ok=True)
    rng = np.random.default_rng(seed + _SPLIT_SEED_OFFSET[split])
    images, annotations = [], []
    # a bar for the larger sets, on a terminal only (disable=None): a redirected log gets no carriage returns
    for index in tqdm(range(num_images), desc=f'toy COCO {split}', leave=False,
                      disable=None if num_images >= 200 else True):
        image, objects = _draw_image(rng, image_size, max_objects, min_size, max_size)
        file_name = f'{index:06d}.png'
        if not cv2.imwrite(os.path.join(img_dir, file_name), image):
            raise OSError(f'could not write {os.path.join(img_dir, file_name)}')
        image_id = index + 1
        images.append(dict(id=image_id, file_name=file_name, width=image_size, height=image_size))
        for kind, points in objects:
            x0, y0 = np.clip(points.min(0), 0, image_size)
            x1, y1 = np.clip(points.max(0), 0, image_size)
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id, category_id=kind + 1,
                bbox=[round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
                area=round(_polygon_area(points), 2), iscrowd=0,
                segmentation=[[round(float(v), 2) for v in points.reshape(-1)]]))
    coco = dict(info=dict(info, split=split), licenses=[], images=images, annotations=annotations,
                categories=[dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(TOY_CLASSES)])
    atomic_write_text(ann_file, json.dumps(coco))


def make_toy_coco(root: str, num_train: int = 400, num_val: int = 100, image_size: int = 128,
                  max_objects: int = 3, min_size: int = 24, max_size: int = 56, seed: int = 0) -> Dict[str, str]:
    """Write the toy dataset under ``root`` (see the module docstring) and return the paths.

    A folder already holding a dataset made with the same arguments is left as it is (the
    arguments are stored in each JSON's ``info``), so reruns cost nothing.

    Example:
        >>> import tempfile, json
        >>> root = tempfile.mkdtemp()
        >>> paths = make_toy_coco(root, num_train=2, num_val=1, image_size=64, min_size=12, max_size=24)
        >>> sorted(json.load(open(paths['val_ann']))) == ['annotations', 'categories', 'images', 'info', 'licenses']
        True
    """
    for name, value in dict(num_train=num_train, num_val=num_val, image_size=image_size, max_objects=max_objects,
                            min_size=min_size, max_size=max_size).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be an int >= 1, got {value!r}')
    if not min_size <= max_size <= image_size - 4:
        raise ValueError(f'shape sizes must satisfy min_size <= max_size <= image_size - 4, got '
                         f'{min_size}, {max_size} for image_size {image_size}')
    info = dict(description='TopoNet suite toy shapes', num_train=num_train, num_val=num_val, image_size=image_size,
                max_objects=max_objects, min_size=min_size, max_size=max_size, seed=seed, version=1)
    paths = {}
    for split, count in (('train', num_train), ('val', num_val)):
        ann_file, img_dir = toy_coco_paths(root, split)
        paths[f'{split}_ann'], paths[f'{split}_img'] = ann_file, img_dir
        if _is_complete(ann_file, img_dir, dict(info, split=split)):
            continue
        _write_split(root, split, count, image_size, max_objects, min_size, max_size, seed, info)
    return paths


def _is_complete(ann_file: str, img_dir: str, info: Dict) -> bool:
    try:
        with open(ann_file) as f:
            coco = json.load(f)
    except (OSError, ValueError):
        return False
    if coco.get('info') != info:
        return False
    return all(os.path.isfile(os.path.join(img_dir, img['file_name'])) for img in coco.get('images', []))
