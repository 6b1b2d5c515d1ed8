#!/usr/bin/env python
"""Evaluate a trained detector (mmengine checkpoint) on a config's test split.

    python tools/test_det.py CONFIG work_dirs/x/epoch_12.pth
    python tools/test_det.py CONFIG work_dirs/x          # the run's last checkpoint

Prints the metrics and, as its last line, one JSON object (``coco/bbox_mAP`` etc.).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def main(argv=None) -> int:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Evaluate a TopoNet-suite detector.')
    parser.add_argument('config', help='mmdet config file (its test_dataloader and test_evaluator are used)')
    parser.add_argument('checkpoint', help='checkpoint written by tools/train_det.py (.pth), or its work dir')
    parser.add_argument('--work-dir', help='where the test logs go (default: beside the checkpoint)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys: key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default=None,
                        help='distributed launcher (default: pytorch under torchrun, else none)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from mmengine.runner import Runner
    import detection  # noqa: F401  (registrations; lets mmengine read the mmdet:: bases)
    from backbones.mmengine_runner import build_runner_cfg
    checkpoint = resolve_checkpoint(args.checkpoint)
    work_dir = args.work_dir or os.path.join(os.path.dirname(os.path.abspath(checkpoint)), 'test')
    cfg = build_runner_cfg(args.config, work_dir, args.cfg_options, launcher=args.launcher)
    cfg.load_from = checkpoint
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    for name, value in metrics.items():
        print(f'test {name}: {value}')
    print(json.dumps({'checkpoint': checkpoint, **{k: v for k, v in metrics.items()}}))  # machine-readable
    return 0


if __name__ == '__main__':
    sys.exit(main())
