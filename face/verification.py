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

import codecs
import os
import pickle
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from backbones.errors import InputError

__all__ = ['load_verification_bin', 'validate_bin', 'write_verification_bin', 'kfold_accuracy', 'extract_features',
           'evaluate_pairs', 'VerificationSet']


_EXPECTED_BIN = 'a pickled (bins, issame) pair: 2P encoded images and P booleans (insightface\'s .bin)'
_LATIN1 = {'latin1', 'latin-1', 'latin_1', 'iso-8859-1', 'iso8859-1', 'l1'}


def _latin1_encode(text, encoding='utf-8', errors='strict'):
    # protocol-2 pickles store bytes as _codecs.encode(str, 'latin1'); any other codec
    # (zlib, base64, ...) would run a decoder of the file's choosing
    if not isinstance(text, str) or str(encoding).lower() not in _LATIN1:
        raise pickle.UnpicklingError(f'refusing _codecs.encode({type(text).__name__}, {encoding!r}): a verification '
                                     f'.bin stores bytes as latin-1 text only')
    return codecs.encode(text, 'latin1', errors)


class _BinUnpickler(pickle.Unpickler):
    """Plain containers, bytes, numbers and numpy arrays only."""

    _ALLOWED = {
        ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
        ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
        ('numpy', 'ndarray'), ('numpy', 'dtype'),
        ('builtins', 'bytearray'), ('__builtin__', 'bytearray'),
    }

    def find_class(self, module: str, name: str):
        if (module, name) == ('_codecs', 'encode'):
            return _latin1_encode
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f'refusing to load {module}.{name}: a verification .bin may only hold encoded images, the issame '
            f'list and numpy arrays')


def _side(i: int) -> str:
    return f'pair {i // 2}, {"first" if i % 2 == 0 else "second"} image'


def _open_bin(path: str) -> Tuple[Sequence, np.ndarray]:
    """Unpickle a ``.bin`` safely and check its structure: ``(bins, issame as bool array)``.
    Every fault is an ``InputError`` naming the file and the field, image or pair."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'verification set not found: {path}')
    with open(path, 'rb') as f:
        try:
            data = _BinUnpickler(f, encoding='bytes').load()
        except Exception as err:  # a damaged pickle stream fails in many ways (KeyError for a memo, ...)
            raise InputError(f'not a verification .bin that can be loaded safely: {type(err).__name__}: {err}',
                             path, _EXPECTED_BIN) from err
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        what = f'a {type(data).__name__} of {len(data)}' if isinstance(data, (tuple, list)) else \
            f'a {type(data).__name__}'
        raise InputError(f'the pickle holds {what}', path, _EXPECTED_BIN)
    bins, issame = data
    if not isinstance(bins, (list, tuple, np.ndarray)) or (isinstance(bins, np.ndarray) and bins.ndim != 1):
        raise InputError(f'bins is a {type(bins).__name__}', f'{path} bins', 'a list of encoded images')
    if not isinstance(issame, (list, tuple, np.ndarray)) or (isinstance(issame, np.ndarray) and issame.ndim != 1):
        raise InputError(f'issame is a {type(issame).__name__}', f'{path} issame', 'a flat list of booleans')
    for p, value in enumerate(issame):
        if not (isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1))):
            raise InputError(f'issame[{p}] is {value!r}', f'{path} issame', 'True or False for each pair')
    if not len(issame):
        raise InputError('no pairs', f'{path} issame', 'at least one pair')
    if len(bins) != 2 * len(issame):
        raise InputError(f'{len(bins)} images for {len(issame)} pairs', f'{path} bins',
                         f'{2 * len(issame)} images (two per pair, consecutive)')
    return bins, np.array([bool(v) for v in issame])


def _decode(item, path: str, i: int, image_size: Optional[Tuple[int, int]]) -> np.ndarray:
    """One encoded image of ``bins`` as RGB uint8 (resized to ``image_size``)."""
    import cv2
    if isinstance(item, (bytes, bytearray)):
        data = np.frombuffer(bytes(item), dtype=np.uint8)
    elif isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        data = item
    else:
        raise InputError(f'image {i} is a {type(item).__name__} ({_side(i)})', f'{path} bins[{i}]',
                         'encoded image bytes')
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise InputError(f'image {i} cannot be decoded ({_side(i)})', f'{path} bins[{i}]', 'a JPEG or PNG image')
    if image_size is not None and img.shape[:2] != tuple(image_size):
        img = cv2.resize(img, (image_size[1], image_size[0]), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _check_shape(img: np.ndarray, first: Optional[Tuple[int, ...]], path: str, i: int) -> Tuple[int, ...]:
    if first is not None and img.shape != first:
        raise InputError(f'image {i} is {img.shape[1]}x{img.shape[0]} ({_side(i)}), image 0 is {first[1]}x{first[0]}',
                         f'{path} bins[{i}]', 'images of one size, or pass image_size')
    return img.shape


def _as_size(image_size: Optional[Union[int, Tuple[int, int]]]) -> Optional[Tuple[int, int]]:
    return (image_size, image_size) if isinstance(image_size, int) else image_size


def load_verification_bin(path: str, image_size: Optional[Union[int, Tuple[int, int]]] = None,
                          progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Read a verification ``.bin`` (``image_size``: resize to this side or (h, w)).

    Returns:
        images: ``(2P, H, W, 3)`` uint8 RGB, pair p is images ``2p`` and ``2p + 1``;
        issame: ``(P,)`` bool.

    A malformed file raises ``InputError`` naming the field, image or pair (``validate_bin``).
    """
    from tqdm import tqdm
    bins, issame = _open_bin(path)
    image_size = _as_size(image_size)
    images, first = [], None
    for i, item in enumerate(tqdm(bins, desc=os.path.basename(path), disable=not progress)):
        img = _decode(item, path, i, image_size)
        first = _check_shape(img, first, path, i)
        images.append(img)
    return np.stack(images), issame


def validate_bin(path: str, image_size: Optional[Union[int, Tuple[int, int]]] = None,
                 n_folds: int = 10) -> Dict[str, object]:
    """Check a verification ``.bin`` completely (every image decoded, none kept) before a
    run relies on it; raises what ``load_verification_bin`` would, and ``InputError`` when
    the pairs cannot be split into ``n_folds`` folds.

    Returns:
        dict: ``num_pairs``, ``num_same`` and ``image_shape`` (H, W, 3).
    """
    bins, issame = _open_bin(path)
    if len(issame) < n_folds:
        raise InputError(f'{len(issame)} pairs cannot be split into {n_folds} folds', f'{path} issame',
                         f'at least {n_folds} pairs')
    image_size = _as_size(image_size)
    first = None
    for i, item in enumerate(bins):
        first = _check_shape(_decode(item, path, i, image_size), first, path, i)
    return dict(num_pairs=len(issame), num_same=int(issame.sum()), image_shape=first)


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
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise ValueError(f'n_folds must be an int >= 2, got {n_folds!r}')
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
                     progress: bool = False, desc: str = 'features', amp: bool = False) -> np.ndarray:
    """L2-normalised float32 features of RGB uint8 images, computed on the model's device;
    ``flip`` adds the mirrored image's feature before normalising; ``amp`` runs the model
    under autocast (``backbones.amp``: bfloat16 where supported)."""
    from tqdm import tqdm
    from backbones.amp import autocast
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress):
            x = to_input_tensor(images[start:start + batch_size]).to(device)
            with autocast(device, amp):
                feat = model(x).float()
                if flip:
                    feat = feat + model(torch.flip(x, dims=[3])).float()
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
