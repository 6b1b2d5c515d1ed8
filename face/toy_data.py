"""A toy identity data set in the real formats, for tests and the demo: an MS1MV2-style
``.rec`` training set, a verification ``.bin`` and a MegaFace-style probe/distractor set
(photos, landmark JSONs, the devkit's JSON lists and insightface-style noise lists).

An identity is a drawn "face" with its own skin, hair, eye, brow, mouth and mark colours,
sizes and positions. Each photo of it varies lighting, contrast, expression details and
noise, and places the face in a larger picture by a random similarity transform; its five
landmarks (eyes, nose, mouth corners) are recorded, so aligning with insightface's
``norm_crop`` recovers the face as the real pipelines do. Training, verification, probe
and distractor identities are disjoint draws, so every evaluation measures generalisation
to unseen people.

Origin: this project. Licence: Apache-2.0.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

__all__ = ['ToyIdentity', 'render_face', 'render_photo', 'make_toy_face_data', 'TEMPLATE']

# ArcFace's 112x112 landmark template (insightface ``face_align.arcface_dst``).
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                     [70.7299, 92.2041]], dtype=np.float32)


@dataclass
class ToyIdentity:
    """The drawing parameters of one identity (all colours RGB)."""

    skin: np.ndarray
    hair: np.ndarray
    iris: np.ndarray
    lips: np.ndarray
    hair_height: float
    face_width: float
    eye_radius: float
    brow_tilt: float
    mouth_curve: float
    marks: np.ndarray  # (K, 6): x, y, radius, r, g, b

    @classmethod
    def draw(cls, rng: np.random.Generator) -> 'ToyIdentity':
        return cls(skin=rng.uniform(60, 230, 3), hair=rng.uniform(0, 255, 3), iris=rng.uniform(0, 255, 3),
                   lips=rng.uniform(40, 255, 3), hair_height=rng.uniform(10, 34), face_width=rng.uniform(34, 46),
                   eye_radius=rng.uniform(3, 7), brow_tilt=rng.uniform(-5, 5), mouth_curve=rng.uniform(-6, 6),
                   marks=np.concatenate([rng.uniform([28, 30, 3], [84, 100, 9], (3, 3)),
                                         rng.uniform(0, 255, (3, 3))], 1))


def render_face(ident: ToyIdentity, rng: np.random.Generator) -> np.ndarray:
    """A 112x112 RGB uint8 face with its landmarks on ``TEMPLATE``, varied per call."""
    import cv2
    img = np.empty((112, 112, 3), np.float32)
    img[:] = rng.uniform(0, 255, 3)  # background
    jitter = lambda scale: rng.normal(0, scale)  # noqa: E731
    c = lambda colour: tuple(float(v) for v in np.clip(colour + rng.normal(0, 12, 3), 0, 255))  # noqa: E731
    cv2.ellipse(img, (56, int(40 - ident.hair_height / 3)), (int(ident.face_width + 6), int(ident.hair_height + 18)),
                0, 180, 360, c(ident.hair), -1, cv2.LINE_AA)
    cv2.ellipse(img, (56, 66), (int(ident.face_width + jitter(1)), 52), 0, 0, 360, c(ident.skin), -1, cv2.LINE_AA)
    for x, y, r, *colour in ident.marks:
        cv2.circle(img, (int(x + jitter(1)), int(y + jitter(1))), int(r), c(np.array(colour)), -1, cv2.LINE_AA)
    for k, side in ((0, -1), (1, 1)):
        ex, ey = TEMPLATE[k]
        cv2.circle(img, (int(ex), int(ey)), int(ident.eye_radius + 3), (245, 245, 245), -1, cv2.LINE_AA)
        cv2.circle(img, (int(ex), int(ey)), int(ident.eye_radius), c(ident.iris), -1, cv2.LINE_AA)
        tilt = side * ident.brow_tilt
        cv2.line(img, (int(ex - 9), int(ey - 11 - tilt)), (int(ex + 9), int(ey - 11 + tilt)), c(ident.hair), 3,
                 cv2.LINE_AA)
    nx, ny = TEMPLATE[2]
    cv2.line(img, (int(nx), int(ny - 14)), (int(nx - 4), int(ny + 2)), c(ident.skin * 0.6), 2, cv2.LINE_AA)
    (lx, ly), (rx, ry) = TEMPLATE[3], TEMPLATE[4]
    curve = ident.mouth_curve + jitter(1.5)  # expression
    pts = np.array([[lx, ly], [(lx + rx) / 2, (ly + ry) / 2 + curve], [rx, ry]], np.int32)
    cv2.polylines(img, [pts], False, c(ident.lips), 3, cv2.LINE_AA)
    img = img * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25)  # lighting
    img = img + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_photo(face: np.ndarray, rng: np.random.Generator, size: int = 160) -> Tuple[np.ndarray, np.ndarray]:
    """Place a 112x112 face in a ``size`` x ``size`` picture by a random similarity
    transform; returns the picture and the five landmarks in it."""
    import cv2
    scale = rng.uniform(0.9, 1.25)
    angle = rng.uniform(-15, 15)
    centre = np.array([size / 2, size / 2]) + rng.uniform(-10, 10, 2)
    matrix = cv2.getRotationMatrix2D((56.0, 56.0), angle, scale)
    matrix[:, 2] += centre - 56.0
    background = rng.uniform(0, 255, 3)
    photo = cv2.warpAffine(face, matrix, (size, size), borderMode=cv2.BORDER_CONSTANT,
                           borderValue=tuple(float(v) for v in background))
    landmarks = TEMPLATE @ matrix[:, :2].T + matrix[:, 2]
    return photo, landmarks.astype(np.float32)


def _aligned_sample(ident: ToyIdentity, rng: np.random.Generator) -> np.ndarray:
    from .align import align_face
    photo, landmarks = render_photo(render_face(ident, rng), rng)
    # a landmark detector is never exact
    return align_face(photo, landmarks + rng.normal(0, 1.0, landmarks.shape).astype(np.float32))


def make_toy_face_data(root: str, train_identities: int = 200, images_per_identity: int = 16,
                       verification_pairs: int = 200, probe_identities: int = 20, images_per_probe: int = 6,
                       distractors: int = 1001, seed: int = 0, progress: bool = True) -> Dict[str, str]:
    """Write the toy sets under ``root``; returns their paths. Layout::

        root/train/{train.rec, train.idx, property}      aligned 112x112 training faces
        root/train/toy_val.bin                            verification pairs (unseen people)
        root/megaface/facescrub/<id>/<id>_<k>.png (+.json)  probe photos and landmarks
        root/megaface/megaface/<aa>/<bb>/<n>.jpg (+.json)   distractor photos
        root/megaface/facescrub_features_list.json, megaface_features_list.json
        root/megaface/facescrub_noises.txt, megaface_noises.txt

    The noise lists name one probe drawn from another identity and one distractor that
    is a probe identity, which the cleaned-list evaluation must repair (hence 1,001
    distractors: 1,000 remain after cleaning).
    """
    from tqdm import tqdm
    from .recordio import write_face_recordset
    from .verification import write_verification_bin
    from backbones.io_utils import atomic_write_text

    rng = np.random.default_rng(seed)
    paths = dict(train=os.path.join(root, 'train'), val_bin=os.path.join(root, 'train', 'toy_val.bin'),
                 megaface=os.path.join(root, 'megaface'))
    # train
    images, labels = [], []
    for label in tqdm(range(train_identities), desc='toy training identities', disable=not progress):
        ident = ToyIdentity.draw(rng)
        for _ in range(images_per_identity):
            images.append(_aligned_sample(ident, rng))
            labels.append(label)
    write_face_recordset(paths['train'], images, labels)
    # verification pairs, half of them genuine
    pair_images, issame = [], []
    for p in range(verification_pairs):
        a = ToyIdentity.draw(rng)
        same = p % 2 == 0
        b = a if same else ToyIdentity.draw(rng)
        pair_images += [_aligned_sample(a, rng), _aligned_sample(b, rng)]
        issame.append(same)
    write_verification_bin(paths['val_bin'], pair_images, issame)
    # MegaFace-style: FaceScrub-like probes and distractor photos
    mf = paths['megaface']
    probe_ids = [ToyIdentity.draw(rng) for _ in range(probe_identities)]
    probe_paths, probe_names = [], []
    for i, ident in enumerate(tqdm(probe_ids, desc='toy probes', disable=not progress)):
        name = f'Person_{i:03d}'
        for k in range(images_per_probe):
            # the last image of the first identity is mislabelled: another person's face
            source = probe_ids[1] if (i == 0 and k == images_per_probe - 1) else ident
            photo, landmarks = render_photo(render_face(source, rng), rng)
            rel = f'{name}/{name}_{k}.png'
            _write_photo(os.path.join(mf, 'facescrub', rel), photo, landmarks)
            probe_paths.append(rel)
            probe_names.append(name)
    distractor_paths = []
    for n in tqdm(range(distractors), desc='toy distractors', disable=not progress):
        # distractor 0 is a probe identity: a noise the cleaned list removes
        ident = probe_ids[0] if n == 0 else ToyIdentity.draw(rng)
        photo, landmarks = render_photo(render_face(ident, rng), rng)
        rel = f'{n % 97:02d}/{n // 97:04d}/{n:07d}.jpg'
        _write_photo(os.path.join(mf, 'megaface', rel), photo, landmarks)
        distractor_paths.append(rel)
    atomic_write_text(os.path.join(mf, 'facescrub_features_list.json'),
                      json.dumps({'path': probe_paths, 'id': probe_names}))
    atomic_write_text(os.path.join(mf, 'megaface_features_list.json'), json.dumps({'path': distractor_paths}))
    atomic_write_text(os.path.join(mf, 'facescrub_noises.txt'),
                      f'# mislabelled probe images\n{os.path.basename(probe_paths[images_per_probe - 1])}\n')
    atomic_write_text(os.path.join(mf, 'megaface_noises.txt'),
                      f'# distractors showing a probe identity\n0\t{distractor_paths[0]}\n')
    return paths


def _write_photo(path: str, photo_rgb: np.ndarray, landmarks: np.ndarray) -> None:
    import cv2
    from .align import write_landmarks
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(photo_rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f'cannot write {path}')
    x0, y0 = landmarks.min(0) - 20
    x1, y1 = landmarks.max(0) + 20
    write_landmarks(path + '.json', landmarks,
                    bounding_box=dict(x=float(x0), y=float(y0), width=float(x1 - x0), height=float(y1 - y0)))
