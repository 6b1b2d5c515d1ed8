#!/usr/bin/env python
"""The summary at the end of ``make demo``: per task, its headline metric, the value, the
wall time and where the outputs are.

    python tools/demo_summary.py work_dirs/demo --record classification/train -- python tools/train_cls.py ...
    python tools/demo_summary.py work_dirs/demo

``--record TASK/STEP -- COMMAND...`` runs one demo step: the command keeps the console (its
bars and lines appear as they would without this wrapper), its result (the JSON object of
its last stdout line, through ``$TOPONET_RESULT_FILE``) and its wall time are written to
``DEMO_DIR/results/TASK.STEP.json``, and its exit status is this tool's. Without
``--record`` the tool reads those records, prints the summary table, writes it to
``DEMO_DIR/summary.md`` and ends with one JSON line (the table's rows).
"""
import glob
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402

TASK_ORDER = ('classification', 'detection', 'face')
COLUMNS = ('task', 'metric', 'value', 'wall time', 'outputs')


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('demo_dir', help='the demo folder (make demo: work_dirs/demo)')
    parser.add_argument('--record', default=None, metavar='TASK/STEP',
                        help='run the command after -- as this demo step and record its result and wall time')
    return parser


# -- recording a step ---------------------------------------------------------------------------
def record_step(demo_dir: str, name: str, command, env=None) -> int:
    """Run ``command`` as the demo step ``name`` (``task/step``) with the console it was
    given; write ``demo_dir/results/<task>.<step>.json`` (task, step, command, wall time,
    exit status, result). Returns the command's exit status."""
    from backbones.errors import InputError
    from backbones.io_utils import atomic_write_text
    task, sep, step = name.partition('/')
    if not (task and sep and step) or '/' in step or '.' in task + step:
        raise InputError(f'--record {name!r}', 'command line', 'TASK/STEP, e.g. classification/train')
    if not command:
        raise InputError('--record without a command', 'command line', '--record TASK/STEP -- COMMAND...')
    results = os.path.join(demo_dir, 'results')
    os.makedirs(results, exist_ok=True)
    result_file = os.path.join(results, f'.{task}.{step}.result.json')
    if os.path.exists(result_file):
        os.unlink(result_file)
    env = dict(os.environ if env is None else env, **{cli.RESULT_FILE_ENV: os.path.abspath(result_file)})
    start = time.time()
    try:
        status = subprocess.call(list(command), env=env)
    except OSError as err:
        raise InputError(f'cannot run {command[0]!r}: {err.strerror or err}', f'--record {name}',
                         'a command that exists') from err
    wall = time.time() - start
    result = None
    if os.path.isfile(result_file):
        with open(result_file) as f:
            result = json.load(f)
        os.unlink(result_file)
    entry = dict(task=task, step=step, command=list(command), wall_s=round(wall, 1), status=status, result=result,
                 finished=time.strftime('%Y-%m-%d %H:%M:%S'))
    atomic_write_text(os.path.join(results, f'{task}.{step}.json'), json.dumps(entry, indent=1) + '\n')
    return status


def read_records(demo_dir: str):
    """The step records of ``demo_dir/results``, in the order they finished."""
    records = []
    for path in sorted(glob.glob(os.path.join(demo_dir, 'results', '*.json'))):
        with open(path) as f:
            records.append(json.load(f))
    return sorted(records, key=lambda r: r.get('finished', ''))


