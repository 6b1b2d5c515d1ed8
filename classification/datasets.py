"""Classification datasets in their real on-disk formats.

* Fashion-MNIST: the four IDX files (gzipped or not), default the Debian package's path.
* CIFAR-100: the "python version" folder (``cifar-100-python/{train,test,meta}``), pickles
  read by a restricted unpickler that accepts only the types those files contain.
* ImageNet: ImageFolder layout (``root/<split>/<wnid>/<image>.JPEG``).

Every dataset yields ``dict(inputs=uint8 tensor CxHxW, labels=int)``; normalisation happens
in the model's data preprocessor (``classification.model.ClsDataPreprocessor``). Files are
validated as they are read: pixels must be uint8 (float IDX images only when they hold
0..255; floats in 0..1 are refused, never rescaled), labels integers in range, one per
image; a file that is not raises ``InputError`` naming it and the field.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.registry import DATASETS
from torch.utils.data import Dataset

from backbones.errors import InputError

from .transforms import build_transform

__all__ = ['read_idx', 'write_idx', 'subset_indices', 'holdout_indices', 'FashionMNIST', 'Cifar100', 'ImageNetFolder', 'restricted_pickle_load',
           'FASHION_MNIST_DIR', 'FASHION_MNIST_CLASSES', 'pixels_as_uint8', 'checked_labels', 'read_idx_pair']

FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker',
                         'Bag', 'Ankle boot')

# IDX type codes -> numpy dtypes (big-endian on disk)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype('>i2'), 0x0C: np.dtype('>i4'),
               0x0D: np.dtype('>f4'), 0x0E: np.dtype('>f8')}


def _open_maybe_gzip(path: str) -> bytes:
    with open(path, 'rb') as f:
        raw = f.read()
    if raw[:2] == b'\x1f\x8b':
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise InputError(f'corrupt gzip stream: {err}', path, 'an intact .gz file (download it again)') from err
    return raw


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (the MNIST format): magic ``0 0 type ndim``, ``ndim`` big-endian
    uint32 sizes, then the data."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'IDX file not found: {path}')
    data = _open_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise InputError(f'not an IDX file (magic bytes {data[:4].hex()})', path, 'magic 0000 <type> <ndim>')
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise InputError(f'unknown IDX data type 0x{type_code:02x}', path,
                         'one of ' + ', '.join(f'0x{c:02x}' for c in _IDX_DTYPES))
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise InputError(f'truncated IDX header ({len(data)} bytes, ndim={ndim})', path, f'{header} header bytes')
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise InputError(f'IDX payload has {len(data) - header} bytes, header dims {dims} need {expected}', path,
                         'a complete file')
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder('='))


def write_idx(path: str, array: np.ndarray, compress: bool = True) -> None:
    """Write ``array`` as an IDX file (gzipped when ``compress``)."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    array = np.asarray(array)
    if array.dtype not in codes:
        raise ValueError(f'IDX cannot store dtype {array.dtype}')
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b''.join(d.to_bytes(4, 'big') for d in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder('>')).tobytes()
    from backbones.io_utils import atomic_write_bytes
    atomic_write_bytes(path, gzip.compress(payload) if compress else payload)


def _find_idx(root: str, stem: str) -> str:
    for name in (stem + '.gz', stem):
        if os.path.isfile(os.path.join(root, name)):
            return os.path.join(root, name)
    raise FileNotFoundError(
        f'Fashion-MNIST file {stem}(.gz) not found in {root}; install the Debian package dataset-fashion-mnist '
        f'or point the dataset root at a folder with the four IDX files')


