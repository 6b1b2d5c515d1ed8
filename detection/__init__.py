"""Detection: TopoNet backbones in MMDetection (``backbones.mmdet_backbone``), FPN configs
for COCO (``detection/configs``), a checked COCO dataset, a toy COCO-format dataset for tests
and the demo (``detection.toy_coco``).

Importing this package registers ``CheckedCocoDataset`` in mmdet's ``DATASETS`` and the
``DetectionDataCheckHook`` and ``BoxHeadsInFloat32Hook`` (``detection.amp``) in mmengine's
``HOOKS``; configs do it with ``custom_imports``, so mmdet's own ``tools/train.py``,
``tools/test.py`` and ``DetInferencer`` run them unchanged. mmengine resolves the
``mmdet::_base_/...`` paths the configs inherit through ``pkg_resources`` (the setuptools of
``requirements.txt`` still has it), and importing this package (or
``backbones.mmengine_optim``, which every config imports) allow-lists the types of mmengine
checkpoints for ``torch.load(weights_only=True)`` (``backbones.mmengine_runner``).
"""
from backbones.mmengine_runner import allow_mmengine_checkpoint_globals

allow_mmengine_checkpoint_globals()

from .checks import DetectionDataError, check_coco_annotations, check_num_classes, detector_num_classes
from .datasets import CheckedCocoDataset
from .hooks import DetectionDataCheckHook
from .amp import BoxHeadsInFloat32Hook, run_box_heads_in_float32

__all__ = ['DetectionDataError', 'check_coco_annotations', 'check_num_classes', 'detector_num_classes',
           'CheckedCocoDataset', 'DetectionDataCheckHook', 'BoxHeadsInFloat32Hook', 'run_box_heads_in_float32']
