#!/usr/bin/env python
"""Pictures, statistics and a summary of a learned topology (paper Figure 3).

    python tools/analyze_topology.py work_dirs/x/toponet_fmnist.safetensors
    python tools/analyze_topology.py adaptive.safetensors --label adaptive \\
        --compare "w/o sparsity=work_dirs/nosparse/toponet_fmnist.safetensors" --out-dir work_dirs/analysis

Reads a shared checkpoint or a topology export (.json/.npz) and writes into ``--out-dir``
(default ``work_dirs/analyze_topology/<checkpoint name>``):

* ``alpha_hist.png``: alpha histogram of this run and of every ``--compare`` run (Figure 3,
  left: with vs without sparsity);
* ``adjacency.png``: per-stage alpha heatmaps, rows a node's input edges and columns its
  output edges (Figure 3, right), and ``adjacency_<label>.png`` for every compared run;
* ``graph_stats.json``: per stage density, in/out-degree, share of |alpha| near zero and
  longest path, of the full and of the effective (|alpha| >= ``--near-zero``) graph;
* ``summary.md``: the same as markdown tables.

The last stdout line is one JSON object (output folder, near-zero shares per stage).
"""
import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402


def _labelled(text: str):
    if '=' not in text:
        raise argparse.ArgumentTypeError(f'expected LABEL=PATH, got {text!r}')
    label, path = text.split('=', 1)
    if not label or not path:
        raise argparse.ArgumentTypeError(f'expected LABEL=PATH, got {text!r}')
    return label, path


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('checkpoint', help='shared checkpoint (.safetensors) or topology export (.json/.npz)')
    parser.add_argument('--label', default='learned', help='name of this run in pictures and tables')
    parser.add_argument('--compare', type=_labelled, action='append', default=[], metavar='LABEL=PATH',
                        help='another run to draw beside it (repeatable), e.g. "w/o sparsity=path"')
    parser.add_argument('--near-zero', type=float, default=1e-2, help='|alpha| below this counts as near zero')
    cli.add_out_dir(parser, help='output folder (default: work_dirs/analyze_topology/<checkpoint name>)')
    return parser


def run(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.near_zero >= 0:
        parser.error(f'--near-zero must be >= 0, got {args.near_zero}')

    from backbones.analysis import graph_statistics, load_topology, statistics_markdown
    from backbones.io_utils import atomic_write_text
    from backbones.viz import plot_adjacency, plot_alpha_histogram

    stem = os.path.splitext(os.path.basename(args.checkpoint))[0]
    out_dir = args.out_dir or cli.default_out_dir('analyze_topology', stem)
    runs = {args.label: load_topology(args.checkpoint)}
    sources = {args.label: os.path.abspath(args.checkpoint)}
    for label, path in args.compare:
        if label in runs:
            parser.error(f'run label {label!r} is used twice')
        runs[label] = load_topology(path)
        sources[label] = os.path.abspath(path)

    os.makedirs(out_dir, exist_ok=True)
    stats = {label: graph_statistics(stages, args.near_zero) for label, stages in runs.items()}
    plot_alpha_histogram(runs, os.path.join(out_dir, 'alpha_hist.png'), title='edge weights alpha')
    written = ['alpha_hist.png', 'adjacency.png']
    plot_adjacency(runs[args.label], os.path.join(out_dir, 'adjacency.png'), title=args.label)
    for label in list(runs)[1:]:
        name = 'adjacency_' + re.sub(r'[^A-Za-z0-9_.-]+', '_', label) + '.png'
        plot_adjacency(runs[label], os.path.join(out_dir, name), title=label)
        written.append(name)
    atomic_write_text(os.path.join(out_dir, 'graph_stats.json'), json.dumps(
        {'near_zero': args.near_zero, 'runs': {label: {'source': sources[label], 'stages': stats[label]}
                                               for label in runs}}, indent=1))
    summary = [f'# Topology analysis: {args.label}', '', f'Source: `{sources[args.label]}`', '']
    for label in runs:
        summary.append(statistics_markdown(stats[label], title=f'{label}'))
    summary.append('Pictures: ' + ', '.join(f'`{w}`' for w in written) + '\n')
    atomic_write_text(os.path.join(out_dir, 'summary.md'), '\n'.join(summary))
    written += ['graph_stats.json', 'summary.md']

    for label in runs:
        shares = ', '.join(f"{100 * s['near_zero_share']:.1f}%" for s in stats[label])
        longest = ', '.join(str(s['effective']['longest_path']) for s in stats[label])
        cli.rank0_print(f'{label}: |alpha| < {args.near_zero:g} per stage: {shares}; effective longest path: {longest}')
    cli.rank0_print(f'wrote {", ".join(written)} to {out_dir}')
    cli.print_result({'out_dir': os.path.abspath(out_dir), 'files': written,
                      'near_zero_share': {label: [s['near_zero_share'] for s in stats[label]] for label in runs}})
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


if __name__ == '__main__':
    sys.exit(main())
