import pytest
import timm
import torch

import backbones  # noqa: F401
from backbones.complexity import count_macs, count_parameters

# Table 2 of the paper: params (M), FLOPs (G) of the basic networks
TABLE2 = {20: (0.28, 0.04), 32: (0.47, 0.07), 44: (0.67, 0.10), 56: (0.86, 0.13), 110: (1.74, 0.25)}


@pytest.mark.parametrize('depth', sorted(TABLE2))
def test_params_and_flops_match_table2(depth):
    params, gflops = TABLE2[depth]
    model = timm.create_model(f'resnet{depth}_cifar')
    assert abs(count_parameters(model) / 1e6 / params - 1) <= 0.03
    # FLOPs of Table 2 are printed with 2 decimals: compare at that precision for the small nets
    macs = count_macs(model, (1, 3, 32, 32)) / 1e9
    assert abs(macs - gflops) <= max(0.03 * gflops, 0.005), macs
    topo = timm.create_model(f'resnet{depth}_cifar_topo')
    n = (depth - 2) // 6 * 2 + 2
    assert [s.graph.num_edges for s in topo.stages] == [n * (n - 1) // 2] * 3
    # the optimized network only adds the edge weights
    assert count_parameters(topo) - count_parameters(model) == 3 * n * (n - 1) // 2 - sum(
        s.graph.num_edges for s in model.stages)


def test_original_is_a_residual_network():
    model = timm.create_model('resnet20_cifar')
    assert all(not s.alpha_trainable for s in model.stages)
    assert [s.graph.params for s in model.stages] == [{'interval': 2}] * 3
    # stage 1 keeps its shape: no projection; later stages project with a 1x1 conv
    assert model.stages[0].input_proj is None
    assert model.stages[1].input_proj.conv.kernel_size == (1, 1)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_unit_alpha_fast_path_equals_weighted_sum():
    model = timm.create_model('resnet20_cifar').eval()
    x = torch.randn(2, 3, 32, 32)
    fast = model(x)
    assert model.stages[0]._alpha_fixed_at_one()
    for stage in model.stages:  # same weights, through the multiply-add path
        stage.edge_weights.requires_grad_(True)
        assert not stage._alpha_fixed_at_one()
    torch.testing.assert_close(model(x), fast)
    with torch.no_grad():
        model.stages[0].edge_weights[0] = 0.5
    for stage in model.stages:
        stage.edge_weights.requires_grad_(False)
    assert not model.stages[0]._alpha_fixed_at_one(), 'an in-place edit must be noticed'
    assert not torch.allclose(model(x), fast)


def test_topo_variant_trains_alpha():
    model = timm.create_model('resnet20_cifar_topo')
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(s.edge_weights.grad is not None for s in model.stages)
