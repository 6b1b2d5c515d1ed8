"""The CPU-scale reproduction study on Fashion-MNIST, designed so that its verdicts can be
believed: pre-registered paired contrasts between arms trained with common random numbers,
sized for power from a pilot, with recipes chosen on a validation split and the test set
scored once.

Design (``docs/reproduction.md`` has the reasoning):

* **Data.** 5,000 of the 60k training images (500 per class, fixed draw) are held out as the
  validation split; runs train on the other 55k. Lambda is chosen on validation; the 10k test
  images are scored once per finished run, for the final numbers.
* **Arms.** Primary: the complete graph with alpha fixed at 1, with learned alpha, with learned
  alpha and adaptive sparsity, and residual l=2. Secondary (labelled so, budget permitting):
  uniform sparsity, the random and other residual wirings, ER/BA/WS, a 10x-lambda ablation.
  Every TopoNet has the same operations whatever its graph (``input_path='projection'``,
  ``backbones/dag.py``), so arms differ in parameters only by their alpha entries.
* **Seeds.** Seed ``s`` fixes initial weights, data order and augmentation for every arm. The
  selection of lambda uses its own seeds (100, 101), never reused.
* **Stages.** ``select`` (lambda grid on validation) -> ``pilot`` (the primary arms at 2 seeds;
  the validation scores' paired differences size the study) -> ``main`` (the primary arms at
  the sized number of seeds; the pilot runs are its first seeds) -> ``secondary`` (optional)
  -> ``test`` (every finished run scored once on the test set) -> analysis.
* **Inference.** Three pre-registered contrasts, paired t-tests with Holm's correction, 95%
  intervals, TOST equivalence at a stated margin, one-sided tests of "at least the paper's
  effect", and the power achieved (``classification/study_stats.py``).

Every run is one ``tools/train_cls.py`` process on a config derived from the demo config. A
run's folder holds its config, log, exported checkpoint and ``result.json`` (and
``test.json`` once scored); a finished run is skipped on the next call, a killed one resumes.
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

import numpy as np

from backbones.errors import InputError

__all__ = ['StudyArm', 'Contrast', 'StudySettings', 'ARMS', 'PRIMARY_ARMS', 'SECONDARY_ARMS', 'CONTRASTS',
           'SECONDARY_CLAIMS', 'arm', 'build_run_config', 'run_tool', 'run_tasks', 'RunTask', 'plan_seeds',
           'choose_lambda', 'summarize', 'analyze', 'topology_agreement', 'report_markdown', 'plot_study',
           'plot_topology', 'run_summary', 'SPREAD_THRESHOLD']

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(ROOT, 'classification', 'configs', 'toponet_fmnist_adaptive.py')
RESULT_FILE = 'result.json'
TEST_FILE = 'test.json'
CHECKPOINT_NAME = 'toponet_fmnist'
SPREAD_THRESHOLD = 0.10  # below this within-node spread an alpha arm "did not learn a topology"


@dataclass(frozen=True)
class StudyArm:
    """One arm (a row of the paper's Table 4 or 7, or our ablation).

    Args:
        name (str): Key used in folders and on the command line.
        label (str): The row's name.
        role (str): ``'primary'`` (in the pre-registered contrasts) or ``'secondary'``.
        model (str): timm model name (``toponet_fmnist_*``).
        alpha_trainable (bool): Learn the edge weights; fixed topologies keep every alpha at 1.
        sparsity (str): ``'none'``, ``'uniform'`` or ``'adaptive'``.
        lam_scale (float): The run's lambda is ``lam_scale`` times the lambda chosen on
            validation (ignored without sparsity).
        paper_top1 (tuple, optional): ImageNet top-1 mean and std reported in the paper.
        table (str): The paper's table (``'4'``, ``'7'``, ``'4,7'``) or ``'ablation'``.
    """

    name: str
    label: str
    role: str
    model: str
    alpha_trainable: bool
    sparsity: str
    paper_top1: Optional[Tuple[float, float]]
    table: str
    lam_scale: float = 1.0


ARMS: Tuple[StudyArm, ...] = (
    StudyArm('complete_fixed', 'Complete (alpha fixed at 1)', 'primary', 'toponet_fmnist_complete', False, 'none',
             (77.24, 0.12), '4'),
    StudyArm('complete_alpha', 'Complete, alpha', 'primary', 'toponet_fmnist_complete', True, 'none',
             (78.22, 0.13), '4'),
    StudyArm('complete_adaptive', 'Complete, alpha, adaptive sparse (the method)', 'primary',
             'toponet_fmnist_complete', True, 'adaptive', (78.60, 0.06), '4,7'),
    StudyArm('residual_l2', 'Residual, l = 2', 'primary', 'toponet_fmnist_residual_l2', False, 'none',
             (78.26, 0.04), '4'),
    StudyArm('complete_uniform', 'Complete, alpha, uniform sparse', 'secondary', 'toponet_fmnist_complete', True,
             'uniform', (78.46, 0.04), '4'),
    StudyArm('residual_l3', 'Residual, l = 3', 'secondary', 'toponet_fmnist_residual_l3', False, 'none',
             (78.10, 0.07), '4'),
    StudyArm('residual_l4', 'Residual, l = 4', 'secondary', 'toponet_fmnist_residual_l4', False, 'none',
             (77.72, 0.13), '4'),
    StudyArm('random_p04', 'Random, p = 0.4', 'secondary', 'toponet_fmnist_random_p04', False, 'none',
             (77.90, 0.27), '4'),
    StudyArm('random_p06', 'Random, p = 0.6', 'secondary', 'toponet_fmnist_random_p06', False, 'none',
             (77.84, 0.19), '4'),
    StudyArm('random_p08', 'Random, p = 0.8', 'secondary', 'toponet_fmnist_random_p08', False, 'none',
             (77.56, 0.22), '4'),
    StudyArm('er', 'ER (P = 0.2)', 'secondary', 'toponet_fmnist_er', False, 'none', (77.76, 0.23), '7'),
    StudyArm('ba', 'BA (M = 5)', 'secondary', 'toponet_fmnist_ba', False, 'none', (78.08, 0.17), '7'),
    StudyArm('ws', 'WS (K = 4, P = 0.75)', 'secondary', 'toponet_fmnist_ws', False, 'none', (78.19, 0.25), '7'),
    StudyArm('complete_adaptive_lam10', 'Complete, alpha, adaptive sparse, 10x lambda', 'secondary',
             'toponet_fmnist_complete', True, 'adaptive', None, 'ablation', lam_scale=10.0),
)
_BY_NAME = {a.name: a for a in ARMS}
PRIMARY_ARMS = tuple(a.name for a in ARMS if a.role == 'primary')
SECONDARY_ARMS = tuple(a.name for a in ARMS if a.role == 'secondary')


def arm(name: str) -> StudyArm:
    if name not in _BY_NAME:
        raise InputError(f'unknown study arm {name!r}', '--secondary', f'names from {list(_BY_NAME)}')
    return _BY_NAME[name]


@dataclass(frozen=True)
class Contrast:
    """A paired comparison ``better - worse`` and the paper's value of it (ImageNet top-1
    points: Table 4/7 means subtracted)."""

    name: str
    text: str
    better: str
    worse: str
    paper_effect: float
    kind: str = 'difference'  # 'difference' (the paper claims a gain) or 'equivalence' (it claims a match)


# Pre-registered: fixed before any run of this design, corrected together (Holm).
CONTRASTS: Tuple[Contrast, ...] = (
    Contrast('alpha_vs_fixed', 'Learning alpha on the complete graph helps (Table 4, iii)', 'complete_alpha',
             'complete_fixed', 0.98),
    Contrast('adaptive_vs_alpha', 'Adaptive sparsity helps over alpha alone (Table 4, iv)', 'complete_adaptive',
             'complete_alpha', 0.38),
    Contrast('adaptive_vs_residual', 'The method beats the best hand-designed wiring, residual l=2 (Table 4)',
             'complete_adaptive', 'residual_l2', 0.34),
)
# Exploratory: reported with uncorrected p-values, never called a finding.
SECONDARY_CLAIMS: Tuple[Contrast, ...] = (
    Contrast('alpha_matches_residual', 'Learned alpha matches residual l=2 (Table 4, iii)', 'complete_alpha',
             'residual_l2', -0.04, kind='equivalence'),
    Contrast('uniform_vs_alpha', 'Uniform sparsity helps over alpha alone (Table 4, iv)', 'complete_uniform',
             'complete_alpha', 0.24),
    Contrast('adaptive_vs_uniform', 'Adaptive sparsity beats uniform (Table 4, iv)', 'complete_adaptive',
             'complete_uniform', 0.14),
    Contrast('residual_l2_vs_fixed', 'Residual l=2 beats the fixed complete graph (Table 4, ii)', 'residual_l2',
             'complete_fixed', 1.02),
    Contrast('adaptive_vs_er', 'The method beats ER (Table 7)', 'complete_adaptive', 'er', 0.84),
    Contrast('adaptive_vs_ba', 'The method beats BA (Table 7)', 'complete_adaptive', 'ba', 0.52),
    Contrast('adaptive_vs_ws', 'The method beats WS (Table 7)', 'complete_adaptive', 'ws', 0.41),
    Contrast('p04_vs_p08', 'Sparser random wiring is better: p=0.4 over p=0.8 (Table 4, ii)', 'random_p04',
             'random_p08', 0.34),
)


@dataclass
class StudySettings:
    """Schedule, data and design of every run (defaults: the documented 2-core budget).

    The recipe is the demo's (SGD with Nesterov momentum, weight decay 5e-4 off BN and
    alpha, label smoothing 0.1, random crop and flip, linear warm-up then cosine), trained
    for ``iters`` iterations (3,750 of batch 64: 4.4 epochs of the 55k training images).
    """

    iters: int = 3750
    batch_size: int = 64
    lr: float = 0.1
    warmup_iters: int = 375
    holdout: int = 5000
    lam_grid: Tuple[float, ...] = (1e-4, 5e-4, 2e-3)
    select_seeds: Tuple[int, ...] = (100, 101)
    pilot_seeds: Tuple[int, ...] = (0, 1)
    min_seeds: int = 8
    max_seeds: int = 12
    effect: float = 0.5  # the paired difference (top-1 points) the study is sized to detect
    alpha: float = 0.05  # family-wise error rate of the pre-registered contrasts
    power: float = 0.8
    margin: float = 0.3  # equivalence margin (top-1 points) for "matches" / "no effect"
    data_root: str = '/usr/share/datasets/fashion-mnist'
    train_samples: Optional[int] = None  # None: the whole training split (quick runs: a fixed subset)
    eval_samples: Optional[int] = None  # None: the whole validation and test splits
    threads: int = 1  # per run; runs go in parallel instead (faster on small CPU models)

    def __post_init__(self):
        for name in ('iters', 'batch_size', 'threads', 'min_seeds', 'max_seeds'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f'{name} must be a positive int', name, f'got {value!r}')
        if not 0 <= self.warmup_iters < self.iters:
            raise InputError(f'warmup_iters must be in [0, iters={self.iters})', 'warmup_iters',
                             f'got {self.warmup_iters}')
        if self.lr <= 0:
            raise InputError('lr must be > 0', 'lr', f'got {self.lr}')
        self.lam_grid = tuple(float(v) for v in self.lam_grid)
        if not self.lam_grid or any(not v > 0 for v in self.lam_grid):
            raise InputError('the lambda grid must be non-empty and positive', 'lam_grid', f'got {self.lam_grid}')
        for name in ('select_seeds', 'pilot_seeds'):
            seeds = tuple(getattr(self, name))
            setattr(self, name, seeds)
            if len(seeds) < 2 or len(set(seeds)) != len(seeds):
                raise InputError(f'{name} must be at least 2 distinct seeds', name, f'got {seeds}')
        if set(self.select_seeds) & set(range(self.max_seeds)):
            raise InputError('selection seeds overlap the study seeds 0..max_seeds-1', 'select_seeds',
                             f'seeds >= {self.max_seeds}, got {self.select_seeds}')
        if self.min_seeds < len(self.pilot_seeds) or self.max_seeds < self.min_seeds:
            raise InputError('need pilot seeds <= min_seeds <= max_seeds', 'min_seeds/max_seeds',
                             f'got {len(self.pilot_seeds)}, {self.min_seeds}, {self.max_seeds}')
        if tuple(self.pilot_seeds) != tuple(range(len(self.pilot_seeds))):
            raise InputError('pilot seeds must be the first study seeds', 'pilot_seeds',
                             f'0..{len(self.pilot_seeds) - 1}, got {self.pilot_seeds}')
        if not (0 < self.alpha < 1 and 0 < self.power < 1 and self.effect > 0 and self.margin > 0):
            raise InputError('bad design constants', 'alpha/power/effect/margin',
                             '0 < alpha < 1, 0 < power < 1, effect > 0, margin > 0')
        if self.holdout < 0:
            raise InputError('holdout must be >= 0', 'holdout', f'got {self.holdout}')
        for name in ('train_samples', 'eval_samples'):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f'{name} must be >= 1 or None (all)', name, f'got {value}')

    def run_key(self) -> Dict:
        """What determines a run's result besides its arm, lambda and seed."""
        keep = ('iters', 'batch_size', 'lr', 'warmup_iters', 'holdout', 'train_samples', 'eval_samples')
        return {k: v for k, v in asdict(self).items() if k in keep}


