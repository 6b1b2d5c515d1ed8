#!/usr/bin/env python
"""Export a face checkpoint's embedding network to ONNX for insightface.

    python tools/export_face_onnx.py work_dirs/x/toponet_face.safetensors work_dirs/x/toponet_face.onnx

The file loads with ``insightface.model_zoo.get_model(path)`` as its recognition model
(``ArcFaceONNX``; ``get_feat(bgr_images)`` returns the embeddings). The network's input
side must be at least 112 and a multiple of 16 for insightface to route it.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='Export a face TopoNet checkpoint to ONNX for insightface.')
    parser.add_argument('checkpoint', help='face checkpoint (.safetensors)')
    parser.add_argument('output', help='the .onnx file to write')
    parser.add_argument('--opset', type=int, default=17)
    args = parser.parse_args(argv)

    from face.export import export_face_onnx
    from face.model import load_face_checkpoint
    path = export_face_onnx(load_face_checkpoint(args.checkpoint), args.output, opset=args.opset)
    print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
