"""The command lines' shared conventions (backbones/cli.py, tools/*.py): every default in
--help, one error: line and exit status 2 for a user error, --device, --resume CKPT, results
printed on rank 0 only, and the analysis tools on any classification config."""
import argparse
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch

import backbones  # noqa: F401  (registers the models)
from backbones import cli
from backbones.checkpoint import read_checkpoint, save_checkpoint
from backbones.topology_export import save_topology_json, extract_topology
from tests.helpers.tiny_data import make_cifar100, make_fmnist, make_image_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST_CONFIG = os.path.join(ROOT, 'classification', 'configs', 'toponet_fmnist_adaptive.py')
IMAGENET_CONFIG = os.path.join(ROOT, 'classification', 'configs', 'toponet_imagenet_complete.py')
CIFAR_CONFIG = os.path.join(ROOT, 'classification', 'configs', 'resnet110_cifar100.py')
DET_CONFIG = os.path.join(ROOT, 'detection', 'configs', 'toy', 'retinanet_toponet-fmnist_fpn_toy.py')
FACE_CONFIG = os.path.join(ROOT, 'face', 'configs', 'toponet_face_toy.py')

# The tools of the suite that follow the conventions, and those among them that run a model.
TOOLS = ('train_cls', 'train_det', 'train_face', 'test_cls', 'test_det', 'eval_megaface', 'export_face_onnx',
         'demo_face', 'graph_damage', 'snapshot_eval', 'prune', 'analyze_topology', 'alpha_similarity',
         'make_toy_coco', 'toponet_report', 'benchmark', 'benchmark_megaface', 'reproduce', 'classify')
DEVICE_TOOLS = ('train_cls', 'train_det', 'train_face', 'test_cls', 'test_det', 'eval_megaface', 'demo_face',
                'graph_damage', 'snapshot_eval', 'prune', 'benchmark', 'classify')


def _tool(name):
    spec = importlib.util.spec_from_file_location(f'tool_{name}', os.path.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _exit_status(name, argv):
    """A tool's exit status in this process: its return value, or argparse's SystemExit."""
    try:
        return _tool(name).main([str(arg) for arg in argv])
    except SystemExit as stop:
        return stop.code


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]),
               OMP_NUM_THREADS='2', PYTHONWARNINGS='ignore')
    env.update(extra)
    return env


def _run(name, *args, **env):
    cmd = [sys.executable, os.path.join(ROOT, 'tools', f'{name}.py'), *map(str, args)]
    return subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=600, cwd=ROOT)


def _last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def _small_toponet(num_classes, in_chans):
    """toponet_fmnist_complete with 4-node stages (2 computing nodes each): quick to damage."""
    from backbones.graphs import complete_graph
    model = timm.create_model('toponet_fmnist_complete', num_classes=num_classes, in_chans=in_chans,
                              graphs=[complete_graph(4)] * 4)
    return _random_alpha(model).eval()


