"""MMDetection's own entry points on our configs and on checkpoints our training wrote: mmdet's
packaged ``tools/train.py`` (``--resume``) and ``tools/test.py`` (from ``mmdet/.mim/tools``),
``DetInferencer`` on an image file, and the learning rate ``--auto-scale-lr`` gives the COCO
configs for a number of GPUs."""
import glob
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import mmdet
import pytest
import timm
import torch

import backbones  # noqa: F401
from backbones.checkpoint import save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MMDET_TOOLS = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'tools')
MMDET_CONFIGS = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs')
CONFIG = os.path.join(ROOT, 'detection', 'configs', 'toy', 'retinanet_toponet-fmnist_fpn_toy.py')
PAPER_CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'detection', 'configs', '*_fpn_1x_coco.py')))


def _env():
    # nothing of ours on the path but the repository: mmdet's tools import our package only
    # through the configs' custom_imports
    return dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='2', PYTHONWARNINGS='ignore', CUDA_VISIBLE_DEVICES='')


def _options(root, checkpoint):
    root = root.rstrip('/') + '/'
    return ([f'model.backbone.init_cfg.checkpoint={checkpoint}']
            + [f'{loader}.dataset.data_root={root}' for loader in ('train_dataloader', 'val_dataloader',
                                                                   'test_dataloader')]
            + [f'{evaluator}.ann_file={root}annotations/instances_val.json'
               for evaluator in ('val_evaluator', 'test_evaluator')])


def _run(script, *args, cwd):
    proc = subprocess.run([sys.executable, script, *args], env=_env(), capture_output=True, text=True, timeout=600,
                          cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """One epoch (two iterations) of the toy detector, written by our training tool."""
    root = tmp_path_factory.mktemp('mmdet_entry')
    data = str(root / 'toy')
    subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'make_toy_coco.py'), data, '--num-train', '8',
                    '--num-val', '4', '--image-size', '64', '--min-size', '12', '--max-size', '28'], env=_env(),
                   check=True, capture_output=True)
    fmnist = str(root / 'fmnist.safetensors')
    save_checkpoint(fmnist, timm.create_model('toponet_fmnist_complete', num_classes=10, in_chans=1),
                    'toponet_fmnist_complete', dict(num_classes=10, in_chans=1))
    work_dir = str(root / 'ours')
    _run(os.path.join(ROOT, 'tools', 'train_det.py'), CONFIG, '--work-dir', work_dir, '--cfg-options',
         *_options(data, fmnist), 'train_cfg.max_epochs=1', 'train_cfg.val_begin=100', cwd=str(root))
    checkpoint = os.path.join(work_dir, 'epoch_1.pth')
    assert os.path.isfile(checkpoint)
    return root, data, fmnist, checkpoint


def test_mmdet_train_resumes_from_our_checkpoint(trained):
    root, data, fmnist, checkpoint = trained
    work_dir = str(root / 'mmdet_train')
    log = _run(os.path.join(MMDET_TOOLS, 'train.py'), CONFIG, '--work-dir', work_dir, '--resume', checkpoint,
               '--cfg-options', *_options(data, fmnist), 'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
               cwd=str(root))
    assert 'resumed epoch: 1, iter: 2' in log
    assert 'Epoch(train) [2][2/2]' in log
    assert os.path.isfile(os.path.join(work_dir, 'epoch_2.pth'))


def test_mmdet_test_scores_our_checkpoint(trained):
    root, data, fmnist, checkpoint = trained
    out = str(root / 'predictions.pkl')
    log = _run(os.path.join(MMDET_TOOLS, 'test.py'), CONFIG, checkpoint, '--work-dir', str(root / 'mmdet_test'),
               '--out', out, '--cfg-options', *_options(data, fmnist), cwd=str(root))
    assert f'Load checkpoint from {checkpoint}' in log and 'Epoch(test) [1/1]' in log
    assert os.path.getsize(out) > 0


def test_det_inferencer_on_an_image_file(trained):
    root, data, fmnist, checkpoint = trained
    image = sorted(glob.glob(os.path.join(data, 'val', '*')))[0]
    code = ('import sys, json; from mmdet.apis import DetInferencer; '
            'inferencer = DetInferencer(model=sys.argv[1], weights=sys.argv[2], device="cpu", show_progress=False); '
            'result = inferencer(sys.argv[3], no_save_vis=True, return_datasamples=False)["predictions"][0]; '
            'state = inferencer.model.state_dict(); '
            'print("RESULT " + json.dumps({"lengths": [len(result[k]) for k in ("labels", "scores", "bboxes")], '
            '"sums": {k: float(v.double().sum()) for k, v in state.items() if v.is_floating_point()}}))')
    proc = subprocess.run([sys.executable, '-c', code, CONFIG, checkpoint, image], env=_env(), capture_output=True,
                          text=True, timeout=600, cwd=str(root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [line for line in proc.stdout.splitlines() if line.startswith('RESULT ')][-1]
    result = json.loads(line[len('RESULT '):])
    assert len(set(result['lengths'])) == 1  # one label, score and box per detection
    # the detector holds the trained weights of the checkpoint, every one of them
    from backbones.mmengine_runner import allow_mmengine_checkpoint_globals
    allow_mmengine_checkpoint_globals()
    saved = torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']
    assert set(result['sums']) == {k for k, v in saved.items() if v.is_floating_point()}
    assert all(result['sums'][k] == pytest.approx(float(v.double().sum()), rel=1e-12, abs=1e-12)
               for k, v in saved.items() if v.is_floating_point())


def _reference_lr_per_image(path):
    """mmdet's own 1x config of the same detector: its lr over the batch it is stated for."""
    from mmengine.config import Config
    name = 'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py' if 'faster-rcnn' in path else \
        'retinanet/retinanet_r50_fpn_1x_coco.py'
    reference = Config.fromfile(os.path.join(MMDET_CONFIGS, name))
    return reference.optim_wrapper.optimizer.lr / reference.auto_scale_lr.base_batch_size


@pytest.mark.parametrize('path', PAPER_CONFIGS, ids=os.path.basename)
def test_auto_scale_lr_gives_mmdet_s_lr_per_image_for_any_gpu_count(path):
    import detection  # noqa: F401
    from mmengine.config import Config
    from mmengine.optim import OptimWrapper
    from mmengine.runner import Runner
    cfg = Config.fromfile(path)
    per_image = _reference_lr_per_image(path)
    # as stated: the lr of the paper's batch (16 GPUs x 2 images)
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(per_image * cfg.auto_scale_lr.base_batch_size)
    for gpus in (1, 8, 16):
        wrapper = OptimWrapper(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))],
                                               lr=cfg.optim_wrapper.optimizer.lr))
        runner = SimpleNamespace(_train_dataloader=cfg.train_dataloader, world_size=gpus, param_schedulers=None,
                                 logger=SimpleNamespace(info=lambda *a, **k: None))
        Runner.scale_lr(runner, wrapper, dict(cfg.auto_scale_lr, enable=True))  # what --auto-scale-lr runs
        assert wrapper.optimizer.param_groups[0]['lr'] == pytest.approx(per_image * gpus * 2)
