#!/usr/bin/env python
"""Report the TopoNet family as in the paper's Table 4: edges per stage, params, MACs,
and a PNG of each stage's adjacency per model."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones.family_report import FAMILY, family_report, format_report  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out-dir', default='work_dirs/toponet_report', help='where PNGs and report.{md,json} go')
    parser.add_argument('--models', nargs='+', default=list(FAMILY), help='registered TopoNet names')
    parser.add_argument('--input-size', type=int, default=224, help='square input side for MACs')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random generators')
    args = parser.parse_args(argv)
    rows = family_report(args.models, out_dir=args.out_dir, input_size=args.input_size, seed=args.seed)
    print(format_report(rows))
    print(f'\nreport: {os.path.join(args.out_dir, "report.md")}; adjacency PNGs: {args.out_dir}/*_adjacency.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
