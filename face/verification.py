"""Face verification sets (LFW, CFP-FP, AgeDB-30 as insightface's pickled ``.bin`` files)
and the 10-fold accuracy protocol with flipped-image feature fusion.

A ``.bin`` file is a pickle of ``(bins, issame)``: ``bins`` lists ``2 * len(issame)``
encoded images (pairs are consecutive), ``issame`` says which pairs show one person.
It is read with a restricted unpickler that accepts nothing but plain containers, bytes,
numbers, booleans and numpy arrays (some releases store images or the issame list as
numpy arrays): any other global in the pickle raises an error naming it.

Protocol (LFW "unrestricted", as insightface evaluates): the feature of an image is
``f(x) + f(flip(x))``, L2-normalised; a pair's score is the squared Euclidean distance;
the pairs are cut into 10 consecutive folds; for each fold the threshold maximising the
accuracy on the other nine folds is applied to it; the result is the mean (and std) of the
ten fold accuracies.

Origin: this project. Licence: Apache-2.0.
"""
from __future__ import annotations

import os
import pickle
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ['load_verification_bin', 'write_verification_bin', 'kfold_accuracy', 'extract_features',
           'evaluate_pairs', 'VerificationSet']


class _BinUnpickler(pickle.Unpickler):
    """Plain containers, bytes, numbers and numpy arrays only."""

    _ALLOWED = {
        ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
        ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
        ('numpy', 'ndarray'), ('numpy', 'dtype'), ('_codecs', 'encode'),
        ('builtins', 'bytearray'), ('__builtin__', 'bytearray'),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f'refusing to load {module}.{name}: a verification .bin may only hold encoded images, the issame '
            f'list and numpy arrays')


def _as_bytes(item, path: str, i: int) -> bytes:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8:
        return item.tobytes()
    raise ValueError(f'{path}: image {i} is a {type(item).__name__}, expected encoded image bytes')


