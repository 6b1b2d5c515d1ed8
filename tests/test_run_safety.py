"""Training runs that diverge, run out of disk, collide or get a typo: they stop with one
clear error and never replace a good checkpoint or export with a bad or half-written one
(real command lines on tiny data, CPU)."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch

from backbones.errors import InputError
from helpers.tiny_data import make_fmnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, 'classification', 'configs', 'toponet_fmnist_adaptive.py')
EXPORTS = ('toponet_fmnist.safetensors', 'topology.json', 'epoch_1.pth', 'last_checkpoint')

# Faults a real run can meet, injected through the config's custom_imports.
FAULTS = '''
import errno
import os
import time

import torch
from mmengine.fileio.backends.local_backend import LocalBackend
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class PoisonWeightsHook(Hook):
    """After training iteration ``at_iter`` a weight turns NaN, as when a step diverges:
    that iteration's loss was still finite."""

    priority = 'LOW'

    def __init__(self):
        self.at_iter = int(os.environ.get('POISON_AT', 0))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.at_iter:
            model = getattr(runner.model, 'module', runner.model)
            with torch.no_grad():
                next(model.backbone.parameters()).fill_(float('nan'))


@HOOKS.register_module()
class StallHook(Hook):
    """After training iteration ``STALL_AT`` (and its log line) the run stalls: a run that is
    still going when a second one starts."""

    priority = 'LOWEST'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == int(os.environ.get('STALL_AT', 0)):
            time.sleep(300)


def _disk_full(self, obj, filepath):
    """The disk fills up halfway through every checkpoint write."""
    with open(filepath, 'wb') as f:
        f.write(obj[:len(obj) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))


if os.environ.get('FAULT') == 'disk_full':
    LocalBackend.put = _disk_full
