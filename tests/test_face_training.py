"""The face pipeline through its command lines on a tiny toy set: training on mmengine's
Runner (verification hook, shared checkpoint, resume), then MegaFace-style evaluation
with the cleaned lists and devkit feature files."""
import json
import os
import re

import numpy as np
import pytest

from face.toy_data import make_toy_face_data


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('toy_face'))
    make_toy_face_data(root, train_identities=6, images_per_identity=4, verification_pairs=10, probe_identities=3,
                       images_per_probe=3, distractors=15, progress=False)
    return root


def _train(toy, work_dir, iters, resume=False):
    from tools.train_face import main
    assert main(_train_argv(toy, work_dir, iters) + (['--resume'] if resume else [])) == 0


def _train_argv(toy, work_dir, iters):
    opts = [f'train_dataloader.dataset.root={toy}/train', 'train_dataloader.dataset.num_classes=6',
            'model.head.num_classes=6', 'train_dataloader.batch_size=8', f'train_cfg.max_iters={iters}',
            f'custom_hooks.0.bins=[{toy}/train/toy_val.bin]', 'custom_hooks.0.interval=2',
            'custom_hooks.1.interval=2', 'default_hooks.checkpoint.interval=2', 'param_scheduler.0.end=1',
            'param_scheduler.1.begin=1', f'param_scheduler.1.end={iters}']
    return ['face/configs/toponet_face_toy.py', '--work-dir', work_dir, '--cfg-options', *opts]


def _train_in_subprocess(toy, work_dir, iters, resume=False):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = [sys.executable, os.path.join(root, 'tools', 'train_face.py'), *_train_argv(toy, work_dir, iters)]
    proc = subprocess.run(argv + (['--resume'] if resume else []), capture_output=True, text=True, cwd=root,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_corrupt_verification_set_stops_the_run_before_the_first_iteration(toy, tmp_path):
    from mmengine.runner import Runner
    from backbones.mmengine_runner import build_runner_cfg
    corrupt = tmp_path / 'corrupt_val.bin'
    corrupt.write_bytes(open(f'{toy}/train/toy_val.bin', 'rb').read()[:200])  # a truncated pickle
    options = {'train_dataloader.dataset.root': f'{toy}/train', 'train_dataloader.dataset.num_classes': 6,
               'model.head.num_classes': 6, 'train_dataloader.batch_size': 8, 'train_cfg.max_iters': 4,
               'custom_hooks.0.bins': [str(corrupt)], 'custom_hooks.0.interval': 2}
    runner = Runner.from_cfg(build_runner_cfg('face/configs/toponet_face_toy.py', str(tmp_path / 'run'), options))
    with pytest.raises(ValueError, match=re.escape(str(corrupt))):
        runner.train()
    assert runner.iter == 0  # not at the first evaluation (iteration 2)


def test_toy_data_in_real_formats(toy):
    from face.recordio import FaceRecordSet
    from face.verification import load_verification_bin
    from face.align import load_aligned, read_landmarks
    records = FaceRecordSet(f'{toy}/train')
    assert len(records) == 24 and records.num_classes == 6 and len(records.identity_ranges) == 6
    images, issame = load_verification_bin(f'{toy}/train/toy_val.bin')
    assert images.shape == (20, 112, 112, 3) and issame.sum() == 5
    listing = json.load(open(f'{toy}/megaface/facescrub_features_list.json'))
    assert len(listing['path']) == 9 and listing['id'][0] == 'Person_000'
    first = f"{toy}/megaface/facescrub/{listing['path'][0]}"
    assert read_landmarks(first + '.json').shape == (5, 2)
    assert load_aligned(first).shape == (112, 112, 3)


def test_train_resume_and_evaluate(toy, tmp_path):
    from backbones.checkpoint import read_checkpoint
    from face.megaface import read_feature_file
    from tools.eval_megaface import main as eval_main
    work = str(tmp_path / 'run')
    _train(toy, work, 2)
    ckpt = os.path.join(work, 'toponet_face_toy.safetensors')
    meta = read_checkpoint(ckpt).meta
    assert meta['iter'] == 2 and meta['task'] == 'face'
    acc = meta['verification']['results']['toy_val']['accuracy']
    assert 0.0 <= acc <= 100.0
    assert os.path.isfile(os.path.join(work, 'adjacency.png'))
    # the resumed run in its own process: in this one, mmengine may hand it a logger created
    # earlier (loggers are named by the second a run starts), whose file and console are not its own
    proc = _train_in_subprocess(toy, work, 4, resume=True)  # continues from iteration 2
    assert read_checkpoint(ckpt).meta['iter'] == 4
    assert 'resumed epoch: 0, iter: 2' in proc.stdout, proc.stdout[-2000:]

    mf = f'{toy}/megaface'
    out = str(tmp_path / 'mf')
    assert eval_main([ckpt, '--facescrub-root', f'{mf}/facescrub', '--facescrub-list',
                      f'{mf}/facescrub_features_list.json', '--megaface-root', f'{mf}/megaface',
                      '--megaface-list', f'{mf}/megaface_features_list.json', '--facescrub-noises',
                      f'{mf}/facescrub_noises.txt', '--megaface-noises', f'{mf}/megaface_noises.txt',
                      '--sizes', '10', '100', '--far', '0.01', '--feature-dir', str(tmp_path / 'feat'),
                      '--out-dir', out]) == 0
    res = json.load(open(f'{out}/megaface.json'))
    # the list's 15 entries hold size 10, not 100 (sizes count entries; 9 of the 10 are clean)
    assert list(res['rank1']) == ['10'] and res['removed_distractors'] == 1 and res['replaced_probes'] == 1
    assert res['num_pairs'] == 3 * 3 * 2
    assert os.path.isfile(f'{out}/cmc.png')
    assert res['scored'] == {'10': 9}
    # one feature folder per set, keyed by the checkpoint's and the list's content
    folder, = [d for d in os.listdir(tmp_path / 'feat') if d.startswith('facescrub_')]
    feature = read_feature_file(str(tmp_path / 'feat' / folder / 'Person_000' / 'Person_000_0.png_toponet.bin'))
    assert feature.shape == (128,) and abs(np.linalg.norm(feature) - 1) < 1e-5
