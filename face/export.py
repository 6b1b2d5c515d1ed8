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

A network trained at a smaller side (the demo's 32x32 toy model) is exported behind
``AreaResize``: the graph takes ``input_size`` faces (112 for insightface) and resizes them to
the network's side first, exactly as training did (``cv2.INTER_AREA``, as two constant
matrix products). ``insightface_embedding_check`` loads a file through insightface and
compares its embeddings with PyTorch's.

Origin: this project. Licence: Apache-2.0.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import nn

__all__ = ['export_face_onnx', 'check_insightface_compatible', 'AreaResize', 'ResizedFaceNet',
           'insightface_embedding_check']


class AreaResize(nn.Module):
    """Resize square ``(N, C, S, S)`` images to ``(N, C, s, s)`` as ``cv2.resize(...,
    interpolation=cv2.INTER_AREA)`` does (before its rounding to integers): the resize is
    separable and linear, ``W @ x @ W.T`` with ``W`` the ``(s, S)`` matrix cv2 makes of the
    identity. It exports to ONNX as two MatMul nodes.

    Args:
        in_size (int): Side of the input images.
        out_size (int): Side of the output images (at most ``in_size``).
    """

    def __init__(self, in_size: int, out_size: int):
        super().__init__()
        import cv2
        import numpy as np
        if not 0 < out_size <= in_size:
            raise ValueError(f'AreaResize shrinks images: out_size {out_size} must be in 1..{in_size}')
        weights = cv2.resize(np.eye(in_size, dtype=np.float32), (in_size, out_size), interpolation=cv2.INTER_AREA)
        self.register_buffer('weights', torch.from_numpy(np.ascontiguousarray(weights)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weights @ x @ self.weights.t()


class ResizedFaceNet(nn.Module):
    """``net`` (a ``FaceTopoNet``) taking ``input_size`` faces: ``AreaResize`` to the
    network's own side, then the network."""

    def __init__(self, net: nn.Module, input_size: int):
        super().__init__()
        self.resize = AreaResize(input_size, int(net.input_size))
        self.net = net
        self.input_size = int(input_size)
        self.embedding_size = getattr(net, 'embedding_size', None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.resize(x))


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
    """Export ``model`` (a ``FaceTopoNet`` in eval mode) to ``path`` and check it.

    ``input_size`` (default: the network's side) larger than the network's side exports it
    behind ``AreaResize`` (``ResizedFaceNet``): the graph takes faces of that side."""
    from backbones.errors import InputError
    from backbones.io_utils import atomic_write
    own = int(getattr(model, 'input_size', 112))
    input_size = int(input_size or own)
    if input_size < own:
        raise InputError(f'input side {input_size} is smaller than the network\'s {own}', path,
                         f'an input side >= {own} (larger faces are resized to {own} inside the graph)')
    if input_size != own:
        model = ResizedFaceNet(model, input_size)
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


def insightface_embedding_check(model: nn.Module, path: str, bgr_images) -> dict:
    """Load ``path`` with ``insightface.model_zoo.get_model`` and compare the embeddings its
    recognition model (``ArcFaceONNX.get_feat``) gives ``bgr_images`` (HxWx3 uint8, BGR, at the
    file's input side) with ``model``'s (RGB, ``(x - 127.5) / 127.5``, as in training; a
    ``FaceTopoNet`` smaller than the images is run behind ``ResizedFaceNet``).

    Returns ``max_abs_diff`` and ``min_cosine`` over the images, the ``model`` class insightface
    chose, its ``input_size`` and the ``embedding_size``. Raises ``ValueError`` when insightface
    does not take the file for a recognition model.
    """
    import numpy as np
    from insightface.model_zoo import get_model
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    recognizer = get_model(path, providers=['CPUExecutionProvider'])
    if not isinstance(recognizer, ArcFaceONNX):
        raise ValueError(f'{path}: insightface loads it as {type(recognizer).__name__}, not as a recognition model')
    images = [np.ascontiguousarray(img) for img in bgr_images]
    side = images[0].shape[0]
    if getattr(model, 'input_size', side) < side:
        model = ResizedFaceNet(model, side)
    got = recognizer.get_feat(images)
    rgb = torch.from_numpy(np.stack(images)[..., ::-1].copy()).permute(0, 3, 1, 2).float()
    device = next(model.parameters()).device
    with torch.no_grad():
        want = model.eval()(((rgb - 127.5) / 127.5).to(device)).cpu().numpy()
    cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1) + 1e-12)
    return dict(model=type(recognizer).__name__, input_size=int(recognizer.input_size[0]),
                embedding_size=int(got.shape[1]), num_images=len(images),
                max_abs_diff=float(np.abs(got - want).max()), min_cosine=float(cosine.min()))
