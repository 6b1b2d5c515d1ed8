"""TopoNet in MMDetection: registry, feature levels, freezing, strict checkpoint loading,
sparsity while fine-tuning a detector."""
import json
import os
import re

import pytest
import timm
import torch
from torch.nn.modules.batchnorm import _BatchNorm

import backbones  # noqa: F401
import detection  # noqa: F401  (registrations, mmdet:: config paths)
from backbones.checkpoint import read_checkpoint, save_checkpoint
from backbones.mmdet_backbone import TopoNetBackbone, adapt_stem_weight
from backbones.sparsity import TopologySparsity, edge_penalty_scale

from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmdet.registry import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_RETINANET = os.path.join(ROOT, 'detection', 'configs', 'toy', 'retinanet_toponet-fmnist_fpn_toy.py')
SMALL = dict(type='TopoNetBackbone', name='toponet_fmnist_complete', stem_stride=2, stage_strides=(2, 2, 2, 2))


@pytest.fixture(autouse=True)
def _mmdet_scope():
    init_default_scope('mmdet')


def _pretrained(path, name='toponet_fmnist_complete', seed=1):
    """A classification checkpoint whose every tensor differs from a fresh network's:
    random alpha, random BN statistics, random weights."""
    model = timm.create_model(name, num_classes=10, in_chans=1)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    save_checkpoint(str(path), model, name, dict(num_classes=10, in_chans=1), meta=dict(task='test'))
    return str(path)


_TOY_CFG = {}


def _detector(checkpoint, init_cfg=None, **backbone):
    if not _TOY_CFG:
        _TOY_CFG['cfg'] = Config.fromfile(TOY_RETINANET)
    model = _TOY_CFG['cfg'].model.copy()
    model.backbone = dict(model.backbone, init_cfg=dict(type='Pretrained', checkpoint=checkpoint), **backbone)
    if init_cfg is not None:
        model.init_cfg = init_cfg
    return MODELS.build(model)


