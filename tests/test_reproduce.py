"""The reproduction study (classification/study.py, study_stats.py, tools/reproduce.py) and
recipe selection on the validation split (classification/recipe_search.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import timm

import backbones  # noqa: F401
from backbones.complexity import count_parameters
from classification.study import (ARMS, CONTRASTS, PRIMARY_ARMS, SECONDARY_CLAIMS, StudySettings, analyze, arm,
                                  build_run_config, choose_lambda, plan_seeds, report_markdown)
from classification.study_stats import holm, paired_power, paired_test, pilot_sd, seeds_needed, tost_paired
from helpers.tiny_data import make_fmnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params(name):
    a = arm(name)
    return count_parameters(timm.create_model(a.model, num_classes=10, in_chans=1, alpha_trainable=a.alpha_trainable))


def test_primary_arms_have_parameter_parity():
    counts = {name: _params(name) for name in PRIMARY_ARMS}
    assert max(counts.values()) / min(counts.values()) - 1 < 0.005, counts


def test_every_arm_of_the_study_has_parameter_parity():
    """Random, BA and WS wirings included: a stage's operations must not depend on its graph."""
    counts = {a.name: _params(a.name) for a in ARMS}
    assert max(counts.values()) / min(counts.values()) - 1 < 0.005, counts


def test_design_is_the_preregistered_one():
    assert PRIMARY_ARMS == ('complete_fixed', 'complete_alpha', 'complete_adaptive', 'residual_l2')
    assert [(c.better, c.worse, c.paper_effect) for c in CONTRASTS] == [
        ('complete_alpha', 'complete_fixed', 0.98), ('complete_adaptive', 'complete_alpha', 0.38),
        ('complete_adaptive', 'residual_l2', 0.34)]
    # the paper's effects are differences of its Table 4/7 means
    for c in CONTRASTS + SECONDARY_CLAIMS:
        better, worse = arm(c.better).paper_top1[0], arm(c.worse).paper_top1[0]
        assert c.paper_effect == pytest.approx(better - worse, abs=1e-9), c.name
    learned = {a.name for a in ARMS if a.alpha_trainable}
    assert learned == {'complete_alpha', 'complete_adaptive', 'complete_uniform', 'complete_adaptive_lam10'}
    for a in ARMS:
        assert a.model in timm.list_models('toponet_fmnist_*')


# -- statistics: known results -----------------------------------------------------------

SLEEP_DRUG1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_DRUG2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_paired_t_test_reproduces_students_sleep_data():
    """R: t.test(extra ~ group, data = sleep, paired = TRUE): t = 4.0621, df = 9,
    p-value = 0.002833, 95% CI 0.7001142 2.4598858, mean difference 1.58."""
    r = paired_test(SLEEP_DRUG2, SLEEP_DRUG1, paper_effect=3.0)
    assert r['t'] == pytest.approx(4.0621, abs=1e-4) and r['df'] == 9
    assert r['p'] == pytest.approx(0.002833, abs=1e-6)
    assert (r['ci_low'], r['ci_high']) == (pytest.approx(0.7001142, abs=1e-6), pytest.approx(2.4598858, abs=1e-6))
    assert r['mean_diff'] == pytest.approx(1.58)
    # one-sided "at least 3.0": t = (1.58 - 3) / se, lower tail of t(9)
    from scipy import stats
    assert r['p_below_paper'] == pytest.approx(stats.t.cdf((1.58 - 3.0) / r['se'], 9))
    with pytest.raises(ValueError, match='equally long'):
        paired_test([1, 2, 3], [1, 2])


def test_tost_is_dual_to_the_90_percent_interval():
    ci = tost_paired(SLEEP_DRUG2, SLEEP_DRUG1, margin=10.0)
    edge = max(abs(ci['ci90_low']), abs(ci['ci90_high']))  # the interval just fits at this margin
    assert tost_paired(SLEEP_DRUG2, SLEEP_DRUG1, margin=edge)['p'] == pytest.approx(0.05, abs=1e-9)
    assert tost_paired(SLEEP_DRUG2, SLEEP_DRUG1, margin=edge * 1.01)['p'] < 0.05
    assert tost_paired(SLEEP_DRUG2, SLEEP_DRUG1, margin=edge * 0.99)['p'] > 0.05
    # a mean difference of 1.58 is not equivalent to zero within 0.3
    assert tost_paired(SLEEP_DRUG2, SLEEP_DRUG1, margin=0.3)['p'] > 0.5


