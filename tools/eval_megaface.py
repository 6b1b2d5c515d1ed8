#!/usr/bin/env python
"""MegaFace Challenge 1 identification of a face checkpoint (Rank-1 and CMC for 10..1M
distractors, TAR at FAR=1e-6), with insightface's cleaned lists.

    python tools/eval_megaface.py work_dirs/x/toponet_face.safetensors \\
        --facescrub-root data/megaface/facescrub --facescrub-list data/megaface/facescrub_features_list.json \\
        --megaface-root data/megaface/megaface --megaface-list data/megaface/megaface_features_list.json_1000000_1 \\
        --facescrub-noises data/megaface/facescrub_noises.txt --megaface-noises data/megaface/megaface_noises.txt \\
        --feature-dir work_dirs/x/megaface_features --out-dir work_dirs/x/megaface

Images are aligned from their landmark JSON (``<image>.json``) with insightface's
``norm_crop``. Features are written as the devkit's matio files under --feature-dir (and
reused on a rerun). Writes ``megaface.json`` and ``cmc.png`` to --out-dir.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='MegaFace identification of a face TopoNet checkpoint.')
    parser.add_argument('checkpoint', help='face checkpoint (.safetensors, written by tools/train_face.py)')
    parser.add_argument('--facescrub-root', required=True, help='folder the probe list paths are relative to')
    parser.add_argument('--facescrub-list', required=True, help='probe list (devkit JSON or one path per line)')
    parser.add_argument('--megaface-root', required=True, help='folder the distractor list paths are relative to')
    parser.add_argument('--megaface-list', required=True, help='distractor list (devkit JSON or text)')
    parser.add_argument('--facescrub-noises', help="insightface's facescrub_noises.txt (cleaned probes)")
    parser.add_argument('--megaface-noises', help="insightface's megaface_noises.txt (cleaned distractors)")
    parser.add_argument('--sizes', type=int, nargs='+', default=[10, 100, 1000, 10000, 100000, 1000000],
                        help='distractor set sizes (prefixes of the list)')
    parser.add_argument('--max-rank', type=int, default=10, help='CMC computed up to this rank')
    parser.add_argument('--far', type=float, default=1e-6, help='false accept rate for the TAR')
    parser.add_argument('--feature-dir', help='write (and reuse) devkit feature files here')
    parser.add_argument('--file-ending', default='_toponet.bin', help='appended to image paths for feature files')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--out-dir', help='where megaface.json and cmc.png go (default: beside the checkpoint)')
    args = parser.parse_args(argv)

    from backbones.io_utils import atomic_write_text
    from face.megaface import evaluate_megaface, plot_cmc
    from face.model import load_face_checkpoint

    model = load_face_checkpoint(args.checkpoint)
    result, info = evaluate_megaface(
        model, args.facescrub_root, args.facescrub_list, args.megaface_root, args.megaface_list,
        args.facescrub_noises, args.megaface_noises, args.sizes, args.max_rank, args.far, args.feature_dir,
        args.file_ending, args.batch_size)
    out_dir = args.out_dir or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), 'megaface')
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, 'megaface.json'), json.dumps(dict(result.to_dict(), **info), indent=1))
    plot_cmc(result, os.path.join(out_dir, 'cmc.png'))
    print(f"{info['num_probes']} probes of {info['num_identities']} identities ({result.num_pairs} probe-gallery "
          f"pairs), {info['num_distractors']} distractors"
          + (f", {info['replaced_probes']} noisy probes replaced" if 'replaced_probes' in info else '')
          + (f", {info['removed_distractors']} noisy distractors removed" if 'removed_distractors' in info else ''))
    for size, rank1 in result.rank1.items():
        print(f'  {size:>9,} distractors: Rank-1 {rank1:6.2f}%   (chance {100.0 / (size + 1):.4f}%)')
    if result.tar is not None:
        print(f'  TAR at FAR={result.far:g}: {result.tar:.2f}% over {result.num_genuine} genuine and '
              f'{result.num_impostor:,} impostor pairs')
    print(f'results: {out_dir}/megaface.json, CMC curves: {out_dir}/cmc.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
