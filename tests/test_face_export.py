"""ONNX export: insightface 2.1 loads the file as its recognition model and its
embeddings match PyTorch's."""
import numpy as np
import pytest
import torch

from face.export import export_face_onnx
from face.model import FaceTopoNet


def test_insightface_get_model_matches_pytorch(tmp_path):
    from insightface.model_zoo import get_model
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    torch.manual_seed(0)
    net = FaceTopoNet(channels=4, nodes=(4, 5, 4, 4), embedding_size=64).eval()
    with torch.no_grad():  # trained-looking statistics and edge weights, not the identity init
        for stage in net.body.stages:
            stage.edge_weights.uniform_(0.3, 1.5)
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    path = export_face_onnx(net, str(tmp_path / 'face.onnx'))
    model = get_model(path, providers=['CPUExecutionProvider'])
    assert isinstance(model, ArcFaceONNX) and model.input_size == (112, 112)
    assert (model.input_mean, model.input_std) == (127.5, 127.5)
    rng = np.random.default_rng(0)
    bgr = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(3)]
    got = model.get_feat(bgr)
    rgb = torch.from_numpy(np.stack(bgr)[..., ::-1].copy()).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        want = net((rgb - 127.5) / 127.5).numpy()
    assert got.shape == (3, 64)
    assert np.abs(got - want).max() < 1e-4
    # the embeddings differ per image: a constant output would also "match"
    assert np.abs(want[0] - want[1]).max() > 1e-2


def test_shapes_insightface_would_not_route_are_refused(tmp_path):
    net = FaceTopoNet(channels=4, nodes=(4, 4, 4, 4), input_size=64, embedding_size=16).eval()
    with pytest.raises(ValueError, match='S >= 112 divisible by 16'):
        export_face_onnx(net, str(tmp_path / 'small.onnx'))
    assert not (tmp_path / 'small.onnx').exists()