def test_holm_and_power_match_known_values():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.005, 0.5]) == pytest.approx([0.01, 0.5])
    # G*Power, "Means: difference from constant (one sample case)", d = 1, alpha 0.05 two-sided:
    # n = 10 gives power 0.8031; the smallest n for power 0.8 is 10
    assert paired_power(10, 1.0, 1.0, 0.05) == pytest.approx(0.8031, abs=5e-4)
    assert seeds_needed(1.0, 1.0, 0.05, 0.8) == 10
    assert seeds_needed(1.0, 1.0, 0.05, 0.8, n_max=9) is None
    assert pilot_sd([[1.0, 3.0], [0.0, 0.0, 3.0]]) == pytest.approx(np.sqrt((2 + 6) / 3))


def test_power_is_finite_and_monotone_at_large_noncentrality():
    # a precise pilot (SD 0.186 points, as this study's) puts the noncentrality where scipy's
    # nct.cdf returns NaN; the plan's power must stay a number in [0, 1] that grows with n
    level = 0.05 / 3
    powers = [paired_power(n, sd, 0.5, level) for sd in (0.02, 0.05, 0.186, 1.0) for n in range(2, 40)]
    assert all(np.isfinite(p) and 0.0 <= p <= 1.0 for p in powers)
    small_sd = [paired_power(n, 0.186, 0.5, level) for n in range(2, 40)]
    assert all(b >= a - 1e-12 for a, b in zip(small_sd, small_sd[1:]))
    assert paired_power(8, 0.186, 0.5, level) == pytest.approx(0.9997, abs=1e-4)
    assert seeds_needed(0.186, 0.5, level, 0.8) == 5


# -- design decisions ------------------------------------------------------------------

def _record(name, seed, val=None, test=None, spread=0.2, params=1000):
    r = dict(arm=name, seed=seed, lam=0.0, folder=f'runs/{name}/seed{seed}', val_top1=val if val is not None else 0.0,
             params=params, params_without_alpha=params - 10, edges=[3, 3], spread_median=spread)
    if test is not None:
        r['test_top1'] = test
    return r


def test_choose_lambda_takes_the_best_validation_mean():
    runs = [dict(lam=1e-4, seed=100, val_top1=90.0), dict(lam=1e-4, seed=101, val_top1=91.0),
            dict(lam=5e-4, seed=100, val_top1=91.0), dict(lam=5e-4, seed=101, val_top1=90.0),
            dict(lam=2e-3, seed=100, val_top1=89.0), dict(lam=2e-3, seed=101, val_top1=89.5)]
    chosen = choose_lambda(runs)
    assert chosen['lam'] == 1e-4  # tie of 90.5 with 5e-4: the smaller lambda
    assert chosen['val_means'] == {'0.0001': 90.5, '0.0005': 90.5, '0.002': 89.25} and chosen['seeds'] == [100, 101]


def test_plan_seeds_sizes_the_study_from_the_pilot():
    settings = StudySettings(min_seeds=2, max_seeds=40)
    # contrast differences per seed: alpha-fixed (+1, +1.6), adaptive-alpha (0, +0.6), adaptive-residual (+0.2, +0.8)
    val = {'complete_fixed': [90.0, 90.0], 'complete_alpha': [91.0, 91.6], 'complete_adaptive': [91.0, 92.2],
           'residual_l2': [90.8, 91.4]}
    pilot = [_record(name, s, val=v) for name, vs in val.items() for s, v in enumerate(vs)]
    plan = plan_seeds(pilot, settings)
    # each contrast's two differences are 0.6 apart: variance 0.18 each, pooled over 3 x 1 df
    assert plan['pilot_sd'] == pytest.approx(np.sqrt(0.18))
    assert plan['level'] == pytest.approx(0.05 / 3)
    assert plan['n_seeds'] == seeds_needed(np.sqrt(0.18), 0.5, 0.05 / 3, 0.8)
    assert plan['planned_power'] >= 0.8
    capped = plan_seeds(pilot, StudySettings(min_seeds=2, max_seeds=3))
    assert capped['n_seeds'] == 3 and capped['planned_power'] < 0.8  # the budget binds: the power says so
    floor = plan_seeds(pilot, StudySettings(min_seeds=8, max_seeds=12))
    assert floor['n_seeds'] == max(8, plan['n_seeds'])


