"""Classifying a user's own images with a shared TopoNet checkpoint, and writing per-image
top-k predictions (``tools/classify.py``, ``tools/test_cls.py --out``).

``ImageClassifier`` applies the preprocessing the checkpoint's network expects, read from
its timm ``pretrained_cfg``: the input channels (a grayscale Fashion-MNIST model converts a
colour photo to ``L``, an RGB model a grayscale one to ``RGB``), the input size (shorter
side resized to ``size / crop_pct``, then a centre crop, as timm's evaluation transform)
and the normalisation mean and std. Class names come from the checkpoint's metadata
(``meta['classes']``, written at export by ``ExportCheckpointHook``); a checkpoint without
them names classes by index (``'0'``, ``'1'``, ...).

Example:
    >>> import tempfile, os, timm, numpy as np
    >>> from backbones.checkpoint import save_checkpoint
    >>> path = os.path.join(tempfile.mkdtemp(), 'fmnist.safetensors')
    >>> net = timm.create_model('toponet_fmnist_complete', num_classes=10, in_chans=1)
    >>> save_checkpoint(path, net, 'toponet_fmnist_complete', dict(num_classes=10, in_chans=1),
    ...                 meta=dict(classes=[f'class {i}' for i in range(10)]))
    >>> photo = np.zeros((60, 40, 3), dtype=np.uint8)   # a colour image of any size
    >>> [p['classes'][0].startswith('class') for p in ImageClassifier(path).predict([photo], topk=3)]
    [True]
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.evaluator import BaseMetric

__all__ = ['ImageClassifier', 'TopKPredictions', 'write_predictions', 'PREDICTION_FORMATS']

PREDICTION_FORMATS = ('.json', '.npz')
ImageLike = Union[str, os.PathLike, np.ndarray, 'PIL.Image.Image']  # noqa: F821


class ImageClassifier:
    """Top-k classes of images with a classification checkpoint (``.safetensors``).

    Args:
        checkpoint (str): A shared checkpoint of a classifier (``tools/train_cls.py``).
        device (str): ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.

    Attributes:
        classes (list): Class names, one per output of the network.
        input_size (tuple): ``(channels, height, width)`` the network takes.
    """

    def __init__(self, checkpoint: str, device: Union[str, torch.device] = 'cpu'):
        import timm

        import backbones  # noqa: F401  (registers the models)
        from backbones.checkpoint import create_model_from_checkpoint, read_checkpoint
        from backbones.errors import InputError

        ckpt = read_checkpoint(checkpoint)
        if not timm.is_model(ckpt.model_name):
            raise InputError(f'{ckpt.model_name!r} is not an image classifier of this suite', checkpoint,
                             'a checkpoint written by tools/train_cls.py (face models: tools/export_face_onnx.py)')
        model = create_model_from_checkpoint(checkpoint)
        num_classes = int(getattr(model, 'num_classes', 0) or 0)
        if num_classes < 1:
            raise InputError('the network has no classifier head', checkpoint, 'a checkpoint with num_classes >= 1')
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        cfg = model.pretrained_cfg
        first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        channels = int(first_conv.in_channels)
        self.input_size = (channels, int(cfg['input_size'][1]), int(cfg['input_size'][2]))
        self.crop_pct = float(cfg.get('crop_pct') or 1.0)
        self.interpolation = cfg.get('interpolation', 'bilinear')
        mean, std = list(cfg['mean']), list(cfg['std'])
        if len(mean) != channels:  # a model built with another in_chans than its pretrained_cfg's
            mean, std = [float(np.mean(mean))] * channels, [float(np.mean(std))] * channels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        names = ckpt.meta.get('classes')
        self.classes: List[str] = ([str(n) for n in names] if isinstance(names, list) and len(names) == num_classes
                                   else [str(i) for i in range(num_classes)])

    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """One image (a path, a ``PIL.Image`` or an ``HxW``/``HxWxC`` uint8 array) as the
        normalised ``CxHxW`` float tensor the network takes."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        picture = _open_image(image).convert('L' if self.input_size[0] == 1 else 'RGB')
        _, height, width = self.input_size
        mode = {'bicubic': InterpolationMode.BICUBIC, 'nearest': InterpolationMode.NEAREST}.get(
            self.interpolation, InterpolationMode.BILINEAR)
        scale = int(np.floor(min(height, width) / self.crop_pct))
        tensor = TF.pil_to_tensor(picture)
        tensor = TF.resize(tensor, scale, interpolation=mode, antialias=True)
        tensor = TF.center_crop(tensor, [height, width])
        return (tensor.float() / 255.0 - self.mean) / self.std

    @torch.no_grad()
    def predict(self, images: Union[ImageLike, Sequence[ImageLike]], topk: int = 5,
                batch_size: int = 32) -> List[Dict[str, Any]]:
        """The ``topk`` most likely classes of each image, best first.

        Returns one dict per image: ``image`` (the path, or the position for in-memory
        images), ``classes`` (names), ``indices`` and ``scores`` (softmax probabilities).
        """
        from backbones.errors import InputError
        if isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, 'convert'):
            images = [images]
        images = list(images)
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise InputError(f'topk {topk!r}', 'topk', 'an integer >= 1')
        k = min(topk, len(self.classes))
        out = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            batch = torch.stack([self.preprocess(image) for image in chunk]).to(self.device)
            probs = self.model(batch).float().softmax(1).cpu()
            scores, indices = probs.topk(k, dim=1)
            for offset, (image, row_scores, row_indices) in enumerate(zip(chunk, scores, indices)):
                label = os.fspath(image) if isinstance(image, (str, os.PathLike)) else start + offset
                out.append(dict(image=label, indices=row_indices.tolist(),
                                classes=[self.classes[i] for i in row_indices.tolist()], scores=row_scores.tolist()))
        return out


