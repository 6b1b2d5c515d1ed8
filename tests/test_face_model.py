"""The face TopoNet against Table 6, the margin losses against their formulas, and the
face checkpoint in the shared format."""
import math

import pytest
import torch

from face.losses import MarginSoftmaxLoss, margin_target_logits
from face.model import FaceTopoNet, count_face_parameters, load_backbone_weights, load_face_checkpoint


def test_table6_parameter_counts():
    """Table 6: Conv/BN 20.64M, FC 12.85M. The default wiring (input_path 'projection', the
    same ops for every topology) has 21.30M Conv/BN, +3.2%: node 1 of each stage reads the
    projection at the new width (a 1x1 conv out x out instead of in x out). The wiring in
    which node 1 carries the shape change (input_path 'node1') has 20.60M, -0.2%."""
    model = FaceTopoNet(channels=64, nodes=(14, 20, 26, 14), topology='complete')
    counts = count_face_parameters(model)
    assert model.final_size == 7
    assert counts['fc'] == 1024 * 7 * 7 * 256 + 256
    assert abs(counts['fc'] / 12.85e6 - 1) < 0.03
    assert 0.030 < counts['conv_bn'] / 20.64e6 - 1 < 0.035
    node1 = count_face_parameters(FaceTopoNet(channels=64, nodes=(14, 20, 26, 14), input_path='node1'))
    assert abs(node1['conv_bn'] / 20.64e6 - 1) < 0.003
    # exactly the growth of node 1 (sep: 3x3 depthwise + 1x1) in the four stages 64 -> 128 -> ... -> 1024
    assert counts['conv_bn'] - node1['conv_bn'] == sum((o - i) * (9 + o) for i, o in
                                                       zip((64, 128, 256, 512), (128, 256, 512, 1024)))
    # the residual (l=2) network of Table 6 has the same weights (topology adds only edges)
    residual = count_face_parameters(FaceTopoNet(topology='residual', topology_params={'interval': 2},
                                                 alpha_trainable=False))
    assert residual['fc'] == counts['fc']
    edges = sum(s.graph.num_edges for s in model.body.stages)
    residual_edges = sum(s.graph.num_edges for s in FaceTopoNet(
        channels=4, topology='residual', topology_params={'interval': 2}).body.stages)
    assert counts['conv_bn'] - residual['conv_bn'] == edges - residual_edges


def test_small_face_net_shapes_and_bad_input():
    net = FaceTopoNet(channels=4, nodes=(4, 4, 4, 4), input_size=64, embedding_size=32).eval()
    assert net(torch.randn(3, 3, 64, 64)).shape == (3, 32) and net.final_size == 4
    with pytest.raises(ValueError, match='expected 64x64 faces, got \\(112, 112\\)'):
        net(torch.randn(1, 3, 112, 112))
    with pytest.raises(ValueError, match='input_size 56 is not divisible by the total stride 16'):
        FaceTopoNet(channels=4, nodes=(4, 4, 4, 4), input_size=56)
    assert not net.features.weight.requires_grad  # ArcFace's fixed-scale feature BN


def _angles(n=6, classes=5, dim=8, seed=7):  # not 0: the autouse seed 0 draws the classifier rows
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize('margin,formula', [
    ('arcface', lambda th: math.cos(th + 0.5) if th + 0.5 <= math.pi else math.cos(th) - 0.5 * math.sin(0.5)),
    ('cosface', lambda th: math.cos(th) - 0.35),
    ((1.0, 0.3, 0.2), lambda th: math.cos(th + 0.3) - 0.2),
])
def test_margin_loss_equals_the_formula(margin, formula):
    features, labels = _angles()
    loss_fn = MarginSoftmaxLoss(8, 5, margin=margin, scale=64.0)
    cosine = loss_fn.classifier(features).detach().double()
    logits = cosine.clone()
    for i, y in enumerate(labels.tolist()):
        logits[i, y] = formula(math.acos(float(cosine[i, y])))
    want = torch.nn.functional.cross_entropy(64.0 * logits, labels)
    assert float(loss_fn(features, labels).detach()) == pytest.approx(float(want), rel=1e-4)


def test_arcface_fallback_past_pi_keeps_penalising():
    cosine = torch.tensor([[-0.99, 0.0]])  # theta ~ 3.0 > pi - 0.5
    out = margin_target_logits(cosine, torch.tensor([0]), (1.0, 0.5, 0.0))
    assert float(out[0, 0]) == pytest.approx(-0.99 - 0.5 * math.sin(0.5), abs=1e-6)
    assert float(out[0, 1]) == 0.0  # other classes untouched


def test_margin_loss_rejects_bad_config_and_labels():
    with pytest.raises(ValueError, match="unknown margin 'sphere'"):
        MarginSoftmaxLoss(8, 5, margin='sphere')
    with pytest.raises(ValueError, match='labels must lie in \\[0, 5\\)'):
        MarginSoftmaxLoss(8, 5)(torch.randn(2, 8), torch.tensor([0, 5]))


def test_face_checkpoint_round_trip_and_backbone_init(tmp_path):
    from backbones.checkpoint import save_checkpoint
    kwargs = dict(channels=4, nodes=(4, 5, 4, 4), input_size=64, embedding_size=16, seed=1)
    net = FaceTopoNet(**kwargs).eval()
    with torch.no_grad():
        for stage in net.body.stages:
            stage.edge_weights.uniform_(0.2, 1.5)
    path = str(tmp_path / 'face.safetensors')
    save_checkpoint(path, net, 'face_toponet', model_kwargs=kwargs)
    again = load_face_checkpoint(path)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(net(x), again(x))
    # the body initialises another face net of the same wiring; a different wiring is refused
    fresh = FaceTopoNet(**kwargs)
    loaded = load_backbone_weights(fresh, path)
    assert any(k.startswith('stages.') for k in loaded['loaded'])
    assert torch.equal(fresh.body.stages[0].edge_weights, net.body.stages[0].edge_weights)
    other = FaceTopoNet(**dict(kwargs, nodes=(4, 4, 4, 4)))
    with pytest.raises(ValueError, match='stages.1'):
        load_backbone_weights(other, path)
    # nor does the body of the other input path fit: node 1 has other shapes
    with pytest.raises(ValueError, match='stages.0.nodes.0'):
        load_backbone_weights(FaceTopoNet(**dict(kwargs, input_path='node1')), path)


def test_face_checkpoint_of_the_node1_wiring_rebuilds_it(tmp_path):
    from backbones.checkpoint import save_checkpoint
    kwargs = dict(channels=4, nodes=(4, 5, 4, 4), input_size=64, embedding_size=16, input_path='node1')
    net = FaceTopoNet(**kwargs).eval()
    assert all(s.input_path == 'node1' for s in net.body.stages)
    path = str(tmp_path / 'face.safetensors')
    save_checkpoint(path, net, 'face_toponet', model_kwargs=kwargs)
    again = load_face_checkpoint(path)
    assert all(s.input_path == 'node1' for s in again.body.stages)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(net(x), again(x))