# -- run configs and runs ---------------------------------------------------------------

def build_run_config(study_arm: StudyArm, seed: int, lam: float, settings: StudySettings,
                     base_config: str = BASE_CONFIG):
    """The mmengine config of one run: the demo config with the study's schedule and
    splits, the arm's topology, alpha and sparsity at ``lam`` (times the arm's scale), and
    ``seed`` for the weights, the data order, the augmentation and (random wirings) the graphs."""
    from mmengine.config import Config

    from .datasets import subset_indices

    cfg = Config.fromfile(base_config)
    cfg.model.backbone.update(name=study_arm.model, alpha_trainable=study_arm.alpha_trainable, seed=seed)
    cfg.optim_wrapper.sparsity = dict(mode=study_arm.sparsity, lam=_arm_lam(study_arm, lam))
    cfg.optim_wrapper.optimizer.lr = settings.lr
    cfg.randomness = dict(seed=seed)
    cfg.train_dataloader.batch_size = settings.batch_size
    cfg.train_dataloader.sampler = dict(type='InfiniteSampler', shuffle=True)
    splits = (('train_dataloader', 'train', settings.train_samples, 60000 - settings.holdout),
              ('val_dataloader', 'val' if settings.holdout else 'test', settings.eval_samples,
               settings.holdout or 10000),
              ('test_dataloader', 'test', settings.eval_samples, 10000))
    for loader, split, count, total in splits:
        dataset = cfg[loader].dataset
        dataset.update(root=settings.data_root, split=split, holdout=settings.holdout)
        # the subsets do not depend on the run's seed: every run sees the same images
        indices = subset_indices(total, count, seed=12345)
        dataset.indices = None if indices is None else indices.tolist()
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


