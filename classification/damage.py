"""Classification glue for the topology analyses (``backbones.analysis``): data loaders
from any classification config (ImageNet folders, CIFAR-100, Fashion-MNIST), an accuracy
callable, a short weight-retraining loop with alpha frozen, and a short topology search
that snapshots alpha along the way (Figure 6).

Plain PyTorch loops rather than an mmengine Runner: each call trains for a few hundred
iterations at most and is run many times (once per pruning level or snapshot), where the
Runner's set-up, logging and checkpointing would cost more than the training. Batches are
normalised with the model's timm ``pretrained_cfg`` mean and std, the values the training
configs' data preprocessor uses; ``ConfigData`` takes them from the config's own data
preprocessor. Batches go to the model's device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

__all__ = ['fashion_mnist_loader', 'fashion_mnist_loaders', 'ConfigData', 'load_config_data', 'Normalizer',
           'evaluate_accuracy', 'accuracy_evaluator', 'train_weights', 'search_snapshots', 'standalone_accuracy']


class Normalizer(nn.Module):
    """uint8 images -> float, ``(x / 255 - mean) / std`` per channel; ``channels_last``
    returns them in that memory format (about twice as fast on CPU for a model converted
    with ``model.to(memory_format=torch.channels_last)``)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels_last: bool = False):
        super().__init__()
        self.channels_last = channels_last
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f'mean {tuple(mean)} and std {tuple(std)} need one entry per channel and std > 0')
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255)

    @classmethod
    def for_model(cls, model: nn.Module, channels_last: bool = False) -> 'Normalizer':
        cfg = getattr(model, 'pretrained_cfg', None) or {}
        if 'mean' not in cfg or 'std' not in cfg:
            raise ValueError(f'{type(model).__name__} has no pretrained_cfg mean/std; pass a Normalizer explicitly')
        return cls(cfg['mean'], cfg['std'], channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] != self.mean.shape[1]:
            raise ValueError(f'images have {images.shape[1]} channels, expected {self.mean.shape[1]}')
        out = (images.to(self.mean.device).float() - self.mean) / self.std
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out


def fashion_mnist_loader(split: str, root: Optional[str] = None, samples: Optional[int] = None,
                         batch_size: int = 128, seed: int = 0) -> DataLoader:
    """A Fashion-MNIST loader, optionally over a seeded random subset of ``samples``
    images. ``'train'``: random crop + flip, shuffled (seeded), last partial batch
    dropped; ``'test'``: in order, no augmentation."""
    from .datasets import FASHION_MNIST_DIR, FashionMNIST, subset_indices
    root = root or FASHION_MNIST_DIR
    train = split == 'train'
    transform = 'fmnist_train' if train else None
    dataset = FashionMNIST(root, split, transform=transform)
    indices = subset_indices(len(dataset), samples, seed + (0 if train else 1))
    if indices is not None:
        dataset = FashionMNIST(root, split, transform=transform, indices=indices)
    if train:
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


def fashion_mnist_loaders(root: Optional[str] = None, train_samples: Optional[int] = None,
                          eval_samples: Optional[int] = None, batch_size: int = 128, eval_batch_size: int = 500,
                          seed: int = 0) -> Tuple[DataLoader, DataLoader]:
    """``fashion_mnist_loader`` for the train and the test split."""
    return (fashion_mnist_loader('train', root, train_samples, batch_size, seed),
            fashion_mnist_loader('test', root, eval_samples, eval_batch_size, seed))


@dataclass
class ConfigData:
    """What a classification config gives the analyses: plain loaders over its datasets (any
    of ``classification.datasets``), the class names, the normalisation of its data
    preprocessor and its backbone settings. Built by ``load_config_data``.

    Args:
        config (str): The config file.
        test_loader (DataLoader): The test split (the ``test_dataloader``'s dataset, else the
            ``val_dataloader``'s), in order, optionally a seeded subset.
        train_loader (DataLoader, optional): The ``train_dataloader``'s dataset with its
            augmentation, shuffled (seeded), last partial batch dropped.
        classes (tuple): Class names of the test split.
        mean (sequence, optional): The data preprocessor's mean on the 0-1 scale.
        std (sequence, optional): The data preprocessor's std on the 0-1 scale.
        backbone (dict): ``model.backbone``: a timm ``name`` plus its keyword arguments.
        sparsity (dict, optional): ``optim_wrapper.sparsity`` (``mode``, ``lam``) when set.
    """

    config: str
    test_loader: DataLoader
    train_loader: Optional[DataLoader]
    classes: Tuple[str, ...]
    mean: Optional[Sequence[float]]
    std: Optional[Sequence[float]]
    backbone: Dict[str, Any]
    sparsity: Optional[Dict[str, Any]] = None

    def normalizer(self, model: nn.Module, channels_last: bool = False) -> 'Normalizer':
        """The config's normalisation (else the model's ``pretrained_cfg``), on the model's
        device, after checking that the model fits the data (channels, classes)."""
        from backbones.errors import InputError
        in_chans = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        channels = int(self.test_loader.dataset[0]['inputs'].shape[0])
        if in_chans is not None and in_chans != channels:
            raise InputError(f'the images have {channels} channel(s) but the model takes {in_chans}', self.config,
                             'a checkpoint trained on this kind of data, or --cfg-options that match it')
        num_classes = getattr(model, 'num_classes', None)
        if num_classes and len(self.classes) > num_classes:
            raise InputError(f'the data has {len(self.classes)} classes but the model predicts {num_classes}',
                             self.config, 'a checkpoint trained on this data')
        if self.mean is not None and self.std is not None:
            normalizer = Normalizer(self.mean, self.std, channels_last)
        else:
            normalizer = Normalizer.for_model(model, channels_last)
        return normalizer.to(_device_of(model))


