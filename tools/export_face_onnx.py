#!/usr/bin/env python
"""Export a face checkpoint's embedding network to ONNX for insightface.

    python tools/export_face_onnx.py work_dirs/x/toponet_face.safetensors --out work_dirs/x/toponet_face.onnx

The file (default ``work_dirs/export_face_onnx/<checkpoint name>.onnx``) loads with
``insightface.model_zoo.get_model(path)`` as its recognition model (``ArcFaceONNX``;
``get_feat(bgr_images)`` returns the embeddings). The graph's input side must be at least
112 and a multiple of 16 for insightface to route it; a network trained at a smaller side
(the demo's 32x32 model) exports with ``--input-size 112``, which resizes the faces to the
network's side inside the graph as training did (``cv2.INTER_AREA``).

The file is then loaded back through insightface and its embeddings of a few random images
compared with PyTorch's. The last stdout line is one JSON object naming the file, with that
check (``max_abs_diff``, ``min_cosine``).

    python tools/export_face_onnx.py work_dirs/demo/face/train/toponet_face_toy.safetensors --input-size 112
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('checkpoint', help='face checkpoint (.safetensors)')
    parser.add_argument('--out', default=None,
                        help='the .onnx file to write (default: work_dirs/export_face_onnx/<checkpoint name>.onnx)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset version')
    parser.add_argument('--input-size', type=int, default=None,
                        help="the graph's input side (default: the network's); a larger one resizes the faces to the "
                             "network's side inside the graph")
    return parser


def run(argv) -> int:
    args = build_parser().parse_args(argv)
    from backbones.errors import InputError
    from face.export import export_face_onnx
    from face.model import load_face_checkpoint
    out = args.out or os.path.join(cli.default_out_dir('export_face_onnx'),
                                   os.path.splitext(os.path.basename(args.checkpoint))[0] + '.onnx')
    model = load_face_checkpoint(args.checkpoint)
    try:
        path = export_face_onnx(model, out, input_size=args.input_size, opset=args.opset)
    except ValueError as err:
        if args.input_size is None and model.input_size < 112:
            raise InputError(str(err), args.checkpoint, f'a {model.input_size}x{model.input_size} network exports for '
                             'insightface with --input-size 112 (resized inside the graph)') from err
        raise
    cli.rank0_print(f'wrote {path}')
    import numpy as np
    from face.export import insightface_embedding_check
    side = args.input_size or model.input_size
    rng = np.random.default_rng(0)
    check = insightface_embedding_check(model, path, [rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                                                      for _ in range(4)])
    cli.rank0_print(f"insightface loads it as {check['model']} ({check['input_size']}x{check['input_size']} in, "
                    f"{check['embedding_size']}-d out); on {check['num_images']} random images its embeddings match "
                    f"PyTorch's within {check['max_abs_diff']:.1e} (cosine >= {check['min_cosine']:.6f})")
    cli.print_result({'checkpoint': args.checkpoint, 'onnx': os.path.abspath(path), 'insightface': check})
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


if __name__ == '__main__':
    sys.exit(main())
