"""The CPU-scale reproduction study on Fashion-MNIST: the paper's Table 4 (random, residual
and complete topologies; learned alpha; uniform and adaptive sparsity) and Table 7 (ER, BA
and WS random wirings against our method), each over several seeds.

Every run is one ``tools/train_cls.py`` process on a config derived from the demo config
(``classification/configs/toponet_fmnist_adaptive.py``): same network family, recipe and
augmentation, but a shorter iteration-based schedule so that the whole study fits a CPU
budget. A run's folder holds its config, log, exported checkpoint and ``result.json``; a
finished run is skipped on the next call and a killed one resumes from its last checkpoint.

``tools/reproduce.py`` is the command line; ``docs/reproduction.md`` the write-up.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ['StudyVariant', 'StudySettings', 'VARIANTS', 'PAPER_CLAIMS', 'select_variants', 'build_run_config',
           'run_tool', 'run_study', 'summarize', 'evaluate_claims', 'rank_correlation', 'report_markdown', 'plot_study']

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(ROOT, 'classification', 'configs', 'toponet_fmnist_adaptive.py')
RESULT_FILE = 'result.json'
CHECKPOINT_NAME = 'toponet_fmnist'


@dataclass(frozen=True)
class StudyVariant:
    """One row of the paper's Table 4 or Table 7.

    Args:
        name (str): Key used in folders and on the command line.
        label (str): The row's name in the paper.
        table (str): Comma-separated tables the row belongs to: ``'4'``, ``'7'``, and ``'L'``
            (our sparsity-strength ablation, not in the paper).
        model (str): timm model name (``toponet_fmnist_*``).
        alpha_trainable (bool): Learn the edge weights; fixed topologies keep every alpha at 1.
        sparsity (str): ``'none'``, ``'uniform'`` or ``'adaptive'``.
        paper_top1 (tuple, optional): ImageNet top-1 mean and std reported in the paper.
        paper_edges (tuple, optional): The paper's initial edge counts per stage (N = 14/20/26/14).
        lam_scale (float): The run's sparsity lambda is ``lam_scale`` times the study's.
    """

    name: str
    label: str
    table: str
    model: str
    alpha_trainable: bool
    sparsity: str
    paper_top1: Optional[Tuple[float, float]]
    paper_edges: Optional[Tuple[int, ...]] = None
    lam_scale: float = 1.0


VARIANTS: Tuple[StudyVariant, ...] = (
    StudyVariant('random_p08', 'Random, p = 0.8', '4', 'toponet_fmnist_random_p08', False, 'none',
                 (77.56, 0.22), (56, 130, 221, 56)),
    StudyVariant('random_p06', 'Random, p = 0.6', '4', 'toponet_fmnist_random_p06', False, 'none',
                 (77.84, 0.19), (44, 104, 172, 44)),
    StudyVariant('random_p04', 'Random, p = 0.4', '4', 'toponet_fmnist_random_p04', False, 'none',
                 (77.90, 0.27), (31, 64, 117, 31)),
    StudyVariant('residual_l4', 'Residual, l = 4', '4', 'toponet_fmnist_residual_l4', False, 'none',
                 (77.72, 0.13), (19, 36, 46, 19)),
    StudyVariant('residual_l3', 'Residual, l = 3', '4', 'toponet_fmnist_residual_l3', False, 'none',
                 (78.10, 0.07), (23, 40, 61, 23)),
    StudyVariant('residual_l2', 'Residual, l = 2', '4', 'toponet_fmnist_residual_l2', False, 'none',
                 (78.26, 0.04), (34, 64, 103, 34)),
    StudyVariant('complete', 'Complete', '4', 'toponet_fmnist_complete', False, 'none',
                 (77.24, 0.12), (91, 190, 325, 91)),
    StudyVariant('complete_alpha', 'Complete, alpha', '4,L', 'toponet_fmnist_complete', True, 'none',
                 (78.22, 0.13), (91, 190, 325, 91)),
    StudyVariant('complete_alpha_uniform', 'Complete, alpha, uniform sparse', '4,L', 'toponet_fmnist_complete', True,
                 'uniform', (78.46, 0.04), (91, 190, 325, 91)),
    StudyVariant('complete_alpha_adaptive', 'Complete, alpha, adaptive sparse (our method)', '4,7,L',
                 'toponet_fmnist_complete', True, 'adaptive', (78.60, 0.06), (91, 190, 325, 91)),
    StudyVariant('er', 'ER (P = 0.2)', '7', 'toponet_fmnist_er', False, 'none', (77.76, 0.23)),
    StudyVariant('ba', 'BA (M = 5)', '7', 'toponet_fmnist_ba', False, 'none', (78.08, 0.17)),
    StudyVariant('ws', 'WS (K = 4, P = 0.75)', '7', 'toponet_fmnist_ws', False, 'none', (78.19, 0.25)),
    # Not in the paper: does a 10x stronger penalty reach the near-zero edges of Figure 3 within
    # the short schedule, and what does it cost? (The paper only says excessive lambda hurts.)
    StudyVariant('complete_alpha_adaptive_lam10', 'Complete, alpha, adaptive sparse, 10x lambda', 'L',
                 'toponet_fmnist_complete', True, 'adaptive', None, (91, 190, 325, 91), lam_scale=10.0),
)
_BY_NAME = {v.name: v for v in VARIANTS}

# The paper's conclusions that the study can test: (claim, better variants, worse variants).
# A claim "A > B" compares the mean of A with the mean of B; several names on one side are
# pooled (e.g. every random and residual wiring against the fixed complete graph).
PAPER_CLAIMS: Tuple[Tuple[str, Tuple[str, ...], Tuple[str, ...]], ...] = (
    ('moderate sparsity by prior design beats the fixed complete graph (Table 4, ii)',
     ('random_p08', 'random_p06', 'random_p04', 'residual_l2', 'residual_l3', 'residual_l4'), ('complete',)),
    ('learning alpha on the complete graph helps (Table 4, iii: +0.98)', ('complete_alpha',), ('complete',)),
    ('uniform sparsity helps over alpha alone (Table 4, iv: +0.24)', ('complete_alpha_uniform',), ('complete_alpha',)),
    ('adaptive sparsity beats uniform (Table 4, iv: +0.14)', ('complete_alpha_adaptive',), ('complete_alpha_uniform',)),
    ('learned alpha matches residual l=2 (Table 4, iii: -0.04)', ('complete_alpha',), ('residual_l2',)),
    ('our method beats ER (Table 7: +0.84)', ('complete_alpha_adaptive',), ('er',)),
    ('our method beats BA (Table 7: +0.52)', ('complete_alpha_adaptive',), ('ba',)),
    ('our method beats WS (Table 7: +0.41)', ('complete_alpha_adaptive',), ('ws',)),
)


@dataclass
class StudySettings:
    """Schedule and data of every run of the study (defaults: the documented CPU budget).

    The recipe is the demo's (SGD with Nesterov momentum, weight decay 5e-4 off BN and alpha,
    label smoothing 0.1, random-crop/flip augmentation, linear warm-up then cosine), trained
    for ``iters`` iterations instead of 10 epochs. ``lam`` is larger than the paper's 1e-4:
    the L1 term moves alpha by about ``lam * sum(lr)`` over a run, and a 1,500-iteration run
    has about a sixth of the learning-rate sum of the demo's 10 epochs, where 1e-4 already
    sparsifies visibly (``docs/reproduction.md``).
    """

    iters: int = 1500
    batch_size: int = 64
    lr: float = 0.1
    warmup_iters: int = 150
    lam: float = 5e-4
    seeds: Tuple[int, ...] = (0, 1, 2, 3, 4)  # the paper's 5 runs (Table 7)
    data_root: str = '/usr/share/datasets/fashion-mnist'
    train_samples: Optional[int] = None  # None: all 60k
    test_samples: Optional[int] = None  # None: all 10k
    threads: int = 1  # per run; runs go in parallel instead (faster on small CPU models)

    def __post_init__(self):
        for name in ('iters', 'batch_size', 'threads'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
        if not 0 <= self.warmup_iters < self.iters:
            raise ValueError(f'warmup_iters must be in [0, iters={self.iters}), got {self.warmup_iters}')
        if not (self.lr > 0 and self.lam >= 0):
            raise ValueError(f'lr must be > 0 and lam >= 0, got lr={self.lr}, lam={self.lam}')
        self.seeds = tuple(self.seeds)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f'seeds must be distinct and non-empty, got {self.seeds}')
        for name, limit in (('train_samples', 60000), ('test_samples', 10000)):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= limit:
                raise ValueError(f'{name} must be in [1, {limit}] or None (all), got {value}')

    def run_key(self) -> Dict:
        """What determines a run's result (not seeds, threads or the data folder)."""
        return {k: v for k, v in asdict(self).items() if k not in ('seeds', 'threads', 'data_root')}


