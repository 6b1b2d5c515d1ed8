"""Face alignment for evaluation: five landmarks from a MegaFace-style JSON file, and
insightface's ``face_align.norm_crop`` (a similarity transform onto ArcFace's 112x112
template) to cut the face out.

Landmark JSON: one file per image (``<image>.json``) holding the five points in
insightface's order (left eye, right eye, nose tip, left and right mouth corner), either
as ``{"landmarks": [[x, y], ...]}`` or keyed by index as in the MegaFace release,
``{"landmarks": {"0": {"x": .., "y": ..}, ...}}``. Other keys (``bounding_box``...) are
ignored.

Origin: this project. Licence: Apache-2.0.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Optional

import numpy as np

__all__ = ['read_landmarks', 'write_landmarks', 'align_face', 'load_aligned']


def read_landmarks(path: str) -> np.ndarray:
    """The ``(5, 2)`` float32 landmarks of a landmark JSON file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'landmark file not found: {path}')
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f'{path}: invalid JSON: {err}') from err
    points = data.get('landmarks') if isinstance(data, dict) else None
    if isinstance(points, dict):
        try:
            points = [[points[k]['x'], points[k]['y']] for k in sorted(points, key=int)]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f'{path}: landmarks keyed by index need {{"x": .., "y": ..}} entries: {err}') from err
    try:
        points = np.asarray(points, dtype=np.float32)
    except (TypeError, ValueError):
        points = np.zeros(0)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise ValueError(f'{path}: expected 5 finite (x, y) landmarks under "landmarks", got shape {points.shape}')
    return points


def write_landmarks(path: str, landmarks: np.ndarray, bounding_box: Optional[dict] = None) -> None:
    """Write five landmarks in the index-keyed layout ``read_landmarks`` accepts."""
    from backbones.io_utils import atomic_write_text
    landmarks = np.asarray(landmarks, dtype=float)
    if landmarks.shape != (5, 2):
        raise ValueError(f'expected (5, 2) landmarks, got {landmarks.shape}')
    data = {'landmarks': {str(i): {'x': float(x), 'y': float(y)} for i, (x, y) in enumerate(landmarks)}}
    if bounding_box is not None:
        data['bounding_box'] = bounding_box
    atomic_write_text(path, json.dumps(data))


def align_face(image: np.ndarray, landmarks: np.ndarray, image_size: int = 112) -> np.ndarray:
    """Warp ``image`` so that ``landmarks`` land on ArcFace's template (insightface's
    ``norm_crop``); returns ``image_size`` x ``image_size`` in the input's channel order."""
    from insightface.utils.face_align import norm_crop
    landmarks = np.asarray(landmarks, dtype=np.float32)
    if landmarks.shape != (5, 2):
        raise ValueError(f'expected (5, 2) landmarks, got {landmarks.shape}')
    with warnings.catch_warnings():
        # scikit-image >= 0.26 deprecates the estimate() call inside norm_crop; same result
        warnings.simplefilter('ignore', FutureWarning)
        return norm_crop(image, landmarks, image_size=image_size)


def load_aligned(image_path: str, landmark_path: Optional[str] = None, image_size: int = 112) -> np.ndarray:
    """Read an image file (RGB), align it with its landmark JSON (default
    ``<image>.json``) and return the aligned RGB crop."""
    import cv2
    img = cv2.imread(image_path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f'cannot read image {image_path}')
    landmarks = read_landmarks(landmark_path or image_path + '.json')
    return cv2.cvtColor(align_face(img, landmarks, image_size), cv2.COLOR_BGR2RGB)
