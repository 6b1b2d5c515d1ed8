#!/usr/bin/env python
"""Stand-alone accuracy of topologies frozen at several points of a search (paper Figure 6).

    # run a short search on the config's data, snapshot alpha along the way, score each snapshot
    python tools/snapshot_eval.py classification/configs/toponet_fmnist_adaptive.py \\
        --search-iters 400 --snapshot-at 0 100 200 400 --train-iters 200
    # score existing snapshots (checkpoints or topology exports), labelled by search iteration
    python tools/snapshot_eval.py CONFIG --snapshots a.safetensors b.json --iterations 1000 2000 --train-iters 500

The config (any classification config: ImageNet folder, CIFAR-100, Fashion-MNIST) gives the
data (its ``train_dataloader`` trains, its ``test_dataloader`` scores), the normalisation,
the search network (``model.backbone``; snapshot checkpoints name their own) and the search's
sparsity (``optim_wrapper.sparsity``); ``--cfg-options`` overrides any of them.

For every snapshot a fresh network with the snapshot's graphs is built, its alpha set to the
snapshot's values and frozen, its weights trained from scratch for ``--train-iters``
iterations and scored on the test set ("stand-alone accuracy"). Iteration 0 of a search is
the untrained topology (every alpha 1), the paper's "Complete" baseline.

Writes ``snapshot_accuracy.{json,png}`` and, for a search, ``snapshots/iter_<k>.json`` (the
topology exports, reusable by ``tools/alpha_similarity.py``) to ``--out-dir`` (default
``work_dirs/snapshot_eval/<config name>``).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402


def build_parser():
    parser = cli.make_parser(__doc__)
    cli.add_config(parser, 'classification config: data, normalisation, search network and sparsity')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--search-iters', type=int, help='run a search of this many iterations first')
    source.add_argument('--snapshots', nargs='+', help='checkpoints (.safetensors) or topology exports (.json/.npz)')
    cli.add_cfg_options(parser)
    parser.add_argument('--snapshot-at', type=int, nargs='+',
                        help='search iterations to snapshot (with --search-iters; default: 0 and the quarters)')
    parser.add_argument('--iterations', type=int, nargs='+',
                        help='the search iteration of each --snapshots file (default: its checkpoint "iter", or '
                             'its position)')
    parser.add_argument('--sparsity', default=None, choices=['none', 'uniform', 'adaptive'],
                        help="sparsity of the search (default: the config's optim_wrapper.sparsity, else adaptive)")
    parser.add_argument('--lam', type=float, default=None,
                        help="sparsity lambda of the search (default: the config's, else 1e-4)")
    parser.add_argument('--train-iters', type=int, default=200, help='stand-alone training iterations per snapshot')
    parser.add_argument('--lr', type=float, default=0.05, help='peak learning rate (cosine), search and stand-alone')
    parser.add_argument('--batch-size', type=int, default=128, help='training batch size, search and stand-alone')
    parser.add_argument('--train-samples', type=int, default=None,
                        help='train on a seeded random subset of this many images (default: all)')
    parser.add_argument('--eval-samples', type=int, default=None,
                        help='score on a seeded random subset of this many test images (default: all)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the search network, subsets and shuffling')
    cli.add_device(parser)
    cli.add_out_dir(parser, help='output folder (default: work_dirs/snapshot_eval/<config name>)')
    return parser


def run(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ('train_iters', 'search_iters'):
        value = getattr(args, name)
        if value is not None and value < 0:
            parser.error(f'--{name.replace("_", "-")} must be >= 0, got {value}')

    import timm
    import torch
    import backbones  # noqa: F401  (registers the models)
    from backbones.analysis import load_topology
    from backbones.errors import InputError
    from backbones.io_utils import atomic_write_text
    from backbones.sparsity import TopologySparsity
    from backbones.topology_export import save_topology_json
    from backbones.viz import plot_snapshot_accuracy
    from classification.damage import accuracy_evaluator, load_config_data, search_snapshots, standalone_accuracy

    device = cli.resolve_device(args.device)
    out_dir = args.out_dir or cli.default_out_dir('snapshot_eval', os.path.splitext(os.path.basename(args.config))[0])
    data = load_config_data(args.config, args.cfg_options, args.train_samples, args.eval_samples, args.batch_size,
                            seed=args.seed)
    backbone = dict(data.backbone)
    if not backbone.get('name'):
        raise InputError('the config has no model.backbone.name', args.config, 'a classification config')
    model_name = backbone.pop('name')
    model_kwargs = {k: v for k, v in backbone.items() if k not in ('graphs', 'seed')}
    sparsity = dict(data.sparsity or {})
    sparsity_mode = args.sparsity or sparsity.get('mode', 'adaptive')
    lam = args.lam if args.lam is not None else sparsity.get('lam', 1e-4)

    if args.search_iters is not None:
        at = args.snapshot_at or sorted({0, *(args.search_iters * q // 4 for q in (1, 2, 3, 4))})
        torch.manual_seed(args.seed)
        search_model = timm.create_model(model_name, seed=args.seed, **model_kwargs)
        search_model.to(device, memory_format=torch.channels_last)
        start = time.time()
        snapshots = search_snapshots(search_model, data.train_loader, args.search_iters, at,
                                     sparsity=TopologySparsity(sparsity_mode, lam), lr=args.lr,
                                     normalizer=data.normalizer(search_model, channels_last=True))
        cli.rank0_print(f'search: {args.search_iters} iterations in {time.time() - start:.0f} s')
        items = []
        for it in sorted(snapshots):
            path = os.path.join(out_dir, 'snapshots', f'iter_{it}.json')
            os.makedirs(os.path.dirname(path), exist_ok=True)
            save_topology_json(snapshots[it], path)
            items.append((it, path, snapshots[it]))
    else:
        if args.iterations and len(args.iterations) != len(args.snapshots):
            parser.error(f'{len(args.iterations)} --iterations for {len(args.snapshots)} --snapshots')
        items = []
        for k, path in enumerate(args.snapshots):
            it = args.iterations[k] if args.iterations else k
            if path.endswith('.safetensors'):
                from backbones.checkpoint import read_checkpoint
                ckpt = read_checkpoint(path)
                model_name = ckpt.model_name
                model_kwargs = {key: value for key, value in ckpt.model_kwargs.items()
                                if key in ('num_classes', 'in_chans')}
                if not args.iterations:
                    it = int(ckpt.meta.get('iter', k))
            items.append((it, os.path.abspath(path), load_topology(path)))

    probe = timm.create_model(model_name, **model_kwargs).to(device)
    normalizer = data.normalizer(probe, channels_last=True)  # channels-last: about twice as fast on CPU
    evaluate = accuracy_evaluator(data.test_loader, normalizer)

    def build(graphs):
        return timm.create_model(model_name, graphs=graphs, **model_kwargs).to(device,
                                                                              memory_format=torch.channels_last)
    rows = []
    for it, path, stages in items:
        start = time.time()
        graphs = [s.graph for s in stages]
        acc = standalone_accuracy(lambda: build(graphs), stages, data.train_loader, evaluate, args.train_iters,
                                  lr=args.lr, normalizer=normalizer, seed=args.seed)
        rows.append({'iteration': it, 'source': path, 'accuracy': acc, 'seconds': time.time() - start,
                     'alpha_abs_mean': float(sum(abs(s.alpha).sum() for s in stages) /
                                             sum(s.alpha.size for s in stages))})
        cli.rank0_print(f'snapshot at iteration {it}: stand-alone top-1 {acc:.2f}% ({time.time() - start:.0f} s)')
    result = {'model': model_name, 'config': os.path.abspath(args.config), 'train_iters': args.train_iters,
              'lr': args.lr, 'batch_size': args.batch_size, 'eval_samples': len(data.test_loader.dataset),
              'search_iters': args.search_iters,
              'sparsity': sparsity_mode if args.search_iters is not None else None,
              'lam': lam if args.search_iters is not None else None, 'rows': rows}
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, 'snapshot_accuracy.json'), json.dumps(result, indent=1))
    plot_snapshot_accuracy(rows, os.path.join(out_dir, 'snapshot_accuracy.png'),
                           title=f'stand-alone accuracy, {args.train_iters} training iterations each')
    cli.rank0_print(f'wrote snapshot_accuracy.json/.png to {out_dir}')
    cli.print_result({'out_dir': os.path.abspath(out_dir),
                      'accuracy': {row['iteration']: row['accuracy'] for row in rows}})
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


if __name__ == '__main__':
    sys.exit(main())
