#!/usr/bin/env python
"""Evaluate a shared TopoNet checkpoint (.safetensors) on a config's test split.

    python tools/test_cls.py classification/configs/toponet_fmnist_adaptive.py work_dirs/x/toponet_fmnist.safetensors
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Evaluate a TopoNet-suite classification checkpoint.')
    parser.add_argument('config', help='mmengine config file (its test_dataloader and test_evaluator are used)')
    parser.add_argument('checkpoint', help='checkpoint written by training (.safetensors)')
    parser.add_argument('--work-dir', help='where the test logs go (default: beside the checkpoint)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys: key=value')
    parser.add_argument('--flip', action='store_true',
                        help='test-time augmentation: average the predictions of each image and its mirror')
    args = parser.parse_args(argv)

    from classification.evaluate import evaluate_checkpoint
    cfg_options = dict(args.cfg_options or {})
    if args.flip:
        cfg_options['model.flip_test'] = True
    metrics = evaluate_checkpoint(args.config, args.checkpoint, args.work_dir, cfg_options or None)
    view = ' (flip TTA)' if args.flip else ' (single view)'
    for name, value in metrics.items():
        print(f'test {name}{view}: {value:.2f}%' if name.startswith('cls/top') else f'test {name}: {value}')
    print(json.dumps({'checkpoint': args.checkpoint, 'flip_test': args.flip, **metrics}))  # last line: machine-readable
    return 0


if __name__ == '__main__':
    sys.exit(main())
