#!/usr/bin/env python
"""The reproduction study on Fashion-MNIST (paper Table 4's central claims) in one command.

    python tools/reproduce.py                                  # make reproduce: the whole design
    python tools/reproduce.py --secondary er ba ws --secondary-seeds 4
    python tools/reproduce.py --iters 300 --max-seeds 4 --min-seeds 2 --out-dir work_dirs/quick

Stages, each skipped where its runs are already done (a killed run resumes):

1. ``select``: the adaptive-sparse arm at every lambda of ``--lam-grid`` on the selection seeds,
   scored on the validation split; the best mean validation top-1 fixes lambda.
2. ``pilot``: the four primary arms at seeds 0 and 1; the paired validation differences of the
   three pre-registered contrasts size the study (power for a ``--effect``-point paired
   difference at Holm's strictest level), within ``--min-seeds``..``--max-seeds``. The plan is
   written once (``seed_plan.json``) and kept on later calls.
3. ``main``: the primary arms at every planned seed (the pilot's runs are the first ones).
4. ``secondary``: the arms named by ``--secondary``, at ``--secondary-seeds`` seeds.
5. ``test``: every finished run scored once on the 10k test images.
6. analysis: ``report.md``, ``results.json`` and the PNGs in ``--out-dir``
   (``classification/study.py``, ``classification/study_stats.py``).
"""
import json
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_parser():
    from backbones import cli
    from classification.study import SECONDARY_ARMS, StudySettings

    defaults = StudySettings()
    parser = cli.make_parser('Reproduction study on Fashion-MNIST: pre-registered paired contrasts of the '
                             'paper\'s Table 4 claims.')
    parser.add_argument('--out-dir', default='work_dirs/reproduce', help='study folder (runs, report, figures)')
    parser.add_argument('--secondary', nargs='*', default=[], metavar='ARM',
                        help=f'secondary arms to run as well (labelled secondary): any of {list(SECONDARY_ARMS)}, '
                             'or "all"')
    parser.add_argument('--secondary-seeds', type=int, default=None,
                        help='seeds per secondary arm (default: the planned number)')
    parser.add_argument('--min-seeds', type=int, default=defaults.min_seeds, help='fewest seeds the plan may choose')
    parser.add_argument('--max-seeds', type=int, default=defaults.max_seeds,
                        help='most seeds the plan may choose (the time budget)')
    parser.add_argument('--iters', type=int, default=defaults.iters, help='training iterations per run')
    parser.add_argument('--batch-size', type=int, default=defaults.batch_size, help='training batch size')
    parser.add_argument('--lr', type=float, default=defaults.lr, help='peak learning rate')
    parser.add_argument('--warmup-iters', type=int, default=None, help='linear warm-up (default: a tenth of --iters)')
    parser.add_argument('--lam-grid', type=float, nargs='+', default=list(defaults.lam_grid),
                        help='sparsity lambdas tried on the validation split')
    parser.add_argument('--select-seeds', type=int, nargs='+', default=list(defaults.select_seeds),
                        help='seeds of the lambda selection (never used by the study runs)')
    parser.add_argument('--effect', type=float, default=defaults.effect,
                        help='paired difference (top-1 points) the study is sized to detect')
    parser.add_argument('--power', type=float, default=defaults.power, help='target power for --effect')
    parser.add_argument('--margin', type=float, default=defaults.margin, help='equivalence margin (top-1 points)')
    parser.add_argument('--holdout', type=int, default=defaults.holdout,
                        help='training images held out as the validation split (same number per class)')
    parser.add_argument('--train-samples', type=int, default=None,
                        help='train on a fixed subset of the training split (default: all of it)')
    parser.add_argument('--eval-samples', type=int, default=None,
                        help='score on fixed subsets of the validation and test splits (default: all)')
    parser.add_argument('--data-root', default=defaults.data_root, help='Fashion-MNIST folder')
    parser.add_argument('--jobs', type=int, default=2, help='runs in parallel')
    parser.add_argument('--threads', type=int, default=1, help='CPU threads per run')
    parser.add_argument('--permutations', type=int, default=999,
                        help='resamples of the permutation test of topology agreement')
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    from backbones.errors import InputError
    from backbones.io_utils import atomic_write_text
    from classification.study import (PRIMARY_ARMS, SECONDARY_ARMS, RunTask, StudySettings, analyze, arm,
                                      choose_lambda, plan_seeds, plot_study, plot_topology, report_markdown,
                                      run_tasks, topology_agreement)

    if not os.path.isdir(args.data_root):
        parser.error(f'Fashion-MNIST folder not found: {args.data_root} (run `make data`)')
    secondary = list(SECONDARY_ARMS) if args.secondary == ['all'] else list(args.secondary)
    try:
        settings = StudySettings(
            iters=args.iters, batch_size=args.batch_size, lr=args.lr,
            warmup_iters=args.iters // 10 if args.warmup_iters is None else args.warmup_iters,
            holdout=args.holdout, lam_grid=tuple(args.lam_grid), select_seeds=tuple(args.select_seeds),
            min_seeds=args.min_seeds, max_seeds=args.max_seeds, effect=args.effect, power=args.power,
            margin=args.margin, data_root=args.data_root, train_samples=args.train_samples,
            eval_samples=args.eval_samples, threads=args.threads)
        secondary_arms = [arm(name) for name in secondary]
        bad = [a.name for a in secondary_arms if a.role != 'secondary']
        if bad:
            raise InputError(f'{bad} are primary arms, run by every study', '--secondary', list(SECONDARY_ARMS))
    except InputError as err:
        parser.error(str(err))
    out = args.out_dir
    os.makedirs(out, exist_ok=True)
    command = 'python tools/reproduce.py' + ''.join(' ' + shlex.quote(a) for a in (argv if argv is not None
                                                                                     else sys.argv[1:]))
    say = lambda line: print(line, flush=True)  # noqa: E731
    start = time.time()
    run = lambda tasks, what, test=False: run_tasks(tasks, settings, out, what, jobs=args.jobs, log=say,  # noqa: E731
                                                     test=test)

    try:
        # 1. lambda on the validation split, with seeds of its own
        adaptive = arm('complete_adaptive')
        grid = [RunTask(adaptive, s, lam, f'select/lam{lam:g}/seed{s}', 'select')
                for s in settings.select_seeds for lam in settings.lam_grid]
        say(f'select: adaptive sparsity at lambda {", ".join(f"{v:g}" for v in settings.lam_grid)} x seeds '
            f'{list(settings.select_seeds)}, scored on validation ({len(grid)} runs)')
        selection_runs = run(grid, 'select')
        selection = choose_lambda(selection_runs)
        atomic_write_text(os.path.join(out, 'selection.json'), json.dumps(selection, indent=1, allow_nan=False))
        lam = selection['lam']
        say(f'select: lambda {lam:g} (validation top-1 by lambda: {selection["val_means"]})')

        def tasks_for(arms, seeds, stage):
            return [RunTask(a, s, lam, f'runs/{a.name}/seed{s}', stage) for s in seeds for a in arms]

        # 2. pilot -> the number of seeds (planned once, then kept)
        primary = [arm(n) for n in PRIMARY_ARMS]
        pilot = run(tasks_for(primary, settings.pilot_seeds, 'pilot'), 'pilot')
        plan_path = os.path.join(out, 'seed_plan.json')
        if os.path.isfile(plan_path):
            with open(plan_path) as f:
                plan = json.load(f)
            if not (isinstance(plan.get('n_seeds'), int) and plan['n_seeds'] >= 2
                    and isinstance(plan.get('planned_power'), float) and 0 <= plan['planned_power'] <= 1):
                raise InputError('malformed seed plan', plan_path,
                                 'n_seeds >= 2 and planned_power in [0, 1] (delete the file to plan again from '
                                 f'the pilot), got n_seeds={plan.get("n_seeds")!r}, '
                                 f'planned_power={plan.get("planned_power")!r}')
            say(f'pilot: keeping the plan in {plan_path}: {plan["n_seeds"]} seeds')
        else:
            plan = plan_seeds(pilot, settings)
            atomic_write_text(plan_path, json.dumps(plan, indent=1, allow_nan=False))
            say(f'pilot: SD of paired validation differences {plan["pilot_sd"]:.3f} points -> {plan["n_seeds"]} seeds '
                f'(needed {plan["needed"]}, planned power {plan["planned_power"]:.2f})')
        seeds = list(range(plan['n_seeds']))

        # 3. main, 4. secondary
        main_runs = run(tasks_for(primary, seeds, 'main'), 'main')
        secondary_seeds = list(range(args.secondary_seeds if args.secondary_seeds else plan['n_seeds']))
        secondary_runs = run(tasks_for(secondary_arms, secondary_seeds, 'secondary'), 'secondary') \
            if secondary_arms else []

        # 5. the test split, once per finished run
        finished = tasks_for(primary, seeds, 'main') + tasks_for(secondary_arms, secondary_seeds, 'secondary')
        tests = run(finished, 'test', test=True)
    except RuntimeError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    except InputError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    results = [dict({k: v for k, v in r.items() if k not in ('skipped', 'alpha')}, test_top1=t['test_top1'])
               for r, t in zip(main_runs + secondary_runs, tests)]

    # 6. analysis
    say('analysis: paired tests, manipulation check, topology agreement ...')
    topology = topology_agreement(results, out) if any(a.alpha_trainable for a in primary) else None
    analysis = analyze(results, settings, seed_plan=plan, topology=topology)
    cpu_minutes = sum(r.get('cpu_s', 0.0) for r in selection_runs + main_runs + secondary_runs + tests) / 60
    worked = any(not r.get('skipped') for r in selection_runs + main_runs + secondary_runs + tests)
    report = report_markdown(analysis, settings, command, selection=selection,
                             wall_minutes=(time.time() - start) / 60, cpu_minutes=cpu_minutes, jobs=args.jobs,
                             analysis_only=not worked)
    atomic_write_text(os.path.join(out, 'report.md'), report)
    atomic_write_text(os.path.join(out, 'results.json'), json.dumps(
        dict(command=command, settings=dict(settings.run_key(), lam_grid=list(settings.lam_grid),
                                            select_seeds=list(settings.select_seeds), effect=settings.effect,
                                            alpha=settings.alpha, power=settings.power, margin=settings.margin),
             selection=selection, seed_plan=plan, runs=results, analysis=analysis), indent=1))
    pictures = plot_study(analysis, results, out) + plot_topology(results, out)
    for r in analysis['contrasts']:
        say(f'{r["name"]}: {r["mean_diff"]:+.2f} points [{r["ci_low"]:+.2f}, {r["ci_high"]:+.2f}], '
            f'p(Holm) {r["p_holm"]:.4f}, power {r["power_at_effect"]:.2f}, '
            f'detectable {r["detectable_effect"]:.2f}: {r["verdict"]}')
    say(f'wrote {out}/report.md, results.json and {", ".join(os.path.basename(p) for p in pictures)}')
    print(json.dumps(dict(out_dir=out, lam=lam, seeds=plan['n_seeds'],
                          contrasts={r['name']: dict(diff=r['mean_diff'], p_holm=r['p_holm'], verdict=r['verdict'])
                                     for r in analysis['contrasts']})))
    return 0


if __name__ == '__main__':
    from backbones.cli import run_main
    sys.exit(run_main(main))
