#!/usr/bin/env python
"""Classify your own images with a trained checkpoint: the top-k classes of each, by name.

    python tools/classify.py work_dirs/demo/fmnist/toponet_fmnist.safetensors photo.jpg shoe.png
    python tools/classify.py CKPT images/*.jpg --topk 3 --device cuda

Each image gets the checkpoint's preprocessing (``classification.inference.ImageClassifier``):
converted to the network's channels (a grayscale Fashion-MNIST model takes a colour JPEG as
``L``), resized and centre-cropped to its input size, normalised with its mean and std.
Class names come from the checkpoint (indices for checkpoints written without them). Prints
one line per image and, as its last line, one JSON object with every prediction.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('checkpoint', help='classification checkpoint (.safetensors, written by tools/train_cls.py)')
    parser.add_argument('images', nargs='+', metavar='IMAGE', help='image files (JPEG, PNG, BMP, WebP)')
    parser.add_argument('--topk', type=int, default=5, help='classes shown per image')
    parser.add_argument('--batch-size', type=int, default=32, help='images per forward pass')
    cli.add_device(parser)
    return parser


def run(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.topk < 1 or args.batch_size < 1:
        parser.error(f'--topk and --batch-size must be >= 1, got {args.topk} and {args.batch_size}')
    from classification.inference import ImageClassifier
    classifier = ImageClassifier(args.checkpoint, device=cli.resolve_device(args.device))
    predictions = classifier.predict(args.images, topk=args.topk, batch_size=args.batch_size)
    for prediction in predictions:
        ranked = ', '.join(f'{name} {100 * score:.1f}%' for name, score in zip(prediction['classes'],
                                                                             prediction['scores']))
        cli.rank0_print(f'{prediction["image"]}: {ranked}')
    cli.print_result({'checkpoint': args.checkpoint, 'predictions': predictions})
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


if __name__ == '__main__':
    sys.exit(main())
