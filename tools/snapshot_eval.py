#!/usr/bin/env python
"""Stand-alone accuracy of topologies frozen at several points of a search (paper Figure 6).

    # run a short search on Fashion-MNIST, snapshot alpha along the way, score each snapshot
    python tools/snapshot_eval.py --search-iters 400 --snapshot-at 0 100 200 400 --train-iters 200
    # score existing snapshots (checkpoints or topology exports), labelled by search iteration
    python tools/snapshot_eval.py --snapshots a.safetensors b.json --iterations 1000 2000 --train-iters 500

For every snapshot a fresh network with the snapshot's graphs is built, its alpha set to the
snapshot's values and frozen, its weights trained from scratch for ``--train-iters``
iterations and scored on the test set ("stand-alone accuracy"). Iteration 0 of a search is
the untrained topology (every alpha 1), the paper's "Complete" baseline.

Writes ``snapshot_accuracy.{json,png}`` and, for a search, ``snapshots/iter_<k>.json`` (the
topology exports, reusable by ``tools/alpha_similarity.py``) to ``--out-dir``.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='Stand-alone accuracy of alpha snapshots (Figure 6).')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--search-iters', type=int, help='run a search of this many iterations first')
    source.add_argument('--snapshots', nargs='+', help='checkpoints (.safetensors) or topology exports (.json/.npz)')
    parser.add_argument('--snapshot-at', type=int, nargs='+',
                        help='search iterations to snapshot (with --search-iters; default: 0 and the quarters)')
    parser.add_argument('--iterations', type=int, nargs='+',
                        help='the search iteration of each --snapshots file (default: its checkpoint "iter", or '
                             'its position)')
    parser.add_argument('--model', default='toponet_fmnist_complete',
                        help='timm model to build (default toponet_fmnist_complete; checkpoints name their own)')
    parser.add_argument('--sparsity', default='adaptive', choices=['none', 'uniform', 'adaptive'],
                        help='sparsity of the search (default adaptive)')
    parser.add_argument('--lam', type=float, default=1e-4, help='sparsity lambda of the search (default 1e-4)')
    parser.add_argument('--train-iters', type=int, default=200,
                        help='stand-alone training iterations per snapshot (default 200)')
    parser.add_argument('--lr', type=float, default=0.05, help='peak learning rate (cosine), search and stand-alone')
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--train-samples', type=int, help='training images (default: all 60k)')
    parser.add_argument('--eval-samples', type=int, default=10000, help='test images (default 10000: all)')
    parser.add_argument('--data-root', help='Fashion-MNIST folder (default /usr/share/datasets/fashion-mnist)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the search network, subsets and shuffling')
    parser.add_argument('--out-dir', default='work_dirs/snapshots', help='output folder')
    args = parser.parse_args(argv)
    for name in ('train_iters', 'search_iters'):
        value = getattr(args, name)
        if value is not None and value < 0:
            parser.error(f'--{name.replace("_", "-")} must be >= 0, got {value}')

    import timm
    import torch
    import backbones  # noqa: F401  (registers the models)
    from backbones.analysis import load_topology
    from backbones.io_utils import atomic_write_text
    from backbones.sparsity import TopologySparsity
    from backbones.topology_export import save_topology_json
    from backbones.viz import plot_snapshot_accuracy
    from classification.damage import (Normalizer, accuracy_evaluator, fashion_mnist_loader, search_snapshots,
                                        standalone_accuracy)

    os.makedirs(args.out_dir, exist_ok=True)
    model_name, model_kwargs = args.model, {'num_classes': 10, 'in_chans': 1}
    train_loader = fashion_mnist_loader('train', args.data_root, args.train_samples, args.batch_size, args.seed)
    test_loader = fashion_mnist_loader('test', args.data_root, args.eval_samples, batch_size=500, seed=args.seed)

    if args.search_iters is not None:
        at = args.snapshot_at or sorted({0, *(args.search_iters * q // 4 for q in (1, 2, 3, 4))})
        torch.manual_seed(args.seed)
        search_model = timm.create_model(model_name, seed=args.seed, **model_kwargs)
        search_model.to(memory_format=torch.channels_last)
        start = time.time()
        snapshots = search_snapshots(search_model, train_loader, args.search_iters, at,
                                     sparsity=TopologySparsity(args.sparsity, args.lam), lr=args.lr,
                                     normalizer=Normalizer.for_model(search_model, channels_last=True))
        print(f'search: {args.search_iters} iterations in {time.time() - start:.0f} s')
        items = []
        for it in sorted(snapshots):
            path = os.path.join(args.out_dir, 'snapshots', f'iter_{it}.json')
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

    probe = timm.create_model(model_name, **model_kwargs)
    normalizer = Normalizer.for_model(probe, channels_last=True)  # about twice as fast on CPU
    evaluate = accuracy_evaluator(test_loader, normalizer)

    def build(graphs):
        return timm.create_model(model_name, graphs=graphs, **model_kwargs).to(memory_format=torch.channels_last)
    rows = []
    for it, path, stages in items:
        start = time.time()
        graphs = [s.graph for s in stages]
        acc = standalone_accuracy(lambda: build(graphs), stages, train_loader, evaluate, args.train_iters, lr=args.lr,
                                  normalizer=normalizer, seed=args.seed)
        rows.append({'iteration': it, 'source': path, 'accuracy': acc, 'seconds': time.time() - start,
                     'alpha_abs_mean': float(sum(abs(s.alpha).sum() for s in stages) /
                                             sum(s.alpha.size for s in stages))})
        print(f'snapshot at iteration {it}: stand-alone top-1 {acc:.2f}% ({time.time() - start:.0f} s)')
    result = {'model': model_name, 'train_iters': args.train_iters, 'lr': args.lr, 'batch_size': args.batch_size,
              'eval_samples': len(test_loader.dataset), 'search_iters': args.search_iters,
              'sparsity': args.sparsity if args.search_iters is not None else None, 'rows': rows}
    atomic_write_text(os.path.join(args.out_dir, 'snapshot_accuracy.json'), json.dumps(result, indent=1))
    plot_snapshot_accuracy(rows, os.path.join(args.out_dir, 'snapshot_accuracy.png'),
                           title=f'stand-alone accuracy, {args.train_iters} training iterations each')
    print(f'wrote snapshot_accuracy.json/.png to {args.out_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
