"""Classification pretraining on mmengine: datasets in their real formats (Fashion-MNIST
IDX, CIFAR-100 pickles, ImageNet folders), the classifier model and metric, and the hooks
that write the shared TopoNet checkpoint. Importing registers all of them in mmengine."""
from . import datasets, hooks, model, transforms  # noqa: F401  (registration)
from .datasets import Cifar100, FashionMNIST, ImageNetFolder, read_idx, write_idx
from .hooks import ExportCheckpointHook, ProgressBarHook
from .model import ClsDataPreprocessor, TopKAccuracy, TopoClassifier

__all__ = ['Cifar100', 'FashionMNIST', 'ImageNetFolder', 'read_idx', 'write_idx', 'ExportCheckpointHook',
           'ProgressBarHook', 'ClsDataPreprocessor', 'TopKAccuracy', 'TopoClassifier']
