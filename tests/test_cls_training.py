"""End-to-end classification runs through the real command line (tiny data, CPU). A killed
run resumed to the same weights: tests/test_resume.py."""
import json
import os
import subprocess
import sys

import pytest
import timm
import torch

import backbones  # noqa: F401
from backbones.checkpoint import read_checkpoint
from helpers.tiny_data import make_fmnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, 'classification', 'configs', 'toponet_fmnist_adaptive.py')


def _env(threads=2):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([ROOT, os.path.join(ROOT, 'tests'), env.get('PYTHONPATH', '')])
    env['OMP_NUM_THREADS'] = str(threads)
    env['PYTHONWARNINGS'] = 'ignore'
    return env


def _options(data, epochs):
    # the tiny set holds out 50 of its 256 training images as the validation split (5 per class)
    return [f'train_dataloader.dataset.root={data}', f'val_dataloader.dataset.root={data}',
            'train_dataloader.dataset.holdout=50', 'val_dataloader.dataset.holdout=50',
            f'test_dataloader.dataset.root={data}', 'train_dataloader.batch_size=64',
            f'train_cfg.max_epochs={epochs}', 'train_cfg.val_interval=1', 'default_hooks.logger.interval=1']


def _train(work_dir, data, epochs, *extra, check=True):
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'train_cls.py'), CONFIG, '--work-dir', str(work_dir),
           *extra, '--cfg-options', *_options(data, epochs)]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=check, timeout=600)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_fmnist(str(tmp_path_factory.mktemp('fmnist')), n_train=256, n_test=100)


def test_training_writes_shared_checkpoint_and_pictures(tmp_path, data):
    result = _train(tmp_path, data, 2)
    for name in ('toponet_fmnist.safetensors', 'topology.json', 'topology.npz', 'adjacency.png', 'alpha_hist.png',
                 'epoch_2.pth'):
        assert (tmp_path / name).is_file(), (name, result.stdout[-3000:], result.stderr[-3000:])
    assert (tmp_path / 'adjacency.png').read_bytes()[:4] == b'\x89PNG'
    ckpt = read_checkpoint(str(tmp_path / 'toponet_fmnist.safetensors'))
    assert ckpt.meta['epoch'] == 2 and 'cls/top1' in ckpt.meta['metrics']
    # alpha moved away from its initial value of 1
    assert any(abs(a - 1.0) > 1e-4 for stage in ckpt.topology for a in stage.alpha)
    # the shared checkpoint loads through timm, with and without features_only
    model = timm.create_model(ckpt.model_name, pretrained=True, in_chans=1, num_classes=10,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / 'toponet_fmnist.safetensors')))
    torch.testing.assert_close(model.stages[0].edge_weights.detach(), torch.from_numpy(ckpt.topology[0].alpha))
    feats = timm.create_model(ckpt.model_name, pretrained=True, features_only=True, in_chans=1,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / 'toponet_fmnist.safetensors')))
    assert len(feats(torch.zeros(1, 1, 28, 28))) == 5
    # the sparsity penalty is logged beside the task loss
    logs = [json.loads(line) for line in open(next(tmp_path.glob('*/vis_data/scalars.json')))]
    assert any('loss_sparsity' in entry for entry in logs)
    # resuming a finished run (what a second `make demo` does) trains nothing and keeps the export
    result = _train(tmp_path, data, 2, '--resume')
    assert 'resumed epoch: 2' in result.stdout + result.stderr
    assert read_checkpoint(str(tmp_path / 'toponet_fmnist.safetensors')).meta == ckpt.meta


def test_test_tool_scores_the_checkpoint(tmp_path, data):
    _train(tmp_path, data, 1)
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'test_cls.py'), CONFIG,
           str(tmp_path / 'toponet_fmnist.safetensors'), '--work-dir', str(tmp_path / 'test'),
           '--cfg-options', f'test_dataloader.dataset.root={data}']
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=True, timeout=300).stdout
    test_top1 = json.loads(out.strip().splitlines()[-1])['cls/top1']
    assert 0 <= test_top1 <= 100
    # scored on the validation hold-out instead, the tool gives the validation top-1 training saved
    out = subprocess.run(cmd + ['test_dataloader.dataset.split=val', 'test_dataloader.dataset.holdout=50'], env=_env(),
                         capture_output=True, text=True, check=True, timeout=300).stdout
    metrics = json.loads(out.strip().splitlines()[-1])
    saved = read_checkpoint(str(tmp_path / 'toponet_fmnist.safetensors')).meta['metrics']['cls/top1']
    assert metrics['cls/top1'] == pytest.approx(saved)


def test_torchrun_two_processes_agree(tmp_path, data):
    config = tmp_path / 'ddp.py'
    config.write_text(
        f"_base_ = [{CONFIG!r}]\n"
        "custom_imports = dict(imports=['classification', 'backbones.mmengine_optim', 'helpers.rank_digest'],\n"
        "                      allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='ExportCheckpointHook', out_name='toponet_fmnist'), dict(type='RankDigestHook')]\n")
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29517',
           os.path.join(ROOT, 'tools', 'train_cls.py'), str(config), '--work-dir', str(tmp_path / 'run'),
           '--cfg-options', *_options(data, 1)]
    result = subprocess.run(cmd, env=_env(threads=1), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    digests = [json.loads((tmp_path / 'run' / f'digest_rank{r}.json').read_text()) for r in (0, 1)]
    assert [d['world_size'] for d in digests] == [2, 2]
    # 256 samples over 2 ranks at 64 per rank: 2 steps each, and identical weights
    assert digests[0]['iter'] == 2
    assert digests[0]['sha256'] == digests[1]['sha256']


def test_export_pictures_name_the_loops_own_unit():
    # an iteration-based run (the study's) has no epochs: its pictures say the iteration
    from types import SimpleNamespace

    from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

    from classification.hooks import _when
    iter_run = SimpleNamespace(train_loop=object.__new__(IterBasedTrainLoop), iter=3750, epoch=0)
    epoch_run = SimpleNamespace(train_loop=object.__new__(EpochBasedTrainLoop), iter=8600, epoch=10)
    assert _when(iter_run) == 'iteration 3,750'
    assert _when(epoch_run) == 'epoch 10'
