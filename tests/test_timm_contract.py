"""The checks timm's own model tests make, applied to every model this project registers."""
import pytest
import timm
import torch

import backbones  # noqa: F401

OURS = sorted(timm.list_models('toponet_*') + timm.list_models('resnet*_cifar*')
              + timm.list_models('mobilenetv2_100*_orig') + timm.list_models('mobilenetv2_100*_topo'))
REQUIRED_CFG = ('input_size', 'num_classes', 'mean', 'std', 'first_conv', 'classifier', 'pool_size', 'crop_pct')


def _small_input(model):
    c, h, w = model.pretrained_cfg['input_size']
    side = 64 if h >= 64 else h
    return torch.randn(2, c, side, side)


def test_every_family_is_registered():
    assert len(OURS) == 20 + 10 + 8
    assert {'toponet_complete', 'toponet_residual_l2', 'toponet_random_p04', 'toponet_er', 'toponet_fmnist_complete',
            'resnet110_cifar', 'resnet110_cifar_topo', 'mobilenetv2_100_topo', 'mobilenetv2_100_6n_topo'} <= set(OURS)


@pytest.mark.parametrize('name', OURS)
def test_forward_backward_and_default_cfg(name):
    model = timm.create_model(name)
    cfg = model.pretrained_cfg
    assert all(key in cfg for key in REQUIRED_CFG), [k for k in REQUIRED_CFG if k not in cfg]
    first_conv = model.get_submodule(cfg['first_conv'])
    assert first_conv.in_channels == cfg['input_size'][0]
    classifier = model.get_submodule(cfg['classifier'])
    assert classifier.out_features == cfg['num_classes'] == model.num_classes
    x = _small_input(model)
    out = model(x)
    assert out.shape == (2, cfg['num_classes'])
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features)


@pytest.mark.parametrize('name', OURS)
def test_features_only(name):
    model = timm.create_model(name, features_only=True)
    x = _small_input(model)
    feats = model(x)
    assert len(feats) >= 4
    assert [f.shape[1] for f in feats] == model.feature_info.channels()
    side = x.shape[-1]
    assert [max(1, -(-side // r)) for r in model.feature_info.reduction()] == [f.shape[-1] for f in feats]


@pytest.mark.parametrize('name', ['toponet_complete', 'toponet_fmnist_ba', 'resnet20_cifar', 'resnet20_cifar_topo',
                                  'mobilenetv2_100_orig', 'mobilenetv2_100_2n_topo'])
def test_torchscript(name):
    model = timm.create_model(name).eval()
    x = _small_input(model)
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), model(x))