def load_config_data(config: str, cfg_options: Optional[dict] = None, train_samples: Optional[int] = None,
                     eval_samples: Optional[int] = None, batch_size: Optional[int] = None,
                     eval_batch_size: Optional[int] = None, seed: int = 0, train: bool = True) -> ConfigData:
    """Datasets, class names and normalisation of a classification config (``--cfg-options``
    applied), as ``ConfigData``. ``train_samples``/``eval_samples`` pick seeded random
    subsets (the same images ``fashion_mnist_loader`` picks for Fashion-MNIST); batch sizes
    default to the config's; ``train=False`` builds no training loader."""
    from mmengine.config import Config
    from mmengine.registry import DATASETS
    from mmengine.utils import import_modules_from_strings

    from backbones.errors import InputError
    from backbones.mmengine_runner import check_cfg_options
    from . import datasets as _registered  # noqa: F401  (registers the datasets)
    from .datasets import subset_indices

    cfg = Config.fromfile(config)
    if cfg_options:
        check_cfg_options(cfg, cfg_options)  # a typo in a key is an error, as for training
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)

    def workers(loader_cfg) -> dict:
        # the analyses iterate a loader many times: keep its worker processes between passes
        count = int(loader_cfg.get('num_workers', 0) or 0)
        return dict(num_workers=count, persistent_workers=count > 0)

    def build(loader_name: str, samples: Optional[int], offset: int):
        loader_cfg = cfg.get(loader_name)
        if not loader_cfg or not loader_cfg.get('dataset'):
            return None, None
        dataset = DATASETS.build(loader_cfg.dataset)
        if len(dataset) == 0:
            raise InputError(f'{loader_name}.dataset is empty', config, 'a dataset with at least one image')
        indices = subset_indices(len(dataset), samples, seed + offset)
        if indices is not None:
            dataset = torch.utils.data.Subset(dataset, indices.tolist())
        return dataset, loader_cfg

    test_set, test_cfg = build('test_dataloader', eval_samples, 1)
    if test_set is None:
        test_set, test_cfg = build('val_dataloader', eval_samples, 1)
    if test_set is None:
        raise InputError('no test_dataloader or val_dataloader with a dataset', config,
                         'a classification config (classification/configs)')
    test_loader = DataLoader(test_set, batch_size=eval_batch_size or test_cfg.get('batch_size', 100), shuffle=False,
                             **workers(test_cfg))
    train_loader = None
    if train:
        train_set, train_cfg = build('train_dataloader', train_samples, 0)
        if train_set is None:
            raise InputError('no train_dataloader with a dataset', config, 'a classification config')
        train_loader = DataLoader(train_set, batch_size=batch_size or train_cfg.get('batch_size', 64), shuffle=True,
                                  drop_last=True, generator=torch.Generator().manual_seed(seed), **workers(train_cfg))
    base = test_set.dataset if isinstance(test_set, torch.utils.data.Subset) else test_set
    classes = tuple((getattr(base, 'metainfo', None) or {}).get('classes') or ())
    model_cfg = cfg.get('model') or {}
    preprocessor = model_cfg.get('data_preprocessor') or {}
    backbone = model_cfg.get('backbone')
    sparsity = (cfg.get('optim_wrapper') or {}).get('sparsity')
    return ConfigData(config=config, test_loader=test_loader, train_loader=train_loader, classes=classes,
                      mean=preprocessor.get('mean'), std=preprocessor.get('std'),
                      backbone=backbone.to_dict() if hasattr(backbone, 'to_dict') else dict(backbone or {}),
                      sparsity=dict(sparsity) if sparsity else None)


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device('cpu'))


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, loader: DataLoader, normalizer: Optional[Normalizer] = None) -> float:
    """Top-1 accuracy in % of ``model`` (put in eval mode, restored after) over ``loader``."""
    normalizer = normalizer or Normalizer.for_model(model).to(_device_of(model))
    was_training = model.training
    model.eval()
    correct = seen = 0
    try:
        for batch in loader:
            logits = model(normalizer(batch['inputs']))
            correct += int((logits.argmax(1) == batch['labels'].to(logits.device)).sum())
            seen += int(batch['labels'].numel())
    finally:
        model.train(was_training)
    if not seen:
        raise ValueError('the evaluation loader yielded no samples')
    return 100.0 * correct / seen