def _random_alpha(model, seed=0):
    """Distinct |alpha| per edge, so pruning by a fraction has something to rank."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for stage in model.stages:
            stage.edge_weights.copy_(torch.rand(stage.edge_weights.shape, generator=generator) + 0.05)
    return model


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """Inputs for the error cases: missing paths, malformed files, a classification
    checkpoint, a JPEG, a file that is not an image, tiny Fashion-MNIST data."""
    from PIL import Image
    root = tmp_path_factory.mktemp('cli')
    paths = {'root': root, 'missing_ckpt': str(root / 'nowhere' / 'model.safetensors'),
             'missing_config': str(root / 'nowhere' / 'config.py'), 'malformed_ckpt': str(root / 'broken.safetensors'),
             'malformed_json': str(root / 'broken.json'), 'not_image': str(root / 'notes.jpg'),
             'a_file': str(root / 'a_file.txt'), 'image': str(root / 'photo.jpg')}
    (root / 'broken.safetensors').write_bytes(b'this is not a safetensors file')
    (root / 'broken.json').write_text('{"stages": [')
    (root / 'notes.jpg').write_text('plain text, not a JPEG')
    (root / 'a_file.txt').write_text('x')
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (45, 60, 3), dtype=np.uint8)).save(paths['image'], format='JPEG')
    model = _random_alpha(timm.create_model('toponet_fmnist_complete', num_classes=10, in_chans=1))
    paths['ckpt'] = str(root / 'toponet_fmnist.safetensors')
    save_checkpoint(paths['ckpt'], model, 'toponet_fmnist_complete', dict(num_classes=10, in_chans=1))
    paths['fmnist'] = make_fmnist(str(root / 'fmnist'), n_train=128, n_test=32)
    return paths


def _fmnist_options(data, holdout=0):
    return ['--cfg-options', f'train_dataloader.dataset.root={data}', f'train_dataloader.dataset.holdout={holdout}',
            f'test_dataloader.dataset.root={data}']


# -- flags and --help -------------------------------------------------------------------------
@pytest.mark.parametrize('name', TOOLS)
def test_help_shows_every_flag_with_its_default(name):
    parser = _tool(name).build_parser()
    assert issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
    text = ' '.join(parser.format_help().split())
    flags = {flag for action in parser._actions for flag in action.option_strings}
    assert {'--debug', '--verbose'} <= flags
    if name in DEVICE_TOOLS:
        assert '--device' in flags
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
        if action.option_strings and action.default is not None:
            assert f'(default: {action.default})' in text, (name, action.dest)
        if 'default:' in action.help:  # a default described in words is not followed by argparse's own
            own = ' '.join(action.help.split())
            assert own in text and f'{own} (default:' not in text, (name, action.dest)


def test_help_through_the_command_line():
    result = _run('graph_damage', '--help')
    assert result.returncode == 0, result.stderr
    text = ' '.join(result.stdout.split())
    assert '(default: auto)' in text and '--cfg-options' in text and '(default: 100)' in text


def test_train_and_test_tools_share_the_mmdet_flags():
    for name in ('train_cls', 'train_det', 'train_face'):
        flags = {f for a in _tool(name).build_parser()._actions for f in a.option_strings}
        assert {'--work-dir', '--cfg-options', '--resume', '--auto-scale-lr', '--amp', '--launcher', '--local-rank',
                '--local_rank', '--device'} <= flags, name
    for name in ('test_cls', 'test_det'):
        flags = {f for a in _tool(name).build_parser()._actions for f in a.option_strings}
        assert {'--work-dir', '--cfg-options', '--out', '--tta', '--launcher', '--local-rank', '--device'} <= flags
    parser = _tool('train_cls').build_parser()
    assert parser.parse_args(['c.py', '--resume']).resume == 'auto'
    assert parser.parse_args(['c.py', '--resume', 'w/epoch_3.pth']).resume == 'w/epoch_3.pth'
    assert parser.parse_args(['c.py']).resume is None
    assert _tool('test_cls').build_parser().parse_args(['c.py', 'k.safetensors', '--flip']).tta  # the old name


def test_device_values(monkeypatch):
    assert cli.parse_device('cpu') == 'cpu' and cli.parse_device(' CPU ') == 'cpu'
    assert cli.resolve_device('cpu') == torch.device('cpu')
    for bad in ('gpu', 'cuda:x', 'cuda:-1', ''):
        with pytest.raises(argparse.ArgumentTypeError, match='expected cpu, cuda or cuda:N'):
            cli.parse_device(bad)
    if torch.cuda.device_count() <= 7:
        with pytest.raises(argparse.ArgumentTypeError, match='cuda:7'):
            cli.parse_device('cuda:7')


def test_device_on_the_command_line(files, capsys):
    assert _tool('classify').main([files['ckpt'], files['image'], '--device', 'cpu', '--topk', '2']) == 0
    assert len(_last_json(capsys.readouterr().out)['predictions'][0]['classes']) == 2
    if torch.cuda.device_count() > 7:
        pytest.skip('this machine has a cuda:7')
    result = _run('classify', files['ckpt'], files['image'], '--device', 'cuda:7')
    assert result.returncode == 2 and result.stdout == ''
    assert result.stderr.strip().count('\n') == 0 and result.stderr.startswith('error: ')
    assert 'cuda:7' in result.stderr and 'Traceback' not in result.stderr


# -- user errors ------------------------------------------------------------------------------
def _error_cases(f):
    mf = ['--facescrub-root', f['root'], '--facescrub-list', f['a_file'], '--megaface-root', f['root'],
          '--megaface-list', f['a_file']]
    return {
        'train_cls: missing config': ('train_cls', [f['missing_config']], 'config file not found'),
        'train_cls: missing --resume file': ('train_cls', [FMNIST_CONFIG, '--resume', f['missing_ckpt']],
                                             'checkpoint to resume from not found'),
        'train_cls: --auto-scale-lr without a base batch': (
            'train_cls', [FMNIST_CONFIG, '--auto-scale-lr', '--work-dir', str(f['root'] / 'lr')], 'base_batch_size'),
        'train_det: missing config': ('train_det', [f['missing_config']], 'config file not found'),
        'train_face: missing config': ('train_face', [f['missing_config']], 'config file not found'),
        'test_cls: missing checkpoint': ('test_cls', [FMNIST_CONFIG, f['missing_ckpt']], 'checkpoint not found'),
        'test_cls: malformed checkpoint': ('test_cls', [FMNIST_CONFIG, f['malformed_ckpt']], 'safetensors'),
        'test_cls: --out of an unknown type': ('test_cls', [FMNIST_CONFIG, f['ckpt'], '--out', 'x.csv'],
                                               '.json or .npz'),
        'test_det: missing checkpoint': ('test_det', [DET_CONFIG, f['missing_ckpt']], 'checkpoint not found'),
        'test_det: --out not a pickle': ('test_det', [DET_CONFIG, f['missing_ckpt'], '--out', 'x.json'], '.pkl'),
        'eval_megaface: missing checkpoint': ('eval_megaface', [f['missing_ckpt'], *mf], 'checkpoint not found'),
        'export_face_onnx: classification checkpoint': ('export_face_onnx', [f['ckpt']], 'face_toponet'),
        'demo_face: missing config': ('demo_face', ['--config', f['missing_config'], '--work-dir',
                                                    str(f['root'] / 'face')], 'config file not found'),
        'graph_damage: missing checkpoint': ('graph_damage', [FMNIST_CONFIG, f['missing_ckpt']],
                                             'checkpoint not found'),
        'graph_damage: missing config': ('graph_damage', [f['missing_config'], f['ckpt']], 'config.py'),
        'snapshot_eval: malformed snapshot': ('snapshot_eval', [FMNIST_CONFIG, '--snapshots', f['malformed_json'],
                                                                *_fmnist_options(f['fmnist'])], 'not valid JSON'),
        'prune: missing checkpoint': ('prune', [f['missing_ckpt'], '--threshold', '0.1'], 'checkpoint not found'),
        'prune: --per-stage without --keep-ratio': ('prune', [f['ckpt'], '--threshold', '0.1', '--per-stage'],
                                                    '--keep-ratio'),
        'prune: --eval-samples without --config': ('prune', [f['ckpt'], '--threshold', '0.1', '--eval-samples', '8'],
                                                   '--config'),
        'analyze_topology: malformed export': ('analyze_topology', [f['malformed_json'], '--out-dir',
                                                                    str(f['root'] / 'a')], 'not valid JSON'),
        'alpha_similarity: missing runs': ('alpha_similarity', [f['missing_ckpt'], f['missing_ckpt'] + '2'],
                                           'not found'),
        'make_toy_coco: root is a file': ('make_toy_coco', [f['a_file']], 'is a file'),
        'toponet_report: unknown model': ('toponet_report', ['--models', 'toponet_nope', '--out-dir',
                                                             str(f['root'] / 'r')], 'toponet_nope'),
        'benchmark: missing checkpoint': ('benchmark', ['--suites', 'prune', '--checkpoint', f['missing_ckpt']],
                                          'checkpoint not found'),
        'benchmark_megaface: bad size': ('benchmark_megaface', ['--probes', '0'], '--probes must be >= 1'),
        'reproduce: missing data': ('reproduce', ['--data-root', f['missing_config'], '--out-dir',
                                                  str(f['root'] / 'study')], 'not found'),
        'classify: missing image': ('classify', [f['ckpt'], f['missing_config'] + '.jpg'], 'image not found'),
        'classify: not an image': ('classify', [f['ckpt'], f['not_image']], 'cannot decode'),
        'classify: bad flag value': ('classify', [f['ckpt'], f['image'], '--device', 'tpu'], 'tpu'),
    }


ERROR_CASES = (
    'train_cls: missing config', 'train_cls: missing --resume file', 'train_cls: --auto-scale-lr without a base batch',
    'train_det: missing config', 'train_face: missing config', 'test_cls: missing checkpoint',
    'test_cls: malformed checkpoint', 'test_cls: --out of an unknown type', 'test_det: missing checkpoint',
    'test_det: --out not a pickle', 'eval_megaface: missing checkpoint', 'export_face_onnx: classification checkpoint',
    'demo_face: missing config', 'graph_damage: missing checkpoint', 'graph_damage: missing config',
    'snapshot_eval: malformed snapshot', 'prune: missing checkpoint', 'prune: --per-stage without --keep-ratio',
    'prune: --eval-samples without --config', 'analyze_topology: malformed export', 'alpha_similarity: missing runs',
    'make_toy_coco: root is a file', 'toponet_report: unknown model', 'benchmark: missing checkpoint',
    'benchmark_megaface: bad size', 'reproduce: missing data', 'classify: missing image', 'classify: not an image',
    'classify: bad flag value')


@pytest.mark.parametrize('case', ERROR_CASES)
def test_user_error_is_one_error_line_and_exit_2(files, case, capsys):
    cases = _error_cases(files)
    assert set(cases) == set(ERROR_CASES) and {c.split(':')[0] for c in ERROR_CASES} == set(TOOLS)  # every tool
    name, argv, expected = cases[case]
    capsys.readouterr()
    assert _exit_status(name, argv) == 2, case
    err = capsys.readouterr().err
    assert 'Traceback' not in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith('error: '), err
    assert expected in err, err


def test_error_line_and_debug_traceback_through_the_command_line(files):
    result = _run('test_cls', FMNIST_CONFIG, files['missing_ckpt'])
    assert result.returncode == 2
    assert result.stderr.strip() == f'error: checkpoint not found: {files["missing_ckpt"]}'
    result = _run('test_cls', FMNIST_CONFIG, files['missing_ckpt'], '--debug')
    assert result.returncode == 2
    assert 'Traceback' in result.stderr and result.stderr.strip().splitlines()[-1].startswith('error: checkpoint')


def test_bugs_keep_their_traceback():
    def bug(argv):
        raise KeyError('a bug')

    with pytest.raises(KeyError):
        cli.run_main(bug, [])

    def os_error(argv):
        open(os.path.join(os.sep, 'nowhere', 'at', 'all'))

    assert cli.run_main(os_error, []) == 2


# -- rank 0 prints ----------------------------------------------------------------------------
def test_results_print_on_rank_0_only(files, tmp_path, monkeypatch, capsys):
    argv = [files['ckpt'], '--out-dir', str(tmp_path / 'rank1')]
    monkeypatch.setenv('RANK', '1')
    assert _tool('analyze_topology').main(argv) == 0
    assert capsys.readouterr().out == ''
    assert (tmp_path / 'rank1' / 'graph_stats.json').is_file()  # the work is done, only the printing is not
    monkeypatch.setenv('RANK', '0')
    assert _tool('analyze_topology').main(argv) == 0
    result = _last_json(capsys.readouterr().out)
    assert result['out_dir'] == str(tmp_path / 'rank1') and len(result['near_zero_share']['learned']) == 4


def test_print_result_is_one_json_line(capsys, monkeypatch):
    monkeypatch.delenv('RANK', raising=False)
    cli.print_result({'top1': np.float32(0.5), 'sizes': (10, 100), 'array': np.arange(3)})
    out = capsys.readouterr().out
    assert out.count('\n') == 1 and json.loads(out) == {'top1': 0.5, 'sizes': [10, 100], 'array': [0, 1, 2]}


# -- defaults never write beside an input ------------------------------------------------------
def test_default_outputs_go_under_work_dirs(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _tool('analyze_topology').main([files['ckpt']]) == 0
    assert (tmp_path / 'work_dirs' / 'analyze_topology' / 'toponet_fmnist' / 'graph_stats.json').is_file()
    assert not (files['root'] / 'analysis').exists()


# -- --resume CKPT and the exported class names -----------------------------------------------
def test_resume_from_a_given_checkpoint_then_classify(files, tmp_path, capsys):
    data = files['fmnist']
    options = ['--cfg-options', f'train_dataloader.dataset.root={data}', 'train_dataloader.dataset.holdout=20',
               f'val_dataloader.dataset.root={data}', 'val_dataloader.dataset.holdout=20',
               f'test_dataloader.dataset.root={data}', 'train_dataloader.batch_size=54', 'train_cfg.val_interval=1',
               'default_hooks.logger.interval=1']
    first, second = tmp_path / 'first', tmp_path / 'second'
    result = _run('train_cls', FMNIST_CONFIG, '--work-dir', first, *options, 'train_cfg.max_epochs=1')
    assert result.returncode == 0, result.stderr[-3000:]
    assert _last_json(result.stdout) == {'work_dir': str(first), 'epoch': 1, 'iter': 2}
    # a fresh work dir, resumed from the other run's checkpoint: only epoch 2 is trained
    result = _run('train_cls', FMNIST_CONFIG, '--work-dir', second, '--resume', first / 'epoch_1.pth', *options,
                  'train_cfg.max_epochs=2')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'resumed epoch: 1' in result.stdout + result.stderr
    assert _last_json(result.stdout) == {'work_dir': str(second), 'epoch': 2, 'iter': 4}
    assert (second / 'epoch_2.pth').is_file() and not (second / 'epoch_1.pth').exists()
    ckpt = read_checkpoint(str(second / 'toponet_fmnist.safetensors'))
    from classification.datasets import FASHION_MNIST_CLASSES
    assert ckpt.meta['classes'] == list(FASHION_MNIST_CLASSES)  # written at export
    capsys.readouterr()
    assert _tool('classify').main([str(second / 'toponet_fmnist.safetensors'), files['image'], '--topk', '3']) == 0
    out = capsys.readouterr().out
    prediction = _last_json(out)['predictions'][0]
    assert len(prediction['classes']) == 3 and set(prediction['classes']) <= set(FASHION_MNIST_CLASSES)
    assert f"{files['image']}: {prediction['classes'][0]} " in out


# -- test_cls --out --tta ---------------------------------------------------------------------
def test_test_cls_dumps_top_k_predictions(files, tmp_path):
    from classification.datasets import FASHION_MNIST_CLASSES
    out = tmp_path / 'predictions.json'
    result = _run('test_cls', FMNIST_CONFIG, files['ckpt'], '--work-dir', tmp_path / 'test', '--tta', '--out', out,
                  '--topk', '3', '--cfg-options', f'test_dataloader.dataset.root={files["fmnist"]}')
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = _last_json(result.stdout)
    assert metrics['flip_test'] is True and metrics['out'] == str(out)
    dump = json.loads(out.read_text())
    assert dump['classes'] == list(FASHION_MNIST_CLASSES) and len(dump['predictions']) == 32
    for row in dump['predictions']:
        assert len(row['topk_indices']) == 3 and row['topk_scores'] == sorted(row['topk_scores'], reverse=True)
        assert row['topk_classes'] == [FASHION_MNIST_CLASSES[i] for i in row['topk_indices']]
    top1 = 100.0 * np.mean([row['topk_indices'][0] == row['label'] for row in dump['predictions']])
    assert metrics['cls/top1'] == pytest.approx(top1)  # the dump holds the predictions that were scored


# -- analysis tools on ImageNet-folder and CIFAR configs ---------------------------------------
def _loader_options(root, *extra):
    return ['--cfg-options', *[f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
                               for key in (f'dataset.root={root}', 'num_workers=0', 'persistent_workers=False',
                                           *extra)]]


def test_graph_damage_on_an_image_folder_config(tmp_path):
    """ImageNet layout (root/val/<wnid>/*.JPEG) through the ImageNet config: the baseline is
    the checkpoint's accuracy on the val images, normalised with the config's mean and std."""
    from PIL import Image
    root = make_image_folder(str(tmp_path / 'imagenet'), per_class=3, size=(32, 32))
    model = _small_toponet(num_classes=2, in_chans=3)
    ckpt = str(tmp_path / 'folder.safetensors')
    save_checkpoint(ckpt, model, 'toponet_fmnist_complete', dict(num_classes=2, in_chans=3))
    out = tmp_path / 'damage'
    assert _tool('graph_damage').main([IMAGENET_CONFIG, ckpt, '--skip', 'edges', '--out-dir', str(out),
                                       *_loader_options(root, 'transform=None')]) == 0
    nodes = json.loads((out / 'node_damage.json').read_text())
    assert nodes['eval_samples'] == 6 and len(nodes['nodes']) == 4 * 2
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    correct = 0
    for label, wnid in enumerate(sorted(os.listdir(os.path.join(root, 'val')))):
        for name in sorted(os.listdir(os.path.join(root, 'val', wnid))):
            image = np.array(Image.open(os.path.join(root, 'val', wnid, name)).convert('RGB'))
            x = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - mean) / std
            with torch.no_grad():
                correct += int(model(x[None]).argmax(1).item() == label)
    assert nodes['baseline'] == pytest.approx(100.0 * correct / 6)


def test_snapshots_and_damage_on_a_cifar_config(tmp_path):
    """CIFAR-100's python pickles through the CIFAR config, with --cfg-options choosing a
    smaller search network than the config's ResNet-110."""
    root = os.path.dirname(make_cifar100(str(tmp_path / 'cifar'), n_train=40, n_test=20))
    out = tmp_path / 'snapshots'
    assert _tool('snapshot_eval').main([CIFAR_CONFIG, '--search-iters', '2', '--snapshot-at', '0', '2',
                                        '--train-iters', '1', '--batch-size', '8', '--out-dir', str(out),
                                        *_loader_options(root), 'model.backbone.name=resnet20_cifar']) == 0
    result = json.loads((out / 'snapshot_accuracy.json').read_text())
    assert result['model'] == 'resnet20_cifar' and result['eval_samples'] == 20
    assert [r['iteration'] for r in result['rows']] == [0, 2] and result['sparsity'] == 'none'
    assert (out / 'snapshots' / 'iter_2.json').is_file()
    ckpt = str(tmp_path / 'cifar.safetensors')
    save_checkpoint(ckpt, _small_toponet(num_classes=100, in_chans=3), 'toponet_fmnist_complete',
                    dict(num_classes=100, in_chans=3))
    damage = tmp_path / 'damage'
    assert _tool('graph_damage').main([CIFAR_CONFIG, ckpt, '--skip', 'nodes', '--fractions', '0.3',
                                       '--retrain-iters', '1', '--batch-size', '8', '--eval-samples', '10',
                                       '--out-dir', str(damage), *_loader_options(root)]) == 0
    edges = json.loads((damage / 'edge_damage.json').read_text())
    assert edges['eval_samples'] == 10 and not (damage / 'node_damage.json').exists()
    assert edges['rows'][0]['fraction_pruned'] >= 0.3 and 'accuracy_retrained' in edges['rows'][0]
    # a model that does not fit the data is refused with one error line
    small = str(tmp_path / 'ten_classes.safetensors')
    save_checkpoint(small, timm.create_model('toponet_fmnist_complete', num_classes=10, in_chans=3),
                    'toponet_fmnist_complete', dict(num_classes=10, in_chans=3))
    assert _tool('graph_damage').main([CIFAR_CONFIG, small, '--out-dir', str(damage), *_loader_options(root)]) == 2


def test_prune_scores_on_a_config(tmp_path):
    root = os.path.dirname(make_cifar100(str(tmp_path / 'cifar'), n_train=4, n_test=20))
    model = _small_toponet(num_classes=100, in_chans=3)
    ckpt = str(tmp_path / 'cifar.safetensors')
    save_checkpoint(ckpt, model, 'toponet_fmnist_complete', dict(num_classes=100, in_chans=3))
    out = tmp_path / 'pruned'
    assert _tool('prune').main([ckpt, '--keep-ratio', '0.8', '--criterion', 'relative', '--no-export',
                                '--bench-batch', '2', '--bench-runs', '3', '--bench-warmup', '0', '--device', 'cpu',
                                '--eval-samples', '12', '--config', CIFAR_CONFIG, '--out-dir', str(out),
                                *_loader_options(root)]) == 0
    report = json.loads((out / 'prune_report.json').read_text())
    assert report['eval_samples'] == 12 and report['cpu_timing']['device'] == 'cpu'
    from classification.damage import load_config_data
    data = load_config_data(CIFAR_CONFIG, {'test_dataloader.dataset.root': root, 'test_dataloader.num_workers': 0},
                            eval_samples=12, train=False)
    mean = torch.tensor([0.5071, 0.4865, 0.4409]).view(1, 3, 1, 1)
    std = torch.tensor([0.2673, 0.2564, 0.2762]).view(1, 3, 1, 1)
    correct = 0
    with torch.no_grad():
        for batch in data.test_loader:
            logits = model((batch['inputs'].float() / 255 - mean) / std)
            correct += int((logits.argmax(1) == batch['labels']).sum())
    assert report['accuracy_before'] == pytest.approx(100.0 * correct / 12)


def test_analysis_results_end_with_a_json_line(files, tmp_path, capsys):
    stages = extract_topology(timm.create_model('toponet_fmnist_complete', num_classes=10, in_chans=1))
    export = str(tmp_path / 'topology.json')
    save_topology_json(stages, export)
    out = tmp_path / 'sim'
    capsys.readouterr()
    assert _tool('alpha_similarity').main([f'a={export}', f'b={files["ckpt"]}', '--out-dir', str(out)]) == 0
    result = _last_json(capsys.readouterr().out)
    saved = json.loads((out / 'similarity.json').read_text())
    assert result['runs'] == ['a', 'b'] and result['out_dir'] == str(out)
    assert result['mean_cosine'] == [stage['mean_cosine'] for stage in saved['stages']]