def _arm_lam(study_arm: StudyArm, lam: float) -> float:
    return float(lam) * study_arm.lam_scale if study_arm.sparsity != 'none' else 0.0


def _key_digest(study_arm: StudyArm, lam: float, settings: StudySettings) -> str:
    """What determines a run: its network, alpha, sparsity, lambda and the shared schedule."""
    run = dict(model=study_arm.model, alpha_trainable=study_arm.alpha_trainable, sparsity=study_arm.sparsity,
               lam=_arm_lam(study_arm, lam))
    payload = json.dumps(dict(run=run, settings=settings.run_key()), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunTask:
    """One training run: an arm at one lambda and seed, in ``folder`` under the study."""

    study_arm: StudyArm
    seed: int
    lam: float
    folder: str  # relative to the study's out_dir: runs/<arm>/seed<s> or select/lam<lam>/seed<s>
    stage: str = 'main'

    @property
    def key(self) -> Tuple[str, int]:
        return self.folder, self.seed


def run_summary(checkpoint_path: str) -> Dict:
    """What a finished run's checkpoint says, read from its tensors: validation top-1, the
    iteration, parameters (alpha included) and alpha (per stage, with the graphs' edges), and
    the within-node spread of alpha (its median over nodes; ``SPREAD_THRESHOLD``)."""
    from backbones.analysis import within_node_spread
    from backbones.checkpoint import create_model_from_checkpoint, read_checkpoint
    from backbones.complexity import count_parameters
    from backbones.topology_export import extract_topology

    ckpt = read_checkpoint(checkpoint_path)
    metrics = ckpt.meta.get('metrics') or {}
    if 'cls/top1' not in metrics:
        raise InputError('checkpoint has no validation top-1', checkpoint_path, "meta.metrics['cls/top1']")
    model = create_model_from_checkpoint(checkpoint_path)
    stages = extract_topology(model)  # alpha from the loaded tensors
    spreads = np.concatenate([within_node_spread(s) for s in stages])
    params = count_parameters(model)
    alpha_params = sum(p.numel() for name, p in model.named_parameters() if name.endswith('edge_weights'))
    return dict(val_top1=float(metrics['cls/top1']), iter=int(ckpt.meta['iter']), params=int(params),
                params_without_alpha=int(params - alpha_params), edges=[s.graph.num_edges for s in stages],
                alpha=[s.alpha.tolist() for s in stages], spread_median=float(np.median(spreads)),
                spread_mean=float(np.mean(spreads)))


def run_tool(name: str, *args, threads: int, log_path: str, what: Optional[str] = None,
             usage: Optional[Dict] = None) -> str:
    """Run ``tools/<name>`` in a child process with ``threads`` CPU threads, its output
    appended to ``log_path``; returns the last line of its stdout (the tools' JSON line) and,
    with ``usage``, stores the child's CPU seconds in ``usage['cpu_s']`` (a busy machine
    stretches wall time, not CPU time). Raises with the log's tail if it fails."""
    import tempfile

    cmd = [sys.executable, os.path.join(ROOT, 'tools', name), *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONWARNINGS='ignore',
               TQDM_DISABLE='1')
    with open(log_path, 'a') as log, tempfile.TemporaryFile('w+') as stdout:
        log.write('$ ' + shlex.join(cmd) + '\n')
        log.flush()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=log, env=env, cwd=ROOT, text=True)
        _, status, rusage = os.wait4(proc.pid, 0)  # the child's own resource usage
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        text = stdout.read()
        log.write(text)
    if usage is not None:
        usage['cpu_s'] = round(rusage.ru_utime + rusage.ru_stime, 1)
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = ''.join(f.readlines()[-15:])
        raise RuntimeError(f'{what or name} failed (exit {proc.returncode}); log {log_path}:\n{tail}')
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ''


def _load_json(path: str) -> Optional[Dict]:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise InputError(f'unreadable study record: {err}', path, 'JSON written by tools/reproduce.py') from None


