#!/usr/bin/env python
"""Write the toy shapes dataset in COCO format (detection/toy_coco.py); a folder already
holding the same dataset is left alone.

    python tools/make_toy_coco.py work_dirs/demo/toy_coco

The last stdout line is one JSON object with the paths written.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('out_dir', help='dataset root (train/, val/, annotations/ are written under it)')
    parser.add_argument('--num-train', type=int, default=400, help='training images')
    parser.add_argument('--num-val', type=int, default=100, help='validation images')
    parser.add_argument('--image-size', type=int, default=128, help='side of the square images in pixels')
    parser.add_argument('--max-objects', type=int, default=3, help='most shapes per image')
    parser.add_argument('--min-size', type=int, default=24, help='smallest shape extent in pixels')
    parser.add_argument('--max-size', type=int, default=56, help='largest shape extent in pixels')
    parser.add_argument('--seed', type=int, default=0, help='seed of the generator')
    return parser


def run(argv) -> int:
    args = build_parser().parse_args(argv)
    from detection.toy_coco import make_toy_coco
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise NotADirectoryError(f'the dataset root is a file, not a folder: {args.out_dir}')
    paths = make_toy_coco(args.out_dir, num_train=args.num_train, num_val=args.num_val, image_size=args.image_size,
                          max_objects=args.max_objects, min_size=args.min_size, max_size=args.max_size,
                          seed=args.seed)
    for name, path in paths.items():
        cli.rank0_print(f'{name}: {path}')
    cli.print_result({name: os.path.abspath(path) for name, path in paths.items()})
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


if __name__ == '__main__':
    sys.exit(main())