def pixels_as_uint8(images: np.ndarray, where: str) -> np.ndarray:
    """Image pixels as uint8: uint8 as they are; a float array only when every value is
    finite and in 0..255 (then rounded). Floats that all lie in 0..1 are refused rather
    than rescaled: they are pixels divided by 255, and read as 0..255 they would be black.
    Any other dtype is refused."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    expected = 'uint8 pixels 0..255 (or floats holding 0..255)'
    if not np.issubdtype(images.dtype, np.floating):
        raise InputError(f'images have dtype {images.dtype}', where, expected)
    if images.size == 0:
        return images.astype(np.uint8)
    finite = np.isfinite(images)
    if not finite.all():
        raise InputError(f'{int((~finite).sum())} pixels are NaN or infinite', where, expected)
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 255:
        raise InputError(f'float pixels span {low:g}..{high:g}', where, expected)
    if high <= 1.0:
        raise InputError(f'float pixels span {low:g}..{high:g}: images scaled to 0..1', where,
                         'pixels must be 0..255: multiply by 255 (and store uint8)')
    return np.rint(images).astype(np.uint8)


def checked_labels(labels: Any, where: str, num_classes: int, count: Optional[int] = None) -> np.ndarray:
    """Labels as int64: a 1-d integer array (or list of ints) in ``0..num_classes-1``, and
    ``count`` of them when given; anything else (floats, bools, out of range) is refused."""
    array = np.asarray(labels)
    if array.dtype.kind not in 'iu' or array.ndim != 1:
        raise InputError(f'labels are {array.dtype} of shape {array.shape}', where,
                         f'a 1-d list of integer class indices 0..{num_classes - 1}')
    if count is not None and array.shape[0] != count:
        raise InputError(f'{array.shape[0]} labels for {count} images', where, 'one label per image')
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise InputError(f'labels outside 0..{num_classes - 1} (found {array.min()}..{array.max()})', where,
                         f'class indices 0..{num_classes - 1}')
    return array.astype(np.int64)


def read_idx_pair(images_path: str, labels_path: str, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """An IDX image file (N x H x W, ``pixels_as_uint8``) and its IDX label file (N
    integer labels in ``0..num_classes-1``), as uint8 images and int64 labels."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise InputError(f'images {images.shape} and labels {labels.shape} do not pair up',
                         f'{images_path} / {labels_path}', 'N x H x W images and N labels')
    return pixels_as_uint8(images, images_path), checked_labels(labels, labels_path, num_classes)


def subset_indices(n_total: int, n: Optional[int], seed: int) -> Optional[np.ndarray]:
    """Sorted indices of a seeded random subset of ``n`` out of ``n_total`` samples; ``None``
    (everything) when ``n`` is ``None`` or at least ``n_total``."""
    if n is None or n >= n_total:
        return None
    if n < 1:
        raise ValueError(f'sample count must be >= 1, got {n}')
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:n])


def holdout_indices(labels: np.ndarray, size: int, seed: int, where: str = 'labels') -> np.ndarray:
    """Sorted indices of a class-stratified hold-out of ``size`` samples: ``size / classes``
    from every class present, drawn with ``seed``.

    Example:
        >>> holdout_indices(np.array([0, 1] * 10), 4, seed=0).size
        4
    """
    classes = np.unique(labels)
    if size % classes.size:
        raise InputError(f'hold-out of {size} images does not split evenly over {classes.size} classes', where,
                         f'a multiple of {classes.size}')
    per_class = size // classes.size
    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if members.size <= per_class:
            raise InputError(f'class {int(c)} has {members.size} images, too few to hold out {per_class}', where,
                             f'more than {per_class} images per class')
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


class _InMemoryImages(Dataset):
    """uint8 ``images`` (N x C x H x W) and int64 ``labels`` held in memory."""

    images: torch.Tensor
    labels: torch.Tensor
    transform: Optional[Callable]

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> Dict:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return dict(inputs=image, labels=int(self.labels[index]))


