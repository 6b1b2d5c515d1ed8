#!/usr/bin/env python
"""Export a checkpoint of the shared format for other consumers (backbones/export.py).

    python tools/export_backbone.py work_dirs/demo/fmnist/toponet_fmnist.safetensors
    python tools/export_backbone.py CKPT --format onnx --keep-ratio 0.5      # compact pruned, BN folded
    python tools/export_backbone.py CKPT --format hf torchscript onnx --out-dir work_dirs/x/export

Formats, written into ``--out-dir`` (default ``work_dirs/export_backbone/<checkpoint name>``):
  hf           ``hf/config.json`` + ``hf/model.safetensors``: the layout timm reads with
               ``timm.create_model('local-dir:<out-dir>/hf', pretrained=True)``, and the one to
               push to the Hugging Face hub (then ``'hf-hub:ORG/NAME'``); read back and checked.
  torchscript  ``<name>.pt``: the network scripted, batch norms folded; checked.
  onnx         ``<name>.onnx``: the inference form (batch norms folded, edge weights as
               constants, per-channel scaling that onnxruntime keeps in its blocked layout),
               dynamic batch; checked in onnxruntime against PyTorch (largest absolute
               difference, top-1 agreement on a seeded random batch).
With ``--keep-ratio`` or ``--threshold`` every format holds the compact pruned network
(backbones/pruning.py). The last stdout line is one JSON object with every file and check.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402

FORMATS = ('hf', 'torchscript', 'onnx')


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('checkpoint', help='shared checkpoint (.safetensors) of a classification run')
    parser.add_argument('--format', nargs='+', choices=FORMATS, default=['hf'], dest='formats',
                        help='what to write')
    cli.add_out_dir(parser, help='output folder (default: work_dirs/export_backbone/<checkpoint name>)')
    how = parser.add_mutually_exclusive_group()
    how.add_argument('--keep-ratio', type=float, default=None,
                     help='prune to the compact network keeping this fraction of edges first')
    how.add_argument('--threshold', type=float, default=None, help='prune edges scored below this value first')
    parser.add_argument('--criterion', choices=['abs', 'relative'], default='relative',
                        help="pruning score: |alpha|, or |alpha| over the largest |alpha| into the same node")
    parser.add_argument('--aggregation', choices=['conv', 'mul'], default='conv',
                        help='onnx: edge weights as per-channel 1x1 convolutions (onnxruntime keeps them in its '
                             'blocked layout) or as scalar multiplies')
    parser.add_argument('--no-fold-bn', dest='fold_bn', action='store_false',
                        help='onnx, torchscript: keep the batch norms')
    parser.add_argument('--legacy-exporter', action='store_true',
                        help="onnx: torch's TorchScript-based exporter instead of torch.onnx.export(dynamo=True)")
    parser.add_argument('--opset', type=int, default=18, help='onnx opset')
    parser.add_argument('--check-batch', type=int, default=8, help='images of the seeded random check batch')
    return parser


def run(argv) -> int:
    args = build_parser().parse_args(argv)
    from backbones.checkpoint import create_model_from_checkpoint, read_checkpoint
    from backbones.errors import InputError
    from backbones.export import export_onnx, export_torchscript, prune_to_compact, save_hub_layout

    if args.keep_ratio is not None and not 0.0 < args.keep_ratio <= 1.0:
        raise InputError(f'--keep-ratio {args.keep_ratio}', 'command line', 'a fraction in (0, 1]')
    if args.check_batch < 1:
        raise InputError(f'--check-batch {args.check_batch}', 'command line', 'at least 1 image')
    ckpt = read_checkpoint(args.checkpoint)
    model = create_model_from_checkpoint(args.checkpoint).eval()
    if args.keep_ratio is not None or args.threshold is not None:
        model = prune_to_compact(model, keep_ratio=args.keep_ratio, threshold=args.threshold,
                                 criterion=args.criterion).eval()
    name = os.path.splitext(os.path.basename(args.checkpoint))[0]
    out_dir = args.out_dir or cli.default_out_dir('export_backbone', name)
    os.makedirs(out_dir, exist_ok=True)
    result = {'checkpoint': os.path.abspath(args.checkpoint), 'model': ckpt.model_name,
              'edges': [s.graph.num_edges for s in model.stages]}
    if args.keep_ratio is not None or args.threshold is not None:
        result['pruned'] = {'keep_ratio': args.keep_ratio, 'threshold': args.threshold, 'criterion': args.criterion,
                            'edges_before': [g.num_edges for g in ckpt.graphs]}
    if 'hf' in args.formats:
        report = save_hub_layout(model, os.path.join(out_dir, 'hf'), class_names=ckpt.meta.get('classes'))
        print(f'hub layout: {report["dir"]} ({", ".join(report["files"])}), read back through timm: '
              f'max abs diff {report["max_abs_diff"]:.3g}')
        result['hf'] = report
    if 'torchscript' in args.formats:
        report = export_torchscript(model, os.path.join(out_dir, f'{name}.pt'), fold_bn=args.fold_bn)
        print(f'torchscript: {report["path"]}, max abs diff {report["max_abs_diff"]:.3g}')
        result['torchscript'] = report
    if 'onnx' in args.formats:
        report = export_onnx(model, os.path.join(out_dir, f'{name}.onnx'), batch_size=args.check_batch,
                             aggregation=args.aggregation, fold_bn=args.fold_bn, opset=args.opset,
                             dynamo=not args.legacy_exporter)
        fallback = f' (dynamo exporter failed: {report["dynamo_error"]})' if 'dynamo_error' in report else ''
        agreement = f', top-1 agreement {report["top1_agreement"]:.3f}' if 'top1_agreement' in report else ''
        print(f'onnx: {report["path"]} by the {report["exporter"]} exporter{fallback}; onnxruntime vs PyTorch: '
              f'max abs diff {report["max_abs_diff"]:.3g}{agreement}')
        result['onnx'] = report
    cli.print_result(result)
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


if __name__ == '__main__':
    sys.exit(main())
