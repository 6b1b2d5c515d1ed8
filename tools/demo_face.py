#!/usr/bin/env python
"""The face step of the demo: toy identity data -> a few minutes of ArcFace training of a
small face TopoNet on CPU -> verification accuracy and MegaFace-style Rank-1 against
distractors, next to chance.

    python tools/demo_face.py --work-dir work_dirs/demo/face

Re-running skips what is done: the data is generated once, a finished training run is
not repeated (an interrupted one resumes from its last checkpoint), and only the
evaluation runs again (``rm -rf work_dirs/demo/face`` starts over). The last stdout line is
one JSON object (verification accuracy, Rank-1 per distractor count).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbones import cli  # noqa: E402

CONFIG = 'face/configs/toponet_face_toy.py'


def build_parser():
    parser = cli.make_parser(__doc__)
    cli.add_work_dir(parser, help='folder of the demo: toy data, the training run, the MegaFace results')
    parser.set_defaults(work_dir='work_dirs/demo/face')
    parser.add_argument('--config', default=CONFIG, help='face training config (its data roots are set to the toy '
                                                          'data)')
    cli.add_device(parser)
    return parser


def run(argv) -> int:
    args = build_parser().parse_args(argv)
    start = time.time()
    if not os.path.isfile(args.config):
        raise FileNotFoundError(f'config file not found: {args.config}')
    cli.use_runner_device(args.device)

    from backbones.console import is_terminal
    from backbones.io_utils import atomic_write_text
    from face.toy_data import make_toy_face_data
    data_root = os.path.join(args.work_dir, 'data')
    done_marker = os.path.join(data_root, '.complete')
    if not os.path.isfile(done_marker):
        print(f'generating toy identity data in {data_root}')
        make_toy_face_data(data_root, progress=is_terminal(sys.stderr))  # bars on a terminal only
        atomic_write_text(done_marker, 'ok\n')
    else:
        print(f'toy data found in {data_root}')

    ckpt_path = _train(args.config, data_root, os.path.join(args.work_dir, 'train'))

    from backbones.checkpoint import read_checkpoint
    from face.megaface import evaluate_megaface, plot_cmc
    from face.model import load_face_checkpoint
    meta = read_checkpoint(ckpt_path).meta
    model = load_face_checkpoint(ckpt_path).to(cli.resolve_device(args.device))
    mf = os.path.join(data_root, 'megaface')
    result, info = evaluate_megaface(
        model, os.path.join(mf, 'facescrub'), os.path.join(mf, 'facescrub_features_list.json'),
        os.path.join(mf, 'megaface'), os.path.join(mf, 'megaface_features_list.json'),
        os.path.join(mf, 'facescrub_noises.txt'), os.path.join(mf, 'megaface_noises.txt'),
        sizes=(10, 100, 1000), max_rank=10, far=1e-3, progress=False)
    out_dir = os.path.join(args.work_dir, 'megaface')
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, 'megaface.json'), json.dumps(dict(result.to_dict(), **info), indent=1))
    plot_cmc(result, os.path.join(out_dir, 'cmc.png'), title='toy MegaFace-style identification')

    print('\n== face demo ==')
    for name, res in (meta.get('verification') or {}).get('results', {}).items():
        print(f'verification ({name}, {meta["verification"]["iter"]} iterations): {res["accuracy"]:.2f}% '
              f'+- {res["std"]:.2f} (chance 50%)')
    print(f"identification: {info['num_probes']} probes of {info['num_identities']} unseen identities, "
          f"{result.num_pairs} probe-gallery pairs; cleaned lists: {info.get('replaced_probes', 0)} probe "
          f"replaced, {info.get('removed_distractors', 0)} distractor removed")
    for size, rank1 in result.rank1.items():
        print(f'  Rank-1 with {size:>5,} distractors: {rank1:6.2f}%   (chance {100.0 / (size + 1):.2f}%)')
    print(f'  TAR at FAR={result.far:g}: {result.tar:.2f}%')
    print(f'checkpoint {ckpt_path}; CMC curves {out_dir}/cmc.png; adjacency '
          f'{os.path.join(os.path.dirname(ckpt_path), "adjacency.png")}')
    print(f'face demo wall time {time.time() - start:.0f} s')
    cli.print_result({'checkpoint': ckpt_path, 'verification': {
        name: res['accuracy'] for name, res in (meta.get('verification') or {}).get('results', {}).items()},
        'rank1': result.rank1, 'tar': result.tar, 'far': result.far, 'cmc': os.path.join(out_dir, 'cmc.png'),
        'train_dir': os.path.dirname(ckpt_path)})
    return 0


def main(argv=None) -> int:
    return cli.run_main(run, argv)


def _train(config: str, data_root: str, work_dir: str) -> str:
    """Train (or resume, or skip when finished); returns the exported checkpoint."""
    from mmengine.runner import Runner
    from backbones.checkpoint import read_checkpoint
    from backbones.mmengine_runner import build_runner_cfg
    cfg = build_runner_cfg(config, work_dir)
    cfg.train_dataloader.dataset.root = os.path.join(data_root, 'train')
    for hook in cfg.custom_hooks:
        if hook['type'] == 'FaceVerificationHook':
            hook['bins'] = [os.path.join(data_root, 'train', 'toy_val.bin')]
    out_name = next(h['out_name'] for h in cfg.custom_hooks if h['type'] == 'FaceExportHook')
    ckpt_path = os.path.join(work_dir, f'{out_name}.safetensors')
    if os.path.isfile(ckpt_path) and read_checkpoint(ckpt_path).meta.get('iter') == cfg.train_cfg.max_iters:
        print(f'training finished earlier: {ckpt_path}')
        return ckpt_path
    if os.path.isfile(os.path.join(work_dir, 'last_checkpoint')):
        cfg.resume, cfg.load_from = True, None
        print(f'resuming the training in {work_dir}')
    from backbones.console import captured_prints
    runner = Runner.from_cfg(cfg)
    with captured_prints(runner.logger):
        runner.train()
    return ckpt_path


if __name__ == '__main__':
    sys.exit(main())