def test_analysis_gives_estimation_verdicts():
    rng = np.random.default_rng(0)
    n = 10
    fixed = 89.0 + rng.normal(0, 0.4, n)  # per-seed level shared by every arm (common random numbers)
    scores = {
        'complete_fixed': fixed,
        'complete_alpha': fixed + 1.0 + rng.normal(0, 0.05, n),  # a clear gain, about the paper's +0.98
        'complete_adaptive': fixed + 1.0 + rng.normal(0, 0.05, n),  # no gain over alpha: equivalence
        'residual_l2': fixed + 1.0 + rng.normal(0, 0.9, n),  # too noisy to say
    }
    results = [_record(name, s, val=v, test=v, spread=0.05 if name == 'complete_alpha' else 0.3)
               for name, vs in scores.items() for s, v in enumerate(vs)]
    analysis = analyze(results, StudySettings())
    by_name = {c['name']: c for c in analysis['contrasts']}
    assert by_name['alpha_vs_fixed']['p_holm'] < 0.05
    assert by_name['alpha_vs_fixed']['verdict'].startswith("supports the paper's direction")
    equal = by_name['adaptive_vs_alpha']
    assert equal['p_holm'] >= equal['p'] and equal['tost_p_holm'] < 0.05
    assert equal['verdict'].startswith('no effect: equivalent within +/-0.3 points (TOST)')
    assert "the data exclude an effect as large as the paper's (+0.38)" in equal['verdict']
    assert by_name['adaptive_vs_residual']['verdict'].startswith('not shown')
    assert by_name['adaptive_vs_residual']['power_at_effect'] < 0.8  # noisy: low power, and the report says so
    # the smallest effect detected with power 0.8 is where the power curve crosses 0.8: above 0.5 when noisy
    for c in analysis['contrasts']:
        assert paired_power(c['n'], c['sd_diff'], c['detectable_effect'], 0.05 / 3) == pytest.approx(0.8, abs=1e-6)
    assert by_name['adaptive_vs_residual']['detectable_effect'] > 0.5 > by_name['alpha_vs_fixed']['detectable_effect']
    spread = {m['arm']: m['learned_topology'] for m in analysis['manipulation']}
    assert spread == {'complete_alpha': False, 'complete_adaptive': True}
    report = report_markdown(analysis, StudySettings(), 'python tools/reproduce.py')
    assert '| complete_alpha | 5.0% |' in report and '| no |' in report
    assert 'Learning alpha on the complete graph helps (Table 4, iii) | 10 |' in report


def test_settings_validation():
    with pytest.raises(ValueError, match='selection seeds overlap'):
        StudySettings(select_seeds=(0, 1))
    with pytest.raises(ValueError, match='pilot seeds must be the first study seeds'):
        StudySettings(pilot_seeds=(3, 4))
    with pytest.raises(ValueError, match=r'warmup_iters must be in \[0, iters=100\)'):
        StudySettings(iters=100, warmup_iters=100)
    with pytest.raises(ValueError, match='lambda grid'):
        StudySettings(lam_grid=(0.0,))