def _train_one(task: RunTask, settings: StudySettings, out_dir: str, base_config: str) -> Dict:
    """Train (or resume) one run in a child process and write its ``result.json``."""
    from backbones.io_utils import atomic_write_text

    run_dir = os.path.join(out_dir, task.folder)
    digest = _key_digest(task.study_arm, task.lam, settings)
    done = _load_json(os.path.join(run_dir, RESULT_FILE))
    if done is not None:
        if done.get('digest') != digest:
            raise InputError(f'{run_dir} holds a run with other settings', f'digest {done.get("digest")}',
                             f'{digest}; pick another --out-dir or delete that folder')
        return dict(done, skipped=True)
    os.makedirs(run_dir, exist_ok=True)
    config_path = os.path.join(run_dir, 'config.py')
    cfg = build_run_config(task.study_arm, task.seed, task.lam, settings, base_config)
    atomic_write_text(config_path, cfg.pretty_text)
    start = time.time()
    usage: Dict = {}
    run_tool('train_cls.py', config_path, '--work-dir', run_dir, '--resume', threads=settings.threads,
             log_path=os.path.join(run_dir, 'train.log'), what=f'{task.study_arm.name} seed {task.seed}', usage=usage)
    wall = time.time() - start
    checkpoint = os.path.join(run_dir, f'{CHECKPOINT_NAME}.safetensors')
    summary = run_summary(checkpoint)
    if summary['iter'] != settings.iters:
        raise RuntimeError(f'{checkpoint} was exported at iteration {summary["iter"]}, expected {settings.iters}')
    result = dict(arm=task.study_arm.name, seed=task.seed, lam=_arm_lam(task.study_arm, task.lam),
                  folder=task.folder, stage=task.stage, digest=digest, wall_s=round(wall, 1), cpu_s=usage['cpu_s'],
                  **summary)
    atomic_write_text(os.path.join(run_dir, RESULT_FILE), json.dumps(result, allow_nan=False))
    return dict(result, skipped=False)


def _test_one(task: RunTask, settings: StudySettings, out_dir: str) -> Dict:
    """Score a finished run's checkpoint on the test split, once (``test.json``)."""
    from backbones.io_utils import atomic_write_text

    run_dir = os.path.join(out_dir, task.folder)
    done = _load_json(os.path.join(run_dir, TEST_FILE))
    if done is not None:
        return dict(done, skipped=True)
    start = time.time()
    usage: Dict = {}
    line = run_tool('test_cls.py', os.path.join(run_dir, 'config.py'),
                    os.path.join(run_dir, f'{CHECKPOINT_NAME}.safetensors'), '--work-dir',
                    os.path.join(run_dir, 'test'), threads=settings.threads, log_path=os.path.join(run_dir, 'test.log'),
                    what=f'testing {task.study_arm.name} seed {task.seed}', usage=usage)
    try:
        top1 = float(json.loads(line)['cls/top1'])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise RuntimeError(f'tools/test_cls.py printed no top-1 for {run_dir} (last line {line!r}): {err}') from None
    result = dict(test_top1=top1, wall_s=round(time.time() - start, 1), cpu_s=usage['cpu_s'])
    atomic_write_text(os.path.join(run_dir, TEST_FILE), json.dumps(result, allow_nan=False))
    return dict(result, skipped=False)


def run_tasks(tasks: Sequence[RunTask], settings: StudySettings, out_dir: str, what: str, jobs: int = 2,
              base_config: str = BASE_CONFIG, log: Callable[[str], None] = print, test: bool = False) -> List[Dict]:
    """Train (or, with ``test``, score on the test split) every task, ``jobs`` at a time.
    Returns the results in task order; failed runs are reported and raise once the others
    are done. Progress: one line per finished run, with an ETA over the runs still to do."""
    if jobs < 1:
        raise InputError('jobs must be >= 1', '--jobs', f'got {jobs}')
    results: Dict[Tuple[str, int], Dict] = {}
    failures = []
    start = time.time()
    work = (lambda t: _test_one(t, settings, out_dir)) if test else (
        lambda t: _train_one(t, settings, out_dir, base_config))
    walls: List[float] = []
    user_errors: List[InputError] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(work, t): t for t in tasks}
        for count, future in enumerate(concurrent.futures.as_completed(futures), 1):
            task = futures[future]
            try:
                result = future.result()
            except Exception as err:  # report, finish the others, then fail
                failures.append(f'{task.study_arm.name} seed {task.seed}: {err}')
                if isinstance(err, InputError):
                    user_errors.append(err)
                log(f'{what} [{count}/{len(tasks)}] {task.study_arm.name} seed {task.seed}: FAILED ({err})')
                continue
            results[task.key] = result
            if result['skipped']:
                continue  # skipped runs are neither reported one by one nor counted in the ETA
            walls.append(result['wall_s'])
            left = sum(1 for f, t in futures.items() if not f.done())
            eta = f', about {math.ceil(left * np.mean(walls) / jobs / 60)} min left' if left else ''
            score = f'test top-1 {result["test_top1"]:.2f}%' if test else f'val top-1 {result["val_top1"]:.2f}%'
            name = task.study_arm.name + (f' lambda {task.lam:g}' if task.stage == 'select' else '')
            log(f'{what} [{count}/{len(tasks)}] {name} seed {task.seed}: {score} '
                f'({result["wall_s"] / 60:.1f} min; {(time.time() - start) / 60:.1f} min elapsed{eta})')
    skipped = sum(1 for r in results.values() if r['skipped'])
    if skipped:
        log(f'{what}: {skipped} of {len(tasks)} runs already done')
    if failures and len(user_errors) == len(failures):
        raise user_errors[0]  # bad settings or folders: the user's to fix, no run crashed
    if failures:
        raise RuntimeError(f'{len(failures)} of {len(tasks)} runs failed:\n' + '\n'.join(failures))
    return [results[t.key] for t in tasks]


# -- design decisions from data ----------------------------------------------------------

def choose_lambda(selection: Sequence[Dict]) -> Dict:
    """The lambda with the highest mean validation top-1 over the selection seeds (ties: the
    smaller lambda). ``selection``: the grid's run results (``lam``, ``seed``, ``val_top1``)."""
    by_lam: Dict[float, List[float]] = {}
    for r in selection:
        by_lam.setdefault(float(r['lam']), []).append(float(r['val_top1']))
    if not by_lam:
        raise ValueError('no selection runs to choose lambda from')
    means = {lam: float(np.mean(v)) for lam, v in by_lam.items()}
    best = max(sorted(means), key=lambda lam: means[lam])
    return dict(lam=best, val_means={f'{lam:g}': m for lam, m in sorted(means.items())},
                seeds=sorted({int(r['seed']) for r in selection}))