def load_verification_bin(path: str, image_size: Optional[Union[int, Tuple[int, int]]] = None,
                          progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Read a verification ``.bin`` (``image_size``: resize to this side or (h, w)).

    Returns:
        images: ``(2P, H, W, 3)`` uint8 RGB, pair p is images ``2p`` and ``2p + 1``;
        issame: ``(P,)`` bool.
    """
    import cv2
    from tqdm import tqdm
    if not os.path.isfile(path):
        raise FileNotFoundError(f'verification set not found: {path}')
    with open(path, 'rb') as f:
        try:
            data = _BinUnpickler(f, encoding='bytes').load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
            raise ValueError(f'{path}: not a verification .bin that can be loaded safely: {err}') from err
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f'{path}: expected a pickled (bins, issame) pair, got {type(data).__name__}')
    bins, issame = data
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    issame = np.asarray(issame)
    if issame.ndim != 1 or issame.dtype.kind not in 'biu':
        raise ValueError(f'{path}: issame must be a flat list of booleans, got shape {issame.shape} {issame.dtype}')
    if len(bins) != 2 * len(issame):
        raise ValueError(f'{path}: {len(bins)} images for {len(issame)} pairs (expected {2 * len(issame)})')
    images = []
    for i, item in enumerate(tqdm(bins, desc=os.path.basename(path), disable=not progress)):
        img = cv2.imdecode(np.frombuffer(_as_bytes(item, path, i), dtype=np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f'{path}: image {i} cannot be decoded')
        if image_size is not None and img.shape[:2] != tuple(image_size):
            img = cv2.resize(img, (image_size[1], image_size[0]), interpolation=cv2.INTER_AREA)
        images.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    if len({im.shape for im in images}) > 1:
        raise ValueError(f'{path}: images of different sizes {sorted({im.shape for im in images})}; pass image_size')
    return np.stack(images), issame.astype(bool)


def write_verification_bin(path: str, images: Sequence[np.ndarray], issame: Sequence[bool], ext: str = '.jpg') -> None:
    """Write RGB uint8 images (pairs consecutive) and their issame list as a ``.bin``."""
    import cv2
    from backbones.io_utils import atomic_write_bytes
    if len(images) != 2 * len(issame):
        raise ValueError(f'{len(images)} images for {len(issame)} pairs (expected {2 * len(issame)})')
    bins = []
    for img in images:
        ok, buf = cv2.imencode(ext, cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f'cannot encode an image of shape {np.shape(img)}')
        bins.append(buf.tobytes())
    atomic_write_bytes(path, pickle.dumps((bins, [bool(s) for s in issame]), protocol=4))


def _fold_slices(n: int, n_folds: int) -> List[np.ndarray]:
    # Consecutive folds, the first n % n_folds one pair larger (sklearn's KFold without shuffle).
    sizes = np.full(n_folds, n // n_folds)
    sizes[:n % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(bounds[k], bounds[k + 1]) for k in range(n_folds)]


def kfold_accuracy(features1: np.ndarray, features2: np.ndarray, issame: np.ndarray, n_folds: int = 10,
                   thresholds: Optional[np.ndarray] = None) -> Dict[str, float]:
    """10-fold verification accuracy on L2-normalised pair features.

    Returns ``accuracy`` and ``std`` (in %) over the folds and the mean ``threshold``
    (squared distance; a pair is "same" when its distance is below it).
    """
    features1, features2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    issame = np.asarray(issame, bool)
    if features1.shape != features2.shape or features1.ndim != 2 or len(issame) != len(features1):
        raise ValueError(f'need two (P, D) feature arrays and P labels, got {features1.shape}, {features2.shape} '
                         f'and {issame.shape}')
    if len(issame) < n_folds:
        raise ValueError(f'{len(issame)} pairs cannot be split into {n_folds} folds')
    thresholds = np.arange(0, 4, 0.01) if thresholds is None else np.asarray(thresholds)
    dist = ((features1 - features2) ** 2).sum(1)
    # correct[t, p]: pair p classified right at threshold t
    correct = (dist[None, :] < thresholds[:, None]) == issame[None, :]
    accs, chosen = [], []
    for test in _fold_slices(len(issame), n_folds):
        train = np.ones(len(issame), bool)
        train[test] = False
        best = int(np.argmax(correct[:, train].mean(1)))
        chosen.append(thresholds[best])
        accs.append(correct[best, test].mean())
    return dict(accuracy=100.0 * float(np.mean(accs)), std=100.0 * float(np.std(accs)),
                threshold=float(np.mean(chosen)))


def to_input_tensor(images: np.ndarray) -> torch.Tensor:
    """RGB uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` scaled to [-1, 1] (insightface's
    ``(x - 127.5) / 127.5``)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return (x - 127.5) / 127.5


@torch.no_grad()
def extract_features(model: torch.nn.Module, images: np.ndarray, batch_size: int = 128, flip: bool = True,
                     progress: bool = False, desc: str = 'features') -> np.ndarray:
    """L2-normalised features of RGB uint8 images; ``flip`` adds the mirrored image's
    feature before normalising."""
    from tqdm import tqdm
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress):
            x = to_input_tensor(images[start:start + batch_size]).to(device)
            feat = model(x)
            if flip:
                feat = feat + model(torch.flip(x, dims=[3]))
            out.append(torch.nn.functional.normalize(feat.float(), dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


def evaluate_pairs(model: torch.nn.Module, images: np.ndarray, issame: np.ndarray, batch_size: int = 128,
                   flip: bool = True, n_folds: int = 10) -> Dict[str, float]:
    """Features of every image, then ``kfold_accuracy`` over the consecutive pairs."""
    features = extract_features(model, images, batch_size, flip)
    return kfold_accuracy(features[0::2], features[1::2], issame, n_folds=n_folds)


class VerificationSet:
    """A named verification set loaded once (``name`` defaults to the file's stem)."""

    def __init__(self, path: str, name: Optional[str] = None, image_size: Optional[Union[int, Tuple[int, int]]] = None):
        self.path = path
        self.name = name or os.path.splitext(os.path.basename(path))[0]
        self.images, self.issame = load_verification_bin(path, image_size)

    def evaluate(self, model: torch.nn.Module, batch_size: int = 128, flip: bool = True) -> Dict[str, float]:
        return evaluate_pairs(model, self.images, self.issame, batch_size, flip)