def test_run_config_holds_out_validation_and_scales_lambda():
    settings = StudySettings(iters=600, warmup_iters=60)
    cfg = build_run_config(arm('complete_adaptive_lam10'), 3, 2e-4, settings)
    assert cfg.optim_wrapper.sparsity == dict(mode='adaptive', lam=pytest.approx(2e-3))
    assert cfg.model.backbone.seed == 3 and cfg.randomness.seed == 3
    train, val, test = (cfg[k].dataset for k in ('train_dataloader', 'val_dataloader', 'test_dataloader'))
    assert (train.split, val.split, test.split) == ('train', 'val', 'test')
    assert train.holdout == val.holdout == 5000
    assert cfg.train_cfg == dict(type='IterBasedTrainLoop', max_iters=600, val_interval=600)
    fixed = build_run_config(arm('residual_l2'), 1, 2e-4, settings)
    assert fixed.optim_wrapper.sparsity == dict(mode='none', lam=0.0)
    assert fixed.model.backbone.alpha_trainable is False


# -- end to end ----------------------------------------------------------------------

def _reproduce(out_dir, data, *extra):
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'reproduce.py'), '--out-dir', str(out_dir), '--data-root',
           str(data), '--holdout', '100', '--iters', '3', '--warmup-iters', '1', '--min-seeds', '2', '--max-seeds', '2',
           '--lam-grid', '1e-3', '--permutations', '19', *extra]
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env, cwd=ROOT)


def test_reproduce_command_end_to_end(tmp_path):
    data = make_fmnist(str(tmp_path / 'fmnist'), n_train=300, n_test=40)
    out = tmp_path / 'study'
    first = _reproduce(out, data)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    results = json.loads((out / 'results.json').read_text())
    runs = results['runs']
    assert sorted((r['arm'], r['seed']) for r in runs) == sorted((a, s) for a in PRIMARY_ARMS for s in (0, 1))
    for r in runs:
        assert r['iter'] == 3 and 0 <= r['val_top1'] <= 100 and 0 <= r['test_top1'] <= 100
        assert r['params'] > 0 and r['cpu_s'] > 0 and 'spread_median' in r
    assert results['selection']['lam'] == 1e-3 and results['seed_plan']['n_seeds'] == 2
    assert [c['name'] for c in results['analysis']['contrasts']] == [c.name for c in CONTRASTS]
    # the test split was scored once per study run, never for the selection runs
    assert len(list(out.glob('runs/*/seed*/test.json'))) == 8 and not list(out.glob('select/**/test.json'))
    report = (out / 'report.md').read_text()
    assert 'Pre-registered contrasts' in report and 'Manipulation check' in report
    topology = results['analysis']['topology']
    assert f'{topology["complete_adaptive"]["mean_correlation"]:+.3f} with adaptive sparsity vs ' \
           f'{topology["complete_alpha"]["mean_correlation"]:+.3f} without' in report
    for png in ('accuracy.png', 'contrasts.png', 'alpha_spread.png', 'alpha_hist.png', 'adjacency.png'):
        assert (out / png).read_bytes()[:4] == b'\x89PNG', png
    assert json.loads(first.stdout.strip().splitlines()[-1])['seeds'] == 2
    # a second call trains and scores nothing
    second = _reproduce(out, data)
    assert second.returncode == 0, second.stderr[-3000:]
    assert 'select: 2 of 2 runs already done' in second.stdout and 'test: 8 of 8 runs already done' in second.stdout
    assert 'Wall time of the work done by this call' in report
    assert 'this call only redid the analysis' in (out / 'report.md').read_text()
    # the same folder with other settings is refused, naming the folder
    third = _reproduce(out, data, '--lr', '0.05')
    assert third.returncode == 2 and 'holds a run with other settings' in third.stderr


def test_select_recipe_refuses_a_config_that_validates_on_test(tmp_path):
    from mmengine.config import Config
    from classification.recipe_search import check_validation_split, parse_grid
    cfg = Config.fromfile(os.path.join(ROOT, 'classification', 'configs', 'toponet_fmnist_adaptive.py'))
    check_validation_split(cfg, 'demo')  # the demo validates on its hold-out: fine
    cfg.val_dataloader.dataset = cfg.test_dataloader.dataset.copy()
    with pytest.raises(ValueError, match='validates on its test data'):
        check_validation_split(cfg, 'demo')
    assert parse_grid(['optim_wrapper.optimizer.lr=0.05,0.1']) == {'optim_wrapper.optimizer.lr': [0.05, 0.1]}
    with pytest.raises(ValueError, match='KEY=V1,V2'):
        parse_grid(['lr'])
