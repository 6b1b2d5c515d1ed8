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
        # BN statistics of real activations (two batches of noise images), not arbitrary
        # values: those can leave the embedding nearly constant across images
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.momentum = None
        net.train()
        for _ in range(2):
            net(torch.rand(8, 3, 112, 112) * 2 - 1)
        net.eval()
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


def test_a_small_network_exports_for_insightface_behind_its_training_resize(tmp_path):
    """The demo's 32x32 face model: exported at 112x112, the graph resizes the faces as training
    did (cv2.INTER_AREA), and insightface's embeddings equal the network's on those resized faces."""
    import cv2
    from insightface.model_zoo import get_model

    from face.export import AreaResize, insightface_embedding_check
    torch.manual_seed(0)
    net = FaceTopoNet(channels=4, nodes=(4, 4, 4, 4), input_size=32, embedding_size=16).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.momentum = None
        net.train()
        net(torch.rand(16, 3, 32, 32) * 2 - 1)
        net.eval()
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, (112, 112)).astype(np.float32)
    resized = AreaResize(112, 32)(torch.from_numpy(image)[None, None])[0, 0].numpy()
    assert np.abs(resized - cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)).max() < 1e-3
    path = export_face_onnx(net, str(tmp_path / 'small.onnx'), input_size=112)
    model = get_model(path, providers=['CPUExecutionProvider'])
    assert model.input_size == (112, 112)
    bgr = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(3)]
    got = model.get_feat(bgr)
    faces = [cv2.resize(img[..., ::-1].astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA) for img in bgr]
    with torch.no_grad():
        want = net((torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2) - 127.5) / 127.5).numpy()
    assert np.abs(got - want).max() < 1e-3 * np.abs(want).max()
    assert np.abs(want[0] - want[1]).max() > 1e-2
    check = insightface_embedding_check(net, path, bgr)
    assert check['model'] == 'ArcFaceONNX' and check['input_size'] == 112 and check['embedding_size'] == 16
    assert check['max_abs_diff'] < 1e-3 * np.abs(want).max() and check['min_cosine'] > 0.99999
    with pytest.raises(ValueError, match="smaller than the network's 32"):
        export_face_onnx(net, str(tmp_path / 'smaller.onnx'), input_size=16)
