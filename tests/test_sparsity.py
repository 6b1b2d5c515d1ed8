import math

import pytest
import torch
from torch import nn

import backbones  # noqa: F401
from backbones.dag import DAGStage
from backbones.graphs import complete_graph, random_graph
from backbones.sparsity import TopologySparsity, edge_penalty_scale, param_groups_alpha_no_decay


def _stage_with_signed_alpha(graph):
    stage = DAGStage(graph, 4, 4)
    with torch.no_grad():
        stage.edge_weights.copy_(torch.linspace(-1.0, 1.0, graph.num_edges) + 0.013)
    return stage


@pytest.mark.parametrize('graph', [complete_graph(14), random_graph(20, 0.5, seed=2)])
def test_uniform_gradient_is_lambda_sign(graph):
    stage = _stage_with_signed_alpha(graph)
    TopologySparsity('uniform', lam=1e-4)(stage).backward()
    expected = 1e-4 * torch.sign(stage.edge_weights.detach())
    torch.testing.assert_close(stage.edge_weights.grad, expected)


@pytest.mark.parametrize('graph', [complete_graph(14), random_graph(20, 0.5, seed=2)])
def test_adaptive_gradient_is_lambda_log_indegree_sign(graph):
    stage = _stage_with_signed_alpha(graph)
    lam = 3e-4
    TopologySparsity('adaptive', lam=lam)(stage).backward()
    in_degree = graph.in_degree
    alpha = stage.edge_weights.detach()
    for e, (src, dst) in enumerate(graph.edges):
        # Algorithm 1: grad += lambda * log(delta_i) * dL1/dalpha_ji, delta_i = in-degree of node i
        expected = lam * math.log(in_degree[dst]) * math.copysign(1.0, float(alpha[e]))
        assert stage.edge_weights.grad[e].item() == pytest.approx(expected, rel=1e-5, abs=1e-12)
    # node 1 of a complete graph has in-degree 1: log 1 = 0, no push
    if graph.kind == 'complete':
        assert stage.edge_weights.grad[0] == 0


def test_penalty_value_and_none_mode():
    stage = DAGStage(complete_graph(5), 2, 2)  # in-degrees 1..4, all alpha = 1
    assert float(TopologySparsity('uniform', lam=0.1)(stage).detach()) == pytest.approx(0.1 * 10)
    adaptive = sum(i * math.log(i) for i in range(1, 5))
    assert float(TopologySparsity('adaptive', lam=0.1)(stage).detach()) == pytest.approx(0.1 * adaptive)
    assert float(TopologySparsity('none')(stage).detach()) == 0.0
    assert torch.equal(edge_penalty_scale(stage, 'none'), torch.zeros(10))


def test_frozen_alpha_is_not_penalised():
    stage = DAGStage(complete_graph(5), 2, 2, alpha_trainable=False)
    assert float(TopologySparsity('uniform', lam=1.0)(stage).detach()) == 0.0


def test_penalty_covers_every_stage_of_a_network():
    import timm
    model = timm.create_model('toponet_fmnist_complete')
    TopologySparsity('uniform', lam=1.0)(model).backward()
    for stage in model.stages:
        assert torch.equal(stage.edge_weights.grad, torch.ones_like(stage.edge_weights))


@pytest.mark.parametrize('args, message', [
    (('uniform', -1e-4), 'sparsity lambda must be a number >= 0, got -0.0001'),
    (('l2', 1e-4), "unknown sparsity mode 'l2'"),
    (('uniform', 'big'), "got 'big'"),
])
def test_bad_sparsity_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        TopologySparsity(*args)
    with pytest.raises(ValueError, match='takes keys mode and lam'):
        TopologySparsity.from_config({'mode': 'uniform', 'lambda': 1e-4})


def test_alpha_has_no_weight_decay_by_default():
    stage = DAGStage(complete_graph(5), 2, 4, stride=2)
    model = nn.Sequential(stage, nn.Flatten(), nn.LazyLinear(3))
    model(torch.randn(1, 2, 8, 8))
    groups = param_groups_alpha_no_decay(model, weight_decay=1e-4)
    alpha_group = [g for g in groups if any(p is stage.edge_weights for p in g['params'])]
    assert len(alpha_group) == 1 and alpha_group[0]['weight_decay'] == 0.0
    decayed = [p for g in groups if g['weight_decay'] > 0 for p in g['params']]
    assert all(p.ndim > 1 for p in decayed)
    assert sum(len(g['params']) for g in groups) == len(list(model.parameters()))
