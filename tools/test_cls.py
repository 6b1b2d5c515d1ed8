#!/usr/bin/env python
"""Evaluate a shared TopoNet checkpoint (.safetensors) on a config's test split; runs under
torchrun.

    python tools/test_cls.py classification/configs/toponet_fmnist_adaptive.py work_dirs/x/toponet_fmnist.safetensors
    python tools/test_cls.py CONFIG CKPT --tta --out work_dirs/x/predictions.json   # flip TTA, per-image top-5
    torchrun --nproc_per_node 8 tools/test_cls.py CONFIG CKPT

Prints the metrics and, as its last line, one JSON object (``cls/top1`` etc.), once under
torchrun. The test logs go to ``--work-dir`` (default ``work_dirs/<config name>``).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402


def build_parser():
    parser = cli.make_parser(__doc__)
    cli.add_config(parser, 'classification config (its test_dataloader and test_evaluator are used)')
    parser.add_argument('checkpoint', help='checkpoint written by training (.safetensors)')
    cli.add_work_dir(parser, help='folder of the test run\'s logs (default: work_dirs/<config name>)')
    cli.add_cfg_options(parser)
    parser.add_argument('--out', default=None,
                        help='also write every test image\'s top-k classes and scores to this .json or .npz file')
    parser.add_argument('--topk', type=int, default=5, help='classes per image in --out')
    parser.add_argument('--tta', '--flip', dest='tta', action='store_true',
                        help='test-time augmentation: average the predictions of each image and its mirror')
    cli.add_amp(parser)
    cli.add_launcher(parser)
    cli.add_device(parser)
    return parser


def run(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.topk < 1:
        parser.error(f'--topk must be >= 1, got {args.topk}')
    cli.use_runner_device(args.device, args.launcher)
    from classification.evaluate import evaluate_checkpoint
    cfg_options = dict(args.cfg_options or {})
    if args.tta:
        cfg_options['model.flip_test'] = True
    metrics = evaluate_checkpoint(args.config, args.checkpoint, args.work_dir, cfg_options or None,
                                  launcher=args.launcher, predictions=args.out, topk=args.topk, amp=args.amp)
    view = ' (flip TTA)' if args.tta else ' (single view)'
    for name, value in metrics.items():
        cli.rank0_print(f'test {name}{view}: {value:.2f}%' if name.startswith('cls/top') else f'test {name}: {value}')
    if args.out:
        cli.rank0_print(f'wrote the top-{args.topk} predictions of every test image to {args.out}')
    cli.print_result({'checkpoint': args.checkpoint, 'flip_test': args.tta, **metrics,
                      **({'out': os.path.abspath(args.out)} if args.out else {})})
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


if __name__ == '__main__':
    sys.exit(main())
