"""End-to-end classification runs through the real command line (tiny data, CPU)."""
import json
import os
import signal
import subprocess
import sys
import time

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


def _options(data, epochs, augment=True):
    opts = [f'train_dataloader.dataset.root={data}', f'val_dataloader.dataset.root={data}',
            f'test_dataloader.dataset.root={data}', 'train_dataloader.batch_size=64',
            f'train_cfg.max_epochs={epochs}', 'train_cfg.val_interval=1', 'default_hooks.logger.interval=1']
    if not augment:
        opts.append('train_dataloader.dataset.transform=None')
    return opts


def _train(work_dir, data, epochs, *extra, augment=True, check=True):
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'train_cls.py'), CONFIG, '--work-dir', str(work_dir),
           *extra, '--cfg-options', *_options(data, epochs, augment)]
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
           str(tmp_path / 'toponet_fmnist.safetensors'), '--cfg-options', f'test_dataloader.dataset.root={data}']
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=True, timeout=300).stdout
    metrics = json.loads(out.strip().splitlines()[-1])
    saved = read_checkpoint(str(tmp_path / 'toponet_fmnist.safetensors')).meta['metrics']['cls/top1']
    assert metrics['cls/top1'] == pytest.approx(saved)


def test_killed_run_resumes_to_the_same_weights(tmp_path, data):
    epochs = 4
    reference = tmp_path / 'uninterrupted'
    _train(reference, data, epochs, augment=False)

    killed = tmp_path / 'killed'
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'train_cls.py'), CONFIG, '--work-dir', str(killed),
           '--cfg-options', *_options(data, epochs, augment=False)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        marker = killed / 'last_checkpoint'
        if marker.is_file() and marker.read_text().strip().endswith('epoch_1.pth'):
            break
        if proc.poll() is not None:
            pytest.fail('training ended before it could be killed')
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / f'epoch_{epochs}.pth').exists(), 'the run must really be cut short'

    result = _train(killed, data, epochs, '--resume', augment=False)
    assert 'resumed epoch: ' in result.stdout + result.stderr
    a = read_checkpoint(str(reference / 'toponet_fmnist.safetensors'))
    b = read_checkpoint(str(killed / 'toponet_fmnist.safetensors'))
    assert a.meta['iter'] == b.meta['iter'] == epochs * 4
    for key, value in a.state_dict.items():
        torch.testing.assert_close(b.state_dict[key], value, rtol=1e-5, atol=1e-6, msg=key)


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
