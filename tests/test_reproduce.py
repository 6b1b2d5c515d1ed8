"""The reproduction study (classification/study.py, tools/reproduce.py)."""
import json
import math
import os
import subprocess
import sys

import pytest
import timm

import backbones  # noqa: F401
from classification.study import (PAPER_CLAIMS, VARIANTS, StudySettings, build_run_config, evaluate_claims,
                                  rank_correlation, report_markdown, select_variants, summarize)
from helpers.tiny_data import make_fmnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_variants_are_the_rows_of_tables_4_and_7():
    table4 = [v.name for v in select_variants(tables=['4'])]
    table7 = [v.name for v in select_variants(tables=['7'])]
    assert table4 == ['random_p08', 'random_p06', 'random_p04', 'residual_l4', 'residual_l3', 'residual_l2',
                      'complete', 'complete_alpha', 'complete_alpha_uniform', 'complete_alpha_adaptive']
    assert table7 == ['complete_alpha_adaptive', 'er', 'ba', 'ws']
    ablation = select_variants(tables=['L'])
    assert [v.name for v in ablation] == ['complete_alpha', 'complete_alpha_uniform', 'complete_alpha_adaptive',
                                          'complete_alpha_adaptive_lam10']
    assert ablation[-1].lam_scale == 10.0 and ablation[-1].paper_top1 is None
    by_name = {v.name: v for v in VARIANTS}
    # the paper's numbers, as printed in Tables 4 and 7
    assert by_name['complete_alpha_adaptive'].paper_top1 == (78.60, 0.06)
    assert by_name['complete'].paper_top1 == (77.24, 0.12)
    assert by_name['ws'].paper_top1 == (78.19, 0.25)
    assert by_name['residual_l4'].paper_edges == (19, 36, 46, 19)
    # fixed topologies keep alpha at 1 without sparsity; only the complete graphs learn alpha
    learned = {v.name: (v.alpha_trainable, v.sparsity) for v in VARIANTS if v.alpha_trainable}
    assert learned == {'complete_alpha': (True, 'none'), 'complete_alpha_uniform': (True, 'uniform'),
                       'complete_alpha_adaptive': (True, 'adaptive'),
                       'complete_alpha_adaptive_lam10': (True, 'adaptive')}
    for v in VARIANTS:  # every variant builds
        assert v.model in timm.list_models('toponet_fmnist_*')
    lam10 = build_run_config(by_name['complete_alpha_adaptive_lam10'], 0, StudySettings(lam=3e-4))
    assert lam10.optim_wrapper.sparsity == dict(mode='adaptive', lam=pytest.approx(3e-3))


def test_select_variants_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"unknown study variants \['resnet50'\]"):
        select_variants(['resnet50'])
    with pytest.raises(ValueError, match="unknown tables"):
        select_variants(tables=['5'])


@pytest.mark.parametrize('kwargs, message', [
    (dict(iters=0), 'iters must be a positive int'),
    (dict(warmup_iters=1500), r'warmup_iters must be in \[0, iters=1500\)'),
    (dict(seeds=(0, 0)), 'seeds must be distinct'),
    (dict(lam=-1.0), 'lam >= 0'),
    (dict(train_samples=70000), r'train_samples must be in \[1, 60000\]'),
])
def test_settings_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StudySettings(**kwargs)


def test_run_config_of_each_kind_of_variant():
    settings = StudySettings(iters=600, warmup_iters=60, lam=2e-4, train_samples=1000)
    by_name = {v.name: v for v in VARIANTS}
    cfg = build_run_config(by_name['complete_alpha_adaptive'], 2, settings)
    assert cfg.model.backbone.name == 'toponet_fmnist_complete'
    assert cfg.model.backbone.alpha_trainable is True and cfg.model.backbone.seed == 2
    assert cfg.randomness.seed == 2
    assert cfg.optim_wrapper.sparsity == dict(mode='adaptive', lam=2e-4)
    assert cfg.train_cfg == dict(type='IterBasedTrainLoop', max_iters=600, val_interval=600)
    warmup, cosine = cfg.param_scheduler
    assert (warmup.end, cosine.begin, cosine.end, cosine.T_max) == (60, 60, 600, 540)
    train_indices = cfg.train_dataloader.dataset.indices
    assert len(train_indices) == 1000 and train_indices == sorted(set(train_indices))
    assert cfg.val_dataloader.dataset.indices is None  # all 10k test images

    fixed = build_run_config(by_name['random_p04'], 1, settings)
    assert fixed.model.backbone.name == 'toponet_fmnist_random_p04'
    assert fixed.model.backbone.alpha_trainable is False
    assert fixed.optim_wrapper.sparsity == dict(mode='none', lam=0.0)
    # every run trains on the same subset, whatever its seed
    assert fixed.train_dataloader.dataset.indices == train_indices


