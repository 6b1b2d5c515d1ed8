"""Classification datasets in their real on-disk formats.

* Fashion-MNIST: the four IDX files (gzipped or not), default the Debian package's path.
* CIFAR-100: the "python version" folder (``cifar-100-python/{train,test,meta}``), pickles
  read by a restricted unpickler that accepts only the types those files contain.
* ImageNet: ImageFolder layout (``root/<split>/<wnid>/<image>.JPEG``).

Every dataset yields ``dict(inputs=uint8 tensor CxHxW, labels=int)``; normalisation happens
in the model's data preprocessor (``classification.model.ClsDataPreprocessor``).
"""
from __future__ import annotations

import gzip
import os
import pickle
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.registry import DATASETS
from torch.utils.data import Dataset

from .transforms import build_transform

__all__ = ['read_idx', 'write_idx', 'subset_indices', 'FashionMNIST', 'Cifar100', 'ImageNetFolder', 'restricted_pickle_load',
           'FASHION_MNIST_DIR', 'FASHION_MNIST_CLASSES']

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
        except (OSError, EOFError) as err:
            raise ValueError(f'{path}: corrupt gzip stream: {err}') from err
    return raw


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (the MNIST format): magic ``0 0 type ndim``, ``ndim`` big-endian
    uint32 sizes, then the data."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'IDX file not found: {path}')
    data = _open_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f'{path}: not an IDX file (magic bytes {data[:4].hex()}, expected 0000 <type> <ndim>)')
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f'{path}: unknown IDX data type 0x{type_code:02x}')
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError(f'{path}: truncated IDX header ({len(data)} bytes, ndim={ndim})')
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f'{path}: IDX payload has {len(data) - header} bytes, header dims {dims} need {expected}')
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


def subset_indices(n_total: int, n: Optional[int], seed: int) -> Optional[np.ndarray]:
    """Sorted indices of a seeded random subset of ``n`` out of ``n_total`` samples; ``None``
    (everything) when ``n`` is ``None`` or at least ``n_total``."""
    if n is None or n >= n_total:
        return None
    if n < 1:
        raise ValueError(f'sample count must be >= 1, got {n}')
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:n])


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
        split (str): ``'train'`` (60k) or ``'test'`` (10k).
        transform (callable or str, optional): Applied to the uint8 ``1x28x28`` tensor
            (a name from ``classification.transforms.TRANSFORM_PRESETS`` in configs).
        indices (sequence, optional): Keep only these samples (subsets for quick runs).
    """

    METAINFO = dict(classes=FASHION_MNIST_CLASSES)

    def __init__(self, root: str = FASHION_MNIST_DIR, split: str = 'train', transform: Optional[Callable] = None,
                 indices: Optional[Sequence[int]] = None):
        if split not in ('train', 'test'):
            raise ValueError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
        prefix = 'train' if split == 'train' else 't10k'
        images = read_idx(_find_idx(root, f'{prefix}-images-idx3-ubyte'))
        labels = read_idx(_find_idx(root, f'{prefix}-labels-idx1-ubyte'))
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(f'{root}: images {images.shape} and labels {labels.shape} do not pair up '
                             f'(expected N x 28 x 28 and N)')
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f'{root}: labels outside 0..9 (found {labels.min()}..{labels.max()})')
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
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
            raise ValueError(f'{path}: cannot load safely: {err}') from err


def _key(d: dict, name: str):
    for k in (name, name.encode()):
        if k in d:
            return d[k]
    raise KeyError(name)


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
        batch = restricted_pickle_load(os.path.join(root, split))
        if not isinstance(batch, dict):
            raise ValueError(f'{root}/{split}: expected a dict, got {type(batch).__name__}')
        try:
            data = np.asarray(_key(batch, 'data'), dtype=np.uint8)
            labels = np.asarray(_key(batch, f'{label_type}_labels'), dtype=np.int64)
        except KeyError as err:
            raise ValueError(f'{root}/{split}: missing key {err} (expected data and {label_type}_labels)') from None
        if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
            raise ValueError(f'{root}/{split}: data {data.shape} / labels {labels.shape}: expected N x 3072 and N')
        num_classes = 100 if label_type == 'fine' else 20
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f'{root}/{split}: labels outside 0..{num_classes - 1}')
        self.images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
        self.labels = torch.from_numpy(labels)
        self.transform = build_transform(transform)
        classes: Tuple[str, ...] = tuple(str(i) for i in range(num_classes))
        meta_path = os.path.join(root, 'meta')
        if os.path.isfile(meta_path):
            meta = restricted_pickle_load(meta_path)
            names = _key(meta, f'{label_type}_label_names')
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
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f'cannot decode image {path}: {err}') from err
        if self.transform is not None:
            image = self.transform(image)
        return dict(inputs=image, labels=label)
