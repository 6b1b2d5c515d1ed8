"""Detection: TopoNet backbones in MMDetection (``backbones.mmdet_backbone``), FPN configs
for COCO (``detection/configs``), a checked COCO dataset, a toy COCO-format dataset for tests
and the demo (``detection.toy_coco``).

Importing this package registers ``CheckedCocoDataset`` in mmdet's ``DATASETS`` and the
``DetectionDataCheckHook`` in mmengine's ``HOOKS`` (configs do it with ``custom_imports``), and
lets mmengine parse the ``mmdet::_base_/...`` paths our configs inherit
(``detection.mmengine_compat``): import it before ``Config.fromfile``.
"""
from .mmengine_compat import enable_package_scoped_configs

enable_package_scoped_configs()

from .checks import DetectionDataError, check_coco_annotations, check_num_classes, detector_num_classes
from .datasets import CheckedCocoDataset
from .hooks import DetectionDataCheckHook

__all__ = ['DetectionDataError', 'check_coco_annotations', 'check_num_classes', 'detector_num_classes',
           'CheckedCocoDataset', 'DetectionDataCheckHook']
