"""Every detection config parses, builds, inherits mmdet's _base_ files and holds the paper's
recipe (appendix A.2.2: Detectron FPN 1x, shorter side 800, 2 images x 16 GPUs, lr scaled to 32)."""
import glob
import os

import pytest

import detection  # noqa: F401  (registrations, mmdet:: config paths)
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmdet.registry import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, 'detection', 'configs')
ALL_CONFIGS = sorted(p for p in glob.glob(os.path.join(CONFIG_DIR, '**', '*.py'), recursive=True)
                     if '_base_' not in p.split(os.sep))
PAPER_CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, '*_fpn_1x_coco.py')))

# Table 5 rows (and "Complete" without alpha): backbone, alpha learned, fine-tuning sparsity,
# the classification run whose checkpoint it loads
VARIANTS = {
    'toponet-complete': ('toponet_complete', False, 'none', 'toponet_imagenet_complete'),
    'toponet-complete-alpha': ('toponet_complete', True, 'none', 'toponet_imagenet_complete_alpha'),
    'toponet-complete-uniform': ('toponet_complete', True, 'uniform', 'toponet_imagenet_complete_uniform'),
    'toponet-complete-adaptive': ('toponet_complete', True, 'adaptive', 'toponet_imagenet_complete_adaptive'),
    'toponet-residual-l2': ('toponet_residual_l2', False, 'none', 'toponet_imagenet_residual_l2'),
}


def _name(path):
    return os.path.relpath(path, CONFIG_DIR)


_PARSED = {}


def _load(path):
    """Parse once per session (mmdet's bases make parsing cost seconds); tests copy before changing."""
    if path not in _PARSED:
        _PARSED[path] = Config.fromfile(path)
    return _PARSED[path]


def test_the_paper_configs_exist():
    names = {os.path.basename(p) for p in PAPER_CONFIGS}
    for det in ('faster-rcnn', 'retinanet'):
        assert f'{det}_r50_fpn_1x_coco.py' in names
        for variant in VARIANTS:
            assert f'{det}_{variant}_fpn_1x_coco.py' in names
    assert len(PAPER_CONFIGS) == 12


@pytest.mark.parametrize('path', PAPER_CONFIGS, ids=_name)
def test_paper_recipe(path):
    cfg = _load(path)
    text = open(path).read()
    assert '_base_' in text
    # inherits mmdet's own model, dataset, schedule and runtime files
    assert cfg.default_scope == 'mmdet' and cfg.data_root == 'data/coco/'
    assert cfg.train_dataloader.dataset.ann_file == 'annotations/instances_train2017.json'
    assert cfg.val_dataloader.dataset.ann_file == 'annotations/instances_val2017.json'
    assert cfg.train_dataloader.dataset.type == cfg.val_dataloader.dataset.type == 'CheckedCocoDataset'
    # shorter side 800 (longer side at most 1333), train and test
    for pipeline in (cfg.train_dataloader.dataset.pipeline, cfg.test_dataloader.dataset.pipeline):
        resize = [t for t in pipeline if t['type'] == 'Resize']
        assert len(resize) == 1 and tuple(resize[0]['scale']) == (1333, 800) and resize[0]['keep_ratio']
    # 2 images per GPU on 16 GPUs, mmdet's 1x lr scaled to that batch of 32 (Faster R-CNN 0.02 and
    # RetinaNet 0.01 at 16), momentum 0.9, wd 1e-4
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 32
    optimizer = cfg.optim_wrapper.optimizer
    lr = 0.04 if 'faster-rcnn' in path else 0.02
    assert optimizer.type == 'SGD' and optimizer.lr == lr and optimizer.momentum == 0.9
    assert optimizer.weight_decay == 1e-4
    # Detectron's 1x: 12 epochs, lr steps after epochs 8 and 11, linear warm-up
    assert cfg.train_cfg.max_epochs == 12
    steps = [s for s in cfg.param_scheduler if s['type'] == 'MultiStepLR']
    assert len(steps) == 1 and steps[0]['milestones'] == [8, 11] and steps[0]['gamma'] == 0.1
    assert cfg.val_evaluator.type == 'CocoMetric' and cfg.val_evaluator.metric == 'bbox'
    assert cfg.model.type == ('FasterRCNN' if 'faster-rcnn' in path else 'RetinaNet')
    assert {'type': 'DetectionDataCheckHook'} in cfg.custom_hooks

    backbone = cfg.model.backbone
    variant = os.path.basename(path).split('_')[1]
    if variant == 'r50':
        assert backbone.type == 'ResNet' and backbone.depth == 50
        assert backbone.init_cfg.checkpoint == 'torchvision://resnet50'
        return
    name, alpha, sparsity, cls_run = VARIANTS[variant]
    assert backbone.type == 'TopoNetBackbone' and backbone.name == name and backbone.alpha_trainable is alpha
    assert set(backbone) == {'type', 'name', 'alpha_trainable', 'seed', 'out_indices', 'frozen_stages',
                             'norm_eval', 'init_cfg'}  # nothing left over from ResNet
    assert backbone.frozen_stages == 1 and backbone.norm_eval is True  # as mmdet's ResNet-50
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=f'work_dirs/{cls_run}/toponet_imagenet.safetensors')
    # the checkpoint is what that classification config exports
    cls_cfg = _load(os.path.join(ROOT, 'classification', 'configs', f'{cls_run}.py'))
    assert cls_cfg.model.backbone.name == name and cls_cfg.model.backbone.alpha_trainable is alpha
    assert [h for h in cls_cfg.custom_hooks if h['type'] == 'ExportCheckpointHook'][0]['out_name'] == 'toponet_imagenet'
    assert cfg.optim_wrapper.type == 'TopologySparsityOptimWrapper'
    assert cfg.optim_wrapper.constructor == 'TopologyOptimWrapperConstructor'
    assert cfg.optim_wrapper.sparsity.mode == sparsity and cfg.optim_wrapper.sparsity.lam == 1e-4
    assert cls_cfg.optim_wrapper.sparsity.mode == sparsity  # fine-tuning continues the pretraining's term
    assert cfg.model.neck.in_channels == [128, 256, 512, 1024]


@pytest.mark.parametrize('path', [p for p in PAPER_CONFIGS if 'complete-adaptive' in p or 'residual' in p] +
                         [p for p in ALL_CONFIGS if '/toy/' in p], ids=_name)
def test_configs_build_a_detector_whose_neck_fits_the_backbone(path):
    init_default_scope('mmdet')
    cfg = _load(path)
    detector = MODELS.build(cfg.model)
    assert detector.neck.in_channels == detector.backbone.out_channels
    assert detector.backbone.out_strides == [4, 8, 16, 32]


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=_name)
def test_every_config_parses(path):
    cfg = _load(path)  # (the paper configs are read in full by test_paper_recipe)
    assert cfg.model.type in ('FasterRCNN', 'RetinaNet')
    assert 'detection' in cfg.custom_imports.imports and 'backbones.mmdet_backbone' in cfg.custom_imports.imports
