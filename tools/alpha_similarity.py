#!/usr/bin/env python
"""How alike are the topologies of repeated runs? (paper appendix A.4, Figure 5)

    python tools/alpha_similarity.py run1/toponet_fmnist.safetensors run2/toponet_fmnist.safetensors run3/...
    python tools/alpha_similarity.py "seed 0=a.json" "seed 1=b.json" --out-dir work_dirs/alpha_similarity/seeds

Takes two or more checkpoints or topology exports of one architecture (``LABEL=PATH`` names
a run; the default label is the run's folder). Writes to ``--out-dir`` (default
``work_dirs/alpha_similarity``):

* ``adjacency_runs.png``: the alpha matrices of every run, one row per run (Figure 5);
* ``similarity.png``: per stage, the run-by-run cosine similarity of alpha;
* ``similarity.json``: per stage, cosine similarity and Pearson correlation matrices and
  their means over distinct pairs.

The last stdout line is one JSON object (output folder, mean cosine similarity per stage).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('runs', nargs='+', help='checkpoints or topology exports, optionally LABEL=PATH')
    cli.add_out_dir(parser, default=cli.default_out_dir('alpha_similarity'), help='output folder')
    return parser


def run(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error(f'need at least two runs to compare, got {len(args.runs)}')

    from backbones.analysis import alpha_similarity, load_topology
    from backbones.io_utils import atomic_write_text
    from backbones.viz import plot_adjacency_grid, plot_similarity_matrices

    runs = {}
    for k, spec in enumerate(args.runs):
        label, path = spec.split('=', 1) if '=' in spec and not os.path.exists(spec) else (None, spec)
        label = label or f'{k + 1}: {os.path.basename(os.path.dirname(os.path.abspath(path))) or path}'
        if label in runs:
            parser.error(f'run label {label!r} is used twice')
        runs[label] = (os.path.abspath(path), load_topology(path))
    names = list(runs)
    similarity = alpha_similarity([stages for _, stages in runs.values()])
    os.makedirs(args.out_dir, exist_ok=True)
    atomic_write_text(os.path.join(args.out_dir, 'similarity.json'), json.dumps(
        {'runs': [{'label': n, 'source': runs[n][0]} for n in names], 'stages': similarity}, indent=1))
    plot_adjacency_grid({n: runs[n][1] for n in names}, os.path.join(args.out_dir, 'adjacency_runs.png'),
                        title='alpha of repeated runs')
    plot_similarity_matrices(similarity, names, os.path.join(args.out_dir, 'similarity.png'),
                             title='cosine similarity of alpha between runs')
    for stage in similarity:
        cli.rank0_print(f"stage {stage['stage'] + 1} ({stage['num_edges']} edges): mean cosine "
                        f"{stage['mean_cosine']:.4f}, mean Pearson {stage['mean_pearson']:.4f}")
    cli.rank0_print(f'wrote similarity.json, similarity.png and adjacency_runs.png to {args.out_dir}')
    cli.print_result({'out_dir': os.path.abspath(args.out_dir), 'runs': names,
                      'mean_cosine': [stage['mean_cosine'] for stage in similarity]})
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


if __name__ == '__main__':
    sys.exit(main())
