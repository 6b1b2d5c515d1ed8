#!/usr/bin/env python
"""Train a face TopoNet from an mmengine config; runs under torchrun for DDP.

    python tools/train_face.py face/configs/toponet_face_toy.py
    torchrun --nproc_per_node 8 tools/train_face.py face/configs/toponet_face_ms1mv2_complete_adaptive.py
    python tools/train_face.py CONFIG --work-dir work_dirs/x --resume   # continue a killed run
    python tools/train_face.py CONFIG --work-dir work_dirs/y --resume work_dirs/x/iter_2000.pth   # from that file

The last stdout line is one JSON object (work dir, epoch, iteration), once under torchrun.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_parser():
    from backbones.mmengine_runner import train_parser
    return train_parser(__doc__)


def main(argv=None) -> int:
    from backbones.mmengine_runner import train_from_command_line
    return train_from_command_line(argv, description=__doc__)


if __name__ == '__main__':
    sys.exit(main())