@DATASETS.register_module()
class FashionMNIST(_InMemoryImages):
    """Fashion-MNIST from its IDX files, held in memory as uint8.

    Args:
        root (str): Folder with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.
        split (str): ``'train'`` (the 60k training images less the hold-out), ``'val'``
            (the hold-out) or ``'test'`` (the 10k test images).
        transform (callable or str, optional): Applied to the uint8 ``1x28x28`` tensor
            (a name from ``classification.transforms.TRANSFORM_PRESETS`` in configs).
        indices (sequence, optional): Keep only these samples of the split (subsets for
            quick runs), as positions within the split.
        holdout (int): Training images held out as the validation split, the same number
            from every class, drawn with ``holdout_seed``. 0 keeps
            all 60k for training and has no ``'val'`` split. Recipes are chosen on
            ``'val'``; ``'test'`` is scored once, for final numbers.
        holdout_seed (int): Seed of the hold-out draw; fixed, so every run that holds out
            the same number of images holds out the same images.
    """

    METAINFO = dict(classes=FASHION_MNIST_CLASSES)

    def __init__(self, root: str = FASHION_MNIST_DIR, split: str = 'train', transform: Optional[Callable] = None,
                 indices: Optional[Sequence[int]] = None, holdout: int = 0, holdout_seed: int = 0):
        if split not in ('train', 'val', 'test'):
            raise InputError(f'unknown Fashion-MNIST split {split!r}', 'dataset.split', "'train', 'val' or 'test'")
        if isinstance(holdout, bool) or not isinstance(holdout, int) or holdout < 0:
            raise InputError(f'bad hold-out size {holdout!r}', 'dataset.holdout', 'an int >= 0')
        if split == 'val' and holdout == 0:
            raise InputError("split 'val' without a hold-out", 'dataset.holdout',
                             'holdout > 0 (e.g. 5000) to carve a validation split out of the training images')
        prefix = 't10k' if split == 'test' else 'train'
        images, labels = read_idx_pair(_find_idx(root, f'{prefix}-images-idx3-ubyte'),
                                       _find_idx(root, f'{prefix}-labels-idx1-ubyte'), len(FASHION_MNIST_CLASSES))
        if split != 'test' and holdout:
            held = holdout_indices(labels, holdout, holdout_seed, root)
            keep = held if split == 'val' else np.setdiff1d(np.arange(labels.shape[0]), held)
            images, labels = images[keep], labels[keep]
        if indices is not None:
            images, labels = images[np.asarray(indices)], labels[np.asarray(indices)]
        self.images = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.transform = build_transform(transform)
        self.metainfo = dict(self.METAINFO)


class _RestrictedUnpickler(pickle.Unpickler):
    """Allows plain containers and the numpy array reconstruction that CIFAR pickles use."""

    _ALLOWED = {
        ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
        ('numpy', 'ndarray'), ('numpy', 'dtype'), ('numpy.core.multiarray', 'scalar'),
        ('numpy._core.multiarray', 'scalar'), ('_codecs', 'encode'),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f'refusing to load {module}.{name}: only plain data and numpy arrays are allowed')


