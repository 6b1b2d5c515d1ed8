"""A pytest plugin that runs timm's own ``tests/test_models.py`` against this project's models.

``tests/test_timm_suite.py`` starts pytest on timm's file (from timm's sdist, fetched by
``tools/setup/install_env.sh``) with ``-p timm_model_tests``. Importing ``backbones`` before
timm's module is collected registers our models, so timm's ``list_models()``
parametrisations include them. Collection then keeps only the items whose ``model_name`` is
one of ``TOPONET_TIMM_MODELS`` (comma-separated; the registered tag, as in
``toponet_fmnist_complete.untrained``, is ignored), and marks as skipped, with the reason,
the checks our models fail by design (``SKIPS``).
"""
import fnmatch
import os

import pytest

import backbones  # noqa: F401  (registers the models before timm's tests list them)

# Networks whose edge weights are fixed at 1 keep them as parameters with requires_grad=False
# (docs/interop.md says why); timm's backward checks want a gradient for every parameter.
_FROZEN_ALPHA = ('alpha is frozen at 1 in this network: a parameter without gradient by design '
                 '(docs/interop.md); tests/test_timm_contract.py checks its backward instead')
# (timm test function, model name pattern) -> why it does not apply
SKIPS = {(test, pattern): _FROZEN_ALPHA for test in ('test_model_backward', 'test_model_backward_fx')
         for pattern in ('mobilenetv2_*_orig', 'resnet*_cifar')}
_MARKERS = ('base', 'forward', 'backward', 'cfg', 'cfg_nonstd', 'torchscript', 'features', 'fxforward',
            'fxbackward')


def pytest_configure(config):
    # timm's markers (its pyproject.toml is not in the sdist's tests/), and pytest-timeout's
    # mark, which timm uses and which is not installed here
    for name in _MARKERS:
        config.addinivalue_line('markers', f'{name}: timm test group')
    config.addinivalue_line('markers', 'timeout(seconds): per-test limit of pytest-timeout (not installed)')


def _model_name(item):
    callspec = getattr(item, 'callspec', None)
    name = callspec.params.get('model_name') if callspec is not None else None
    return name.split('.')[0] if isinstance(name, str) else None


def pytest_collection_modifyitems(config, items):
    wanted = {m.strip() for m in os.environ.get('TOPONET_TIMM_MODELS', '').split(',') if m.strip()}
    if not wanted:
        raise pytest.UsageError('TOPONET_TIMM_MODELS names no model')
    keep, drop = [], []
    for item in items:
        (keep if _model_name(item) in wanted else drop).append(item)
    for item in keep:
        test = item.originalname or item.name
        for (function, pattern), reason in SKIPS.items():
            if test == function and fnmatch.fnmatch(_model_name(item), pattern):
                item.add_marker(pytest.mark.skip(reason=reason))
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
