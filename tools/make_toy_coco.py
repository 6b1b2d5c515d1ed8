#!/usr/bin/env python
"""Write the toy shapes dataset in COCO format (detection/toy_coco.py); a folder already
holding the same dataset is left alone.

    python tools/make_toy_coco.py work_dirs/demo/toy_coco
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='Write a toy COCO-format detection dataset.')
    parser.add_argument('out_dir', help='dataset root (train/, val/, annotations/ are written under it)')
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--image-size', type=int, default=128)
    parser.add_argument('--max-objects', type=int, default=3)
    parser.add_argument('--min-size', type=int, default=24, help='smallest shape extent in pixels')
    parser.add_argument('--max-size', type=int, default=56, help='largest shape extent in pixels')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)

    from detection.toy_coco import make_toy_coco
    paths = make_toy_coco(args.out_dir, num_train=args.num_train, num_val=args.num_val, image_size=args.image_size,
                          max_objects=args.max_objects, min_size=args.min_size, max_size=args.max_size,
                          seed=args.seed)
    for name, path in paths.items():
        print(f'{name}: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
