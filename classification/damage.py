"""Classification glue for the topology analyses (``backbones.analysis``): data loaders,
an accuracy callable, a short weight-retraining loop with alpha frozen, and a short
topology search that snapshots alpha along the way (Figure 6).

Plain PyTorch loops rather than an mmengine Runner: each call trains for a few hundred
iterations at most and is run many times (once per pruning level or snapshot), where the
Runner's set-up, logging and checkpointing would cost more than the training. Batches are
normalised with the model's timm ``pretrained_cfg`` mean and std, the values the training
configs' data preprocessor uses.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

__all__ = ['fashion_mnist_loader', 'fashion_mnist_loaders', 'Normalizer', 'evaluate_accuracy', 'accuracy_evaluator',
           'train_weights', 'search_snapshots', 'standalone_accuracy']


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
        out = (images.float() - self.mean) / self.std
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


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, loader: DataLoader, normalizer: Optional[Normalizer] = None) -> float:
    """Top-1 accuracy in % of ``model`` (put in eval mode, restored after) over ``loader``."""
    normalizer = normalizer or Normalizer.for_model(model)
    was_training = model.training
    model.eval()
    correct = seen = 0
    try:
        for batch in loader:
            logits = model(normalizer(batch['inputs']))
            correct += int((logits.argmax(1) == batch['labels']).sum())
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
    normalizer = normalizer or Normalizer.for_model(model)
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
            loss = F.cross_entropy(logits, batch['labels'], label_smoothing=label_smoothing)
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
