"""A very short detection run through the real command lines: toy COCO data, a tiny TopoNet
checkpoint, tools/train_det.py, --resume, tools/test_det.py scored by mmdet's CocoMetric."""
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import timm

import backbones  # noqa: F401
from backbones.checkpoint import save_checkpoint
from tests.helpers.tiny_data import toy_coco_options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, 'detection', 'configs', 'toy', 'retinanet_toponet-fmnist_fpn_toy.py')


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([ROOT, env.get('PYTHONPATH', '')])
    env['OMP_NUM_THREADS'] = '2'
    env['PYTHONWARNINGS'] = 'ignore'
    return env


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tool, *args):
    cmd = [sys.executable, os.path.join(ROOT, 'tools', tool), *args]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('det')
    data = str(root / 'toy')
    assert _tool('make_toy_coco').main([data, '--num-train', '8', '--num-val', '4', '--image-size', '64',
                                        '--min-size', '12', '--max-size', '28']) == 0
    model = timm.create_model('toponet_fmnist_complete', num_classes=10, in_chans=1)
    checkpoint = str(root / 'fmnist.safetensors')
    save_checkpoint(checkpoint, model, 'toponet_fmnist_complete', dict(num_classes=10, in_chans=1))
    return root, data, checkpoint


def test_train_resume_and_test_through_the_tools(setup):
    root, data, checkpoint = setup
    work_dir = str(root / 'run')
    # score_thr=0: an almost untrained detector still returns boxes for CocoMetric to score
    options = ['--cfg-options', f'model.backbone.init_cfg.checkpoint={checkpoint}', 'train_cfg.max_epochs=1',
               'train_cfg.val_interval=1', 'train_dataloader.batch_size=4', 'default_hooks.logger.interval=1',
               'default_hooks.checkpoint.interval=1', 'model.test_cfg.score_thr=0.0', *toy_coco_options(data)]
    out = _run('train_det.py', CONFIG, '--work-dir', work_dir, *options)
    assert re.search(r'loaded all \d+ tensors from .*fmnist\.safetensors', out)  # the strict load ran in the Runner
    assert os.path.isfile(os.path.join(work_dir, 'epoch_1.pth'))
    logs = [json.loads(line) for line in open(next(iter(sorted(
        os.path.join(dp, f) for dp, _, fs in os.walk(work_dir) for f in fs if f == 'scalars.json'))))]
    assert any('loss_sparsity' in entry for entry in logs)  # the shared sparsity term is on
    assert any('coco/bbox_mAP' in entry for entry in logs)   # validated by mmdet's CocoMetric
    # a rerun with --resume finds the finished run and trains nothing more
    out = _run('train_det.py', CONFIG, '--work-dir', work_dir, '--resume', *options)
    assert 'resumed epoch: 1' in out
    assert 'Epoch(train)' not in out
    # the test tool scores the last checkpoint (given the work dir) with pycocotools
    out = _run('test_det.py', CONFIG, work_dir, '--work-dir', str(root / 'test'), '--cfg-options',
               'model.test_cfg.score_thr=0.0', *toy_coco_options(data))
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics['checkpoint'].endswith('epoch_1.pth')
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0 and 'coco/bbox_mAP_50' in metrics


@pytest.mark.parametrize('name', ['retinanet_toponet-fmnist_fpn_toy.py', 'faster-rcnn_toponet-fmnist_fpn_toy.py'])
def test_toy_configs_checkpoint_every_epoch(name):
    # an interrupted `make demo` resumes its detection step from the last finished epoch
    import detection  # noqa: F401  (mmdet:: config bases)
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(ROOT, 'detection', 'configs', 'toy', name))
    assert cfg.train_cfg.type == 'EpochBasedTrainLoop' and cfg.train_cfg.max_epochs == 8
    checkpoint = cfg.default_hooks.checkpoint
    assert checkpoint.get('by_epoch', True) and checkpoint.interval == 1


def test_tools_report_bad_inputs(setup, tmp_path):
    root, data, checkpoint = setup
    # a head whose class count disagrees with the data stops the run before it starts
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'train_det.py'), CONFIG, '--work-dir', str(tmp_path),
           '--cfg-options', f'model.backbone.init_cfg.checkpoint={checkpoint}', 'model.bbox_head.num_classes=4',
           *toy_coco_options(data)]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert 'predicts 4 classes but the train dataset has 3' in result.stderr
    assert not list(tmp_path.glob('*.pth'))
    test_det = _tool('test_det')
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        test_det.resolve_checkpoint(str(tmp_path / 'epoch_9.pth'))
    with pytest.raises(FileNotFoundError, match='without a last_checkpoint'):
        test_det.resolve_checkpoint(str(tmp_path))