def accuracy_evaluator(loader: DataLoader, normalizer: Normalizer) -> Callable[[nn.Module], float]:
    """``evaluate(model) -> accuracy`` for ``backbones.analysis``."""
    return lambda model: evaluate_accuracy(model, loader, normalizer)


def _batches(loader: DataLoader, iters: int):
    done = 0
    while done < iters:
        for batch in loader:
            yield batch
            done += 1
            if done >= iters:
                return
        if done == 0:
            raise ValueError('the training loader yielded no batches')


def train_weights(model: nn.Module, loader: DataLoader, iters: int, normalizer: Optional[Normalizer] = None,
                  lr: float = 0.05, weight_decay: float = 5e-4, label_smoothing: float = 0.1,
                  sparsity=None, snapshot_iters: Sequence[int] = (), on_snapshot=None,
                  progress: bool = True, desc: str = 'train') -> nn.Module:
    """SGD (Nesterov 0.9, cosine lr, alpha without weight decay) on every parameter that
    requires grad, for ``iters`` iterations; alpha frozen with ``requires_grad`` off stays
    as it is. ``sparsity`` (a ``TopologySparsity``) adds the paper's penalty;
    ``on_snapshot(iteration, model)`` is called at each of ``snapshot_iters`` (0 = before
    the first step). Leaves the model in eval mode."""
    from tqdm import tqdm
    from backbones.sparsity import param_groups_alpha_no_decay
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f'iters must be an int >= 0, got {iters!r}')
    bad = [i for i in snapshot_iters if not 0 <= i <= iters]
    if bad:
        raise ValueError(f'snapshot iterations {bad} lie outside 0..{iters}')
    normalizer = normalizer or Normalizer.for_model(model).to(_device_of(model))
    groups = param_groups_alpha_no_decay(model, weight_decay)
    wanted = set(snapshot_iters)
    if 0 in wanted and on_snapshot:
        on_snapshot(0, model)
    if iters == 0 or not groups:
        return model.eval()
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    model.train()
    # disable=None: a bar on a terminal, none in redirected logs
    bar = tqdm(total=iters, desc=desc, disable=None if progress else True, leave=False, dynamic_ncols=True)
    try:
        for it, batch in enumerate(_batches(loader, iters), start=1):
            for group in optimizer.param_groups:
                group['lr'] = 0.5 * lr * (1 + math.cos(math.pi * (it - 1) / iters))
            logits = model(normalizer(batch['inputs']))
            loss = F.cross_entropy(logits, batch['labels'].to(logits.device), label_smoothing=label_smoothing)
            if sparsity is not None:
                loss = loss + sparsity(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
            if it in wanted and on_snapshot:
                on_snapshot(it, model)
    finally:
        bar.close()
    return model.eval()


def search_snapshots(model: nn.Module, loader: DataLoader, iters: int, snapshot_iters: Sequence[int],
                     sparsity=None, lr: float = 0.05, normalizer: Optional[Normalizer] = None,
                     progress: bool = True) -> Dict[int, list]:
    """Train ``model`` with learnable alpha (the topology search) and return the
    ``StageTopology`` list at each of ``snapshot_iters``."""
    from backbones.topology_export import StageTopology, extract_topology
    snapshots: Dict[int, list] = {}

    def snapshot(iteration: int, net: nn.Module) -> None:
        # extract_topology's arrays share memory with the live (float32, CPU) alpha: copy them
        snapshots[iteration] = [StageTopology(s.graph, s.alpha.copy()) for s in extract_topology(net)]

    train_weights(model, loader, iters, normalizer, sparsity=sparsity, lr=lr, snapshot_iters=snapshot_iters,
                  on_snapshot=snapshot, progress=progress, desc='search')
    return snapshots


def standalone_accuracy(build_model: Callable[[], nn.Module], stages: List, loader: DataLoader,
                        evaluate: Callable[[nn.Module], float], iters: int, lr: float = 0.05,
                        normalizer: Optional[Normalizer] = None, seed: int = 0, progress: bool = True) -> float:
    """Figure 6's measure: a fresh network (``build_model()``, same graphs) with its alpha
    set to ``stages``' values and frozen, weights trained from scratch for ``iters``
    iterations, then evaluated."""
    from backbones.sparsity import dag_stages
    torch.manual_seed(seed)
    model = build_model()
    model_stages = list(dag_stages(model))
    if len(model_stages) != len(stages):
        raise ValueError(f'snapshot has {len(stages)} stages, the model {len(model_stages)}')
    with torch.no_grad():
        for s, (stage, snap) in enumerate(zip(model_stages, stages)):
            if stage.graph.edges != snap.graph.edges:
                raise ValueError(f'stage {s}: the snapshot is wired differently from the model '
                                 f'({snap.graph.num_edges} vs {stage.graph.num_edges} edges)')
            stage.edge_weights.copy_(torch.as_tensor(snap.alpha))
            stage.edge_weights.requires_grad_(False)
    train_weights(model, loader, iters, normalizer, lr=lr, progress=progress, desc='stand-alone')
    return float(evaluate(model))
