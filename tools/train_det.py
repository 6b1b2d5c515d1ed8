#!/usr/bin/env python
"""Train a detector from an mmdet config (detection/configs); runs under torchrun for DDP.

    python tools/train_det.py detection/configs/faster-rcnn_toponet-complete-adaptive_fpn_1x_coco.py
    torchrun --nproc_per_node 16 tools/train_det.py CONFIG --work-dir work_dirs/x
    python tools/train_det.py CONFIG --work-dir work_dirs/x --resume   # continue (or skip) a run
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Train a TopoNet-suite detector.')
    parser.add_argument('config', help='mmdet config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys: key=value')
    parser.add_argument('--resume', action='store_true', help='resume from the latest checkpoint in work-dir')
    parser.add_argument('--amp', action='store_true', help='mixed precision (AMP optimizer wrapper)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default=None,
                        help='distributed launcher (default: pytorch under torchrun, else none)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from mmengine.runner import Runner
    import detection  # noqa: F401  (registrations; lets mmengine read the mmdet:: bases)
    from backbones.mmengine_runner import build_runner_cfg
    cfg = build_runner_cfg(args.config, args.work_dir, args.cfg_options, args.resume, args.launcher, args.amp)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return 0


if __name__ == '__main__':
    sys.exit(main())
