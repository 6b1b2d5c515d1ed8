"""Speed and memory of TopoNet side by side with its references, as ratios.

    python tools/benchmark.py                      # CPU: every suite that applies
    python tools/benchmark.py --device cuda --amp  # on a GPU machine
    python tools/benchmark.py --suites train --batch-size 8 --runs 3
    python tools/benchmark.py --device cuda:1 --suites infer     # the second GPU

Suites (each pair measured in this one invocation, every model in its own subprocess):
  train  train-step time and peak memory: toponet_complete (alpha learnable) vs
         toponet_residual_l2 (same nodes, fixed topology). Target <= 1.10x time, <= 1.15x memory.
  infer  inference throughput: toponet_complete vs timm resnet50 (3.95 vs 4.08 GFLOPs).
         Target >= 1.0x on CPU with channels_last at the same batch. Also toponet_residual_l2
         (same node ops, a third of the edges) vs resnet50: the part of the gap that is not topology.
  agg    toponet_complete's two eager aggregation formulations (backbones.dag.AGGREGATIONS):
         'stacked' vs 'weighted_sum', train step and inference.
  ckpt   toponet_complete with per-stage gradient checkpointing vs toponet_residual_l2 without:
         what recomputation buys in peak memory and costs in time.
  profile  where a train step's time goes: the top aten ops by self time (device time on
         CUDA) for toponet_complete and toponet_residual_l2, side by side.
  prune  inference of the compact pruned network vs the unpruned one built from --checkpoint
         (default: the make-demo Fashion-MNIST checkpoint), beside the ratio of their MACs.
  face   MegaFace identification time and peak memory (tools/benchmark_megaface.py, 3,530 x
         --distractors x 256-d) and RecordIO read + JPEG decode throughput (112x112 faces).
  deploy CPU inference at --infer-batch-size in onnxruntime (the export of backbones/export.py:
         batch norms folded, edge weights as per-channel 1x1 convolutions) beside eager PyTorch:
         toponet_complete vs timm resnet50, both in onnxruntime (target >= 0.9x throughput);
         toponet_residual_l2 vs resnet50 (the part of the gap that is not topology); the
         scalar-Mul form vs the blocked-layout form; onnxruntime vs our eager path; eager with
         batch norms folded (reparameterize()) vs eager; the pruned --checkpoint (--keep-ratio,
         --criterion) vs its unpruned export (target >= 1.0x); and where onnxruntime's time
         goes (node types by time) for toponet_complete and resnet50.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402
from backbones.benchmark import (BenchSpec, compare, machine_info, profile_in_subprocess,  # noqa: E402
                                 run_in_subprocess)

SUITES = ('train', 'infer', 'agg', 'ckpt', 'profile', 'prune', 'face', 'deploy')
DEFAULT_SUITES = ('train', 'infer', 'agg')


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('--suites', nargs='+', default=list(DEFAULT_SUITES), choices=SUITES, help='what to measure')
    cli.add_device(parser, default='cpu')
    parser.add_argument('--amp', action='store_true', help='autocast: float16 on CUDA, bfloat16 on CPU')
    parser.add_argument('--no-channels-last', dest='channels_last', action='store_false',
                        help='NCHW layout instead of channels-last')
    parser.add_argument('--batch-size', type=int, default=None, help='train batch (default: 16 on CPU, 128 on CUDA)')
    parser.add_argument('--infer-batch-size', type=int, default=None,
                        help='inference batch (default: 32 on CPU, 256 on CUDA)')
    parser.add_argument('--input-size', type=int, default=224, help='square input side')
    parser.add_argument('--runs', type=int, default=5, help='timed runs per measurement (the median is reported)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs first')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch decides)')
    parser.add_argument('--checkpoint', default='work_dirs/demo/fmnist/toponet_fmnist.safetensors',
                        help='prune and deploy suites: the trained network to prune')
    parser.add_argument('--keep-ratio', type=float, default=0.5,
                        help='prune and deploy suites: fraction of edges kept')
    parser.add_argument('--criterion', default='abs', choices=('abs', 'relative'),
                        help='prune and deploy suites: edge score')
    parser.add_argument('--distractors', type=int, default=1_000_000, help='face suite: MegaFace distractors')
    parser.add_argument('--records', type=int, default=2000, help='face suite: images in the RecordIO file')
    parser.add_argument('--out', default=None, help='also write the results as JSON here')
    return parser


def _row(label, r, ratios=None):
    text = (f'  {label:<58} {r.median_s * 1e3:10.1f} ms {r.images_per_s:10.1f} img/s '
            f'{r.peak_mem_mb:10.1f} MB')
    if ratios:
        text += (f'   time x{ratios["time_ratio"]:.3f}  mem x{ratios["memory_ratio"]:.3f}  '
                 f'throughput x{ratios["throughput_ratio"]:.3f}')
    return text


def _label(spec):
    def short(key, value):
        if key == 'graphs':
            return f'{sum(len(g["edges"]) for g in value)} edges'
        return value

    parts = ([spec.runtime] if spec.runtime != 'torch' else []) + (['bn folded'] if spec.reparameterize else [])
    parts += [f'{k}={v}' for k, v in spec.export.items()]
    parts += [f'{k}={short(k, v)}' for k, v in spec.model_kwargs.items() if k not in ('num_classes', 'seed')]
    parts += [f'{k}={v}' for k, v in spec.env.items()] + (['grad_checkpointing'] if spec.grad_checkpointing else [])
    extra = ','.join(parts)
    return f'{spec.model} {spec.mode}' + (f' ({extra})' if extra else '')


def prune_suite(args, base, pair):
    """Compact network vs the unpruned one: same checkpoint, same batch, inference."""
    from backbones.checkpoint import create_model_from_checkpoint, read_checkpoint
    from backbones.complexity import count_macs
    from backbones.pruning import build_compact_model, prune_masks

    if not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f'prune suite: checkpoint not found: {args.checkpoint} (run make demo, or pass '
                                f'--checkpoint)')
    ckpt = read_checkpoint(args.checkpoint)
    model = create_model_from_checkpoint(args.checkpoint).eval()
    masks, _ = prune_masks(model, keep_ratio=args.keep_ratio, criterion=args.criterion)
    compact, _ = build_compact_model(model, masks)
    compact.eval()
    size = model.pretrained_cfg['input_size']
    macs = [count_macs(m, (1,) + tuple(size)) for m in (model, compact)]
    kwargs = {k: v for k, v in ckpt.model_kwargs.items() if k != 'graphs'}
    spec = replace(base, mode='infer', model=ckpt.model_name, img_size=size[-1],
                   batch_size=args.infer_batch_size or 256)
    print(f'prune: {args.checkpoint}, keep ratio {args.keep_ratio} ({args.criterion}): '
          f'MACs {macs[0] / 1e6:.2f}M -> {macs[1] / 1e6:.2f}M (x{macs[0] / macs[1]:.2f} fewer)')
    pair('prune', replace(spec, model_kwargs={**kwargs, 'graphs': [g.to_dict() for g in compact.graphs]}),
         replace(spec, model_kwargs={**kwargs, 'graphs': [g.to_dict() for g in model.graphs]}), {})
    return {'macs': macs, 'mac_ratio': macs[0] / macs[1]}


def profile_suite(base):
    """Top aten ops of one train step, complete (alpha learnable) vs residual l=2."""
    out = {}
    unit = 'device' if base.device == 'cuda' else 'CPU'
    for spec in (replace(base, mode='train'),
                 replace(base, mode='train', model='toponet_residual_l2', model_kwargs={'alpha_trainable': False})):
        rows = profile_in_subprocess(spec)
        label = _label(spec)
        out[label] = rows
        print(f'[profile] {label}: top aten ops by self {unit} time per train step')
        for r in rows:
            print(f'  {r["op"]:<48} {r["ms_per_step"]:9.2f} ms {100 * r["share"]:6.1f}% '
                  f'{r["calls_per_step"]:7.0f} calls')
    return out


def deploy_suite(args, base, pair, infer_bs):
    """onnxruntime against onnxruntime and against eager PyTorch, at one batch."""
    if base.device != 'cpu':
        print('[deploy] skipped: onnxruntime is measured on the CPU (--device cpu)')
        return {}
    infer = replace(base, mode='infer', batch_size=infer_bs)
    ort = replace(infer, runtime='onnxruntime', channels_last=False)
    resnet = replace(ort, model='resnet50')
    pair('deploy_ort_complete_vs_resnet50', ort, resnet, {'throughput_ratio': ('>=', 0.9)})
    pair('deploy_ort_residual_vs_resnet50', replace(ort, model='toponet_residual_l2'), resnet, {})
    pair('deploy_ort_mul_vs_conv_form', replace(ort, export={'aggregation': 'mul'}), ort, {})
    pair('deploy_ort_vs_eager', ort, infer, {})
    pair('deploy_eager_bn_folded', replace(infer, reparameterize=True), infer, {})
    out = {}
    if os.path.isfile(args.checkpoint):
        from backbones.checkpoint import create_model_from_checkpoint, read_checkpoint
        side = create_model_from_checkpoint(args.checkpoint).pretrained_cfg['input_size'][-1]
        trained = replace(ort, model=read_checkpoint(args.checkpoint).model_name,
                          checkpoint=os.path.abspath(args.checkpoint), img_size=side)
        pair('deploy_ort_pruned_vs_unpruned',
             replace(trained, export={'keep_ratio': args.keep_ratio, 'criterion': args.criterion}), trained,
             {'throughput_ratio': ('>=', 1.0)})
    else:
        print(f'[deploy_ort_pruned_vs_unpruned] skipped: checkpoint not found: {args.checkpoint} (run make demo, or '
              f'pass --checkpoint)')
    for spec in (ort, resnet):
        rows = profile_in_subprocess(spec)
        label = _label(spec)
        out[f'profile {label}'] = rows
        print(f'[deploy profile] {label}: onnxruntime node types by time per batch of {spec.batch_size}')
        for r in rows:
            print(f'  {r["op"]:<48} {r["ms_per_step"]:9.2f} ms {100 * r["share"]:6.1f}% '
                  f'{r["calls_per_step"]:7.0f} nodes')
    return out


def face_suite(args):
    """MegaFace identification at scale, and RecordIO decode throughput."""
    import subprocess
    import tempfile
    import time

    import numpy as np
    from face.recordio import FaceRecordSet, write_face_recordset

    tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'benchmark_megaface.py')
    proc = subprocess.run([sys.executable, tool, '--distractors', str(args.distractors)], capture_output=True,
                          text=True, check=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(('identification time', 'peak resident'))]
    print('[face] megaface: ' + '; '.join(lines))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.records, 112, 112, 3), dtype=np.uint8)
    images = (images // 32 * 32).astype(np.uint8)  # blocky, compressible content like a face crop's
    with tempfile.TemporaryDirectory() as root:
        write_face_recordset(root, list(images), [i % 100 for i in range(args.records)])
        records = FaceRecordSet(root)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            for i in range(len(records)):
                records.read(i)
            times.append(time.perf_counter() - start)
    rate = len(records) / sorted(times)[1]
    print(f'[face] recordio: {len(records)} 112x112 JPEG records read and decoded at {rate:.0f} images/s '
          f'(median of 3 passes, one process)')
    return {'megaface': lines, 'recordio_images_per_s': rate}


def run(argv) -> int:
    args = build_parser().parse_args(argv)
    device = str(cli.resolve_device(args.device))
    if device.startswith('cuda:'):  # every measurement runs in a subprocess: show it that one GPU only
        os.environ['CUDA_VISIBLE_DEVICES'] = device.split(':')[1]
        device = 'cuda'
    args.device = device
    cuda = args.device == 'cuda'
    base = BenchSpec(model='toponet_complete', device=args.device, channels_last=args.channels_last,
                     amp=args.amp, img_size=args.input_size, runs=args.runs, warmup=args.warmup,
                     threads=args.threads, batch_size=args.batch_size or (128 if cuda else 16))
    infer_bs = args.infer_batch_size or (256 if cuda else 32)
    info = machine_info()
    print('machine:', json.dumps(info))
    print(f'settings: device={args.device} amp={args.amp} channels_last={args.channels_last} '
          f'input={args.input_size} train_batch={base.batch_size} infer_batch={infer_bs} '
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
        # the same node ops on a sparse fixed topology: how much of the gap is the topology
        pair('infer_residual', replace(base, mode='infer', batch_size=infer_bs, model='toponet_residual_l2',
                                       model_kwargs={'alpha_trainable': False}),
             replace(base, mode='infer', batch_size=infer_bs, model='resnet50'), {})
    if 'agg' in args.suites:
        for mode in ('train', 'infer'):
            bs = base.batch_size if mode == 'train' else infer_bs
            pair(f'agg_{mode}', replace(base, mode=mode, batch_size=bs, model_kwargs={'aggregation': 'stacked'}),
                 replace(base, mode=mode, batch_size=bs, model_kwargs={'aggregation': 'weighted_sum'}), {})
            if cuda:  # the Triton row sum against torch.mv (cuBLAS gemv) inside the stacked path
                pair(f'agg_{mode}_row_sum', replace(base, mode=mode, batch_size=bs,
                                                    model_kwargs={'aggregation': 'stacked'}),
                     replace(base, mode=mode, batch_size=bs, model_kwargs={'aggregation': 'stacked'},
                             env={'TOPONET_ROW_SUM': 'torch'}), {})
    if 'ckpt' in args.suites:
        pair('ckpt', replace(base, mode='train', grad_checkpointing=True),
             replace(base, mode='train', model='toponet_residual_l2', model_kwargs={'alpha_trainable': False}),
             {'memory_ratio': ('<=', 1.15)})
    if 'profile' in args.suites:
        report['results']['profile'] = profile_suite(base)
    if 'prune' in args.suites:
        report['results']['prune'] = prune_suite(args, base, pair)
    if 'face' in args.suites:
        report['results']['face'] = face_suite(args)
    if 'deploy' in args.suites:
        report['results']['deploy'] = deploy_suite(args, base, pair, infer_bs)
    if args.out:
        from backbones.io_utils import atomic_write_text
        atomic_write_text(args.out, json.dumps(report, indent=2, default=str))
        print('results written to', args.out)
    cli.print_result({name: value['ratios'] for name, value in report['results'].items()
                      if isinstance(value, dict) and 'ratios' in value})
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


if __name__ == '__main__':
    sys.exit(main())
