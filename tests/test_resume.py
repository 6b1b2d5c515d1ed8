"""A run killed at a checkpoint and resumed with --resume ends with the same weights, bit for
bit, as the uninterrupted run: with each task's shipped augmentation on, through the real
command lines (classification also with two persistent data-loader workers, and under
torchrun with two processes)."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(threads):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([ROOT, os.path.join(ROOT, 'tests'), env.get('PYTHONPATH', '')])
    env['OMP_NUM_THREADS'] = str(threads)
    env['PYTHONWARNINGS'] = 'ignore'
    return env


def _command(tool, config, work_dir, options, resume=False, launcher=(sys.executable,)):
    return [*launcher, os.path.join(ROOT, 'tools', tool), config, '--work-dir', str(work_dir),
            *(['--resume'] if resume else []), '--cfg-options', *options]


def _run(cmd, threads):
    result = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _process_tree(pid):
    """``pid`` and its descendants (torchrun's workers are not in its process group)."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    parent = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def _kill_after(cmd, work_dir, checkpoint, threads):
    """Start a run and SIGKILL it (all its processes) as soon as ``checkpoint`` is its latest."""
    proc = subprocess.Popen(cmd, env=_env(threads), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = work_dir / 'last_checkpoint'
    deadline = time.time() + 300
    try:
        while not (marker.is_file() and marker.read_text().strip().endswith(checkpoint)):
            if proc.poll() is not None:
                pytest.fail(f'the run ended (status {proc.returncode}) before {checkpoint} was written')
            if time.time() > deadline:
                pytest.fail(f'{checkpoint} was not written in time')
            time.sleep(0.02)
    finally:
        for pid in _process_tree(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()


def _load(path):
    from backbones.mmengine_runner import allow_mmengine_checkpoint_globals
    allow_mmengine_checkpoint_globals()
    return torch.load(str(path), map_location='cpu', weights_only=True)


def _assert_bit_identical(reference, resumed):
    a, b = _load(reference)['state_dict'], _load(resumed)['state_dict']
    assert a.keys() == b.keys()
    different = [key for key in a if not torch.equal(a[key], b[key])]
    assert not different, f'{len(different)} of {len(a)} tensors differ, e.g. {different[:5]}'


def _kill_and_resume(tool, config, tmp_path, options, kill_at, final, launcher=(sys.executable,), threads=2):
    """Uninterrupted run, then a run killed once ``kill_at`` is written and resumed; both
    must end with ``final`` holding the same tensors."""
    reference, killed = tmp_path / 'uninterrupted', tmp_path / 'killed'
    _run(_command(tool, config, reference, options, launcher=launcher), threads)
    _kill_after(_command(tool, config, killed, options, launcher=launcher), killed, kill_at, threads)
    assert not (killed / final).exists(), 'the run must really be cut short'
    _run(_command(tool, config, killed, options, resume=True, launcher=launcher), threads)
    logs = [open(os.path.join(folder, name)).read() for folder, _, names in os.walk(killed) for name in names
            if name.endswith('.log')]
    assert any('resumed epoch: ' in text for text in logs)
    _assert_bit_identical(reference / final, killed / final)


@pytest.fixture(scope='module')
def fmnist(tmp_path_factory):
    from helpers.tiny_data import make_fmnist
    return make_fmnist(str(tmp_path_factory.mktemp('fmnist')), n_train=126, n_test=50)


CLS_CONFIG = os.path.join(ROOT, 'classification', 'configs', 'toponet_fmnist_adaptive.py')


def _cls_options(data, batch_size, workers=0):
    # the demo config's crop + flip, validation after every epoch (its draws must not leak into
    # the training stream) on 30 held-out images, 3 epochs of 3 iterations over the other 96
    options = [f'{loader}.dataset.root={data}' for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    return options + ['train_dataloader.dataset.holdout=30', 'val_dataloader.dataset.holdout=30',
                      f'train_dataloader.batch_size={batch_size}', 'train_cfg.max_epochs=3', 'train_cfg.val_interval=1',
                      'custom_hooks.0.pictures=False', f'train_dataloader.num_workers={workers}',
                      f'train_dataloader.persistent_workers={workers > 0}', 'default_hooks.checkpoint.max_keep_ckpts=3']


@pytest.mark.parametrize('workers', [0, 2], ids=['main_process', 'two_persistent_workers'])
def test_classification_resume_is_bit_identical(tmp_path, fmnist, workers):
    _kill_and_resume('train_cls.py', CLS_CONFIG, tmp_path, _cls_options(fmnist, 32, workers), 'epoch_1.pth',
                     'epoch_3.pth')


def test_classification_resume_under_torchrun_is_bit_identical(tmp_path, fmnist):
    # two processes (gloo on CPU), 16 images each per step: every rank restores its own generators
    launcher = (sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29541')
    _kill_and_resume('train_cls.py', CLS_CONFIG, tmp_path, _cls_options(fmnist, 16), 'epoch_1.pth', 'epoch_3.pth',
                     launcher=launcher, threads=1)


def test_face_resume_is_bit_identical(tmp_path_factory, tmp_path):
    # iteration-based: the resumed loop replays the 4 trained iterations (re-running the random
    # flips) before it continues; the head's dropout draws from torch's generator
    from face.toy_data import make_toy_face_data
    toy = str(tmp_path_factory.mktemp('toy_face'))
    make_toy_face_data(toy, train_identities=6, images_per_identity=4, verification_pairs=10, probe_identities=2,
                       images_per_probe=2, distractors=3, progress=False)
    config = os.path.join(ROOT, 'face', 'configs', 'toponet_face_toy.py')
    options = [f'train_dataloader.dataset.root={toy}/train', 'train_dataloader.dataset.num_classes=6',
               'model.head.num_classes=6', 'model.backbone.dropout=0.2', 'train_dataloader.batch_size=8',
               'train_cfg.max_iters=8', f'custom_hooks.0.bins=[{toy}/train/toy_val.bin]', 'custom_hooks.0.interval=3',
               'custom_hooks.1.interval=8', 'default_hooks.checkpoint.interval=2', 'param_scheduler.0.end=1',
               'param_scheduler.1.begin=1', 'param_scheduler.1.end=8']
    _kill_and_resume('train_face.py', config, tmp_path, options, 'iter_4.pth', 'iter_8.pth')


def test_detection_resume_is_bit_identical(tmp_path_factory, tmp_path):
    # the toy demo pipeline (RandomFlip), 3 epochs of 2 iterations, killed after the first
    import timm

    import backbones  # noqa: F401
    from backbones.checkpoint import save_checkpoint
    from tools.make_toy_coco import main as make_toy_coco
    root = tmp_path_factory.mktemp('det')
    data = str(root / 'toy') + '/'
    assert make_toy_coco([data, '--num-train', '8', '--num-val', '4', '--image-size', '64', '--min-size', '12',
                          '--max-size', '28']) == 0
    checkpoint = str(root / 'fmnist.safetensors')
    save_checkpoint(checkpoint, timm.create_model('toponet_fmnist_complete', num_classes=10, in_chans=1),
                    'toponet_fmnist_complete', dict(num_classes=10, in_chans=1))
    config = os.path.join(ROOT, 'detection', 'configs', 'toy', 'retinanet_toponet-fmnist_fpn_toy.py')
    options = [f'model.backbone.init_cfg.checkpoint={checkpoint}', 'train_cfg.max_epochs=3', 'train_cfg.val_begin=100',
               'default_hooks.checkpoint.max_keep_ckpts=3']
    options += [f'{loader}.dataset.data_root={data}' for loader in ('train_dataloader', 'val_dataloader',
                                                                    'test_dataloader')]
    options += [f'{evaluator}.ann_file={data}annotations/instances_val.json' for evaluator in ('val_evaluator',
                                                                                              'test_evaluator')]
    _kill_and_resume('train_det.py', config, tmp_path, options, 'epoch_1.pth', 'epoch_3.pth')


def test_worker_seeds_follow_seed_epoch_rank_and_worker():
    from backbones.resume_state import WorkerSeeder, seed_worker

    def draws(*key):
        seed_worker(*key)
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]

    base = draws(0, 1, 0, 1)
    assert draws(0, 1, 0, 1) == base  # deterministic
    for other in [(1, 1, 0, 1), (0, 2, 0, 1), (0, 1, 1, 1), (0, 1, 0, 0)]:  # each part of the key matters
        assert all(x != y for x, y in zip(draws(*other), base)), other
    torch_draws = base[0]
    seeder = WorkerSeeder(seed=0, rank=0)
    seeder.epoch = 1
    seeder(1)
    assert torch.rand(3).tolist() == torch_draws


def test_random_state_round_trip_loads_with_weights_only(tmp_path):
    from backbones.errors import InputError
    from backbones.resume_state import capture_random_state, restore_random_state
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    np.random.normal()  # leaves a cached Gaussian in numpy's state
    state = capture_random_state()
    expected = torch.rand(4), np.random.normal(size=4), random.random()
    torch.save(dict(resume_state=state), tmp_path / 'state.pth')
    loaded = torch.load(tmp_path / 'state.pth', weights_only=True)['resume_state']
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    restore_random_state(loaded)
    again = torch.rand(4), np.random.normal(size=4), random.random()
    assert torch.equal(again[0], expected[0]) and np.array_equal(again[1], expected[1]) and again[2] == expected[2]
    with pytest.raises(InputError, match='malformed'):
        restore_random_state(dict(loaded, numpy_keys=None))