def test_registry_build_levels_channels_and_strides():
    backbone = MODELS.build(dict(SMALL))
    assert isinstance(backbone, TopoNetBackbone)
    feats = backbone(torch.randn(2, 3, 96, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 32, 24, 16), (2, 64, 12, 8), (2, 128, 6, 4), (2, 160, 3, 2)]
    assert backbone.out_channels == [32, 64, 128, 160] and backbone.out_strides == [4, 8, 16, 32]
    # a subset of levels; stages after the last requested one are not run
    backbone = MODELS.build(dict(SMALL, out_indices=(1, 3)))
    assert [tuple(f.shape) for f in backbone(torch.randn(1, 3, 64, 64))] == [(1, 64, 8, 8), (1, 160, 2, 2)]
    assert backbone.out_strides == [8, 32]
    backbone = MODELS.build(dict(type='TopoNetBackbone', name='toponet_fmnist_complete', out_indices=(0, 1)))
    assert backbone.out_strides == [2, 4]  # the checkpoint's own strides when not overridden
    assert not hasattr(backbone, 'head') and not hasattr(backbone, 'final_conv')  # classifier dropped
    # (the ImageNet TopoNet's levels are checked where the paper configs are built)
    # classic networks: MobileNetV2 with alpha gives its four FPN levels
    backbone = MODELS.build(dict(type='TopoNetBackbone', name='mobilenetv2_100_topo', out_indices=(1, 2, 3, 4)))
    feats = backbone(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [24, 32, 96, 320] and backbone.out_strides == [4, 8, 16, 32]


def test_restriding_moves_the_stride_into_the_input_projection(tmp_path):
    # The fmnist network's last stage has stride 1; re-strided to 2, its input projection
    # (which every edge out of the stage input reads) carries the stride, and node 1 stays a
    # width-to-width stride-1 node. The classification checkpoint loads unchanged.
    backbone = MODELS.build(dict(SMALL))
    last = backbone.stages[3]
    assert last.input_path == 'projection' and last.input_proj.conv_dw.stride == (2, 2)
    assert all(node.conv_dw.stride == (1, 1) and node.conv_dw.in_channels == 160 for node in last.nodes)
    backbone.load_checkpoint(_pretrained(tmp_path / 'cls.safetensors'))
    # the node1 wiring on request, for checkpoints trained that way: node 1 carries the stride
    node1 = MODELS.build(dict(SMALL, input_path='node1'))
    assert node1.stages[3].nodes[0].conv_dw.stride == (2, 2) and node1.stages[3].nodes[0].conv_dw.in_channels == 128
    with pytest.raises(ValueError, match='stages.0.nodes.0'):
        node1.load_checkpoint(str(tmp_path / 'cls.safetensors'))


@pytest.mark.parametrize('bad, match', [
    (dict(name='mobilenetv2_100_topo', input_path='node1'), 'input_path can only be set for the TopoNet family'),
    (dict(input_path='raw'), "unknown input_path 'raw'"),
    (dict(out_indices=(0, 4)), 'out_indices'),
    (dict(out_indices=(2, 1)), 'out_indices'),
    (dict(frozen_stages=5), 'frozen_stages'),
    (dict(name='toponet_nope'), 'unknown backbone'),
    (dict(name='mobilenetv2_100_topo', stage_strides=(1, 1, 1, 1)), 'TopoNet family'),
])
def test_bad_arguments_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(dict(SMALL, **bad))


def test_wrong_input_channels_raise():
    with pytest.raises(ValueError, match='3-channel'):
        MODELS.build(dict(SMALL))(torch.randn(1, 1, 32, 32))


def test_frozen_stages_and_norm_eval():
    backbone = MODELS.build(dict(SMALL, frozen_stages=2, norm_eval=False))
    backbone.train()
    frozen = [backbone.stem, backbone.stages[0], backbone.stages[1]]
    for module in frozen:
        assert all(not p.requires_grad for p in module.parameters())
        assert not module.training
    assert not backbone.stages[1].edge_weights.requires_grad  # alpha of a frozen stage is frozen too
    assert all(p.requires_grad for s in backbone.stages[2:] for p in s.parameters())
    assert backbone.stages[2].training
    bn_frozen, bn_free = backbone.stages[1].nodes[0].bn, backbone.stages[3].nodes[0].bn
    before_frozen, before_free = bn_frozen.running_mean.clone(), bn_free.running_mean.clone()
    backbone(torch.randn(2, 3, 64, 64))
    assert torch.equal(bn_frozen.running_mean, before_frozen)      # frozen: statistics kept
    assert not torch.equal(bn_free.running_mean, before_free)      # free and norm_eval=False: updated

    backbone = MODELS.build(dict(SMALL, frozen_stages=0, norm_eval=True))
    backbone.train()
    assert all(not p.requires_grad for p in backbone.stem.parameters())
    assert all(p.requires_grad for p in backbone.stages.parameters())
    assert all(not m.training for m in backbone.modules() if isinstance(m, _BatchNorm))
    assert backbone.stages[0].training  # only the norms are in eval mode
    before = backbone.stages[3].nodes[0].bn.running_mean.clone()
    backbone(torch.randn(2, 3, 64, 64))
    assert torch.equal(backbone.stages[3].nodes[0].bn.running_mean, before)


def test_strict_load_every_weight_and_alpha_survives_init_weights(tmp_path):
    path = _pretrained(tmp_path / 'cls.safetensors')
    ckpt = read_checkpoint(path)
    # a detector-wide initialiser that would re-randomise every conv, the backbone's included
    detector = _detector(path, init_cfg=dict(type='Kaiming', layer='Conv2d'))
    fresh = {k: v.clone() for k, v in detector.backbone.state_dict().items()}
    neck_before = detector.neck.fpn_convs[0].conv.weight.clone()
    detector.init_weights()  # mmengine's recursive init: neck and head initialised, backbone loaded
    assert not torch.equal(detector.neck.fpn_convs[0].conv.weight, neck_before)  # the init did run
    state = detector.backbone.state_dict()
    expected = {k: v for k, v in ckpt.state_dict.items() if not k.startswith(('head.', 'final_conv.'))}
    assert set(state) == set(expected)
    for key, value in expected.items():
        if key == 'stem.conv.weight':  # 1 -> 3 channels: repeated and divided by 3
            assert value.shape[1] == 1 and state[key].shape[1] == 3
            torch.testing.assert_close(state[key], value.repeat(1, 3, 1, 1) / 3)
        else:
            assert torch.equal(state[key], value), key
    for s, stage in enumerate(ckpt.topology):
        torch.testing.assert_close(detector.backbone.stages[s].edge_weights.detach(), torch.from_numpy(stage.alpha))
    assert not torch.equal(fresh['stages.2.edge_weights'], state['stages.2.edge_weights'])
    assert detector.backbone.is_init  # mmengine will not initialise it again
    # frozen alpha keeps the loaded (not unit) values and is left out of the sparsity term
    detector = _detector(path, alpha_trainable=False)
    detector.init_weights()
    stage = detector.backbone.stages[0]
    assert not stage.edge_weights.requires_grad
    torch.testing.assert_close(stage.edge_weights.detach(), torch.from_numpy(ckpt.topology[0].alpha))
    assert float(TopologySparsity('adaptive', 1e-4)(detector)) == 0.0


def test_grey_image_response_is_kept_by_the_stem_adaptation():
    weight = torch.randn(8, 1, 3, 3)
    grey = torch.rand(1, 1, 10, 10)
    conv1 = torch.nn.functional.conv2d(grey, weight)
    conv3 = torch.nn.functional.conv2d(grey.repeat(1, 3, 1, 1), adapt_stem_weight(weight, 3))
    torch.testing.assert_close(conv1, conv3)
    with pytest.raises(ValueError, match='2 input channels'):
        adapt_stem_weight(torch.randn(8, 2, 3, 3), 3)


def _rewrite(src, dst, drop=(), metadata_update=None):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    with safe_open(src, framework='pt') as f:
        metadata = dict(f.metadata())
    metadata.update(metadata_update or {})
    state = {k: v for k, v in load_file(src).items() if k not in drop}
    save_file(state, dst, metadata=metadata)
    return dst


@pytest.mark.parametrize('dropped', ['stages.1.edge_weights', 'stages.3.nodes.2.bn.running_var', 'stem.bn.weight'])
def test_a_dropped_key_fails_the_load(tmp_path, dropped):
    # mmengine's own Pretrained init would load this non-strictly and only log the missing key
    path = _rewrite(_pretrained(tmp_path / 'cls.safetensors'), str(tmp_path / 'partial.safetensors'), drop=[dropped])
    detector = _detector(path)
    expected = (r'stages\.1 has edge_index but no edge_weights' if dropped.endswith('edge_weights')  # read_checkpoint
                else r"missing \['" + re.escape(dropped) + "'")
    with pytest.raises(ValueError, match=expected):
        detector.init_weights()


def test_a_checkpoint_of_another_topology_is_refused(tmp_path):
    path = _pretrained(tmp_path / 'res.safetensors', name='toponet_fmnist_residual_l2')
    detector = _detector(path)
    with pytest.raises(ValueError, match=r"another topology: stage 0 is residual with 8 nodes and \d+ edges.*"
                                         r"complete with 8 nodes and 28 edges"):
        detector.init_weights()
    # metadata without its graphs no longer describes the tensors: refused when the file is read
    bare = _rewrite(path, str(tmp_path / 'bare.safetensors'), metadata_update={'topology': json.dumps(None)})
    with pytest.raises(ValueError, match='the metadata records 0 DAG stages, the tensors hold 4'):
        _detector(bare).init_weights()
    # another network altogether (ResNet-20 with alpha: 3 stages)
    path = _pretrained(tmp_path / 'cifar.safetensors', name='resnet20_cifar_topo')
    with pytest.raises(ValueError, match="'resnet20_cifar_topo' has 3 DAG stages, the toponet_fmnist_complete "
                                         "backbone has 4"):
        _detector(path).init_weights()


def test_bad_init_cfg_and_missing_file_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.safetensors'):
        _detector(str(tmp_path / 'nowhere.safetensors')).init_weights()
    detector = _detector(str(tmp_path / 'x.safetensors'))
    detector.backbone.init_cfg = dict(type='Pretrained', checkpoint='x', prefix='backbone.')
    with pytest.raises(ValueError, match='prefix'):
        detector.backbone.init_weights()


def test_sparsity_and_no_decay_alpha_in_a_detector_optimizer(tmp_path):
    from mmengine.optim import build_optim_wrapper
    import backbones.mmengine_optim  # noqa: F401

    detector = _detector(_pretrained(tmp_path / 'cls.safetensors'), frozen_stages=1)
    detector.init_weights()
    wrapper = build_optim_wrapper(detector, dict(
        type='TopologySparsityOptimWrapper', sparsity=dict(mode='adaptive', lam=1e-2),
        constructor='TopologyOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.0, momentum=0.0, weight_decay=1e-4)))
    alphas = {id(detector.backbone.stages[s].edge_weights): s for s in range(4)}
    for group in wrapper.optimizer.param_groups:
        for param in group['params']:
            if id(param) in alphas:
                assert group['weight_decay'] == 0.0
    # stage 0 is frozen: the penalty covers stages 1..3 only, with log(in-degree) weights
    expected = sum((edge_penalty_scale(detector.backbone.stages[s], 'adaptive')
                    * detector.backbone.stages[s].edge_weights.abs()).sum() for s in (1, 2, 3)) * 1e-2
    torch.testing.assert_close(wrapper.sparsity(detector), expected)
    # the wrapper adds it to the detector's loss and logs it
    from mmengine.logging import MessageHub
    task_loss = sum(f.mean() for f in detector.backbone(torch.randn(1, 3, 64, 64)))
    wrapper.update_params(task_loss)
    logged = MessageHub.get_current_instance().get_scalar('train/loss_sparsity').current()
    assert logged == pytest.approx(float(expected.detach()), rel=1e-5) and logged > 0


def test_one_faster_rcnn_training_step_reaches_alpha():
    # (the paper's detector; RetinaNet trains for real in test_det_tools.py)
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    cfg = Config.fromfile(os.path.join(ROOT, 'detection', 'configs', 'toy', 'faster-rcnn_toponet-fmnist_fpn_toy.py'))
    cfg.model.backbone.init_cfg = None
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    detector.train()
    samples = []
    for boxes, labels in (([[8., 8., 40., 36.]], [0]), ([[20., 4., 60., 44.], [2., 40., 24., 62.]], [1, 2])):
        sample = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes), labels=torch.tensor(labels))
        samples.append(sample)
    data = detector.data_preprocessor(
        dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for _ in samples], data_samples=samples),
        training=True)
    losses = detector.loss(data['inputs'], data['data_samples'])
    loss, _ = detector.parse_losses(losses)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    for stage in detector.backbone.stages:
        assert stage.edge_weights.grad is not None and stage.edge_weights.grad.abs().sum() > 0
