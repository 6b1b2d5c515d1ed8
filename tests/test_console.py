"""What a user sees: a quiet console (progress, warnings, results) with the full mmengine log
in the run's work dir, everything on the console with --verbose, bars that never share a
line with a log message on a terminal and no carriage returns anywhere else, and the
summary table that ends make demo."""
import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
import uuid

import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel

from backbones import cli, console
from helpers.tiny_data import make_fmnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST_CONFIG = os.path.join(ROOT, 'classification', 'configs', 'toponet_fmnist_adaptive.py')


# -- a tiny mmengine run in this process ----------------------------------------------------------
class _Regression(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.linear(inputs).squeeze(1)
        if mode == 'loss':
            return {'loss': torch.nn.functional.mse_loss(out, labels)}
        if mode == 'predict':
            return list(zip(out, labels))
        return out


class _Points(torch.utils.data.Dataset):
    metainfo = dict(classes=('y',))

    def __len__(self):
        return 8

    def __getitem__(self, i):
        x = torch.tensor([i / 8, 1 - i / 8])
        return dict(inputs=x, labels=2 * x[0] - x[1])


class _SquaredError(BaseMetric):
    default_prefix = 'toy'

    def process(self, data_batch, data_samples):
        self.results += [float((p - t) ** 2) for p, t in data_samples]

    def compute_metrics(self, results):
        return {'mse': sum(results) / len(results)}


class _Warns(Hook):
    """Logs one warning that matters and one mmengine notice nobody can act on, mid-epoch."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter == 1:
            runner.logger.warning('the toy warning that matters')
            runner.logger.warning('"FileClient" will be deprecated in future. Please use io functions')


def _train_tiny_run(work_dir, epochs=2):
    """Train the toy regression with mmengine's Runner and the project's console; returns the
    runner (its log file: ``runner.logger.log_file``)."""
    from mmengine.runner import Runner

    from backbones.mmengine_hooks import ProgressBarHook
    console.install()
    loader = dict(dataset=_Points(), sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2,
                  collate_fn=dict(type='default_collate'))
    runner = Runner(model=_Regression(), work_dir=str(work_dir), experiment_name=f'console-{uuid.uuid4().hex}',
                    train_dataloader=loader, val_dataloader=loader, val_evaluator=[_SquaredError()],
                    train_cfg=dict(by_epoch=True, max_epochs=epochs, val_interval=1), val_cfg=dict(),
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                    param_scheduler=dict(type='ConstantLR', factor=1.0, by_epoch=False),
                    default_hooks=dict(logger=dict(type='LoggerHook', interval=1)),
                    custom_hooks=[ProgressBarHook(lines=4), _Warns()])
    runner.train()
    return runner


@pytest.fixture
def quiet(monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    monkeypatch.setattr(console, '_verbose', None)


def test_quiet_console_shows_progress_warnings_and_results_and_the_log_file_keeps_everything(
        tmp_path, quiet, capsys):
    runner = _train_tiny_run(tmp_path)
    out = capsys.readouterr().out
    log = open(runner.logger.log_file).read()
    # what mmengine logs goes to the run's log file ...
    for text in ('System environment', 'Hooks will be executed in the following order',
                 'Epoch(train) [1][1/4]', 'Epoch(val) [2][4/4]', '"FileClient" will be deprecated'):
        assert text in log, text
        # ... and not to the console
        assert text not in out, text
    lines = out.splitlines()
    # the console: one line where training starts, its progress every quarter, the
    # validation results, the warning that matters
    assert lines[0].startswith('training: 8 iterations (2 epochs); logs in ')
    progress = [line for line in lines if line.startswith('train ')]
    assert [line.split(' | ')[0] for line in progress] == [
        'train  25% 2/8', 'train  50% 4/8', 'train  75% 6/8', 'train 100% 8/8']
    assert all(' | epoch ' in line and ' | loss ' in line and ' | lr 0.1 | ' in line and ' it/s' in line
               for line in progress)
    assert 'ETA' in progress[0] and 'ETA' not in progress[-1]
    assert sum(line.startswith('validation after epoch ') and 'toy/mse ' in line for line in lines) == 2
    assert 'warning: the toy warning that matters' in lines
    assert len(lines) == 1 + 4 + 2 + 1
    # the console is not a terminal here: no bar, no carriage return
    assert '\r' not in out


def test_verbose_puts_everything_on_the_console(tmp_path, quiet, capsys):
    args = cli.make_parser('a tool').parse_args(['--verbose'])  # what every tool's --verbose does
    try:
        assert args.verbose and console.is_verbose() and os.environ[console.VERBOSE_ENV] == '1'
        _train_tiny_run(tmp_path, epochs=1)
        out = capsys.readouterr().out
    finally:
        console.set_verbose(False)
    for text in ('System environment', 'Hooks will be executed in the following order',
                 'Epoch(train) [1][1/4]', '"FileClient" will be deprecated', 'the toy warning that matters'):
        assert text in out, text


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_log_lines_never_share_a_line_with_a_bar(tmp_path, quiet, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, 'stdout', terminal)
    monkeypatch.setattr(sys, 'stderr', terminal)
    _train_tiny_run(tmp_path)
    out = terminal.getvalue()
    assert '\rtrain:' in out  # a bar is drawn
    assert 'train  25% 2/8' not in out  # instead of progress lines
    for message in ('warning: the toy warning that matters', 'validation after epoch 1: toy/mse'):
        before = out[:out.index(message)]
        # what precedes the message on its line, after the bar was cleared (carriage return)
        assert before.rsplit('\n', 1)[-1].rsplit('\r', 1)[-1].strip() == '', repr(before[-200:])


def test_console_filter_rules(quiet):
    def record(message, level=logging.INFO, **extra):
        rec = logging.LogRecord('mmengine', level, __file__, 1, message, None, None)
        rec.__dict__.update(extra)
        return rec

    keep = console.ConsoleFilter()
    assert not keep.filter(record('Epoch(train) [1][10/844]  lr: 1.0e-01'))
    assert keep.filter(record('exported x.safetensors', **console.CONSOLE))
    assert keep.filter(record('resumed epoch: 3, iter: 2532'))
    assert keep.filter(record('not resuming from epoch_2.pth: truncated', logging.WARNING))
    assert not keep.filter(record('"HardDiskBackend" is the alias of "LocalBackend"', logging.WARNING))
    assert keep.filter(record('"HardDiskBackend" is the alias of "LocalBackend"', logging.ERROR))
    assert console.ConsoleFilter(verbose=True).filter(record('Epoch(train) [1][10/844]'))


# -- the real command lines, off a terminal ---------------------------------------------------------
def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([ROOT, env.get('PYTHONPATH', '')])
    env['OMP_NUM_THREADS'] = '1'
    env.pop(console.VERBOSE_ENV, None)
    env.pop('PYTHONWARNINGS', None)  # the tools' own warning filters are under test
    return env


def test_train_and_test_tools_print_a_few_lines_and_no_carriage_returns(tmp_path):
    data = make_fmnist(str(tmp_path / 'fmnist'), n_train=96, n_test=40)
    options = [f'train_dataloader.dataset.root={data}', 'train_dataloader.dataset.holdout=20',
               f'val_dataloader.dataset.root={data}', 'val_dataloader.dataset.holdout=20',
               f'test_dataloader.dataset.root={data}', 'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1']
    run = tmp_path / 'run'
    train = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'train_cls.py'), FMNIST_CONFIG,
                            '--work-dir', str(run), '--cfg-options', *options],
                           env=_env(), capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    test = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'test_cls.py'), FMNIST_CONFIG,
                           str(run / 'toponet_fmnist.safetensors'), '--work-dir', str(tmp_path / 'test'),
                           '--cfg-options', f'test_dataloader.dataset.root={data}'],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]
    for result in (train, test):
        assert '\r' not in result.stdout + result.stderr
        assert result.stderr == ''  # no library warnings (pkg_resources, deprecations)
    lines = train.stdout.splitlines()
    assert sum(line.startswith('train ') and ' | loss ' in line for line in lines) == 2  # 2 iterations
    assert json.loads(lines[-1])['iter'] == 2
    assert len(lines) <= 8, train.stdout
    # test_cls: its accuracy and the JSON line
    lines = test.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith('test cls/top1 (single view): ')
    assert 'cls/top1' in json.loads(lines[-1])
    # the full logs are in the work dirs
    (train_log,) = run.glob('*/*.log')
    (test_log,) = (tmp_path / 'test').glob('*/*.log')
    assert 'Config:' in train_log.read_text() and 'Epoch(train) [1][2/2]' in train_log.read_text()
    assert 'Config:' in test_log.read_text() and 'Epoch(test)' in test_log.read_text()


# -- the make demo summary -----------------------------------------------------------------------
def _demo_summary():
    spec = importlib.util.spec_from_file_location('demo_summary', os.path.join(ROOT, 'tools', 'demo_summary.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path, text='x'):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return path


def test_summary_rows_per_task_from_the_step_records(tmp_path):
    demo = _demo_summary()
    d = str(tmp_path)
    ckpt = _write(f'{d}/fmnist/toponet_fmnist.safetensors')
    _write(f'{d}/fmnist/adjacency.png')
    log = _write(f'{d}/fmnist/20260101_000000/20260101_000000.log')
    face_ckpt = _write(f'{d}/face/train/toponet_face_toy.safetensors')
    onnx = _write(f'{d}/face/toponet_face_toy.onnx')
    records = [
        dict(task='face', step='demo', wall_s=80.0, status=0,
             result=dict(checkpoint=face_ckpt, verification={'toy_val': 80.0}, rank1={'10': 64.0, '1000': 6.5},
                         cmc=f'{d}/face/megaface/cmc.png', train_dir=f'{d}/face/train')),
        dict(task='face', step='export', wall_s=7.0, status=0,
             result=dict(onnx=onnx, insightface=dict(max_abs_diff=3.4e-4, min_cosine=1.0))),
        dict(task='classification', step='train', wall_s=557.0, status=0, result=dict(work_dir=f'{d}/fmnist')),
        dict(task='classification', step='test', wall_s=12.0, status=0,
             result={'checkpoint': ckpt, 'flip_test': False, 'cls/top1': 93.0}),
        dict(task='classification', step='test_flip', wall_s=12.5, status=0,
             result={'checkpoint': ckpt, 'flip_test': True, 'cls/top1': 93.26}),
        dict(task='detection', step='test', wall_s=20.0, status=1, result=None),
    ]
    rows = demo.summary_rows(records, root=d)
    assert [r['task'] for r in rows] == ['classification', 'detection', 'face', 'total']
    cls, det, face, total = rows
    assert (cls['metric'], cls['value'], cls['wall_s']) == ('test top-1, single view / flip TTA', '93.00% / 93.26%',
                                                            581.5)
    # the outputs that exist, relative to the root (no alpha_hist.png was written)
    assert cls['outputs'] == ['fmnist/toponet_fmnist.safetensors', 'fmnist/adjacency.png',
                              'fmnist/20260101_000000/20260101_000000.log']
    assert det['value'] == 'failed: test'
    assert face['value'] == '80.0% / 6.5% (chance 0.1%) / max diff 3e-04'
    assert face['metric'] == 'verification / Rank-1 at 1,000 distractors / ONNX in insightface vs PyTorch'
    assert face['outputs'] == ['face/train/toponet_face_toy.safetensors', 'face/toponet_face_toy.onnx']
    assert total['wall_s'] == 581.5 + 20.0 + 87.0
    table = demo.markdown_table(rows).splitlines()
    assert table[0] == '| task | metric | value | wall time | outputs |'
    assert table[2].startswith('| classification | test top-1, single view / flip TTA | 93.00% / 93.26% | '
                               '9 min 42 s | `fmnist/toponet_fmnist.safetensors`, ')
    assert table[-1] == '| total |  |  | 11 min 28 s |  |'
    assert [demo.format_duration(s) for s in (37, 581.5, 3725)] == ['37 s', '9 min 42 s', '1 h 02 min']


def test_recorded_steps_become_the_summary_file_and_a_json_line(tmp_path, capsys):
    demo = _demo_summary()
    d = str(tmp_path / 'demo')
    ckpt = _write(str(tmp_path / 'demo' / 'fmnist' / 'toponet_fmnist.safetensors'))
    # a step: any command whose last line comes from cli.print_result
    step = ('import sys; sys.path.insert(0, %r); from backbones import cli; '
            'print("some progress"); cli.print_result({"checkpoint": %r, "flip_test": False, "cls/top1": 91.5})'
            % (ROOT, ckpt))
    assert demo.main([d, '--record', 'classification/test', '--', sys.executable, '-c', step]) == 0
    record = json.load(open(os.path.join(d, 'results', 'classification.test.json')))
    assert record['status'] == 0 and record['result']['cls/top1'] == 91.5 and record['wall_s'] >= 0
    assert not os.path.exists(os.path.join(d, 'results', '.classification.test.result.json'))
    # a failing step: its exit status is the tool's, and the record says so
    assert demo.main([d, '--record', 'face/demo', '--', sys.executable, '-c', 'raise SystemExit(3)']) == 3
    assert json.load(open(os.path.join(d, 'results', 'face.demo.json')))['status'] == 3
    capsys.readouterr()
    assert demo.main([d]) == 0
    out = capsys.readouterr().out.splitlines()
    summary = open(os.path.join(d, 'summary.md')).read()
    assert '| classification | test top-1 | 91.50% |' in summary and '| face |  | failed: demo |' in summary
    result = json.loads(out[-1])
    assert result['summary'] == os.path.abspath(os.path.join(d, 'summary.md'))
    assert [r['task'] for r in result['rows']] == ['classification', 'face', 'total']
    assert '| classification | test top-1 | 91.50% |' in '\n'.join(out[:-1])


def test_summary_without_records_is_a_user_error(tmp_path, capsys):
    assert _demo_summary().main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith('error: no demo step records')