def restricted_pickle_load(path: str, encoding: str = 'bytes'):
    """Unpickle ``path`` accepting only containers, numbers, strings and numpy arrays."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'pickle file not found: {path}')
    with open(path, 'rb') as f:
        try:
            return _RestrictedUnpickler(f, encoding=encoding).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                struct.error, UnicodeDecodeError) as err:  # what a malformed pickle stream raises
            raise InputError(f'cannot load safely: {err}', path,
                             'a pickle of plain containers and numpy arrays (the CIFAR python release)') from err


def _key(d: dict, name: str, where: str):
    for k in (name, name.encode()):
        if k in d:
            return d[k]
    raise InputError(f'missing key {name!r}', where, f'a dict with {name!r} (keys found: {sorted(map(str, d))[:8]})')


@DATASETS.register_module()
class Cifar100(_InMemoryImages):
    """CIFAR-100 from its python-pickle release (``cifar-100-python/``).

    Args:
        root (str): The ``cifar-100-python`` folder (or its parent).
        split (str): ``'train'`` (50k) or ``'test'`` (10k).
        transform (callable, optional): Applied to the uint8 ``3x32x32`` tensor.
        label_type (str): ``'fine'`` (100 classes) or ``'coarse'`` (20).
    """

    def __init__(self, root: str, split: str = 'train', transform: Optional[Callable] = None,
                 label_type: str = 'fine'):
        if split not in ('train', 'test'):
            raise ValueError(f"CIFAR-100 split must be 'train' or 'test', got {split!r}")
        if label_type not in ('fine', 'coarse'):
            raise ValueError(f"CIFAR-100 label_type must be 'fine' or 'coarse', got {label_type!r}")
        if os.path.isdir(os.path.join(root, 'cifar-100-python')):
            root = os.path.join(root, 'cifar-100-python')
        path = os.path.join(root, split)
        batch = restricted_pickle_load(path)
        if not isinstance(batch, dict):
            raise InputError(f'the pickle holds a {type(batch).__name__}', path, 'a dict with data and labels')
        data = _key(batch, 'data', path)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            found = f'{data.dtype} array of shape {data.shape}' if isinstance(data, np.ndarray) else type(data).__name__
            raise InputError(f'data is a {found}', f'{path} field data', 'a uint8 array of shape (N, 3072)')
        num_classes = 100 if label_type == 'fine' else 20
        labels = checked_labels(_key(batch, f'{label_type}_labels', path), f'{path} field {label_type}_labels',
                                num_classes, count=data.shape[0])
        self.images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
        self.labels = torch.from_numpy(labels)
        self.transform = build_transform(transform)
        classes: Tuple[str, ...] = tuple(str(i) for i in range(num_classes))
        meta_path = os.path.join(root, 'meta')
        if os.path.isfile(meta_path):
            meta = restricted_pickle_load(meta_path)
            if not isinstance(meta, dict):
                raise InputError(f'the pickle holds a {type(meta).__name__}', meta_path, 'a dict of label names')
            names = _key(meta, f'{label_type}_label_names', meta_path)
            if not isinstance(names, (list, tuple)) or len(names) != num_classes:
                raise InputError(f'{label_type}_label_names is not a list of {num_classes} names',
                                 f'{meta_path} field {label_type}_label_names', f'{num_classes} class names')
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
        self.metainfo = dict(classes=classes)


_IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')


@DATASETS.register_module()
class ImageNetFolder(Dataset):
    """ImageNet (or any ImageFolder tree): ``root/<split>/<class>/<image>``.

    Class indices follow the sorted class-folder names, as torchvision's ImageFolder.
    An image that fails to decode raises an error naming the file.
    """

    def __init__(self, root: str, split: str = 'train', transform: Optional[Callable] = None):
        folder = os.path.join(root, split)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f'ImageNet split folder not found: {folder} (expected root/<split>/<class>/*)')
        classes = sorted(d.name for d in os.scandir(folder) if d.is_dir())
        if not classes:
            raise ValueError(f'{folder} has no class folders')
        self.samples: List[Tuple[str, int]] = []
        for label, name in enumerate(classes):
            for dirpath, _, files in sorted(os.walk(os.path.join(folder, name))):
                for file in sorted(files):
                    if file.lower().endswith(_IMAGE_EXTENSIONS):
                        self.samples.append((os.path.join(dirpath, file), label))
        if not self.samples:
            raise ValueError(f'{folder}: no images with extensions {_IMAGE_EXTENSIONS}')
        self.transform = build_transform(transform)
        self.metainfo = dict(classes=tuple(classes))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Dict:
        from PIL import Image, UnidentifiedImageError
        from torchvision.transforms.v2.functional import pil_to_tensor
        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                image = pil_to_tensor(img.convert('RGB'))
        # what PIL raises on a broken, truncated or hostile file (bomb, bad chunk, bad header)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError, EOFError,
                struct.error, zlib.error) as err:
            raise InputError('cannot decode image', path, f'a readable image file (PIL: {err})') from err
        if self.transform is not None:
            image = self.transform(image)
        return dict(inputs=image, labels=label)