# -- the table ----------------------------------------------------------------------------------
def format_duration(seconds: float) -> str:
    """``9 min 41 s``, ``37 s``, ``1 h 02 min``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f'{seconds} s'
    if seconds < 3600:
        return f'{seconds // 60} min {seconds % 60:02d} s'
    return f'{seconds // 3600} h {seconds % 3600 // 60:02d} min'


def _newest_log(work_dir):
    logs = sorted(glob.glob(os.path.join(work_dir, '*', '*.log'))) if work_dir else []
    return logs[-1] if logs else None


def _existing(*paths):
    return [p for p in paths if p and os.path.exists(p)]


def _step(records, task, step):
    found = [r for r in records if r['task'] == task and r['step'] == step and r.get('result')]
    return found[-1]['result'] if found else None


def _classification(records):
    single, flip = None, None
    for r in records:
        if r['task'] == 'classification' and r.get('result') and 'cls/top1' in r['result']:
            if r['result'].get('flip_test'):
                flip = r['result']['cls/top1']
            else:
                single = r['result']['cls/top1']
    train = _step(records, 'classification', 'train') or {}
    work_dir = train.get('work_dir')
    checkpoint = next((r['result']['checkpoint'] for r in records if r['task'] == 'classification'
                       and r.get('result') and r['result'].get('checkpoint')), None)
    folder = os.path.dirname(checkpoint) if checkpoint else work_dir
    outputs = _existing(checkpoint, *(os.path.join(folder, n) for n in ('adjacency.png', 'alpha_hist.png')
                                      if folder), _newest_log(work_dir or folder))
    value = ' / '.join(f'{v:.2f}%' for v in (single, flip) if v is not None)
    metric = 'test top-1' + (', single view / flip TTA' if single is not None and flip is not None else '')
    return metric, value, outputs


def _detection(records):
    test = _step(records, 'detection', 'test') or {}
    train = _step(records, 'detection', 'train') or {}
    value = ''
    if 'coco/bbox_mAP' in test:
        value = f"{test['coco/bbox_mAP']:.3f}"
        extra = [f'{test[k]:.3f}' for k in ('coco/bbox_mAP_50', 'coco/bbox_mAP_75') if k in test]
        if extra:
            value += f" ({', '.join(extra)})"
    outputs = _existing(test.get('checkpoint'), _newest_log(train.get('work_dir')))
    return 'bbox mAP (AP50, AP75)', value, outputs


def _face(records):
    demo = _step(records, 'face', 'demo') or {}
    export = _step(records, 'face', 'export') or {}
    parts, metrics = [], []
    verification = demo.get('verification') or {}
    if verification:
        metrics.append('verification')
        parts.append(f'{next(iter(verification.values())):.1f}%')
    rank1 = demo.get('rank1') or {}
    if rank1:
        largest = max(rank1, key=int)
        metrics.append(f'Rank-1 at {int(largest):,} distractors')
        parts.append(f'{rank1[largest]:.1f}% (chance {100 / (int(largest) + 1):.1f}%)')
    check = export.get('insightface')
    if check:
        metrics.append('ONNX in insightface vs PyTorch')
        parts.append(f"max diff {check['max_abs_diff']:.0e}")
    outputs = _existing(demo.get('checkpoint'), export.get('onnx'), demo.get('cmc'),
                        _newest_log(demo.get('train_dir')))
    return ' / '.join(metrics), ' / '.join(parts), outputs


TASKS = {'classification': _classification, 'detection': _detection, 'face': _face}


def _shown_path(path: str, root: str) -> str:
    """``path`` relative to ``root`` when it lies below it, else absolute."""
    path, root = os.path.abspath(path), os.path.abspath(root)
    return os.path.relpath(path, root) if os.path.commonpath([path, root]) == root else path


def summary_rows(records, root: str = '.'):
    """One row per task recorded (``TASK_ORDER`` first): ``task``, ``metric``, ``value``,
    ``wall_s`` (the task's steps together), ``outputs`` (paths, relative to ``root`` below it), then a
    ``total`` row. A task without its own summary rule lists its steps' wall time only."""
    tasks = sorted({r['task'] for r in records},
                   key=lambda t: (TASK_ORDER.index(t) if t in TASK_ORDER else len(TASK_ORDER), t))
    rows = []
    for task in tasks:
        own = [r for r in records if r['task'] == task]
        metric, value, outputs = TASKS[task](own) if task in TASKS else ('', '', [])
        failed = [r['step'] for r in own if r.get('status')]
        if failed:
            value = f"failed: {', '.join(failed)}"
        rows.append(dict(task=task, metric=metric, value=value, wall_s=round(sum(r['wall_s'] for r in own), 1),
                         outputs=[_shown_path(p, root) for p in outputs]))
    if rows:
        rows.append(dict(task='total', metric='', value='', wall_s=round(sum(r['wall_s'] for r in rows), 1),
                         outputs=[]))
    return rows


def markdown_table(rows) -> str:
    """``rows`` of ``summary_rows`` as a Markdown table."""
    def cells(row):
        return [row['task'], row['metric'], row['value'], format_duration(row['wall_s']),
                ', '.join(f'`{p}`' for p in row['outputs'])]
    lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
    lines += ['| ' + ' | '.join(c.replace('|', '\\|') for c in cells(row)) + ' |' for row in rows]
    return '\n'.join(lines)


def run(argv) -> int:
    argv = list(argv)
    command = []
    if '--' in argv:
        split = argv.index('--')
        argv, command = argv[:split], argv[split + 1:]
    args = build_parser().parse_args(argv)
    if args.record:
        return record_step(args.demo_dir, args.record, command)
    from backbones.errors import InputError
    from backbones.io_utils import atomic_write_text
    if command:
        raise InputError('a command after -- without --record', 'command line', '--record TASK/STEP -- COMMAND...')
    records = read_records(args.demo_dir)
    if not records:
        raise InputError('no demo step records', os.path.join(args.demo_dir, 'results'),
                         'the records make demo writes (tools/demo_summary.py DEMO_DIR --record TASK/STEP -- ...)')
    rows = summary_rows(records)
    table = markdown_table(rows)
    path = os.path.join(args.demo_dir, 'summary.md')
    atomic_write_text(path, '# make demo summary\n\nWall time per task of the last `make demo` run; outputs '
                            'relative to the repository root.\n\n' + table + '\n')
    print(f'\n== make demo summary (also in {path}) ==')
    print(table)
    cli.print_result(dict(summary=os.path.abspath(path), rows=rows))
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


if __name__ == '__main__':
    sys.exit(main())
