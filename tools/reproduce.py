#!/usr/bin/env python
"""The reproduction study on Fashion-MNIST (paper Tables 4 and 7, Figures 3-6) in one command.

    python tools/reproduce.py                       # the whole study (make reproduce): about 75 min on 2 CPU cores
    python tools/reproduce.py --seeds 0 1 2         # 3 seeds: about 45 min
    python tools/reproduce.py --tables 7 --seeds 0 1 2
    python tools/reproduce.py --variants complete complete_alpha --iters 300 --out-dir work_dirs/quick

Trains every variant of Table 4 (random p=0.8/0.6/0.4, residual l=4/3/2, complete, complete
+ alpha, + uniform sparsity, + adaptive sparsity), Table 7 (ER, BA, WS) and our sparsity
ablation (adaptive at 10x lambda) for each seed,
``--jobs`` runs at a time, then writes to ``--out-dir`` (default ``work_dirs/reproduce``):

* ``results.json`` (every run and the per-variant summaries), ``report.md`` (our tables next
  to the paper's, and the paper's claims tested at 2 standard errors), ``accuracy.png``;
* ``analysis/``: for the adaptive-sparse model, Figure 3 (alpha histograms with vs without
  sparsity, adjacency), Figure 4 (graph damage), Figure 5 (alpha similarity across seeds)
  and Figure 6 (stand-alone accuracy of search snapshots), through the analysis tools. Graph
  damage retrains for ``--iters``/15 iterations; the snapshot search runs ``--iters``/2
  iterations, snapshots at 0, 1/4, 1/2 and all of them, and trains each for ``--iters``/5.

Finished runs and analyses are skipped when called again; a killed run resumes.
"""
import argparse
import json
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_analysis(out_dir, settings, results, threads):
    """Figures 3-6 for the adaptive-sparse model, each skipped when its output exists."""
    from classification.study import CHECKPOINT_NAME, run_tool

    def ckpt(variant, seed):
        return os.path.join(out_dir, 'runs', variant, f'seed{seed}', f'{CHECKPOINT_NAME}.safetensors')

    seeds = sorted(r['seed'] for r in results if r['variant'] == 'complete_alpha_adaptive')
    if not seeds:
        print('analysis: skipped (no complete_alpha_adaptive run in this study)')
        return
    have = {(r['variant'], r['seed']) for r in results}
    first = seeds[0]
    base = os.path.join(out_dir, 'analysis')
    os.makedirs(base, exist_ok=True)
    log_path = os.path.join(base, 'analysis.log')
    data = ['--data-root', settings.data_root]
    if settings.train_samples:
        data += ['--train-samples', settings.train_samples]
    if settings.test_samples:
        data += ['--eval-samples', settings.test_samples]
    steps = []
    compare = []
    for variant, label in (('complete_alpha', 'w/o sparsity'), ('complete_alpha_uniform', 'uniform')):
        if (variant, first) in have:
            compare += ['--compare', f'{label}={ckpt(variant, first)}']
    steps.append(('Figure 3: alpha histograms and adjacency', os.path.join(base, 'topology', 'summary.md'),
                  'analyze_topology.py', [ckpt('complete_alpha_adaptive', first), '--label', 'adaptive', *compare,
                                          '--out-dir', os.path.join(base, 'topology')]))
    if len(seeds) > 1:
        runs = [f'seed {s}={ckpt("complete_alpha_adaptive", s)}' for s in seeds]
        steps.append(('Figure 5: alpha similarity across seeds', os.path.join(base, 'similarity', 'similarity.json'),
                      'alpha_similarity.py', [*runs, '--out-dir', os.path.join(base, 'similarity')]))
    steps.append(('Figure 4: graph damage', os.path.join(base, 'damage', 'damage_summary.md'),
                  'graph_damage.py', [ckpt('complete_alpha_adaptive', first), *data,
                                      '--retrain-iters', max(1, settings.iters // 15),
                                      '--out-dir', os.path.join(base, 'damage')]))
    search_iters = max(2, settings.iters // 2)
    steps.append(('Figure 6: stand-alone accuracy of search snapshots',
                  os.path.join(base, 'snapshots', 'snapshot_accuracy.json'), 'snapshot_eval.py',
                  ['--search-iters', search_iters, '--snapshot-at', *sorted({0, search_iters // 4, search_iters // 2,
                                                                             search_iters}),
                   '--train-iters', max(1, settings.iters // 5), '--lam', settings.lam, '--sparsity', 'adaptive',
                   '--lr', settings.lr, *data, '--out-dir', os.path.join(base, 'snapshots')]))
    for title, output, tool, args in steps:
        if os.path.isfile(output):
            print(f'analysis: {title}: already done ({os.path.relpath(output, ROOT)})')
            continue
        start = time.time()
        print(f'analysis: {title} ...', flush=True)
        run_tool(tool, *args, threads=threads, log_path=log_path)
        print(f'analysis: {title}: {time.time() - start:.0f} s', flush=True)


def main(argv=None) -> int:
    from classification.study import StudySettings, VARIANTS

    defaults = StudySettings()
    parser = argparse.ArgumentParser(description='Reproduction study of Tables 4 and 7 on Fashion-MNIST.')
    parser.add_argument('--out-dir', default='work_dirs/reproduce', help='study folder (default work_dirs/reproduce)')
    parser.add_argument('--variants', nargs='+', metavar='NAME', help=f'subset of {[v.name for v in VARIANTS]}')
    parser.add_argument('--tables', nargs='+', choices=['4', '7', 'L'],
                        help='only the variants of these tables (L: our sparsity-strength ablation)')
    parser.add_argument('--seeds', type=int, nargs='+', default=list(defaults.seeds), help='default 0 1 2 3 4 (the paper ran 5)')
    parser.add_argument('--iters', type=int, default=defaults.iters, help=f'per run (default {defaults.iters})')
    parser.add_argument('--batch-size', type=int, default=defaults.batch_size)
    parser.add_argument('--lr', type=float, default=defaults.lr)
    parser.add_argument('--warmup-iters', type=int, help='default: a tenth of --iters')
    parser.add_argument('--lam', type=float, default=defaults.lam, help=f'sparsity lambda (default {defaults.lam:g})')
    parser.add_argument('--train-samples', type=int, help='train on a fixed subset (default all 60k)')
    parser.add_argument('--test-samples', type=int, help='score on a fixed subset (default all 10k)')
    parser.add_argument('--data-root', default=defaults.data_root, help='Fashion-MNIST folder')
    parser.add_argument('--jobs', type=int, default=2, help='runs in parallel (default 2)')
    parser.add_argument('--threads', type=int, default=1, help='threads per run (default 1)')
    parser.add_argument('--skip-analysis', action='store_true', help='only the tables, not Figures 3-6')
    args = parser.parse_args(argv)

    from backbones.io_utils import atomic_write_text
    from classification.study import (evaluate_claims, plot_study, report_markdown, run_study, select_variants,
                                      summarize)

    if not os.path.isdir(args.data_root):
        parser.error(f'Fashion-MNIST folder not found: {args.data_root} (run `make data`)')
    try:
        settings = StudySettings(iters=args.iters, batch_size=args.batch_size, lr=args.lr, lam=args.lam,
                                 warmup_iters=args.iters // 10 if args.warmup_iters is None else args.warmup_iters,
                                 seeds=tuple(args.seeds), data_root=args.data_root, train_samples=args.train_samples,
                                 test_samples=args.test_samples, threads=args.threads)
        variants = select_variants(args.variants, args.tables)
    except ValueError as err:
        parser.error(str(err))
    os.makedirs(args.out_dir, exist_ok=True)
    command = 'python tools/reproduce.py' + ''.join(' ' + shlex.quote(a) for a in (argv if argv is not None
                                                                                     else sys.argv[1:]))
    print(f'study: {len(variants)} variants x {len(settings.seeds)} seeds, {settings.iters} iterations each, '
          f'{args.jobs} at a time -> {args.out_dir}', flush=True)
    start = time.time()
    try:
        results = run_study(variants, settings, args.out_dir, jobs=args.jobs,
                            log=lambda line: print(line, flush=True))
    except RuntimeError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    trained = [r['wall_s'] for r in results if not r['skipped']]
    wall_minutes = (time.time() - start) / 60 if trained else None
    rows = summarize(results, variants, settings)
    claims = evaluate_claims(rows)
    report = report_markdown(rows, claims, settings, command, wall_minutes)
    atomic_write_text(os.path.join(args.out_dir, 'report.md'), report)
    atomic_write_text(os.path.join(args.out_dir, 'results.json'), json.dumps(
        dict(settings=dict(settings.run_key(), seeds=list(settings.seeds)), command=command,
             runs=[{k: v for k, v in r.items() if k != 'skipped'} for r in results], summary=rows, claims=claims),
        indent=2))
    plot_study(rows, os.path.join(args.out_dir, 'accuracy.png'))
    print(report)
    if not args.skip_analysis:
        run_analysis(args.out_dir, settings, results, threads=max(1, args.jobs * args.threads))
    print(f'wrote {args.out_dir}/report.md, results.json, accuracy.png'
          + ('' if args.skip_analysis else ' and analysis/'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
