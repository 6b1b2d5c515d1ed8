#!/usr/bin/env python
"""Train a detector from an mmdet config (detection/configs); runs under torchrun for DDP.

    python tools/train_det.py detection/configs/faster-rcnn_toponet-complete-adaptive_fpn_1x_coco.py
    torchrun --nproc_per_node 16 tools/train_det.py CONFIG --work-dir work_dirs/x
    python tools/train_det.py CONFIG --work-dir work_dirs/x --resume   # continue (or skip) a run
    python tools/train_det.py CONFIG --work-dir work_dirs/y --resume work_dirs/x/epoch_4.pth   # from that file

The last stdout line is one JSON object (work dir, epoch, iteration), once under torchrun.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_parser():
    from backbones.mmengine_runner import train_parser
    return train_parser(__doc__, config_help='mmdet config file')


def main(argv=None) -> int:
    from backbones.mmengine_runner import train_from_command_line
    # `detection` registers our mmdet pieces and lets mmengine read the mmdet:: config bases
    return train_from_command_line(argv, description=__doc__, config_help='mmdet config file', imports=('detection',))


if __name__ == '__main__':
    sys.exit(main())
