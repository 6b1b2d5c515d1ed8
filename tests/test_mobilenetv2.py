import pytest
import timm
import torch

import backbones  # noqa: F401
from backbones.complexity import count_macs, count_parameters
from backbones.mobilenetv2_topo import stage_depths

# Table 3: params (M), FLOPs (G). 6N is not reproducible by depth scaling (see stage_depths).
TABLE3 = {'': (3.51, 0.31), '_2n': (6.43, 0.62), '_4n': (9.62, 1.10)}


@pytest.mark.parametrize('suffix', sorted(TABLE3))
def test_params_and_flops_match_table3(suffix):
    params, gflops = TABLE3[suffix]
    model = timm.create_model(f'mobilenetv2_100{suffix}_orig')
    assert abs(count_parameters(model) / 1e6 / params - 1) <= 0.03
    assert abs(count_macs(model) / 1e9 / gflops - 1) <= 0.03


def test_original_is_mobilenetv2():
    ours = timm.create_model('mobilenetv2_100_orig')
    reference = timm.create_model('mobilenetv2_100')
    edges = sum(s.graph.num_edges for s in ours.stages)
    assert count_parameters(ours) - edges == count_parameters(reference)
    assert count_macs(ours) == count_macs(reference)
    assert [s.graph.num_edges for s in ours.stages] == [2, 4, 7, 11, 7, 7, 2]  # 1 + C(n+1, 2) per stage


def test_depth_rule():
    assert stage_depths(1) == [1, 2, 3, 4, 3, 3, 1]
    assert stage_depths(2) == [2, 4, 6, 8, 6, 6, 2]
    assert stage_depths(4) == [4, 8, 12, 16, 12, 12, 2]
    with pytest.raises(ValueError, match='depth multiplier must be 1, 2, 4 or 6'):
        stage_depths(3)


def test_topo_variant_and_interface():
    model = timm.create_model('mobilenetv2_100_topo', num_classes=10)
    assert all(s.alpha_trainable for s in model.stages)
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    feats = timm.create_model('mobilenetv2_100_topo', features_only=True)
    assert feats.feature_info.channels() == [16, 24, 32, 96, 320]
    assert feats.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert [f.shape[1] for f in feats(x)] == [16, 24, 32, 96, 320]
    inter = model.forward_intermediates(x, intermediates_only=True)
    assert [t.shape[1] for t in inter] == [16, 24, 32, 96, 320]
    model.eval()
    torch.testing.assert_close(torch.jit.script(model)(x), model(x))
