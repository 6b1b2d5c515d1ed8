#!/usr/bin/env python
"""Choose a classification recipe on the validation split (never the test set).

    python tools/select_recipe.py classification/configs/toponet_fmnist_adaptive.py \
        --grid optim_wrapper.optimizer.lr=0.05,0.1,0.2 optim_wrapper.sparsity.lam=1e-4,5e-4 --seeds 100

Trains every combination of the ``--grid`` overrides on every seed with tools/train_cls.py,
ranks them by mean validation top-1 and writes ``selection.json`` and ``selection.md`` to
``--work-dir``. A config that validates on its test data is refused. Finished runs are
skipped on the next call; killed ones resume.
"""
import json
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from backbones import cli
    parser = cli.make_parser('Choose a recipe on the validation split.')
    parser.add_argument('config', help='classification config (its val_dataloader must be a held-out split)')
    parser.add_argument('--grid', nargs='+', required=True, metavar='KEY=V1,V2',
                        help='config keys and the values to try (every combination is trained)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[100],
                        help='seeds per combination (keep them apart from the seeds of final runs)')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='overrides applied to every run (e.g. the data root)')
    parser.add_argument('--work-dir', default='work_dirs/select_recipe', help='folder of the runs and the ranking')
    parser.add_argument('--jobs', type=int, default=2, help='runs in parallel')
    parser.add_argument('--threads', type=int, default=1, help='CPU threads per run')
    args = parser.parse_args(argv)

    from backbones.errors import InputError
    from backbones.io_utils import atomic_write_text
    from classification.recipe_search import grid_markdown, parse_grid, rank, run_grid

    try:
        grid = parse_grid(args.grid)
        records = run_grid(args.config, grid, args.seeds, args.work_dir, jobs=args.jobs, threads=args.threads,
                           log=lambda line: print(line, flush=True), fixed=args.cfg_options)
    except (InputError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    rows = rank(records)
    command = 'python tools/select_recipe.py ' + shlex.join(argv if argv is not None else sys.argv[1:])
    atomic_write_text(os.path.join(args.work_dir, 'selection.md'), grid_markdown(rows, args.config, args.seeds,
                                                                                  command))
    atomic_write_text(os.path.join(args.work_dir, 'selection.json'),
                      json.dumps(dict(config=args.config, seeds=args.seeds, command=command, ranking=rows,
                                      runs=[{k: v for k, v in r.items() if k != 'skipped'} for r in records]),
                                 indent=1))
    for i, r in enumerate(rows, 1):
        print(f'{i}. {r["combo"]}: validation top-1 {r["mean"]:.2f}%')
    print(json.dumps(dict(best=rows[0]['combo'], val_top1=rows[0]['mean'], work_dir=args.work_dir)))
    return 0


if __name__ == '__main__':
    from backbones.cli import run_main
    sys.exit(run_main(main))