def plan_seeds(pilot: Sequence[Dict], settings: StudySettings) -> Dict:
    """Size the study from the pilot: the pooled SD of the pre-registered contrasts' paired
    validation differences, and the number of seeds that gives ``power`` for a paired
    difference of ``effect`` points at Holm's strictest level (``alpha / #contrasts``),
    clipped to ``[min_seeds, max_seeds]``."""
    from .study_stats import paired_power, pilot_sd, seeds_needed

    by_arm = _scores_by_arm(pilot, 'val_top1')
    diffs = []
    for c in CONTRASTS:
        seeds = sorted(set(by_arm.get(c.better, {})) & set(by_arm.get(c.worse, {})))
        diffs.append([by_arm[c.better][s] - by_arm[c.worse][s] for s in seeds])
    sd = pilot_sd(diffs)
    level = settings.alpha / len(CONTRASTS)
    floor = 0.05  # a pilot SD of ~0 would size the study at 2 seeds: never plan below this
    sd_plan = max(sd, floor)
    needed = seeds_needed(sd_plan, settings.effect, level, settings.power, n_min=2, n_max=1000)
    n = settings.max_seeds if needed is None else min(max(needed, settings.min_seeds), settings.max_seeds)
    return dict(pilot_sd=sd, sd_used=sd_plan, level=level, needed=needed, n_seeds=n,
                planned_power=paired_power(n, sd_plan, settings.effect, level),
                pilot_differences={c.name: d for c, d in zip(CONTRASTS, diffs)})


# -- analysis ----------------------------------------------------------------------------

def _scores_by_arm(results: Sequence[Dict], score: str) -> Dict[str, Dict[int, float]]:
    out: Dict[str, Dict[int, float]] = {}
    for r in results:
        if score in r:
            out.setdefault(r['arm'], {})[int(r['seed'])] = float(r[score])
    return out


def summarize(results: Sequence[Dict]) -> List[Dict]:
    """Per arm (in ``ARMS`` order): test and validation top-1 (mean, sample std, per seed),
    parameters, edges per stage and, for learned alpha, the within-node spread."""
    rows = []
    for study_arm in ARMS:
        runs = sorted((r for r in results if r['arm'] == study_arm.name), key=lambda r: r['seed'])
        if not runs:
            continue
        test = [r['test_top1'] for r in runs if 'test_top1' in r]
        val = [r['val_top1'] for r in runs]
        spread = [r['spread_median'] for r in runs] if study_arm.alpha_trainable else None
        rows.append(dict(
            arm=study_arm.name, label=study_arm.label, role=study_arm.role, table=study_arm.table, n=len(runs),
            seeds=[r['seed'] for r in runs], lam=runs[0]['lam'],
            test_mean=float(np.mean(test)) if test else None,
            test_std=float(np.std(test, ddof=1)) if len(test) > 1 else None, test_top1=test,
            val_mean=float(np.mean(val)), val_std=float(np.std(val, ddof=1)) if len(val) > 1 else None, val_top1=val,
            params=sorted({r['params'] for r in runs}), params_without_alpha=sorted({r['params_without_alpha']
                                                                                    for r in runs}),
            edges=[float(np.mean([r['edges'][s] for r in runs])) for s in range(len(runs[0]['edges']))],
            spread_median=spread, paper_top1=study_arm.paper_top1))
    return rows


def _contrast_result(c: Contrast, by_arm: Dict[str, Dict[int, float]], settings: StudySettings) -> Optional[Dict]:
    from .study_stats import detectable_effect, paired_power, paired_test, tost_paired

    if c.better not in by_arm or c.worse not in by_arm:
        return None
    seeds = sorted(set(by_arm[c.better]) & set(by_arm[c.worse]))
    if len(seeds) < 2:
        return None
    a = [by_arm[c.better][s] for s in seeds]
    b = [by_arm[c.worse][s] for s in seeds]
    test = paired_test(a, b, paper_effect=c.paper_effect if c.paper_effect > 0 else None)
    tost = tost_paired(a, b, settings.margin)
    out = dict(name=c.name, text=c.text, better=c.better, worse=c.worse, kind=c.kind, paper_effect=c.paper_effect,
               seeds=seeds, **test, tost_p=tost['p'], ci90_low=tost['ci90_low'], ci90_high=tost['ci90_high'])
    level = settings.alpha / len(CONTRASTS)
    out['power_at_effect'] = (paired_power(len(seeds), test['sd_diff'], settings.effect, level)
                              if test['sd_diff'] > 0 else 1.0)
    out['detectable_effect'] = (detectable_effect(len(seeds), test['sd_diff'], level, settings.power)
                                if test['sd_diff'] > 0 else 0.0)
    return out


def _verdict(r: Dict, level: float, margin: float) -> str:
    """Estimation language for one contrast from its (adjusted) p-values."""
    p, tost_p = r.get('p_holm', r['p']), r.get('tost_p_holm', r['tost_p'])
    excl = r.get('p_below_paper_holm', r.get('p_below_paper'))
    sign = 'higher' if r['mean_diff'] > 0 else 'lower'
    if r['kind'] == 'equivalence':
        if tost_p < level:
            return f'supports the paper: equivalent within +/-{margin:g} points (TOST)'
        if p < level:
            return f'contradicts the paper: {r["better"]} is {sign} (no match)'
        return f'inconclusive: neither a difference nor equivalence within +/-{margin:g} is shown'
    parts = []
    if p < level and r['mean_diff'] > 0:
        parts.append('supports the paper\'s direction')
        if excl is not None and excl < level:
            parts.append(f'but the data exclude an effect as large as the paper\'s (+{r["paper_effect"]:.2f})')
    elif p < level:
        parts.append(f'contradicts the paper: the difference is negative')
    else:
        if tost_p < level:
            parts.append(f'no effect: equivalent within +/-{margin:g} points (TOST)')
        else:
            parts.append('not shown: no significant difference')
        if excl is not None and excl < level:
            parts.append(f'the data exclude an effect as large as the paper\'s (+{r["paper_effect"]:.2f})')
    return '; '.join(parts)


