import glob
import os

import pytest
from mmengine.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'classification', 'configs', '*.py')))


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_config_builds_its_model(path):
    import classification  # noqa: F401  (registers datasets, model, metric)
    import backbones.mmengine_optim  # noqa: F401
    from mmengine.registry import MODELS
    from backbones.sparsity import SPARSITY_MODES
    cfg = Config.fromfile(path)
    model = MODELS.build(cfg.model)
    assert cfg.optim_wrapper.sparsity['mode'] in SPARSITY_MODES
    if not cfg.model.backbone.get('alpha_trainable', True):
        assert all(not s.edge_weights.requires_grad for s in model.backbone.stages)
        assert cfg.optim_wrapper.sparsity['mode'] == 'none'


@pytest.mark.parametrize('name, backbone, alpha, sparsity', [
    ('toponet_imagenet_complete_adaptive.py', 'toponet_complete', True, 'adaptive'),
    ('toponet_imagenet_complete_uniform.py', 'toponet_complete', True, 'uniform'),
    ('toponet_imagenet_complete_alpha.py', 'toponet_complete', True, 'none'),
    ('toponet_imagenet_complete.py', 'toponet_complete', False, 'none'),
    ('toponet_imagenet_residual_l2.py', 'toponet_residual_l2', False, 'none'),
])
def test_imagenet_recipe_is_the_papers(name, backbone, alpha, sparsity):
    cfg = Config.fromfile(os.path.join(ROOT, 'classification', 'configs', name))
    assert cfg.model.backbone.name == backbone and cfg.model.backbone.alpha_trainable == alpha
    assert cfg.optim_wrapper.sparsity['mode'] == sparsity and cfg.optim_wrapper.sparsity['lam'] == 1e-4
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.nesterov, opt.weight_decay) == ('SGD', 0.4, 0.9, True, 1e-4)
    assert cfg.train_cfg.max_epochs == 100 and cfg.model.label_smoothing == 0.1
    assert cfg.train_dataloader.batch_size * 16 == cfg.auto_scale_lr.base_batch_size == 1024
    assert cfg.param_scheduler[0].type == 'CosineAnnealingLR' and cfg.model.backbone.drop_rate == 0.0


@pytest.mark.parametrize('name, backbone', [('resnet110_cifar100.py', 'resnet110_cifar'),
                                            ('resnet110_cifar100_topo.py', 'resnet110_cifar_topo')])
def test_cifar100_recipe_is_the_papers(name, backbone):
    cfg = Config.fromfile(os.path.join(ROOT, 'classification', 'configs', name))
    assert cfg.model.backbone.name == backbone and cfg.model.backbone.num_classes == 100
    opt = cfg.optim_wrapper.optimizer
    assert (opt.lr, opt.momentum, opt.nesterov, opt.dampening, opt.weight_decay) == (0.1, 0.9, True, 0, 5e-4)
    sched = cfg.param_scheduler[0]
    assert sched.type == 'MultiStepLR' and list(sched.milestones) == [60, 120, 160] and sched.gamma == 0.2
    assert cfg.train_cfg.max_epochs == 200 and cfg.train_dataloader.batch_size * 2 == 128
    assert cfg.train_dataloader.dataset.transform == 'cifar_train'  # crop + flip + cutout


@pytest.mark.parametrize('name, backbone', [('mobilenetv2_100_imagenet.py', 'mobilenetv2_100_orig'),
                                            ('mobilenetv2_100_imagenet_topo.py', 'mobilenetv2_100_topo')])
def test_mobilenetv2_recipe_is_the_papers(name, backbone):
    cfg = Config.fromfile(os.path.join(ROOT, 'classification', 'configs', name))
    assert cfg.model.backbone.name == backbone and cfg.model.backbone.drop_rate == 0.2
    opt = cfg.optim_wrapper.optimizer
    assert (opt.lr, opt.nesterov, opt.weight_decay) == (0.4, True, 4e-5)
    assert cfg.train_cfg.max_epochs == 200 and cfg.param_scheduler[0].end == 200
    assert cfg.train_dataloader.batch_size * 16 == 1024
