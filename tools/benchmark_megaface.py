#!/usr/bin/env python
"""Time and memory of MegaFace identification at full scale on random features.

    python tools/benchmark_megaface.py                      # 3,530 probes x 1,000,000 x 256
    python tools/benchmark_megaface.py --distractors 100000 # a quicker look

Probes: 80 identities (FaceScrub's count) over 3,530 images; features are random unit
vectors (probes of one identity share a centre so genuine scores are realistic). Prints
the identification time (all sizes 10..N in one pass, CMC to --max-rank, TAR at
FAR=1e-6) and the process's peak resident memory, distractor features included. The last
stdout line is one JSON object with those numbers.
"""
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument('--probes', type=int, default=3530, help='probe images (FaceScrub: 3,530)')
    parser.add_argument('--identities', type=int, default=80, help='probe identities (FaceScrub: 80)')
    parser.add_argument('--distractors', type=int, default=1_000_000, help='distractor features')
    parser.add_argument('--dim', type=int, default=256, help='feature dimension')
    parser.add_argument('--max-rank', type=int, default=10, help='CMC computed up to this rank')
    parser.add_argument('--chunk-size', type=int, default=16384, help='distractors scored per chunk')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random features')
    return parser


def run(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ('probes', 'identities', 'distractors', 'dim', 'max_rank', 'chunk_size'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if args.identities > args.probes:
        parser.error(f'--identities ({args.identities}) cannot exceed --probes ({args.probes})')

    import numpy as np
    import torch
    from face.megaface import DEFAULT_SIZES, identify

    generator = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    distractors = torch.randn(args.distractors, args.dim, generator=generator)
    distractors /= distractors.norm(dim=1, keepdim=True)
    labels = np.arange(args.probes) % args.identities
    centres = torch.randn(args.identities, args.dim, generator=generator)
    probes = centres[torch.from_numpy(labels)] * 0.08 + torch.randn(args.probes, args.dim, generator=generator) / args.dim ** 0.5
    probes /= probes.norm(dim=1, keepdim=True)
    t_data = time.perf_counter() - t0
    sizes = [s for s in DEFAULT_SIZES if s <= args.distractors] or [args.distractors]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    result = identify(probes.numpy(), labels, distractors.numpy(), sizes=sizes, max_rank=args.max_rank,
                      chunk_size=args.chunk_size, progress=True)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    say = cli.rank0_print
    say(f'{args.probes} probes ({result.num_pairs} probe-gallery pairs) x {args.distractors:,} distractors x '
        f'{args.dim}-d, {torch.get_num_threads()} threads, chunk {args.chunk_size}')
    say(f'random features generated in {t_data:.1f} s; peak RSS before identification {rss_before:.0f} MiB')
    say(f'identification time: {elapsed:.1f} s')
    say(f'peak resident memory: {peak:.0f} MiB ({peak / 1024:.2f} GiB, distractor features '
        f'{distractors.numel() * 4 / 2 ** 20:.0f} MiB of it)')
    say('rank-1 (%): ' + ', '.join(f'{s:,}: {r:.2f}' for s, r in result.rank1.items()))
    say(f'TAR at FAR={result.far:g}: {result.tar:.2f}% (threshold {result.threshold:.4f})')
    cli.print_result({'identification_s': elapsed, 'peak_rss_mib': peak, 'rank1': result.rank1, 'tar': result.tar,
                      'far': result.far})
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


if __name__ == '__main__':
    sys.exit(main())