def analyze(results: Sequence[Dict], settings: StudySettings, seed_plan: Optional[Dict] = None,
            topology: Optional[Dict] = None) -> Dict:
    """The study's inference on the test scores: the pre-registered contrasts (Holm over
    the family, for the difference tests, the TOSTs and the tests against the paper's
    effect alike), exploratory secondary claims (uncorrected), the manipulation check
    (within-node alpha spread of every alpha arm) and the parameter parity of the primary arms."""
    from .study_stats import holm

    by_arm = _scores_by_arm(results, 'test_top1')
    primary = [r for r in (_contrast_result(c, by_arm, settings) for c in CONTRASTS) if r is not None]
    if primary:
        for key in ('p', 'tost_p'):
            for r, adj in zip(primary, holm([r[key] for r in primary])):
                r[f'{key}_holm'] = adj
        with_paper = [r for r in primary if 'p_below_paper' in r]
        for r, adj in zip(with_paper, holm([r['p_below_paper'] for r in with_paper])):
            r['p_below_paper_holm'] = adj
        for r in primary:
            r['verdict'] = _verdict(r, settings.alpha, settings.margin)
    secondary = [r for r in (_contrast_result(c, by_arm, settings) for c in SECONDARY_CLAIMS) if r is not None]
    for r in secondary:
        r['verdict'] = 'exploratory: ' + _verdict(r, settings.alpha, settings.margin)

    rows = summarize(results)
    manipulation = []
    for row in rows:
        if row['spread_median'] is None:
            continue
        spread = float(np.mean(row['spread_median']))
        manipulation.append(dict(arm=row['arm'], spread_median_mean=spread, per_seed=row['spread_median'],
                                 learned_topology=bool(spread >= SPREAD_THRESHOLD)))
    primary_params = {row['arm']: row['params'] for row in rows if row['role'] == 'primary'}
    flat = [p for ps in primary_params.values() for p in ps]
    parity = dict(params=primary_params, max_relative_gap=(max(flat) - min(flat)) / min(flat) if flat else None)
    return dict(contrasts=primary, secondary=secondary, manipulation=manipulation, parity=parity, summary=rows,
                seed_plan=seed_plan, topology=topology, margin=settings.margin)


def topology_agreement(results: Sequence[Dict], out_dir: str) -> Dict:
    """Figures 3 and 5 on alpha relative to each node's mean: for every alpha arm, do its
    seeds agree (mean pairwise correlation of the relative deviations, permutation p-value),
    next to the raw-alpha cosine similarity the paper reads; and how far alpha spreads
    within nodes. Returns per-arm figures; ``plot_topology`` draws them."""
    from backbones.analysis import load_topology, relative_alpha_agreement

    out = {}
    for study_arm in ARMS:
        if not study_arm.alpha_trainable:
            continue
        runs = sorted((r for r in results if r['arm'] == study_arm.name), key=lambda r: r['seed'])
        if len(runs) < 2:
            continue
        stages = [load_topology(os.path.join(out_dir, r['folder'], f'{CHECKPOINT_NAME}.safetensors')) for r in runs]
        agreement = relative_alpha_agreement(stages)
        out[study_arm.name] = dict(agreement, seeds=[r['seed'] for r in runs])
    return out


# -- report ------------------------------------------------------------------------------

