"""ONNX export of the face embedding network in the form insightface 2.1 loads as its
recognition model (``insightface.model_zoo.get_model(path)`` -> ``ArcFaceONNX``).

What insightface's router and ``ArcFaceONNX`` require of the graph, and how we meet it:

* one input ``(N, 3, H, W)`` with fixed square ``H = W >= 112``, a multiple of 16 (the
  router picks the recognition model by this shape; the batch axis stays dynamic);
* exactly one output, the ``(N, D)`` embedding;
* preprocessing: ``ArcFaceONNX`` feeds RGB ``(x - 127.5) / 127.5`` unless one of the first
  eight graph nodes is named ``Sub*``/``_minus*`` *and* one ``Mul*``/``_mul*`` (then it
  feeds raw pixels). Our network takes the normalised input, as in training, and the
  exporter's node names are scoped (``/body/stem/conv/Conv``), so the default applies;
  ``export_face_onnx`` checks this and refuses a graph that would be misread.

Origin: this project. Licence: Apache-2.0.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import nn

__all__ = ['export_face_onnx', 'check_insightface_compatible']


def check_insightface_compatible(path: str, name: Optional[str] = None) -> None:
    """Raise if insightface would not route ``path`` to ``ArcFaceONNX`` with the
    ``(x - 127.5) / 127.5`` preprocessing our networks expect (``name``: the file to name
    in errors)."""
    import onnx
    model = onnx.load(path)
    path = name or path
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError(f'{path}: insightface needs one input and one output, the graph has '
                         f'{len(graph.input)} and {len(graph.output)}')
    dims = graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.dim_value > 0 else d.dim_param for d in dims]
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3] or not isinstance(shape[2], int) \
            or shape[2] < 112 or shape[2] % 16:
        raise ValueError(f'{path}: input shape {shape}; insightface routes a recognition model only for '
                         f'(N, 3, S, S) with a fixed S >= 112 divisible by 16')
    first = [node.name for node in graph.node[:8]]
    has_sub = any(n.startswith(('Sub', '_minus')) for n in first)
    has_mul = any(n.startswith(('Mul', '_mul')) for n in first)
    if has_sub and has_mul:
        raise ValueError(f'{path}: the first nodes {first} would make insightface feed raw pixels')


def export_face_onnx(model: nn.Module, path: str, input_size: Optional[int] = None, opset: int = 17) -> str:
    """Export ``model`` (a ``FaceTopoNet`` in eval mode) to ``path`` and check it."""
    from backbones.io_utils import atomic_write
    input_size = int(input_size or getattr(model, 'input_size', 112))
    model = model.eval()
    dummy = torch.zeros(1, 3, input_size, input_size)

    def write(tmp: str) -> None:
        with torch.no_grad():
            torch.onnx.export(model, (dummy,), tmp, input_names=['input.1'], output_names=['embedding'],
                              dynamic_axes={'input.1': {0: 'batch'}, 'embedding': {0: 'batch'}},
                              opset_version=opset, dynamo=False)
        check_insightface_compatible(tmp, path)  # before the rename: a refused graph leaves no file

    atomic_write(path, write)
    return os.path.abspath(path)
