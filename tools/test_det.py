#!/usr/bin/env python
"""Evaluate a trained detector (mmengine checkpoint) on a config's test split; runs under
torchrun.

    python tools/test_det.py CONFIG work_dirs/x/epoch_12.pth
    python tools/test_det.py CONFIG work_dirs/x          # the run's last checkpoint
    python tools/test_det.py CONFIG work_dirs/x --tta --out work_dirs/x/results.pkl

Prints the metrics and, as its last line, one JSON object (``coco/bbox_mAP`` etc.), once
under torchrun. ``--out`` dumps the predictions as mmdet's ``tools/test.py --out`` does
(``DumpDetResults``, a pickle for offline evaluation); ``--tta`` runs the config's
``tta_model``/``tta_pipeline``, by default horizontal-flip test-time augmentation merged by
mmdet's ``DetTTAModel``. The test logs go to ``--work-dir`` (default ``work_dirs/<config name>``).
"""
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402


def resolve_checkpoint(path: str) -> str:
    """A checkpoint file, or a work dir whose ``last_checkpoint`` names one."""
    if os.path.isdir(path):
        pointer = os.path.join(path, 'last_checkpoint')
        if not os.path.isfile(pointer):
            raise FileNotFoundError(f'{path} is a folder without a last_checkpoint file: pass a .pth checkpoint')
        with open(pointer) as f:
            path = f.read().strip()
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    return path


def use_test_time_augmentation(cfg) -> None:
    """Wrap ``cfg.model`` in the config's ``tta_model`` and test on its ``tta_pipeline``. A
    config without them gets mmdet's ``DetTTAModel`` (NMS at IoU 0.5 over the merged boxes)
    and its test pipeline with the packing step replaced by original + mirrored views."""
    from mmengine.config import ConfigDict
    if cfg.get('tta_model') is None:
        cfg.tta_model = dict(type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                                                              max_per_img=100))
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:  # wrappers (RepeatDataset, ...) hold the pipeline further down
        dataset = dataset.dataset
    if cfg.get('tta_pipeline') is None:
        pipeline = copy.deepcopy(dataset.pipeline)
        pack = pipeline[-1]  # PackDetInputs: DetTTAModel un-flips boxes by the flip keys of each view
        if pack.get('meta_keys') is not None:
            pack['meta_keys'] = tuple(pack['meta_keys']) + tuple(
                key for key in ('flip', 'flip_direction') if key not in pack['meta_keys'])
        pipeline[-1] = dict(type='TestTimeAug', transforms=[
            [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)], [pack]])
        cfg.tta_pipeline = pipeline
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    dataset.pipeline = cfg.tta_pipeline


def build_parser():
    parser = cli.make_parser(__doc__)
    cli.add_config(parser, 'mmdet config file (its test_dataloader and test_evaluator are used)')
    parser.add_argument('checkpoint', help='checkpoint written by tools/train_det.py (.pth), or its work dir')
    cli.add_work_dir(parser, help='folder of the test run\'s logs (default: work_dirs/<config name>)')
    cli.add_cfg_options(parser)
    parser.add_argument('--out', default=None,
                        help="dump the predictions to this .pkl file (mmdet's DumpDetResults)")
    parser.add_argument('--tta', action='store_true', help='test-time augmentation (horizontal flip by default)')
    cli.add_amp(parser)
    cli.add_launcher(parser)
    cli.add_device(parser)
    return parser


def run(argv) -> int:
    args = build_parser().parse_args(argv)
    from backbones.errors import InputError
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise InputError('--out must name a pickle file', args.out, "a path ending in .pkl (mmdet's result dump)")
    cli.use_runner_device(args.device, args.launcher)

    from mmengine.runner import Runner
    import detection  # noqa: F401  (registrations; lets mmengine read the mmdet:: bases)
    from backbones.mmengine_runner import build_runner_cfg
    from detection.checkpoints import load_detector_checkpoint
    checkpoint = resolve_checkpoint(args.checkpoint)
    cfg = build_runner_cfg(args.config, args.work_dir, args.cfg_options, launcher=args.launcher, amp=args.amp)
    cfg.load_from, cfg.resume = None, False  # mmengine's load is lenient: loaded strictly below instead
    if args.tta:
        use_test_time_augmentation(cfg)
    runner = Runner.from_cfg(cfg)
    load_detector_checkpoint(runner.model, checkpoint, runner)
    if args.out:
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    from backbones.console import captured_prints
    with captured_prints(runner.logger):  # pycocotools' chatter into the log file
        metrics = runner.test()
    for name, value in metrics.items():
        cli.rank0_print(f'test {name}: {value}')
    if args.out:
        cli.rank0_print(f'wrote the predictions to {args.out}')
    cli.print_result({'checkpoint': checkpoint, 'tta': args.tta, **metrics,
                      **({'out': os.path.abspath(args.out)} if args.out else {})})
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


if __name__ == '__main__':
    sys.exit(main())
