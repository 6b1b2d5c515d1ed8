#!/usr/bin/env python
"""Prune a TopoNet checkpoint to a compact static model (paper section 3.2.3).

    python tools/prune.py work_dirs/x/toponet_fmnist.safetensors --threshold 0.2
    python tools/prune.py work_dirs/x/toponet_fmnist.safetensors --keep-ratio 0.5 --out-dir work_dirs/x/pruned
    python tools/prune.py CKPT --threshold 0.2 --eval-samples 2000 \\
        --config classification/configs/toponet_fmnist_adaptive.py

Drops the edges with |alpha| below the threshold (or all but the given fraction of edges
with the largest |alpha|), removes the nodes left without input or output, and writes into
``--out-dir`` (default ``work_dirs/prune/<checkpoint name>_<threshold or ratio>``): the
compact model as a shared checkpoint (``<name>_pruned.safetensors``, loadable with
``create_model_from_checkpoint`` or timm), its TorchScript (``.pt``) and ONNX (``.onnx``)
exports, ``prune_report.json`` and the pruned adjacency picture. Prints parameters, MACs
and the median inference time of one batch before and after (on ``--device``), and with
``--eval-samples`` the test accuracy of both on the data of ``--config`` (any
classification config: ImageNet folder, CIFAR-100, Fashion-MNIST).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('checkpoint', help='shared checkpoint (.safetensors)')
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument('--threshold', type=float, help='drop edges with |alpha| below this value')
    how.add_argument('--keep-ratio', type=float, help='keep this fraction of edges (largest |alpha|, all stages)')
    parser.add_argument('--criterion', choices=['abs', 'relative'], default='abs',
                        help="edge score: |alpha| (the paper's) or |alpha| over the largest |alpha| into the "
                             "same node (never cuts a stage)")
    parser.add_argument('--per-stage', action='store_true',
                        help='with --keep-ratio: keep that fraction in every stage, not over the whole network')
    cli.add_out_dir(parser, help='output folder (default: work_dirs/prune/<checkpoint name>_<threshold or ratio>)')
    parser.add_argument('--no-export', action='store_true', help='skip the TorchScript and ONNX exports')
    parser.add_argument('--bench-batch', type=int, default=64, help='batch size of the timing')
    parser.add_argument('--bench-runs', type=int, default=60,
                        help='timed forward passes per model, in alternating rounds of 3')
    parser.add_argument('--bench-warmup', type=int, default=5, help='untimed passes before timing')
    parser.add_argument('--contiguous', action='store_true',
                        help='time in NCHW layout (default: channels-last, the faster one on CPU)')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads for the timing (default: torch '
                                                                  'decides)')
    cli.add_device(parser, default='cpu')
    parser.add_argument('--eval-samples', type=int, default=0,
                        help='also score both models on a seeded subset of this many test images of --config '
                             '(0: skip)')
    parser.add_argument('--config', default=None,
                        help='classification config whose test_dataloader --eval-samples scores on')
    cli.add_cfg_options(parser)
    return parser


def run(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.per_stage and args.keep_ratio is None:
        parser.error('--per-stage goes with --keep-ratio')
    if args.eval_samples and not args.config:
        parser.error('--eval-samples needs --config (the classification config whose test split to score on)')
    if args.eval_samples < 0:
        parser.error(f'--eval-samples must be >= 0, got {args.eval_samples}')

    import numpy as np
    import torch
    from backbones.complexity import count_macs, count_parameters
    from backbones.io_utils import atomic_write_text
    from backbones.pruning import (export_onnx, export_torchscript, measure_cpu_latency, prune_checkpoint)
    from backbones.topology_export import extract_topology
    from backbones.viz import plot_adjacency

    if args.threads:
        torch.set_num_threads(args.threads)
    device = cli.resolve_device(args.device)
    tag = (f't{args.threshold:g}' if args.threshold is not None
           else f'keep{args.keep_ratio:g}' + ('_per_stage' if args.per_stage else ''))
    tag += '_relative' if args.criterion == 'relative' else ''
    stem = os.path.splitext(os.path.basename(args.checkpoint))[0]
    out_dir = args.out_dir or cli.default_out_dir('prune', f'{stem}_{tag}')
    out_ckpt = os.path.join(out_dir, f'{stem}_pruned.safetensors')

    # a threshold that cuts a stage or a bad checkpoint raises a user error: one error: line (cli.run_main)
    full, compact, report = prune_checkpoint(args.checkpoint, out_ckpt, threshold=args.threshold,
                                             keep_ratio=args.keep_ratio, per_stage=args.per_stage,
                                             criterion=args.criterion)
    thresholds = ', '.join(f'{t:.4g}' for t in report['thresholds'])
    channels = next(m.in_channels for m in full.modules() if isinstance(m, torch.nn.Conv2d))
    input_size = (channels,) + tuple(full.pretrained_cfg['input_size'])[1:]  # the built in_chans, not the default
    for name, model in (('before', full), ('after', compact)):
        report[f'params_{name}'] = count_parameters(model)
        report[f'macs_{name}'] = count_macs(model, (1,) + input_size)
    bench_size = (args.bench_batch,) + input_size
    # Alternating short rounds, so both models see the same machine load; the speed-up is the
    # median of the per-round ratios (robust to load changing between rounds).
    rounds = max(1, args.bench_runs // 3)
    timings = {'before': [], 'after': []}
    unit = device.type  # report keys: cpu_ms_before, cuda_ms_before, ...
    full.to(device)
    compact.to(device)
    try:
        for round_index in range(rounds):
            for name, model in (('before', full), ('after', compact)):
                timings[name].append(measure_cpu_latency(model, bench_size, runs=3,
                                                         warmup=args.bench_warmup if round_index == 0 else 0,
                                                         channels_last=not args.contiguous)['median_ms'])
    finally:
        full.to('cpu')
        compact.to('cpu')
    for name, values in timings.items():
        report[f'{unit}_ms_{name}'] = float(np.median(values))
    report[f'{unit}_speedup'] = float(np.median(np.array(timings['before']) / np.array(timings['after'])))
    report[f'{unit}_timing'] = {'device': str(device), 'batch': args.bench_batch, 'rounds': rounds,
                                'runs_per_round': 3, 'threads': torch.get_num_threads(),
                                'channels_last': not args.contiguous,
                                'statistic': 'median over alternating rounds of each round\'s median; speed-up: '
                                             'median of per-round ratios',
                                'round_ms': timings}

    if args.eval_samples:
        from classification.damage import evaluate_accuracy, load_config_data
        data = load_config_data(args.config, args.cfg_options, eval_samples=args.eval_samples, train=False)
        full.to(device)
        compact.to(device)
        normalizer = data.normalizer(full)
        report['accuracy_before'] = evaluate_accuracy(full, data.test_loader, normalizer)
        report['accuracy_after'] = evaluate_accuracy(compact, data.test_loader, normalizer)
        report['eval_samples'] = len(data.test_loader.dataset)
        report['eval_config'] = os.path.abspath(args.config)
        full.to('cpu')
        compact.to('cpu')

    if not args.no_export:
        x = torch.randn((2,) + input_size)
        scripted = export_torchscript(compact, os.path.join(out_dir, f'{stem}_pruned.pt'))
        onnx_path = os.path.join(out_dir, f'{stem}_pruned.onnx')
        export_onnx(compact, onnx_path, (1,) + input_size)
        import onnxruntime as ort
        session = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
        with torch.no_grad():
            eager = compact(x)
            report['torchscript_max_abs_diff'] = float((scripted(x) - eager).abs().max())
        report['onnx_max_abs_diff'] = float(np.abs(session.run(None, {'images': x.numpy()})[0] - eager.numpy()).max())
        report['exports'] = [os.path.join(out_dir, f'{stem}_pruned.pt'), onnx_path]

    plot_adjacency(extract_topology(compact), os.path.join(out_dir, 'adjacency_pruned.png'),
                   title=f'{report["model"]} pruned, {args.criterion} score >= {thresholds} (per stage)')
    atomic_write_text(os.path.join(out_dir, 'prune_report.json'), json.dumps(report, indent=1))

    def change(key):
        before, after = report[f'{key}_before'], report[f'{key}_after']
        return f'{before:,} -> {after:,} ({100.0 * (after - before) / before:+.1f}%)'
    say = cli.rank0_print
    say(f'{args.criterion} score >= [{thresholds}] per stage: edges per stage {report["edges_before"]} -> '
        f'{report["edges_after"]}, nodes {report["nodes_before"]} -> {report["nodes_after"]}')
    say(f'params {change("params")}; MACs/image {change("macs")}')
    layout = 'NCHW' if args.contiguous else 'channels-last'
    threads = f', {torch.get_num_threads()} threads' if unit == 'cpu' else ''
    say(f'{str(device).upper()} time, batch {args.bench_batch}{threads}, {layout}: '
        f'{report[f"{unit}_ms_before"]:.1f} ms -> {report[f"{unit}_ms_after"]:.1f} ms '
        f'(speed-up {report[f"{unit}_speedup"]:.2f}x, median of {rounds} alternating rounds)')
    say(f'compact vs masked original: max |diff| {report["max_abs_diff_vs_masked"]:.2e} '
        f'(reloaded: {report["max_abs_diff_reloaded"]:.2e})')
    if 'accuracy_before' in report:
        say(f'top-1 on {report["eval_samples"]} test images: {report["accuracy_before"]:.2f}% -> '
            f'{report["accuracy_after"]:.2f}%')
    say(f'wrote {out_ckpt} and the report in {out_dir}')
    cli.print_result({k: v for k, v in report.items() if not isinstance(v, (list, dict))})
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


if __name__ == '__main__':
    sys.exit(main())
