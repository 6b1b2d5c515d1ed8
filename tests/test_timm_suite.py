"""timm's own model tests (``tests/test_models.py`` of the timm release we pin) against our models.

The file ships in timm's sdist only; ``tools/setup/install_env.sh`` fetches it once per machine
into ``~/.cache/toponet/timm-tests/timm-<version>/tests`` (``TOPONET_TIMM_TESTS`` overrides
the folder). Without it this test is skipped, saying so. The plugin
``tests/helpers/timm_model_tests.py`` selects the models and skips what does not apply.

By default the fast models run (every TopoNet topology family at Fashion-MNIST size, the
smallest ResNet-CIFAR and MobileNetV2 of each kind: about a minute); ``TOPONET_TIMM_MODELS=all``
runs all 38 (about 15 minutes on 2 cores), any other value names models, comma-separated.
"""
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import timm

import backbones  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMM_TESTS = os.environ.get('TOPONET_TIMM_TESTS') or os.path.expanduser(
    f'~/.cache/toponet/timm-tests/timm-{timm.__version__}/tests')
FAST = ('toponet_fmnist_complete', 'toponet_fmnist_residual_l2', 'toponet_fmnist_random_p04', 'toponet_fmnist_er',
        'toponet_fmnist_ba', 'toponet_fmnist_ws', 'resnet20_cifar', 'resnet20_cifar_topo', 'mobilenetv2_100_orig',
        'mobilenetv2_100_topo')
# timm's tests parametrised over every registered model (the others are about timm's own
# models, or filter by timm module name and never select ours; test_timm_contract.py has
# our versions of those: forward_intermediates, prune_intermediate_layers)
PER_MODEL = ('test_model_forward', 'test_model_backward', 'test_model_default_cfgs', 'test_model_forward_torchscript',
             'test_model_forward_features', 'test_model_forward_fx', 'test_model_backward_fx',
             'test_model_forward_fx_torchscript')

pytestmark = pytest.mark.skipif(
    not os.path.isfile(os.path.join(TIMM_TESTS, 'test_models.py')),
    reason=f"timm's own tests are not at {TIMM_TESTS}: tools/setup/install_env.sh fetches them from the timm "
           f"sdist (make setup), or set TOPONET_TIMM_TESTS to a copy of timm {timm.__version__}'s tests/")


def _models():
    chosen = os.environ.get('TOPONET_TIMM_MODELS', '').strip()
    if chosen == 'all':
        return sorted(timm.list_models('toponet_*') + timm.list_models('resnet*_cifar*')
                      + timm.list_models('mobilenetv2_100*_orig') + timm.list_models('mobilenetv2_100*_topo'))
    return [m.strip() for m in chosen.split(',') if m.strip()] if chosen else list(FAST)


def _run_timm_tests(models, tmp_path):
    report = tmp_path / 'junit.xml'
    (tmp_path / 'pytest.ini').write_text('[pytest]\n')  # none of our pytest settings
    env = dict(os.environ, TOPONET_TIMM_MODELS=','.join(models), PYTHONWARNINGS='ignore',
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, 'tests', 'helpers'), ROOT,
                                           os.environ.get('PYTHONPATH', '')]))
    cmd = [sys.executable, '-m', 'pytest', os.path.join(TIMM_TESTS, 'test_models.py'), '-p', 'timm_model_tests',
           '-c', str(tmp_path / 'pytest.ini'), '--rootdir', str(tmp_path), '-p', 'no:cacheprovider', '-q',
           '-rfEs', f'--junitxml={report}']
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    if not report.exists():
        pytest.fail(f"timm's tests did not run (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    outcomes = {}
    for case in ET.parse(report).getroot().iter('testcase'):
        name = case.get('name')
        test, model = name.split('[')[0], name.split('-', 1)[1].rstrip(']').split('.')[0]
        kinds = [child.tag for child in case if child.tag in ('failure', 'error', 'skipped')]
        detail = next((child.get('message', '') for child in case if child.tag in ('failure', 'error', 'skipped')),
                      '')
        outcomes[(test, model)] = (kinds[0] if kinds else 'passed', detail)
    return proc, outcomes


def test_timm_model_tests_pass_for_our_models(tmp_path):
    models = _models()
    proc, outcomes = _run_timm_tests(models, tmp_path)
    failed = {key: detail[:300] for key, (kind, detail) in outcomes.items() if kind in ('failure', 'error')}
    assert not failed, f'{len(failed)} of timm\'s tests failed: {failed}\n{proc.stdout[-4000:]}'
    # every per-model test of timm ran for every chosen model
    assert {(test, model) for test in PER_MODEL for model in models} <= set(outcomes)
    skipped = {key: detail for key, (kind, detail) in outcomes.items() if kind == 'skipped'}
    frozen = {m for m in models if not all(s.alpha_trainable for s in timm.create_model(m, device='meta').stages)}
    # skipped: exactly the backward checks of the networks whose alpha is frozen at 1, saying why
    assert set(skipped) == {(t, m) for t in ('test_model_backward', 'test_model_backward_fx') for m in frozen}
    assert all('frozen at 1' in reason for reason in skipped.values())
    assert proc.returncode == 0, proc.stdout[-3000:]

