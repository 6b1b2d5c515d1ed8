import pytest
import torch
from torch import nn

from backbones.dag import DAGStage
from backbones.graphs import complete_graph
from backbones.sparsity import TopologySparsity

mmengine = pytest.importorskip('mmengine')
from mmengine.optim import build_optim_wrapper  # noqa: E402

import backbones.mmengine_optim  # noqa: E402,F401  (registers the wrappers)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stage = DAGStage(complete_graph(6), 3, 4, stride=2)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.stage(x).mean((2, 3)))


def _cfg(mode, **extra):
    return dict(type='TopologySparsityOptimWrapper', sparsity=dict(mode=mode, lam=0.01),
                constructor='TopologyOptimWrapperConstructor',
                optimizer=dict(type='SGD', lr=0.1, momentum=0.0, weight_decay=0.5), **extra)


@pytest.mark.parametrize('mode', ['uniform', 'adaptive'])
def test_update_adds_algorithm1_gradient(mode):
    torch.manual_seed(0)
    model = Tiny()
    wrapper = build_optim_wrapper(model, _cfg(mode))
    x = torch.randn(4, 3, 8, 8)
    alpha_before = model.stage.edge_weights.detach().clone()

    reference = Tiny()
    reference.load_state_dict(model.state_dict())
    task = reference(x).square().mean()
    (task + TopologySparsity(mode, 0.01)(reference)).backward()
    # edge weights: no weight decay, gradient = task + Algorithm 1's sparsity term
    expected_alpha = alpha_before - 0.1 * reference.stage.edge_weights.grad

    wrapper.update_params(model(x).square().mean())
    torch.testing.assert_close(model.stage.edge_weights.detach(), expected_alpha)


def test_alpha_excluded_from_weight_decay():
    model = Tiny()
    wrapper = build_optim_wrapper(model, _cfg('uniform'))
    for group in wrapper.optimizer.param_groups:
        if any(p is model.stage.edge_weights for p in group['params']):
            assert group['weight_decay'] == 0.0
        elif any(p is model.fc.weight for p in group['params']):
            assert group['weight_decay'] == 0.5
    wrapper = build_optim_wrapper(model, _cfg('uniform', paramwise_cfg=dict(alpha_decay_mult=1.0)))
    group = next(g for g in wrapper.optimizer.param_groups if any(p is model.stage.edge_weights for p in g['params']))
    assert group['weight_decay'] == 0.5


def test_sparsity_with_plain_wrapper_is_refused():
    cfg = _cfg('uniform')
    cfg['type'] = 'OptimWrapper'
    with pytest.raises(ValueError, match="sparsity setting but type='OptimWrapper'"):
        build_optim_wrapper(Tiny(), cfg)


def test_unbound_wrapper_explains_itself():
    cfg = _cfg('uniform')
    cfg.pop('constructor')
    model = Tiny()
    wrapper = build_optim_wrapper(model, cfg)
    with pytest.raises(RuntimeError, match='TopologyOptimWrapperConstructor'):
        wrapper.update_params(model(torch.randn(2, 3, 8, 8)).sum())
