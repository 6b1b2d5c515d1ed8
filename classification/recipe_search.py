"""Choose a training recipe on the validation split: a grid of config overrides, each
trained with ``tools/train_cls.py`` on the same seeds, ranked by mean validation top-1.

The config must validate on data it does not test on (``FashionMNIST(split='val',
holdout=...)``, or an ImageNet-style ``val`` folder kept apart from the test data): choosing
a recipe by test accuracy is refused. Runs live in ``<work_dir>/<combination>/seed<s>``;
finished ones are skipped on the next call, killed ones resume.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import re
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from backbones.errors import InputError

__all__ = ['parse_grid', 'check_validation_split', 'combinations', 'run_grid', 'rank', 'grid_markdown']


def parse_grid(specs: Sequence[str]) -> Dict[str, List[Any]]:
    """``['optim_wrapper.optimizer.lr=0.05,0.1', ...]`` -> ``{key: [values]}`` (values parsed
    as Python literals where possible, e.g. ``1e-4``, ``True``).

    Example:
        >>> parse_grid(['a.b=1,2.5', 'c=x'])
        {'a.b': [1, 2.5], 'c': ['x']}
    """
    import ast
    grid: Dict[str, List[Any]] = {}
    for spec in specs:
        if '=' not in spec:
            raise InputError(f'bad grid entry {spec!r}', '--grid', 'KEY=V1,V2,...')
        key, values = spec.split('=', 1)
        if key in grid:
            raise InputError(f'grid key {key!r} given twice', '--grid', 'each key once')
        parsed = []
        for raw in values.split(','):
            try:
                parsed.append(ast.literal_eval(raw))
            except (ValueError, SyntaxError):
                parsed.append(raw)
        if not parsed or '' in parsed:
            raise InputError(f'empty value in {spec!r}', '--grid', 'KEY=V1,V2,...')
        grid[key] = parsed
    if not grid:
        raise InputError('no grid given', '--grid', 'at least one KEY=V1,V2,...')
    return grid


def check_validation_split(cfg, config_path: str) -> None:
    """Refuse a config whose validation data is its test data."""
    val = cfg.get('val_dataloader', {}).get('dataset')
    test = cfg.get('test_dataloader', {}).get('dataset')
    if val is None:
        raise InputError('config has no val_dataloader', config_path, 'a validation split to rank recipes on')
    if test is not None and val.to_dict() == test.to_dict():
        raise InputError('the config validates on its test data', config_path,
                         'a held-out validation split (e.g. FashionMNIST split="val", holdout=5000)')
    if val.get('type') == 'FashionMNIST' and val.get('split') == 'test':
        raise InputError('the config validates on the Fashion-MNIST test split', config_path,
                         'split="val" with holdout > 0')


def combinations(grid: Dict[str, List[Any]]) -> List[Dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _folder(combo: Dict[str, Any]) -> str:
    text = '_'.join(f'{k.split(".")[-1]}{v}' for k, v in combo.items())
    return re.sub(r'[^A-Za-z0-9_.+-]', '-', text)


def run_grid(config: str, grid: Dict[str, List[Any]], seeds: Sequence[int], work_dir: str, jobs: int = 2,
             threads: int = 1, log=print, fixed: Sequence[str] = ()) -> List[Dict]:
    """Train every combination for every seed; returns one record per run (combination,
    seed, validation top-1, CPU seconds). ``fixed``: ``KEY=VALUE`` overrides for every run."""
    from backbones.checkpoint import read_checkpoint
    from mmengine.config import Config, DictAction

    from .study import run_tool

    base = Config.fromfile(config)
    if fixed:
        bad = [f for f in fixed if '=' not in f]
        if bad:
            raise InputError(f'bad override {bad[0]!r}', '--cfg-options', 'KEY=VALUE')
        base.merge_from_dict({k: DictAction._parse_iterable(v) for k, v in (f.split('=', 1) for f in fixed)})
    check_validation_split(base, config)
    out_name = next((h.get('out_name') for h in base.get('custom_hooks', []) if h.get('type') == 'ExportCheckpointHook'),
                    None)
    if out_name is None:
        raise InputError('config exports no checkpoint', config, 'an ExportCheckpointHook in custom_hooks')
    tasks: List[Tuple[Dict[str, Any], int]] = [(c, s) for s in seeds for c in combinations(grid)]

    def one(combo: Dict[str, Any], seed: int) -> Dict:
        run_dir = os.path.join(work_dir, _folder(combo), f'seed{seed}')
        record_path = os.path.join(run_dir, 'recipe_run.json')
        if os.path.isfile(record_path):
            with open(record_path) as f:
                record = json.load(f)
            if record['combo'] != combo:
                raise InputError(f'{run_dir} holds another combination', record_path, f'{combo}')
            return dict(record, skipped=True)
        os.makedirs(run_dir, exist_ok=True)
        options = [f'{k}={v!r}' if isinstance(v, str) else f'{k}={v}' for k, v in combo.items()]
        usage: Dict = {}
        run_tool('train_cls.py', config, '--work-dir', run_dir, '--resume', '--cfg-options',
                 f'randomness.seed={seed}', *fixed, *options, threads=threads, log_path=os.path.join(run_dir, 'train.log'),
                 what=f'{combo} seed {seed}', usage=usage)
        meta = read_checkpoint(os.path.join(run_dir, f'{out_name}.safetensors')).meta
        record = dict(combo=combo, seed=seed, val_top1=float(meta['metrics']['cls/top1']), cpu_s=usage['cpu_s'])
        from backbones.io_utils import atomic_write_text
        atomic_write_text(record_path, json.dumps(record))
        return dict(record, skipped=False)

    records = []
    log(f'{len(tasks)} runs ({len(tasks) // len(seeds)} combinations x {len(seeds)} seeds), {jobs} at a time; '
        f'their logs: {work_dir}/<combination>/seed<s>/train.log')
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(one, c, s): (c, s) for c, s in tasks}
        for count, future in enumerate(concurrent.futures.as_completed(futures), 1):
            combo, seed = futures[future]
            record = future.result()
            records.append(record)
            how = 'already done' if record['skipped'] else f'{record["cpu_s"] / 60:.1f} CPU min'
            log(f'[{count}/{len(tasks)}] {combo} seed {seed}: val top-1 {record["val_top1"]:.2f}% ({how})')
    return records


def rank(records: Sequence[Dict]) -> List[Dict]:
    """Combinations by mean validation top-1 over seeds, best first."""
    groups: Dict[str, Dict] = {}
    for r in records:
        key = json.dumps(r['combo'], sort_keys=True)
        groups.setdefault(key, dict(combo=r['combo'], val_top1=[]))['val_top1'].append(r['val_top1'])
    rows = [dict(g, mean=float(np.mean(g['val_top1']))) for g in groups.values()]
    return sorted(rows, key=lambda r: -r['mean'])


def grid_markdown(rows: Sequence[Dict], config: str, seeds: Sequence[int], command: str) -> str:
    lines = ['# Recipe chosen on the validation split', '', f'Config: `{config}`; seeds {list(seeds)}.', '',
             f'Command: `{command}`', '', '| rank | overrides | validation top-1 (mean) | per seed |', '|---|---|---|---|']
    for i, r in enumerate(rows, 1):
        combo = ', '.join(f'`{k}={v}`' for k, v in r['combo'].items())
        lines.append(f'| {i} | {combo} | {r["mean"]:.2f} | {", ".join(f"{v:.2f}" for v in r["val_top1"])} |')
    return '\n'.join(lines) + '\n'
