#!/usr/bin/env python
"""Train a face TopoNet from an mmengine config; runs under torchrun for DDP.

    python tools/train_face.py face/configs/toponet_face_toy.py
    torchrun --nproc_per_node 8 tools/train_face.py face/configs/toponet_face_ms1mv2_complete_adaptive.py
    python tools/train_face.py CONFIG --work-dir work_dirs/x --resume   # continue a killed run
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Train a TopoNet-suite face recognition model.')
    parser.add_argument('config', help='mmengine config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys: key=value')
    parser.add_argument('--resume', action='store_true', help='resume from the latest checkpoint in work-dir')
    parser.add_argument('--amp', action='store_true', help='mixed precision (AMP optimizer wrapper)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default=None,
                        help='distributed launcher (default: pytorch under torchrun, else none)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from mmengine.runner import Runner
    from backbones.mmengine_runner import build_runner_cfg
    cfg = build_runner_cfg(args.config, args.work_dir, args.cfg_options, args.resume, args.launcher, args.amp)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return 0


if __name__ == '__main__':
    sys.exit(main())