def _results(values):
    return [dict(variant=name, seed=seed, top1=top1, edges=[28, 45, 66, 28], alpha_mean_abs=0.4, alpha_below_0_1=0.25,
                 alpha_near_zero=0.05) for name, runs in values.items() for seed, top1 in enumerate(runs)]


def test_summary_claims_and_rank_correlation():
    rows = summarize(_results({
        'complete': [88.0, 88.2, 88.1],
        'complete_alpha': [89.0, 89.1, 89.2],
        'complete_alpha_uniform': [89.1, 88.9, 89.0],
        'complete_alpha_adaptive': [88.0, 88.1, 87.9],
    }))
    assert [r['variant'] for r in rows] == ['complete', 'complete_alpha', 'complete_alpha_uniform',
                                            'complete_alpha_adaptive']
    complete = rows[0]
    assert complete['mean'] == pytest.approx(88.1) and complete['std'] == pytest.approx(0.1)  # ddof=1
    assert complete['alpha_near_zero'] is None and rows[1]['alpha_near_zero'] == pytest.approx(0.05)
    assert complete['lam'] == 0.0 and rows[3]['lam'] == StudySettings().lam
    verdicts = {c['claim'].split(' (')[0]: c for c in evaluate_claims(rows)}
    helps = verdicts['learning alpha on the complete graph helps']
    assert helps['diff'] == pytest.approx(1.0) and helps['verdict'] == 'agrees'
    assert helps['paper_diff'] == pytest.approx(78.22 - 77.24)
    assert verdicts['uniform sparsity helps over alpha alone']['verdict'] == 'inconclusive'
    assert verdicts['adaptive sparsity beats uniform']['verdict'] == 'contradicts'
    # claims about variants that were not run are left out
    assert len(verdicts) == 3 and len(PAPER_CLAIMS) == 8

    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 1, 2], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    with pytest.raises(ValueError, match='equally long'):
        rank_correlation([1, 2], [1])

    report = report_markdown(rows, evaluate_claims(rows), StudySettings(), 'python tools/reproduce.py')
    assert '| Complete, alpha | {28,45,66,28} | {91,190,325,91} | 89.10 ± 0.10 |' in report
    assert '| learning alpha on the complete graph helps (Table 4, iii: +0.98) | +1.00 ± 0.08 | +0.98 | agrees |' \
        in report
    assert '| Complete, alpha, adaptive sparse (our method) | 0.0005 | 88.00 ± 0.10 | 88.00, 88.10, 87.90 | 0.400 ' \
        '| 25.0% | 5.0% |' in report


def _reproduce(out_dir, data, *extra):
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'reproduce.py'), '--out-dir', str(out_dir), '--data-root',
           str(data), '--variants', 'complete_alpha', 'complete_alpha_adaptive', '--seeds', '0', '1', '--iters', '4',
           '--warmup-iters', '1', *extra]
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)


def test_reproduce_command_end_to_end(tmp_path):
    data = make_fmnist(str(tmp_path / 'fmnist'), n_train=128, n_test=60)
    out = tmp_path / 'study'
    first = _reproduce(out, data)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    results = json.loads((out / 'results.json').read_text())
    assert len(results['runs']) == 4 and {r['variant'] for r in results['runs']} == {'complete_alpha',
                                                                                     'complete_alpha_adaptive'}
    assert all(r['iter'] == 4 and 0 <= r['top1'] <= 100 for r in results['runs'])
    report = (out / 'report.md').read_text()
    assert 'Complete, alpha, adaptive sparse (our method)' in report and '--iters 4' in report
    for png in ('accuracy.png', 'analysis/topology/alpha_hist.png', 'analysis/similarity/similarity.png',
                'analysis/damage/node_damage.png', 'analysis/snapshots/snapshot_accuracy.png'):
        assert (out / png).read_bytes()[:4] == b'\x89PNG', png
    # a second call trains nothing and redoes no analysis
    second = _reproduce(out, data)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count('already done') == 4 + 4  # 4 runs, 4 analyses
    # the same folder with other settings is refused, naming the folder
    third = _reproduce(out, data, '--lam', '0.01', '--skip-analysis')
    assert third.returncode != 0 and 'holds a run with other settings' in third.stderr
