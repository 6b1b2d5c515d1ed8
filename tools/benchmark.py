"""Speed and memory of TopoNet side by side with its references, as ratios.

    python tools/benchmark.py                      # CPU: every suite that applies
    python tools/benchmark.py --device cuda --amp  # on a GPU machine
    python tools/benchmark.py --suites train --batch-size 8 --runs 3

Suites (each pair measured in this one invocation, every model in its own subprocess):
  train  train-step time and peak memory: toponet_complete (alpha learnable) vs
         toponet_residual_l2 (same nodes, fixed topology). Target <= 1.10x time, <= 1.15x memory.
  infer  inference throughput: toponet_complete vs timm resnet50 (3.95 vs 4.08 GFLOPs).
         Target >= 1.0x on CPU with channels_last at the same batch.
  agg    toponet_complete's two eager aggregation formulations (backbones.dag.AGGREGATIONS):
         'stacked' vs 'weighted_sum', train step and inference.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones.benchmark import BenchSpec, compare, machine_info, run_in_subprocess  # noqa: E402

SUITES = ('train', 'infer', 'agg')


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--suites', nargs='+', default=list(SUITES), choices=SUITES)
    p.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    p.add_argument('--amp', action='store_true', help='autocast: float16 on CUDA, bfloat16 on CPU')
    p.add_argument('--no-channels-last', dest='channels_last', action='store_false')
    p.add_argument('--batch-size', type=int, default=None, help='default: 16 on CPU, 128 on CUDA')
    p.add_argument('--infer-batch-size', type=int, default=None, help='default: 32 on CPU, 256 on CUDA')
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--runs', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch decides)')
    p.add_argument('--out', default=None, help='also write the results as JSON here')
    return p.parse_args()


def _row(label, r, ratios=None):
    text = (f'  {label:<58} {r.median_s * 1e3:10.1f} ms {r.images_per_s:10.1f} img/s '
            f'{r.peak_mem_mb:10.1f} MB')
    if ratios:
        text += (f'   time x{ratios["time_ratio"]:.3f}  mem x{ratios["memory_ratio"]:.3f}  '
                 f'throughput x{ratios["throughput_ratio"]:.3f}')
    return text


def _label(spec):
    extra = ','.join(f'{k}={v}' for k, v in spec.model_kwargs.items())
    return f'{spec.model} {spec.mode}' + (f' ({extra})' if extra else '')


def main():
    args = parse_args()
    cuda = args.device == 'cuda'
    base = BenchSpec(model='toponet_complete', device=args.device, channels_last=args.channels_last,
                     amp=args.amp, img_size=args.img_size, runs=args.runs, warmup=args.warmup,
                     threads=args.threads, batch_size=args.batch_size or (128 if cuda else 16))
    infer_bs = args.infer_batch_size or (256 if cuda else 32)
    info = machine_info()
    print('machine:', json.dumps(info))
    print(f'settings: device={args.device} amp={args.amp} channels_last={args.channels_last} '
          f'img={args.img_size} train_batch={base.batch_size} infer_batch={infer_bs} '
          f'runs={args.runs} (median) warmup={args.warmup}')
    report = {'machine': info, 'results': {}}

    def pair(name, candidate, reference, targets):
        cand, ref = run_in_subprocess(candidate), run_in_subprocess(reference)
        ratios = compare(cand, ref)
        print(f'[{name}]')
        print(_row(_label(reference), ref))
        print(_row(_label(candidate), cand, ratios))
        verdicts = []
        for key, (op, limit) in targets.items():
            ok = ratios[key] <= limit if op == '<=' else ratios[key] >= limit
            verdicts.append(f'{key} {ratios[key]:.3f} {op} {limit}: {"met" if ok else "MISSED"}')
        if verdicts:
            print('  targets: ' + '; '.join(verdicts))
        report['results'][name] = {'candidate': asdict(cand), 'reference': asdict(ref), 'ratios': ratios}

    if 'train' in args.suites:
        pair('train', replace(base, mode='train'),
             replace(base, mode='train', model='toponet_residual_l2', model_kwargs={'alpha_trainable': False}),
             {'time_ratio': ('<=', 1.10), 'memory_ratio': ('<=', 1.15)})
    if 'infer' in args.suites:
        pair('infer', replace(base, mode='infer', batch_size=infer_bs),
             replace(base, mode='infer', batch_size=infer_bs, model='resnet50'),
             {'throughput_ratio': ('>=', 1.0)})
    if 'agg' in args.suites:
        for mode in ('train', 'infer'):
            bs = base.batch_size if mode == 'train' else infer_bs
            pair(f'agg_{mode}', replace(base, mode=mode, batch_size=bs, model_kwargs={'aggregation': 'stacked'}),
                 replace(base, mode=mode, batch_size=bs, model_kwargs={'aggregation': 'weighted_sum'}), {})
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(report, f, indent=2, default=str)
        print('results written to', args.out)


if __name__ == '__main__':
    main()