def _fmt(value: Optional[float], digits: int = 2, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 'n/a'
    return f'{value:+.{digits}f}' if signed else f'{value:.{digits}f}'


def _fmt_p(p: Optional[float]) -> str:
    if p is None:
        return 'n/a'
    return '< 0.0001' if p < 1e-4 else f'{p:.4f}'


def report_markdown(analysis: Dict, settings: StudySettings, command: str, selection: Optional[Dict] = None,
                    wall_minutes: Optional[float] = None, cpu_minutes: Optional[float] = None, jobs: int = 2,
                    analysis_only: bool = False) -> str:
    """The study's report: design, choices made on validation, the contrasts with their
    tests, the manipulation check, the per-arm table and the topology agreement."""
    lines = ['# Reproduction study on Fashion-MNIST: results', '', f'Command: `{command}`', '',
             f'Each run: {settings.iters} iterations of batch {settings.batch_size} on the training split '
             f'(the training images less a {settings.holdout}-image validation hold-out), lr {settings.lr} with '
             f'{settings.warmup_iters} warm-up iterations then cosine. Top-1 on the test split, scored once per run '
             'after every choice was made on validation. The paper\'s numbers are ImageNet top-1 of the full '
             'TopoNet.']
    if analysis_only:
        lines += ['', 'Every run was already trained and scored: this call only redid the analysis.']
    elif wall_minutes is not None:
        lines += ['', f'Wall time of the work done by this call: {wall_minutes:.1f} min.']
    if cpu_minutes:
        lines += ['', f'CPU time of every run and scoring of the study: {cpu_minutes:.0f} min, about '
                  f'{cpu_minutes / jobs:.0f} min of wall time at {jobs} single-threaded runs at a time on idle cores '
                  '(a run resumed after an interruption counts only the process that finished it).']
    if selection:
        grid = ', '.join(f'{lam}: {m:.2f}%' for lam, m in selection['val_means'].items())
        lines += ['', '## Choices made on the validation split', '',
                  f'- Sparsity lambda: **{selection["lam"]:g}**, the best mean validation top-1 of the adaptive arm '
                  f'over seeds {selection["seeds"]} (grid: {grid}). Used for every sparse arm.']
    plan = analysis.get('seed_plan')
    if plan:
        lines += [f'- Seeds: the pilot (seeds {list(settings.pilot_seeds)}, all primary arms) gave a pooled SD of '
                  f'the contrasts\' paired validation differences of {plan["pilot_sd"]:.3f} points (planned with '
                  f'{plan["sd_used"]:.3f}); power {settings.power:g} for a {settings.effect:g}-point paired difference '
                  f'at Holm\'s strictest level {plan["level"]:.4f} needs '
                  f'{plan["needed"] if plan["needed"] is not None else "more than 1000"} seeds; the study ran '
                  f'**{plan["n_seeds"]}** (bounds {settings.min_seeds}-{settings.max_seeds}), planned power '
                  f'{plan["planned_power"]:.2f}.']
    if analysis['contrasts']:
        lines += ['', '## Pre-registered contrasts (test top-1, paired by seed, Holm-corrected)', '',
                  f'Paired t-test (two-sided); 95% CI of the mean difference; TOST equivalence at +/-{settings.margin:g}'
                  ' points; "p(>= paper)": one-sided test that the effect is at least the paper\'s. Power: of the '
                  f'paired t-test for a {settings.effect:g}-point difference at level {settings.alpha:g}/'
                  f'{len(CONTRASTS)}, with the observed SD; "detectable": the smallest difference it detects with '
                  f'power {settings.power:g} at that level.', '',
                  '| contrast | n | difference (points) | 95% CI | paper | p (Holm) | TOST p (Holm) | p(>= paper) '
                  '(Holm) | power | detectable | verdict |', '|---|---|---|---|---|---|---|---|---|---|---|']
        for r in analysis['contrasts']:
            lines.append(f'| {r["text"]} | {r["n"]} | {_fmt(r["mean_diff"], signed=True)} | '
                         f'[{_fmt(r["ci_low"], signed=True)}, {_fmt(r["ci_high"], signed=True)}] | '
                         f'{_fmt(r["paper_effect"], signed=True)} | {_fmt_p(r["p_holm"])} | {_fmt_p(r["tost_p_holm"])} '
                         f'| {_fmt_p(r.get("p_below_paper_holm"))} | {r["power_at_effect"]:.2f} | '
                         f'{r["detectable_effect"]:.2f} | {r["verdict"]} |')
    if analysis['secondary']:
        lines += ['', '## Secondary comparisons (exploratory, uncorrected)', '',
                  '| comparison | n | difference | 95% CI | paper | p | TOST p | verdict |',
                  '|---|---|---|---|---|---|---|---|']
        for r in analysis['secondary']:
            lines.append(f'| {r["text"]} | {r["n"]} | {_fmt(r["mean_diff"], signed=True)} | '
                         f'[{_fmt(r["ci_low"], signed=True)}, {_fmt(r["ci_high"], signed=True)}] | '
                         f'{_fmt(r["paper_effect"], signed=True)} | {_fmt_p(r["p"])} | {_fmt_p(r["tost_p"])} | '
                         f'{r["verdict"]} |')
    if analysis['manipulation']:
        lines += ['', '## Manipulation check: did alpha learn a topology?', '',
                  f'Within-node spread of alpha (std / mean of each node\'s input weights, median over nodes, mean over '
                  f'seeds). Under {SPREAD_THRESHOLD:.0%} the arm weighs its inputs nearly uniformly: it did not learn a '
                  'topology.', '', '| arm | spread | per seed | learned a topology? |', '|---|---|---|---|']
        for m in analysis['manipulation']:
            lines.append(f'| {m["arm"]} | {m["spread_median_mean"]:.1%} | '
                         f'{", ".join(f"{v:.1%}" for v in m["per_seed"])} | {"yes" if m["learned_topology"] else "no"} |')
    lines += ['', '## Every arm', '',
              '| arm | role | n | params (alpha incl.) | edges per stage | val top-1 | test top-1 | test per seed | '
              'paper top-1 |', '|---|---|---|---|---|---|---|---|---|']
    for row in analysis['summary']:
        paper = f'{row["paper_top1"][0]:.2f} ± {row["paper_top1"][1]:.2f}' if row['paper_top1'] else '-'
        edges = '{' + ','.join(f'{e:g}' for e in row['edges']) + '}'
        test = (f'{row["test_mean"]:.2f} ± {_fmt(row["test_std"])}' if row['test_mean'] is not None else 'not scored')
        lines.append(f'| {row["label"]} | {row["role"]} | {row["n"]} | {"/".join(f"{p:,}" for p in row["params"])} | '
                     f'{edges} | {row["val_mean"]:.2f} ± {_fmt(row["val_std"])} | {test} | '
                     f'{", ".join(f"{v:.2f}" for v in row["test_top1"])} | {paper} |')
    parity = analysis['parity']
    if parity['max_relative_gap'] is not None:
        lines += ['', f'Parameter parity of the primary arms: largest relative gap {parity["max_relative_gap"]:.3%} '
                  '(the arms differ only in how many alpha entries they count).']
    topology = analysis.get('topology')
    if topology:
        lines += ['', '## Do seeds learn the same topology? (Figure 5, on relative alpha)', '',
                  'Mean pairwise Pearson correlation across seeds of each edge\'s alpha relative to its node\'s mean '
                  '(the part of alpha that changes the function), with a permutation p-value (edges shuffled '
                  'independently per seed); the same on ranks (Spearman), which extreme relative values of nodes '
                  'whose mean alpha is near 0 cannot dominate; next to them the raw-alpha cosine similarity the '
                  'paper reads, which is close to 1 for any near-uniform alpha. With N resamples the smallest '
                  'permutation p is 1/(N+1).', '',
                  '| arm | seeds | edges | relative-alpha correlation (Pearson) | permutation p | rank correlation '
                  '(Spearman) | permutation p | raw cosine |', '|---|---|---|---|---|---|---|---|']
        for name, t in topology.items():
            lines.append(f'| {name} | {len(t["seeds"])} | {t["edges"]} | {t["mean_correlation"]:+.3f} | '
                         f'{_fmt_p(t["p_value"])} | {t["mean_rank_correlation"]:+.3f} | {_fmt_p(t["rank_p_value"])} '
                         f'| {t["mean_raw_cosine"]:.3f} |')
        null, sparse = topology.get('complete_alpha'), topology.get('complete_adaptive')
        if null and sparse:
            keys = ('mean_correlation', 'mean_rank_correlation')
            more = [sparse[k] > null[k] for k in keys]
            if all(more):
                reading = 'On both statistics the sparse arm\'s seeds agree more: a shared pattern the penalty adds.'
            elif not any(more):
                reading = ('On both statistics the sparse arm\'s seeds agree *less* than the no-sparsity arm\'s: '
                           'the penalty does not make the learned topology more reproducible across seeds, and the '
                           'raw cosine does not tell the arms apart.')
            else:
                reading = 'The two statistics disagree on which arm\'s seeds agree more: no claim either way.'
            lines += ['', f'Against the no-sparsity null (`complete_alpha`): relative-alpha agreement '
                      f'{sparse["mean_correlation"]:+.3f} with adaptive sparsity vs {null["mean_correlation"]:+.3f} '
                      f'without (ranks: {sparse["mean_rank_correlation"]:+.3f} vs '
                      f'{null["mean_rank_correlation"]:+.3f}); raw cosine {sparse["mean_raw_cosine"]:.3f} vs '
                      f'{null["mean_raw_cosine"]:.3f}. ' + reading]
    return '\n'.join(lines) + '\n'


def plot_study(analysis: Dict, results: Sequence[Dict], out_dir: str) -> List[str]:
    """``accuracy.png`` (test top-1 per arm, seeds joined across the primary arms),
    ``contrasts.png`` (each contrast's difference and 95% CI, the paper's effect and the
    equivalence margin), ``alpha_spread.png`` (the manipulation check). Returns the paths."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from backbones.viz import save_png

    paths = []
    rows = [r for r in analysis['summary'] if r['test_top1']]
    if rows:
        fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.2), layout='constrained')
        by_arm = _scores_by_arm(results, 'test_top1')
        primary = [r['arm'] for r in rows if r['role'] == 'primary']
        for seed in sorted({s for a in primary for s in by_arm.get(a, {})}):
            xs = [i for i, r in enumerate(rows) if r['arm'] in primary and seed in by_arm[r['arm']]]
            ax.plot(xs, [by_arm[rows[i]['arm']][seed] for i in xs], color='0.75', lw=0.8, zorder=1)
        for i, r in enumerate(rows):
            colour = 'tab:blue' if r['role'] == 'primary' else 'tab:orange'
            ax.scatter([i] * len(r['test_top1']), r['test_top1'], s=12, color=colour, zorder=2)
            ax.errorbar(i, r['test_mean'], yerr=r['test_std'] or 0, fmt='_', color='k', capsize=5, zorder=3)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r['arm'] for r in rows], rotation=30, ha='right', fontsize=8)
        ax.set_ylabel('Fashion-MNIST test top-1 (%)')
        ax.set_title('Test top-1 per arm (dots: seeds; grey lines join one seed across primary arms)', fontsize=9)
        ax.grid(axis='y', alpha=0.3)
        paths.append(os.path.join(out_dir, 'accuracy.png'))
        save_png(fig, paths[-1])
    contrasts = analysis['contrasts'] + analysis['secondary']
    if contrasts:
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(contrasts) + 1.5), layout='constrained')
        ys = list(range(len(contrasts)))[::-1]
        margin = analysis.get('margin', None)
        for y, r in zip(ys, contrasts):
            colour = 'tab:blue' if r in analysis['contrasts'] else 'tab:orange'
            ax.errorbar(r['mean_diff'], y, xerr=[[r['mean_diff'] - r['ci_low']], [r['ci_high'] - r['mean_diff']]],
                        fmt='o', color=colour, capsize=3)
            ax.scatter([r['paper_effect']], [y], marker='x', color='tab:red', zorder=3)
        ax.axvline(0, color='k', lw=0.8)
        if margin:
            ax.axvspan(-margin, margin, color='0.9', zorder=0)
        ax.set_yticks(ys)
        ax.set_yticklabels([r['name'] for r in contrasts], fontsize=8)
        ax.set_xlabel('paired difference in test top-1 (points), 95% CI; x: the paper\'s ImageNet effect')
        ax.set_title('Contrasts (blue: pre-registered, orange: exploratory; grey band: equivalence margin)', fontsize=9)
        paths.append(os.path.join(out_dir, 'contrasts.png'))
        save_png(fig, paths[-1])
    if analysis['manipulation']:
        fig, ax = plt.subplots(figsize=(6, 3.5), layout='constrained')
        for i, m in enumerate(analysis['manipulation']):
            ax.scatter([i] * len(m['per_seed']), [100 * v for v in m['per_seed']], s=14)
        ax.axhline(100 * SPREAD_THRESHOLD, color='tab:red', ls='--', lw=1, label='10%: no topology learned below')
        ax.set_xticks(range(len(analysis['manipulation'])))
        ax.set_xticklabels([m['arm'] for m in analysis['manipulation']], fontsize=8)
        ax.set_ylabel('within-node spread of alpha (%)')
        ax.legend(fontsize=8)
        paths.append(os.path.join(out_dir, 'alpha_spread.png'))
        save_png(fig, paths[-1])
    return paths


def plot_topology(results: Sequence[Dict], out_dir: str) -> List[str]:
    """Figure 3 on relative alpha: histograms of raw alpha and of alpha relative to its
    node's mean, for every alpha arm (pooled over seeds): ``alpha_hist.png``; and per alpha
    arm, the first seed's raw alpha and the relative alpha averaged over seeds (the pattern
    the seeds share; one seed's relative alpha is mostly its own noise): ``adjacency.png``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from backbones.analysis import load_topology, relative_alpha
    from backbones.viz import save_png

    arms = [a for a in ARMS if a.alpha_trainable and any(r['arm'] == a.name for r in results)]
    if not arms:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout='constrained')
    runs_by_arm = {}
    for a in arms:
        runs = sorted((r for r in results if r['arm'] == a.name), key=lambda r: r['seed'])
        stages = [load_topology(os.path.join(out_dir, r['folder'], f'{CHECKPOINT_NAME}.safetensors')) for r in runs]
        runs_by_arm[a.name] = stages
        raw = np.concatenate([s.alpha for run in stages for s in run])
        rel = np.concatenate([relative_alpha(s) for run in stages for s in run])
        axes[0].hist(raw, bins=60, histtype='step', label=a.name)
        axes[1].hist(rel[np.isfinite(rel)], bins=60, histtype='step', label=a.name)
    axes[0].set_xlabel('alpha')
    axes[1].set_xlabel("alpha / mean alpha of the node's inputs")
    for ax in axes:
        ax.set_ylabel('edges (all seeds)')
        ax.legend(fontsize=7)
    fig.suptitle('Figure 3 on Fashion-MNIST: alpha, raw and relative to its node', fontsize=10)
    paths = [os.path.join(out_dir, 'alpha_hist.png')]
    save_png(fig, paths[-1])

    from matplotlib.ticker import MaxNLocator

    num_stages = len(next(iter(runs_by_arm.values()))[0])
    fig, axes = plt.subplots(2 * len(runs_by_arm), num_stages, figsize=(2.6 * num_stages, 2.5 * 2 * len(runs_by_arm)),
                             layout='constrained', squeeze=False)
    for k, (name, runs) in enumerate(runs_by_arm.items()):
        for s in range(num_stages):
            stage = runs[0][s]
            mean_rel = np.mean([relative_alpha(run[s]) for run in runs], axis=0)
            for row, (values, what) in enumerate(((stage.alpha, 'alpha, first seed'),
                                                  (mean_rel, f'relative, mean of {len(runs)} seeds'))):
                mat = np.full((stage.graph.num_nodes, stage.graph.num_nodes), np.nan)
                for v, (src, dst) in zip(values, stage.graph.edges):
                    mat[dst, src] = v
                ax = axes[2 * k + row, s]
                im = ax.imshow(mat, cmap='viridis')
                ax.set_title(f'{name}, stage {s + 1}:\n{what}', fontsize=7)
                ax.set_xlabel('source node', fontsize=6)
                ax.set_ylabel('destination node', fontsize=6)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
                fig.colorbar(im, ax=ax, shrink=0.7)
    paths.append(os.path.join(out_dir, 'adjacency.png'))
    save_png(fig, paths[-1])
    return paths
