#!/usr/bin/env python
"""Graph damage of a trained TopoNet (paper section 3.2.3, Figure 4), on the data of any
classification config (ImageNet folder, CIFAR-100, Fashion-MNIST).

    python tools/graph_damage.py classification/configs/toponet_fmnist_adaptive.py \\
        work_dirs/x/toponet_fmnist.safetensors
    python tools/graph_damage.py CONFIG CKPT --eval-samples 2000 --retrain-iters 100 --fractions 0 0.2 0.4 0.6 0.8
    python tools/graph_damage.py classification/configs/resnet110_cifar100.py CKPT \\
        --cfg-options train_dataloader.dataset.root=data/cifar100 test_dataloader.dataset.root=data/cifar100

The config's ``test_dataloader`` gives the images to score on and its ``train_dataloader``
(with its augmentation) the retraining data; its data preprocessor the normalisation.

* Node damage (Figure 4, left): test accuracy after removing each single computing node of
  each stage (its edges, then any node left without input or output), no retraining.
* Edge damage (Figure 4, right): test accuracy after pruning the given fractions of edges by
  a global |alpha| threshold, without retraining and after ``--retrain-iters`` iterations of
  weight training with the remaining alpha frozen (0: skip retraining).

Writes ``node_damage.{json,png}``, ``edge_damage.{json,png}`` and ``damage_summary.md`` into
``--out-dir`` (default ``work_dirs/graph_damage/<checkpoint name>``).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402


def build_parser():
    from backbones.analysis import DEFAULT_PRUNE_FRACTIONS
    parser = cli.make_parser(__doc__)
    cli.add_config(parser, 'classification config: its test_dataloader scores, its train_dataloader retrains')
    parser.add_argument('checkpoint', help='shared checkpoint (.safetensors) of a trained TopoNet')
    cli.add_cfg_options(parser)
    parser.add_argument('--eval-samples', type=int, default=None,
                        help='score on a seeded random subset of this many test images (default: all)')
    parser.add_argument('--train-samples', type=int, default=None,
                        help='retrain on a seeded random subset of this many training images (default: all)')
    parser.add_argument('--skip', choices=['nodes', 'edges'], action='append', default=[],
                        help='skip one of the two experiments')
    parser.add_argument('--fractions', type=float, nargs='+', default=list(DEFAULT_PRUNE_FRACTIONS),
                        help='fractions of edges to prune')
    parser.add_argument('--per-stage', action='store_true',
                        help='prune each stage by its own |alpha| ranking (default: one global threshold, as the '
                             'paper)')
    parser.add_argument('--criterion', choices=['abs', 'relative'], default='abs',
                        help="edge score: |alpha| (the paper's) or |alpha| relative to the node's strongest input")
    parser.add_argument('--retrain-iters', type=int, default=100,
                        help='weight-training iterations after pruning, alpha frozen (100: about a fifth of a '
                             'Fashion-MNIST epoch at batch 128; 0: no retraining)')
    parser.add_argument('--lr', type=float, default=0.02, help='peak learning rate of the retraining (cosine)')
    parser.add_argument('--batch-size', type=int, default=128, help='retraining batch size')
    parser.add_argument('--seed', type=int, default=0, help='seed of subsets, shuffling and retraining')
    cli.add_device(parser)
    cli.add_out_dir(parser, help='output folder (default: work_dirs/graph_damage/<checkpoint name>)')
    return parser


def run(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.retrain_iters < 0:
        parser.error(f'--retrain-iters must be >= 0, got {args.retrain_iters}')

    import torch
    from backbones.analysis import edge_damage, node_damage
    from backbones.checkpoint import create_model_from_checkpoint
    from backbones.io_utils import atomic_write_text
    from backbones.viz import plot_edge_damage, plot_node_damage
    from classification.damage import accuracy_evaluator, load_config_data, train_weights

    torch.manual_seed(args.seed)
    device = cli.resolve_device(args.device)
    stem = os.path.splitext(os.path.basename(args.checkpoint))[0]
    out_dir = args.out_dir or cli.default_out_dir('graph_damage', stem)
    # channels-last runs about twice as fast on CPU (oneDNN), as in the training configs
    model = create_model_from_checkpoint(args.checkpoint).eval().to(device, memory_format=torch.channels_last)
    retrain_wanted = 'edges' not in args.skip and args.retrain_iters > 0
    data = load_config_data(args.config, args.cfg_options, args.train_samples, args.eval_samples, args.batch_size,
                            seed=args.seed, train=retrain_wanted)
    normalizer = data.normalizer(model, channels_last=True)
    test_loader = data.test_loader
    evaluate = accuracy_evaluator(test_loader, normalizer)
    os.makedirs(out_dir, exist_ok=True)
    info = {'checkpoint': os.path.abspath(args.checkpoint), 'config': os.path.abspath(args.config),
            'eval_samples': len(test_loader.dataset)}
    summary = [f'# Graph damage: `{info["checkpoint"]}`', '',
               f'Top-1 on {info["eval_samples"]} test images of `{args.config}`.', '']
    result_line = {'out_dir': os.path.abspath(out_dir), 'eval_samples': info['eval_samples']}

    if 'nodes' not in args.skip:
        start = time.time()
        result = {**info, **node_damage(model, evaluate)}
        result['seconds'] = time.time() - start
        atomic_write_text(os.path.join(out_dir, 'node_damage.json'), json.dumps(result, indent=1))
        plot_node_damage(result, os.path.join(out_dir, 'node_damage.png'),
                         title=f'node removal, no retraining (baseline {result["baseline"]:.2f}%)')
        summary += ['## Node removal (Figure 4, left)', '', f'Undamaged: {result["baseline"]:.2f}%.', '',
                    '| stage | node | accuracy | change | also removed |', '|---|---|---|---|---|']
        for row in result['nodes']:
            extra = [n for n in row['nodes_removed'] if n != row['node']]
            summary.append(f"| {row['stage'] + 1} | {row['node']} | {row['accuracy']:.2f}% | "
                           f"{row['accuracy'] - result['baseline']:+.2f} | {extra or '-'} |")
        summary.append('')
        worst = min(result['nodes'], key=lambda r: r['accuracy'])
        cli.rank0_print(f'node damage: baseline {result["baseline"]:.2f}%, worst removal stage {worst["stage"] + 1} '
                        f'node {worst["node"]}: {worst["accuracy"]:.2f}% ({result["seconds"]:.0f} s)')
        result_line.update(baseline=result['baseline'], worst_node_accuracy=worst['accuracy'])

    if 'edges' not in args.skip:
        retrain = None
        if args.retrain_iters:
            def retrain_weights(pruned):
                pruned.to(device, memory_format=torch.channels_last)
                torch.manual_seed(args.seed)
                train_weights(pruned, data.train_loader, args.retrain_iters, normalizer, lr=args.lr, desc='retrain')
            retrain = retrain_weights
        start = time.time()
        result = {**info, 'retrain_iters': args.retrain_iters, 'lr': args.lr,
                  **edge_damage(model, evaluate, args.fractions, retrain, per_stage=args.per_stage,
                                criterion=args.criterion)}
        result['seconds'] = time.time() - start
        atomic_write_text(os.path.join(out_dir, 'edge_damage.json'), json.dumps(result, indent=1))
        plot_edge_damage(result, os.path.join(out_dir, 'edge_damage.png'),
                         title=f'edge pruning by {args.criterion} |alpha| '
                               f'(retraining: {args.retrain_iters} iterations)')
        summary += [f'## Edge pruning by {args.criterion} |alpha| (Figure 4, right)', '',
                    f'Retraining: {args.retrain_iters} iterations, batch {args.batch_size}, alpha frozen. '
                    f'Score: {args.criterion} |alpha|; threshold: '
                    f'{"per stage" if args.per_stage else "one for all stages"}. A cut stage '
                    f'(no edge into its output left) can only be scored masked.', '',
                    '| asked | pruned (after node removal) | threshold(s) | nodes kept per stage | stages cut '
                    '| no retraining | retrained | retrained params |', '|---|---|---|---|---|---|---|---|']
        for row in result['rows']:
            retrained = f"{row['accuracy_retrained']:.2f}%" if 'accuracy_retrained' in row else '-'
            params = f"{row['retrained_params']:,} ({row['retrained_model']})" if 'retrained_params' in row else '-'
            thresholds = sorted(set(row['thresholds']))
            shown = f'{thresholds[0]:.4g}' if len(thresholds) == 1 else ', '.join(f'{t:.3g}' for t in row['thresholds'])
            cut = [s + 1 for s in row['stages_cut']] or '-'
            summary.append(f"| {100 * row['fraction']:.0f}% | {100 * row['fraction_pruned']:.1f}% | {shown} | "
                           f"{row['nodes_kept']} | {cut} | {row['accuracy']:.2f}% | {retrained} | {params} |")
            cli.rank0_print(f"pruned {100 * row['fraction_pruned']:5.1f}% of edges: {row['accuracy']:.2f}% "
                            f"-> retrained {retrained}")
        summary.append('')
        cli.rank0_print(f'edge damage: {result["seconds"]:.0f} s')
        result_line['edge_accuracy'] = {row['fraction']: row['accuracy'] for row in result['rows']}
    atomic_write_text(os.path.join(out_dir, 'damage_summary.md'), '\n'.join(summary))
    cli.rank0_print(f'wrote the damage results to {out_dir}')
    cli.print_result(result_line)
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


if __name__ == '__main__':
    sys.exit(main())
