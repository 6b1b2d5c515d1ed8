#!/usr/bin/env python
"""Report the TopoNet family as in the paper's Table 4: edges per stage, params, MACs,
and a PNG of each stage's adjacency per model.

    python tools/toponet_report.py --out-dir work_dirs/toponet_report
    python tools/toponet_report.py --models toponet_complete toponet_residual_l2 --input-size 112

The last stdout line is one JSON object (the report's files and per-model params and MACs).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402


def build_parser():
    from backbones.family_report import FAMILY
    parser = cli.make_parser(__doc__)
    cli.add_out_dir(parser, default=cli.default_out_dir('toponet_report'),
                    help='where the adjacency PNGs and report.{md,json} go')
    parser.add_argument('--models', nargs='+', default=list(FAMILY), help='registered TopoNet names')
    parser.add_argument('--input-size', type=int, default=224, help='square input side for MACs')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random generators')
    return parser


def run(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.input_size < 1:
        parser.error(f'--input-size must be >= 1, got {args.input_size}')
    from backbones.family_report import family_report, format_report
    rows = family_report(args.models, out_dir=args.out_dir, input_size=args.input_size, seed=args.seed)
    cli.rank0_print(format_report(rows))
    report = os.path.join(args.out_dir, 'report.md')
    cli.rank0_print(f'\nreport: {report}; adjacency PNGs: {args.out_dir}/*_adjacency.png')
    cli.print_result({'report': os.path.abspath(report), 'models': {
        row['model']: {k: row[k] for k in ('edges', 'params_m', 'gmacs')} for row in rows}})
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


if __name__ == '__main__':
    sys.exit(main())
