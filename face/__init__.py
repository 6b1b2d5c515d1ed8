"""Face recognition with TopoNets (paper appendix A.2.3, Table 6): the face TopoNet and
ArcFace losses, MS1MV2's RecordIO and the verification ``.bin`` sets, training on
mmengine's Runner, MegaFace identification, and ONNX export for insightface.

Importing the package registers its mmengine components (``FaceRecordDataset``,
``FaceRecognizer``, ``FaceDataPreprocessor`` and the hooks).
"""
from . import data, hooks, recognizer  # noqa: F401  (mmengine registrations)
from .losses import MARGIN_PRESETS, MarginSoftmaxLoss
from .model import FaceTopoNet, count_face_parameters, load_face_checkpoint

__all__ = ['FaceTopoNet', 'count_face_parameters', 'load_face_checkpoint', 'MarginSoftmaxLoss', 'MARGIN_PRESETS']