def select_variants(names: Optional[Sequence[str]] = None, tables: Optional[Sequence[str]] = None) -> List[StudyVariant]:
    """Variants by name and/or table (``'4'``, ``'7'``, ``'L'``); all of them by default."""
    chosen = list(VARIANTS)
    if names:
        unknown = [n for n in names if n not in _BY_NAME]
        if unknown:
            raise ValueError(f'unknown study variants {unknown}; expected names from {list(_BY_NAME)}')
        chosen = [v for v in chosen if v.name in set(names)]
    if tables:
        bad = [t for t in tables if t not in ('4', '7', 'L')]
        if bad:
            raise ValueError(f"unknown tables {bad}; expected '4', '7' and/or 'L'")
        chosen = [v for v in chosen if set(v.table.split(',')) & set(tables)]
    if not chosen:
        raise ValueError(f'no variant matches names={names} tables={tables}')
    return chosen


def build_run_config(variant: StudyVariant, seed: int, settings: StudySettings, base_config: str = BASE_CONFIG):
    """The mmengine config of one run: the demo config with the study's schedule, the
    variant's topology, alpha and sparsity, and ``seed`` for weights, data order and (for
    random wirings) the graphs."""
    from mmengine.config import Config

    from .datasets import subset_indices

    cfg = Config.fromfile(base_config)
    cfg.model.backbone.update(name=variant.model, alpha_trainable=variant.alpha_trainable, seed=seed)
    cfg.optim_wrapper.sparsity = dict(mode=variant.sparsity, lam=_run_lam(variant, settings))
    cfg.optim_wrapper.optimizer.lr = settings.lr
    cfg.randomness = dict(seed=seed)
    cfg.train_dataloader.batch_size = settings.batch_size
    cfg.train_dataloader.sampler = dict(type='InfiniteSampler', shuffle=True)
    for loader, count, total in (('train_dataloader', settings.train_samples, 60000),
                                 ('val_dataloader', settings.test_samples, 10000),
                                 ('test_dataloader', settings.test_samples, 10000)):
        cfg[loader].dataset.root = settings.data_root
        # the subsets do not depend on the run's seed: every run sees the same images
        indices = subset_indices(total, count, seed=12345)
        cfg[loader].dataset.indices = None if indices is None else indices.tolist()
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=settings.iters, val_interval=settings.iters)
    schedulers = []
    if settings.warmup_iters:
        schedulers.append(dict(type='LinearLR', start_factor=0.05, by_epoch=False, begin=0, end=settings.warmup_iters))
    schedulers.append(dict(type='CosineAnnealingLR', by_epoch=False, begin=settings.warmup_iters,
                           end=settings.iters, T_max=settings.iters - settings.warmup_iters, eta_min=0.0))
    cfg.param_scheduler = schedulers
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=max(1, settings.iters // 3),
                                        max_keep_ckpts=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=max(1, min(100, settings.iters // 5)))
    cfg.log_processor = dict(by_epoch=False)
    cfg.custom_hooks = [dict(type='ExportCheckpointHook', out_name=CHECKPOINT_NAME)]
    return cfg


def _run_dir(out_dir: str, variant: StudyVariant, seed: int) -> str:
    return os.path.join(out_dir, 'runs', variant.name, f'seed{seed}')


def _run_lam(variant: StudyVariant, settings: StudySettings) -> float:
    return settings.lam * variant.lam_scale if variant.sparsity != 'none' else 0.0


def _key_digest(variant: StudyVariant, settings: StudySettings) -> str:
    """What determines a run: its network, alpha, sparsity and the shared schedule."""
    run = dict(model=variant.model, alpha_trainable=variant.alpha_trainable, sparsity=variant.sparsity,
               lam=_run_lam(variant, settings))
    payload = json.dumps(dict(run=run, settings=settings.run_key()), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _load_result(run_dir: str, digest: str) -> Optional[Dict]:
    """A finished run's ``result.json`` with its alpha statistics (read from its checkpoint,
    so every run is summarised the same way); ``None`` when the run has not finished."""
    path = os.path.join(run_dir, RESULT_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        result = json.load(f)
    if result.get('digest') != digest:
        raise ValueError(f'{run_dir} holds a run with other settings (digest {result.get("digest")}, expected '
                         f'{digest}); pick another --out-dir or delete that folder')
    result.update(_checkpoint_summary(os.path.join(run_dir, f'{CHECKPOINT_NAME}.safetensors')))
    return result


def _checkpoint_summary(checkpoint_path: str) -> Dict:
    """Top-1, iteration, edges per stage, and over all edges: mean |alpha| and the shares of
    |alpha| below 0.1 and below 0.01."""
    from backbones.checkpoint import read_checkpoint
    ckpt = read_checkpoint(checkpoint_path)
    alpha = [abs(float(a)) for stage in ckpt.topology for a in stage.alpha]
    return dict(edges=[stage.graph.num_edges for stage in ckpt.topology],
                alpha_mean_abs=sum(alpha) / len(alpha), alpha_below_0_1=sum(a < 0.1 for a in alpha) / len(alpha),
                alpha_near_zero=sum(a < 0.01 for a in alpha) / len(alpha),
                top1=float(ckpt.meta['metrics']['cls/top1']), iter=int(ckpt.meta['iter']))


def run_tool(name: str, *args, threads: int, log_path: str, what: Optional[str] = None) -> None:
    """Run ``tools/<name>`` in a child process with ``threads`` CPU threads, its output
    appended to ``log_path``; raises with the log's tail if it fails."""
    cmd = [sys.executable, os.path.join(ROOT, 'tools', name), *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONWARNINGS='ignore',
               TQDM_DISABLE='1')
    with open(log_path, 'a') as log:
        log.write('$ ' + shlex.join(cmd) + '\n')
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = ''.join(f.readlines()[-15:])
        raise RuntimeError(f'{what or name} failed (exit {proc.returncode}); log {log_path}:\n{tail}')


def _train_one(variant: StudyVariant, seed: int, settings: StudySettings, out_dir: str, base_config: str) -> Dict:
    """Train (or resume) one run in a child process and write its ``result.json``."""
    from backbones.io_utils import atomic_write_text

    run_dir = _run_dir(out_dir, variant, seed)
    digest = _key_digest(variant, settings)
    done = _load_result(run_dir, digest)
    if done is not None:
        return dict(done, skipped=True)
    os.makedirs(run_dir, exist_ok=True)
    config_path = os.path.join(run_dir, 'config.py')
    cfg = build_run_config(variant, seed, settings, base_config)
    atomic_write_text(config_path, cfg.pretty_text)
    start = time.time()
    run_tool('train_cls.py', config_path, '--work-dir', run_dir, '--resume', threads=settings.threads,
             log_path=os.path.join(run_dir, 'train.log'), what=f'{variant.name} seed {seed}')
    wall = time.time() - start
    checkpoint = os.path.join(run_dir, f'{CHECKPOINT_NAME}.safetensors')
    summary = _checkpoint_summary(checkpoint)
    if summary['iter'] != settings.iters:
        raise RuntimeError(f'{checkpoint} was exported at iteration {summary["iter"]}, expected {settings.iters}')
    result = dict(variant=variant.name, seed=seed, digest=digest, wall_s=round(wall, 1), **summary)
    atomic_write_text(os.path.join(run_dir, RESULT_FILE), json.dumps(result, indent=2))
    return dict(result, skipped=False)


def run_study(variants: Sequence[StudyVariant], settings: StudySettings, out_dir: str, jobs: int = 2,
              base_config: str = BASE_CONFIG, log: Callable[[str], None] = print) -> List[Dict]:
    """Train every (variant, seed) pair, ``jobs`` at a time; returns the runs' results in
    task order (seed-major). Failed runs are reported and raise once the others are done."""
    if jobs < 1:
        raise ValueError(f'jobs must be >= 1, got {jobs}')
    tasks = [(v, s) for s in settings.seeds for v in variants]  # seed-major: every variant has a seed early
    results, failures = [], []
    start = time.time()
    trained_wall: List[float] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_train_one, v, s, settings, out_dir, base_config): (v, s) for v, s in tasks}
        for done_count, future in enumerate(concurrent.futures.as_completed(futures), 1):
            variant, seed = futures[future]
            try:
                result = future.result()
            except Exception as err:  # report, finish the others, then fail
                failures.append(f'{variant.name} seed {seed}: {err}')
                log(f'[{done_count}/{len(tasks)}] {variant.name} seed {seed}: FAILED ({err})')
                continue
            results.append(result)
            if not result['skipped']:
                trained_wall.append(result['wall_s'])
            left = len(tasks) - done_count
            eta = ''
            if trained_wall and left:
                eta = f', about {math.ceil(left * (sum(trained_wall) / len(trained_wall)) / jobs / 60)} min left'
            how = 'already done' if result['skipped'] else f'{result["wall_s"] / 60:.1f} min'
            log(f'[{done_count}/{len(tasks)}] {variant.name} seed {seed}: top-1 {result["top1"]:.2f}% ({how}; '
                f'{(time.time() - start) / 60:.1f} min elapsed{eta})')
    if failures:
        raise RuntimeError(f'{len(failures)} of {len(tasks)} runs failed:\n' + '\n'.join(failures))
    order = {(v.name, s): i for i, (v, s) in enumerate(tasks)}
    return sorted(results, key=lambda r: order[(r['variant'], r['seed'])])  # not completion order


def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float('nan')
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(results: Sequence[Dict], variants: Sequence[StudyVariant] = VARIANTS,
              settings: Optional[StudySettings] = None) -> List[Dict]:
    """Per variant: top-1 mean and sample std (ddof=1) over seeds, the per-seed values,
    initial edges per stage (mean over seeds; random wirings differ by seed), the sparsity
    lambda and, for learned alpha, the seed means of mean |alpha| and of the shares of
    |alpha| below 0.1 and 0.01."""
    settings = settings or StudySettings()
    rows = []
    for variant in variants:
        runs = sorted((r for r in results if r['variant'] == variant.name), key=lambda r: r['seed'])
        if not runs:
            continue
        mean, std = _mean_std([r['top1'] for r in runs])
        num_stages = len(runs[0]['edges'])
        edges = [sum(r['edges'][s] for r in runs) / len(runs) for s in range(num_stages)]
        alpha = {key: (sum(r[key] for r in runs) / len(runs) if variant.alpha_trainable else None)
                 for key in ('alpha_mean_abs', 'alpha_below_0_1', 'alpha_near_zero')}
        paper_mean, paper_std = variant.paper_top1 if variant.paper_top1 else (None, None)
        rows.append(dict(variant=variant.name, label=variant.label, table=variant.table, mean=mean, std=std,
                         n=len(runs), top1=[r['top1'] for r in runs], seeds=[r['seed'] for r in runs],
                         edges=edges, lam=_run_lam(variant, settings), **alpha, paper_mean=paper_mean,
                         paper_std=paper_std, paper_edges=variant.paper_edges))
    return rows


def evaluate_claims(rows: Sequence[Dict], claims=PAPER_CLAIMS) -> List[Dict]:
    """Test each of the paper's claims on the study's runs: the difference of means (better
    minus worse side), its standard error from the per-seed values, and a verdict: ``agrees``
    (the paper's direction, at least 2 standard errors), ``contradicts`` (the other direction,
    at least 2 standard errors) or ``inconclusive``. The "matches" claim agrees when the
    difference is under 2 standard errors."""
    by_name = {r['variant']: r for r in rows}
    verdicts = []
    for text, better, worse in claims:
        if not all(n in by_name for n in better + worse):
            continue
        a = [v for n in better for v in by_name[n]['top1']]
        b = [v for n in worse for v in by_name[n]['top1']]
        mean_a, std_a = _mean_std(a)
        mean_b, std_b = _mean_std(b)
        diff = mean_a - mean_b
        se = math.sqrt((std_a ** 2 / len(a) if len(a) > 1 else 0.0) + (std_b ** 2 / len(b) if len(b) > 1 else 0.0))
        paper = (sum(by_name[n]['paper_mean'] for n in better) / len(better)
                 - sum(by_name[n]['paper_mean'] for n in worse) / len(worse))
        if text.startswith('learned alpha matches'):
            verdict = 'agrees' if abs(diff) < 2 * se else 'contradicts'
        elif se == 0 or math.isnan(se):
            verdict = 'agrees' if diff > 0 else 'contradicts' if diff < 0 else 'inconclusive'
        else:
            verdict = 'agrees' if diff >= 2 * se else 'contradicts' if diff <= -2 * se else 'inconclusive'
        verdicts.append(dict(claim=text, better=list(better), worse=list(worse), diff=diff, se=se,
                             paper_diff=paper, verdict=verdict))
    return verdicts


def rank_correlation(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of the ranks; ties averaged)."""
    from scipy.stats import spearmanr
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f'need two equally long sequences of at least 2 values, got {len(xs)} and {len(ys)}')
    return float(spearmanr(xs, ys).statistic)


def _fmt_mean(row: Dict) -> str:
    std = 'n/a' if math.isnan(row['std']) else f'{row["std"]:.2f}'
    return f'{row["mean"]:.2f} ± {std}'


def _fmt_edges(edges) -> str:
    return '{' + ','.join(f'{e:g}' if float(e).is_integer() else f'{e:.1f}' for e in edges) + '}'


def report_markdown(rows: Sequence[Dict], claims: Sequence[Dict], settings: StudySettings, command: str,
                    wall_minutes: Optional[float] = None) -> str:
    """The study's tables (ours next to the paper's), the claims and the settings."""
    from scipy.stats import rankdata  # ties share their mean rank

    lines = ['# Reproduction study on Fashion-MNIST: results', '',
             f'Command: `{command}`', '',
             f'Each run: {settings.iters} iterations of batch {settings.batch_size} '
             f'(train images: {settings.train_samples or 60000}), lr {settings.lr} with {settings.warmup_iters} '
             f'warm-up iterations then cosine, sparsity lambda {settings.lam:g}; seeds {list(settings.seeds)}; '
             f'top-1 on {settings.test_samples or 10000} Fashion-MNIST test images. Mean and sample std (ddof=1) '
             'over seeds; the paper\'s numbers are ImageNet top-1 with the full TopoNet (N = 14/20/26/14).']
    if wall_minutes is not None:
        lines += ['', f'Wall time of the runs trained by this call: {wall_minutes:.1f} min.']
    for table, title in (('4', 'Table 4: designed topologies'), ('7', 'Table 7: random wirings vs our method')):
        chosen = [r for r in rows if table in r['table'].split(',')]
        if not chosen:
            continue
        ours_rank = rankdata([-r['mean'] for r in chosen])
        paper_rank = rankdata([-r['paper_mean'] for r in chosen])
        lines += ['', f'## {title}', '',
                  '| variant | initial edges (ours) | initial edges (paper) | top-1 ours (%) | per seed | rank ours '
                  '| top-1 paper (%) | rank paper |',
                  '|---|---|---|---|---|---|---|---|']
        for r, ro, rp in zip(chosen, ours_rank, paper_rank):
            paper_edges = _fmt_edges(r['paper_edges']) if r['paper_edges'] else '-'
            lines.append(f'| {r["label"]} | {_fmt_edges(r["edges"])} | {paper_edges} | {_fmt_mean(r)} | '
                         f'{", ".join(f"{v:.2f}" for v in r["top1"])} | {ro:g} | {r["paper_mean"]:.2f} ± '
                         f'{r["paper_std"]:.2f} | {rp:g} |')
        if len(chosen) > 2:
            rho = rank_correlation([r['mean'] for r in chosen], [r['paper_mean'] for r in chosen])
            lines += ['', f'Spearman rank correlation of our means with the paper\'s: {rho:+.2f}.']
    learned = [r for r in rows if 'L' in r['table'].split(',')]
    if learned:
        lines += ['', '## Sparsity strength (our ablation; the paper fixes lambda = 1e-4)', '',
                  'Learned alpha over all edges after training (alpha starts at 1), mean over seeds.', '',
                  '| variant | lambda | top-1 ours (%) | per seed | mean abs(alpha) | abs(alpha) < 0.1 '
                  '| abs(alpha) < 0.01 |', '|---|---|---|---|---|---|---|']
        for r in learned:
            lines.append(f'| {r["label"]} | {r["lam"]:g} | {_fmt_mean(r)} | {", ".join(f"{v:.2f}" for v in r["top1"])} '
                         f'| {r["alpha_mean_abs"]:.3f} | {100 * r["alpha_below_0_1"]:.1f}% '
                         f'| {100 * r["alpha_near_zero"]:.1f}% |')
    if claims:
        lines += ['', '## The paper\'s claims, tested', '',
                  'Difference of means (better side minus worse side, pooled seeds) with its standard error; '
                  'verdict at 2 standard errors.', '',
                  '| claim | ours (points) | paper (points) | verdict |', '|---|---|---|---|']
        for c in claims:
            lines.append(f'| {c["claim"]} | {c["diff"]:+.2f} ± {c["se"]:.2f} | {c["paper_diff"]:+.2f} | '
                         f'{c["verdict"]} |')
    return '\n'.join(lines) + '\n'


def plot_study(rows: Sequence[Dict], path: str) -> None:
    """Two panels, same variant order: our top-1 (mean ± std, seeds as dots) and the
    paper's ImageNet top-1 (mean ± std)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from backbones.viz import save_png

    labels = [r['label'].replace(' (our method)', ' *') for r in rows]
    ys = list(range(len(rows)))[::-1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.42 * len(rows) + 1.6), sharey=True, layout='constrained')
    def colour(tables: str) -> str:
        tags = set(tables.split(','))
        if {'4', '7'} <= tags:
            return 'tab:red'
        return 'tab:blue' if '4' in tags else 'tab:orange' if '7' in tags else 'tab:green'

    for y, r in zip(ys, rows):
        c = colour(r['table'])
        std = 0.0 if math.isnan(r['std']) else r['std']
        axes[0].errorbar(r['mean'], y, xerr=std, fmt='o', color=c, capsize=3)
        axes[0].scatter(r['top1'], [y] * len(r['top1']), s=10, color=c, alpha=0.45)
        if r['paper_mean'] is not None:
            axes[1].errorbar(r['paper_mean'], y, xerr=r['paper_std'], fmt='s', color=c, capsize=3)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels(labels, fontsize=8)
    axes[0].set_xlabel('Fashion-MNIST top-1 (%), this study')
    axes[1].set_xlabel('ImageNet top-1 (%), paper (Tables 4 and 7)')
    for ax in axes:
        ax.grid(axis='x', alpha=0.3)
    fig.suptitle('Topologies: this study vs the paper (blue: Table 4, orange: Table 7, red: both, '
                 'green: our lambda ablation)', fontsize=10)
    save_png(fig, path)
