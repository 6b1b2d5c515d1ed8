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


# -- what timm's factory, its model tests and its consumers rely on (docs/interop.md) ----------
# one network per family, frozen alpha and the 'node1' wiring among them (resnet20_cifar)
FAST = ['toponet_fmnist_complete', 'resnet20_cifar', 'mobilenetv2_100_topo']


def _input(model, batch=2):
    c, h, w = model.pretrained_cfg['input_size']
    side = min(h, 32)
    return torch.randn(batch, c, side, side)


@pytest.mark.parametrize('name', FAST)
def test_factory_device_and_dtype(name):
    # timm's create_model passes device and dtype to every model (its distillation teacher too)
    model = timm.create_model(name, device='meta', dtype=torch.float64)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert all(t.is_meta for t in tensors.values())
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float64}
    assert all(t.dtype == torch.long for k, t in tensors.items() if k.endswith(('edge_index', 'num_batches_tracked')))
    # frozen alpha included: a structure-only forward on the meta device, in any dtype
    out = model(_input(model).to('meta', torch.float64))
    assert out.is_meta and out.shape == (2, model.num_classes) and out.dtype == torch.float64
    model.to(torch.bfloat16)
    assert model(_input(model).to('meta', torch.bfloat16)).dtype == torch.bfloat16
    built = timm.create_model(name, device='cpu', dtype=torch.float64).eval()
    assert built(_input(built, batch=1).double()).dtype == torch.float64
    with pytest.raises(TypeError):
        timm.create_model(name, device='meta', not_a_model_arg=1)


@pytest.mark.parametrize('name', FAST)
def test_reset_classifier_keeps_device_dtype_and_mode(name):
    model = timm.create_model(name).eval().double()
    model.reset_classifier(0)
    model.reset_classifier(7)
    fc = model.get_classifier()
    assert fc.weight.dtype == torch.float64 and not fc.training and model.num_classes == 7
    assert model(_input(model, batch=1).double()).shape == (1, 7)
    meta = timm.create_model(name, device='meta')
    meta.reset_classifier(0)
    meta.reset_classifier(3)
    assert meta.get_classifier().weight.is_meta


@pytest.mark.parametrize('name', FAST)
def test_in_chans_attribute_and_data_config_follow_the_built_channels(name):
    registered = timm.create_model(name, device='meta')
    c0 = registered.pretrained_cfg['input_size'][0]
    assert registered.in_chans == c0
    other = 3 if c0 == 1 else 1
    for model in (timm.create_model(name, in_chans=other), timm.create_model(name, in_chans=other, features_only=True)):
        assert model.in_chans == other and model.pretrained_cfg['input_size'][0] == other
        assert model.default_cfg is model.pretrained_cfg
        config = timm.data.resolve_data_config(model=model)
        assert len(config['mean']) == len(config['std']) == other
        transform = timm.data.create_transform(**config)
        from PIL import Image
        x = transform(Image.new('RGB' if other == 3 else 'L', (40, 40), 128)).unsqueeze(0)
        assert x.shape[1] == other
        model.eval()(x)  # the network takes what its data config produces
    assert registered.pretrained_cfg['input_size'][0] == c0  # the registered cfg itself is untouched


@pytest.mark.parametrize('name', FAST)
def test_fx_trace_and_fx_features_match_eager(name):
    from torch.fx import symbolic_trace
    model = timm.create_model(name).eval()
    with torch.no_grad():
        for stage in model.stages:  # learned-looking alpha where it is trainable
            if stage.edge_weights.requires_grad:
                stage.edge_weights.uniform_(0.5, 1.5)
    x = _input(model)
    traced = symbolic_trace(model)
    assert sum(n.op == 'call_function' for n in traced.graph.nodes) > 10  # the stages were traced through
    torch.testing.assert_close(traced(x), model(x))
    torch.manual_seed(1)
    fx = timm.create_model(name, features_only=True, feature_cls='fx').eval()
    torch.manual_seed(1)
    listed = timm.create_model(name, features_only=True).eval()
    for a, b in zip(fx(x), listed(x)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('name', ['resnet20_cifar', 'mobilenetv2_100_orig'])
def test_backward_of_frozen_alpha_networks(name):
    # timm's backward tests are skipped for these (alpha frozen at 1 is a parameter without
    # gradient by design): every trainable parameter gets a gradient, the frozen alpha none
    model = timm.create_model(name, num_classes=5)
    model(_input(model)).mean().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {f'stages.{i}.edge_weights' for i in range(len(model.stages))}
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable)
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)


@pytest.mark.parametrize('name', ['toponet_fmnist_complete', 'resnet20_cifar_topo', 'mobilenetv2_100_topo'])
def test_prune_intermediate_layers_contract(name):
    # timm's test_prune_intermediate_layers_contract (it selects timm's own modules only)
    import copy
    model = timm.create_model(name).eval()
    x = _input(model)
    last = len(model.feature_info) - 1
    with torch.no_grad():
        expected = model(x)
        taps = model.forward_intermediates(x, intermediates_only=True)
        pruned = copy.deepcopy(model)
        pruned.prune_intermediate_layers([last], prune_head=False)
        torch.testing.assert_close(pruned(x), expected)
    for i in range(last + 1):
        with torch.no_grad():
            early = model.forward_intermediates(x, indices=[i], stop_early=True, intermediates_only=True)
            torch.testing.assert_close(early[0], taps[i])
            pruned = copy.deepcopy(model)
            take = pruned.prune_intermediate_layers([i])
            torch.testing.assert_close(pruned.forward_intermediates(x, indices=take, intermediates_only=True)[0],
                                       taps[i])
            assert pruned.num_classes == 0 and len(list(pruned.head.parameters())) == 0
            if i < last:
                torch.testing.assert_close(pruned.forward_features(x), taps[i])
        pruned.train()
        selected = pruned.forward_intermediates(x, indices=take, intermediates_only=True)
        sum(f.sum() for f in selected + [pruned.forward_features(x)]).backward()
        unused = [n for n, p in pruned.named_parameters() if p.requires_grad and p.grad is None]
        assert not unused, f'pruned to {i}: {unused}'


@pytest.mark.parametrize('kind', ['project checkpoint', 'state dict'])
def test_features_only_with_checkpoint_path(tmp_path, kind):
    # mmpretrain's timm backbone: timm.create_model(name, features_only=True, checkpoint_path=...)
    from backbones.checkpoint import save_checkpoint
    trained = timm.create_model('toponet_fmnist_complete').eval()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    if kind == 'project checkpoint':
        path = str(tmp_path / 'trained.safetensors')
        save_checkpoint(path, trained, 'toponet_fmnist_complete', {})
    else:
        path = str(tmp_path / 'trained.pth')
        torch.save({'state_dict': {'module.' + k: v for k, v in trained.state_dict().items()}}, path)
    features = timm.create_model('toponet_fmnist_complete', features_only=True, checkpoint_path=path).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        for got, want in zip(features(x), trained.forward_intermediates(x, intermediates_only=True)):
            torch.testing.assert_close(got, want)
    # its own state dict still loads, and weights of another topology are refused
    features.load_state_dict(features.state_dict())
    other = str(tmp_path / 'other.safetensors')
    save_checkpoint(other, timm.create_model('toponet_fmnist_ba'), 'toponet_fmnist_ba', {})
    with pytest.raises(ValueError, match='another topology'):
        timm.create_model('toponet_fmnist_complete', features_only=True, checkpoint_path=other)