'''


def _config_text(data, extra=''):
    return (f"_base_ = [{CONFIG!r}]\n"
            f"train_dataloader = dict(batch_size=32, dataset=dict(_delete_=True, type='FashionMNIST', root={data!r}, "
            "split='train'))\n"
            f"val_dataloader = dict(dataset=dict(_delete_=True, type='FashionMNIST', root={data!r}, split='test'))\n"
            "test_dataloader = val_dataloader\n"
            "train_cfg = dict(max_epochs=1, val_interval=1)\n"
            "default_hooks = dict(logger=dict(interval=1), checkpoint=dict(max_keep_ckpts=1))\n"
            "custom_hooks = [dict(type='ExportCheckpointHook', out_name='toponet_fmnist', pictures=False)]\n" + extra)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Tiny data, the run config, a faulty variant of it, and one good 1-epoch run."""
    root = tmp_path_factory.mktemp('safety')
    data = make_fmnist(str(root / 'fmnist'), n_train=64, n_test=20)
    (root / 'run_faults.py').write_text(FAULTS)
    config = root / 'run.py'
    config.write_text(_config_text(data))
    faulty = root / 'faulty.py'
    faulty.write_text(_config_text(data, (
        "custom_imports = dict(imports=['classification', 'backbones.mmengine_optim', 'run_faults'],\n"
        "                      allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='ExportCheckpointHook', out_name='toponet_fmnist', pictures=False),\n"
        "                dict(type='PoisonWeightsHook'), dict(type='StallHook')]\n")))
    good = root / 'good'
    _train(root, config, good)
    assert all((good / name).is_file() for name in EXPORTS)
    return dict(root=root, config=config, faulty=faulty, good=good)


def _env(root, **extra):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([ROOT, os.path.join(ROOT, 'tests'), str(root), env.get('PYTHONPATH', '')])
    env['OMP_NUM_THREADS'] = '2'
    env['PYTHONWARNINGS'] = 'ignore'
    env.update(extra)
    return env


def _train(root, config, work_dir, *args, check=True, **env):
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'train_cls.py'), str(config), '--work-dir', str(work_dir), *args]
    result = subprocess.run(cmd, env=_env(root, **env), capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _copy_run(src, dst):
    """The good run in a work dir of its own (``last_checkpoint`` holds an absolute path)."""
    shutil.copytree(src, dst)
    (dst / 'last_checkpoint').write_text(str(dst / 'epoch_1.pth'))
    return dst


def _snapshot(work_dir):
    return {name: (work_dir / name).read_bytes() for name in EXPORTS}


def _assert_finite_loadable(path):
    from backbones.mmengine_runner import allow_mmengine_checkpoint_globals
    allow_mmengine_checkpoint_globals()
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    floats = {k: v for k, v in checkpoint['state_dict'].items() if v.is_floating_point()}
    assert floats and all(torch.isfinite(v).all() for v in floats.values()), path


def _tail(result):
    return result.stdout[-2000:] + result.stderr[-3000:]


def test_non_finite_loss_stops_training_and_keeps_the_good_export(setup, tmp_path):
    run = _copy_run(setup['good'], tmp_path / 'run')
    before = _snapshot(run)
    result = _train(setup['root'], setup['config'], run, '--cfg-options', 'optim_wrapper.optimizer.lr=1e12',
                    'train_cfg.max_epochs=2', check=False)
    assert result.returncode != 0, _tail(result)
    message = result.stderr.strip().splitlines()[-1]
    assert re.search(r'non-finite loss .*loss_cls=(nan|inf).*training iteration [12]\b', message), _tail(result)
    assert str(run / 'epoch_1.pth') in message  # where the run can continue from
    # nothing of the diverged state was written: export, topology and checkpoints are the old bytes
    assert _snapshot(run) == before
    assert not (run / 'epoch_2.pth').exists() and not (run / 'train.lock').exists()
    _assert_finite_loadable(run / 'epoch_1.pth')


def test_non_finite_weights_are_never_checkpointed_nor_rotate_the_good_one_away(setup, tmp_path):
    # the weights turn NaN in the last step of epoch 2 (iteration 4) while its loss is finite; with
    # max_keep_ckpts=1 mmengine's own hook deleted epoch_1.pth before writing epoch_2.pth
    run = _copy_run(setup['good'], tmp_path / 'run')
    before = _snapshot(run)
    result = _train(setup['root'], setup['faulty'], run, '--resume', '--cfg-options', 'train_cfg.max_epochs=2',
                    check=False, POISON_AT='4')
    assert result.returncode != 0, _tail(result)
    message = result.stderr.strip().splitlines()[-1]
    assert re.search(r'non-finite values .* in model tensor backbone\.\S+ .*epoch_2\.pth', message), _tail(result)
    assert _snapshot(run) == before
    assert not (run / 'epoch_2.pth').exists()
    assert (run / 'last_checkpoint').read_text() == str(run / 'epoch_1.pth')
    _assert_finite_loadable(run / 'epoch_1.pth')


def test_full_disk_is_one_error_and_leaves_no_half_written_checkpoint(setup, tmp_path):
    run = _copy_run(setup['good'], tmp_path / 'run')
    before = _snapshot(run)
    result = _train(setup['root'], setup['faulty'], run, '--resume', '--cfg-options', 'train_cfg.max_epochs=2',
                    check=False, FAULT='disk_full')
    assert result.returncode == 2, _tail(result)
    assert 'Traceback' not in result.stderr, _tail(result)
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith('error: cannot write the checkpoint: No space left on device'), _tail(result)
    assert str(run / 'epoch_2.pth') in message
    # no epoch_2.pth, no temporary file, and the previous checkpoint is still the one to resume from
    assert sorted(p.name for p in run.glob('*.pth*')) == ['epoch_1.pth']
    assert not list(run.glob('.*.tmp'))
    assert _snapshot(run) == before


def test_resume_skips_a_truncated_latest_checkpoint(setup, tmp_path):
    run = _copy_run(setup['good'], tmp_path / 'run')
    # what a crash in the middle of mmengine's own save leaves: a truncated epoch_2.pth, named
    # by last_checkpoint
    data = (run / 'epoch_1.pth').read_bytes()
    (run / 'epoch_2.pth').write_bytes(data[:len(data) // 2])
    (run / 'last_checkpoint').write_text(str(run / 'epoch_2.pth'))
    # asked for by name, the broken file is an error naming it
    named = _train(setup['root'], setup['config'], run, '--resume', str(run / 'epoch_2.pth'), check=False)
    assert named.returncode != 0
    assert re.search(r'cannot resume from this checkpoint: truncated or corrupt.*epoch_2\.pth',
                     named.stderr.strip().splitlines()[-1]), _tail(named)

    result = _train(setup['root'], setup['config'], run, '--resume', '--cfg-options', 'train_cfg.max_epochs=2')
    out = result.stdout + result.stderr
    assert re.search(r'not resuming from \S*epoch_2\.pth: truncated or corrupt.*resuming from \S*epoch_1\.pth', out)
    assert 'resumed epoch: 1, iter: 2' in out
    from backbones.checkpoint import read_checkpoint
    assert read_checkpoint(str(run / 'toponet_fmnist.safetensors')).meta['epoch'] == 2
    # the new epoch_2.pth replaced the broken one, then max_keep_ckpts=1 removed epoch_1.pth
    assert (run / 'last_checkpoint').read_text() == str(run / 'epoch_2.pth')
    assert not (run / 'epoch_1.pth').exists()
    _assert_finite_loadable(run / 'epoch_2.pth')


def test_second_run_in_a_work_dir_is_refused_and_a_dead_runs_lock_taken_over(setup, tmp_path, monkeypatch):
    run = tmp_path / 'run'
    log = tmp_path / 'first.log'
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'train_cls.py'), str(setup['faulty']), '--work-dir', str(run)]
    with open(log, 'w') as out:
        first = subprocess.Popen(cmd, env=_env(setup['root'], STALL_AT='1'), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        # the first run is training: its log file in the work dir (the console shows progress lines only)
        while not any('Epoch(train) [1][1/2]' in path.read_text() for path in run.glob('*/*.log')):
            assert first.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        result = _train(setup['root'], setup['config'], run, check=False)
        assert result.returncode != 0
        message = result.stderr.strip().splitlines()[-1]
        assert f'PID {first.pid} on host {socket.gethostname()}' in message, _tail(result)
        # refused before the Runner wrote anything: the first run's log folder is the only one
        assert len([p for p in run.iterdir() if p.is_dir()]) == 1
        # under torchrun only rank 0 takes (and checks) the lock
        from backbones.mmengine_runner import build_runner_cfg
        monkeypatch.setenv('RANK', '1')
        build_runner_cfg(CONFIG, str(run))
        monkeypatch.setenv('RANK', '0')
        with pytest.raises(InputError, match=f'PID {first.pid}'):
            build_runner_cfg(CONFIG, str(run))
    finally:
        first.kill()
        first.wait()
    # the killed run left its lock file behind: the next run takes it over, with a warning
    from backbones.mmengine_runner import WorkDirLock
    assert json.loads((run / 'train.lock').read_text())['pid'] == first.pid
    warnings = []
    lock = WorkDirLock(str(run))
    lock.acquire(warn=warnings.append)
    assert len(warnings) == 1 and f'stale lock {run / "train.lock"} of PID {first.pid}' in warnings[0]
    assert json.loads((run / 'train.lock').read_text())['pid'] == os.getpid()
    lock.release()
    assert not (run / 'train.lock').exists()


def test_resume_without_any_good_checkpoint_names_the_file(tmp_path):
    from backbones.mmengine_runner import find_resume_checkpoint
    torch.save({'meta': {}, 'state_dict': {'w': torch.tensor([float('inf')])}}, tmp_path / 'epoch_1.pth')
    (tmp_path / 'epoch_2.pth').write_bytes(b'PK\x03\x04 cut short')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_2.pth'))
    with pytest.raises(InputError) as info:
        find_resume_checkpoint(str(tmp_path))
    message = str(info.value)
    assert message.startswith(f'no checkpoint to resume from in {tmp_path} ({tmp_path / "epoch_2.pth"})')
    assert 'epoch_2.pth: truncated or corrupt' in message and 'epoch_1.pth: non-finite weights (w)' in message


def test_lock_written_on_another_host_is_refused(tmp_path):
    from backbones.mmengine_runner import WorkDirLock
    (tmp_path / 'train.lock').write_text(json.dumps(dict(pid=4242, host='elsewhere', started='yesterday')))
    with pytest.raises(InputError, match='PID 4242 on host elsewhere'):
        WorkDirLock(str(tmp_path)).acquire()


@pytest.mark.parametrize('option, nearest', [
    ('optim_wraper.optimizer.lr', 'optim_wrapper.optimizer.lr'),  # typo in the first component
    ('train_cfg.max_epoch', 'train_cfg.max_epochs'),  # near-miss of an existing key: not a new one
    ('model.backbone.alpha_trainabel', 'model.backbone.alpha_trainable'),
    ('custom_hooks.7.out_name', 'custom_hooks'),  # past the end of the list
])
def test_cfg_options_unknown_key_names_the_nearest(tmp_path, option, nearest):
    from backbones.mmengine_runner import build_runner_cfg
    with pytest.raises(InputError) as info:
        build_runner_cfg(CONFIG, str(tmp_path), {option: 100})
    assert f"unknown config key '{option}'" in str(info.value) and nearest in str(info.value)


@pytest.mark.parametrize('option, value, kind', [
    ('train_cfg.max_epochs', 'abc', 'a number'),
    ('train_cfg.max_epochs', [1, 2], 'a number'),
    ('optim_wrapper.optimizer.nesterov', 1, 'a bool'),
    ('model.backbone.name', 3, 'a string'),
    ('val_evaluator.topk', 1, 'a list'),
    ('optim_wrapper.optimizer.lr.value', 1, 'goes below optim_wrapper.optimizer.lr'),
])
def test_cfg_options_value_of_the_wrong_kind(tmp_path, option, value, kind):
    from backbones.mmengine_runner import build_runner_cfg
    with pytest.raises(InputError, match=re.escape(kind)):
        build_runner_cfg(CONFIG, str(tmp_path), {option: value})


def test_real_overrides_pass_and_every_run_gets_the_guards(tmp_path):
    from backbones.mmengine_runner import build_runner_cfg
    options = {
        'optim_wrapper.optimizer.lr': 1,  # an int where a float is
        'train_cfg.max_epochs': 3,
        'model.backbone.drop_path_rate': 0.1,  # constructor arguments the config leaves at their defaults
        'optim_wrapper.clip_grad.max_norm': 5.0,
        'default_hooks.checkpoint.save_best': 'auto',
        'env_cfg.mp_cfg.mp_start_method': 'fork',
        'model_wrapper_cfg.find_unused_parameters': True,  # a Runner setting the config does not have
        'load_from': None,
        'train_dataloader.dataset.transform': None,  # None switches a component off
        'custom_hooks.0.out_name': 'renamed',
        'val_evaluator.topk': (1, 5),
    }
    cfg = build_runner_cfg(CONFIG, str(tmp_path), options)
    assert cfg.optim_wrapper.optimizer.lr == 1 and cfg.optim_wrapper.clip_grad.max_norm == 5.0
    assert cfg.model.backbone.drop_path_rate == 0.1 and cfg.custom_hooks[0].out_name == 'renamed'
    assert cfg.train_dataloader.dataset.transform is None
    # the guards are added to whatever the config lists, and the checkpoint hook keeps its settings
    assert {'NonFiniteLossHook', 'WorkDirLockHook', 'ResumeCheckpointHook'} <= {h['type'] for h in cfg.custom_hooks}
    assert cfg.default_hooks.checkpoint.type == 'SafeCheckpointHook'
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 2 and cfg.default_hooks.checkpoint.save_best == 'auto'


def test_unwritable_work_dir_is_one_error_naming_it(tmp_path):
    from backbones.mmengine_runner import build_runner_cfg
    (tmp_path / 'file').write_text('not a folder')
    work_dir = str(tmp_path / 'file' / 'run')
    with pytest.raises(InputError, match=re.escape(f'the work dir is not writable: Not a directory ({work_dir})')):
        build_runner_cfg(CONFIG, work_dir)


def test_export_refuses_non_finite_weights_and_keeps_the_good_files(tmp_path):
    import timm

    import backbones  # noqa: F401
    from backbones.checkpoint import export_run, save_checkpoint
    kwargs = dict(num_classes=10, in_chans=1)
    model = timm.create_model('toponet_fmnist_complete', **kwargs)
    export_run(str(tmp_path), 'toponet', model, 'toponet_fmnist_complete', kwargs, pictures=False)
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(files) == {'toponet.safetensors', 'topology.json', 'topology.npz'}
    key = next(k for k in model.state_dict() if k.endswith('edge_weights'))
    with torch.no_grad():
        model.state_dict()[key].view(-1)[0] = float('nan')
    with pytest.raises(InputError, match=re.escape(key)):
        export_run(str(tmp_path), 'toponet', model, 'toponet_fmnist_complete', kwargs, pictures=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files
    with pytest.raises(InputError, match='non-finite'):
        save_checkpoint(str(tmp_path / 'other.safetensors'), model, 'toponet_fmnist_complete', kwargs)
    assert not (tmp_path / 'other.safetensors').exists()