def _open_image(image: ImageLike):
    """A ``PIL.Image`` from a path, an image or a uint8 array; undecodable files are user errors."""
    from PIL import Image, UnidentifiedImageError

    from backbones.errors import InputError
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise InputError(f'array of shape {image.shape} and dtype {image.dtype}', 'image',
                             'a uint8 array of shape HxW, HxWx1, HxWx3 or HxWx4')
        return Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    path = os.fspath(image)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'image not found: {path}')
    try:
        with Image.open(path) as picture:
            picture.load()
            return picture.copy()
    except (UnidentifiedImageError, OSError) as err:
        raise InputError('cannot decode the image', path, 'a JPEG, PNG, BMP or WebP file') from err


class TopKPredictions(BaseMetric):
    """Collects every test image's top-k classes and softmax scores from
    ``TopoClassifier`` predictions. Scores nothing: after the test loop, the collector on
    rank 0 holds ``rows`` in dataset order (mmengine gathers the ranks' results), for
    ``write_predictions``.

    Args:
        topk (int): Classes kept per image.
    """

    default_prefix = 'predictions'

    def __init__(self, topk: int = 5, collect_device: str = 'cpu', prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f'topk must be an integer >= 1, got {topk!r}')
        self.topk = topk
        self.rows: Optional[List[dict]] = None

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            probs = sample['logits'].float().softmax(0)
            scores, indices = probs.topk(min(self.topk, probs.numel()))
            self.results.append(dict(label=int(sample['label']), indices=indices.tolist(), scores=scores.tolist()))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        self.rows = list(results)
        return {}


def write_predictions(path: str, rows: Sequence[dict], classes: Sequence[str],
                      sources: Optional[Sequence[str]] = None) -> str:
    """Write per-image top-k predictions atomically: ``.json`` (one object per image:
    ``index``, ``source`` when known, ``label``, ``topk_indices``, ``topk_classes``,
    ``topk_scores``) or ``.npz`` without pickles (``topk_indices`` and ``topk_scores`` N x k,
    ``labels``, ``classes``, ``sources``). Returns ``path``."""
    from backbones.errors import InputError
    from backbones.io_utils import atomic_write, atomic_write_text
    ext = os.path.splitext(path)[1].lower()
    if ext not in PREDICTION_FORMATS:
        raise InputError(f'unknown prediction file type {ext or "(none)"!r}', path, ' or '.join(PREDICTION_FORMATS))
    classes = [str(c) for c in classes]

    def name(i: int) -> str:
        return classes[i] if i < len(classes) else str(i)
    if ext == '.json':
        items = []
        for index, row in enumerate(rows):
            item = dict(index=index)
            if sources is not None:
                item['source'] = str(sources[index])
            item.update(label=row['label'], topk_indices=row['indices'],
                        topk_classes=[name(i) for i in row['indices']], topk_scores=row['scores'])
            items.append(item)
        atomic_write_text(path, json.dumps(dict(classes=classes, predictions=items), indent=1))
        return path
    arrays = dict(topk_indices=np.asarray([row['indices'] for row in rows], dtype=np.int64),
                  topk_scores=np.asarray([row['scores'] for row in rows], dtype=np.float32),
                  labels=np.asarray([row['label'] for row in rows], dtype=np.int64),
                  classes=np.asarray(classes, dtype=str))
    if sources is not None:
        arrays['sources'] = np.asarray([str(s) for s in sources], dtype=str)

    def save(tmp: str) -> None:
        with open(tmp, 'wb') as f:  # a file object: np.savez would append .npz to a path
            np.savez(f, **arrays)
    atomic_write(path, save)
    return path
