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
reused on a rerun). Writes ``megaface.json`` and ``cmc.png`` to ``--out-dir`` (default
``work_dirs/eval_megaface/<checkpoint name>``); the last stdout line is one JSON object
(Rank-1 per distractor count, TAR).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('checkpoint', help='face checkpoint (.safetensors, written by tools/train_face.py)')
    parser.add_argument('--facescrub-root', required=True, help='folder the probe list paths are relative to')
    parser.add_argument('--facescrub-list', required=True, help='probe list (devkit JSON or one path per line)')
    parser.add_argument('--megaface-root', required=True, help='folder the distractor list paths are relative to')
    parser.add_argument('--megaface-list', required=True, help='distractor list (devkit JSON or text)')
    parser.add_argument('--facescrub-noises', default=None,
                        help="insightface's facescrub_noises.txt (cleaned probes)")
    parser.add_argument('--megaface-noises', default=None,
                        help="insightface's megaface_noises.txt (cleaned distractors)")
    parser.add_argument('--sizes', type=int, nargs='+', default=[10, 100, 1000, 10000, 100000, 1000000],
                        help='distractor set sizes (prefixes of the list)')
    parser.add_argument('--max-rank', type=int, default=10, help='CMC computed up to this rank')
    parser.add_argument('--far', type=float, default=1e-6, help='false accept rate for the TAR')
    parser.add_argument('--feature-dir', default=None, help='write (and reuse) devkit feature files here')
    parser.add_argument('--file-ending', default='_toponet.bin', help='appended to image paths for feature files')
    parser.add_argument('--batch-size', type=int, default=64, help='images per forward pass of the feature extraction')
    cli.add_amp(parser)
    cli.add_device(parser)
    cli.add_out_dir(parser, help='where megaface.json and cmc.png go (default: work_dirs/eval_megaface/<checkpoint '
                                 'name>)')
    return parser


def run(argv) -> int:
    args = build_parser().parse_args(argv)

    from backbones.io_utils import atomic_write_text
    from face.megaface import evaluate_megaface, plot_cmc
    from face.model import load_face_checkpoint

    model = load_face_checkpoint(args.checkpoint).to(cli.resolve_device(args.device))
    result, info = evaluate_megaface(
        model, args.facescrub_root, args.facescrub_list, args.megaface_root, args.megaface_list,
        args.facescrub_noises, args.megaface_noises, args.sizes, args.max_rank, args.far, args.feature_dir,
        args.file_ending, args.batch_size, checkpoint=args.checkpoint, amp=args.amp)
    stem = os.path.splitext(os.path.basename(args.checkpoint))[0]
    out_dir = args.out_dir or cli.default_out_dir('eval_megaface', stem)
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, 'megaface.json'), json.dumps(dict(result.to_dict(), **info), indent=1))
    plot_cmc(result, os.path.join(out_dir, 'cmc.png'))
    say = cli.rank0_print
    say(f"{info['num_probes']} probes of {info['num_identities']} identities ({result.num_pairs} probe-gallery "
        f"pairs), {info['num_distractors']} distractors"
        + (f", {info['replaced_probes']} noisy probes replaced" if 'replaced_probes' in info else '')
        + (f", {info['removed_distractors']} noisy distractors removed" if 'removed_distractors' in info else ''))
    for size, rank1 in result.rank1.items():
        scored = result.scored[size]  # the size less the noisy distractors removed from it
        say(f'  {size:>9,} distractors: Rank-1 {rank1:6.2f}%   (chance {100.0 / (scored + 1):.4f}%)'
            + (f'   ({scored:,} scored after cleaning)' if scored != size else ''))
    if result.tar is not None:
        say(f'  TAR at FAR={result.far:g}: {result.tar:.2f}% over {result.num_genuine} genuine and '
            f'{result.num_impostor:,} impostor pairs ({result.allowed_false_accepts:,} false accepts allowed)')
    for name, folder in info.get('feature_dirs', {}).items():
        say(f'{name} features: {folder}')
    say(f'results: {out_dir}/megaface.json, CMC curves: {out_dir}/cmc.png')
    cli.print_result({'checkpoint': args.checkpoint, 'out_dir': os.path.abspath(out_dir), 'rank1': result.rank1,
                      'tar': result.tar, 'far': result.far})
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


if __name__ == '__main__':
    sys.exit(main())
