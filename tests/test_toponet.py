import pytest
import timm
import torch

import backbones  # noqa: F401  (registers the models)
from backbones.complexity import count_macs, count_parameters
from backbones.graphs import GraphSpec
from backbones.toponet import TopoNet, TopoNetCfg, TopologyCfg, checkpoint_filter_fn, model_cfgs, toponet_cfg

IMAGENET = [n for n in model_cfgs if n.startswith('toponet_') and not n.startswith('toponet_fmnist')]
FMNIST = [n for n in model_cfgs if n.startswith('toponet_fmnist')]


def test_c64_params_and_macs_match_paper():
    # input_path 'projection' (the default): 23.90M (+2.9%) and 3.90 GMACs (-1.4%)
    model = timm.create_model('toponet_complete')
    params = count_parameters(model)
    macs = count_macs(model, (1, 3, 224, 224))
    assert abs(params / 23.23e6 - 1) <= 0.03, params
    assert abs(macs / 3.95e9 - 1) <= 0.05, macs
    assert [s.graph.num_edges for s in model.stages] == [91, 190, 325, 91]


def _params_without_alpha(model):
    return count_parameters(model) - sum(s.edge_weights.numel() for s in model.stages)


@pytest.mark.parametrize('family', [IMAGENET, FMNIST], ids=['imagenet', 'fmnist'])
def test_every_topology_has_the_same_weights(family):
    # Parity for comparing topologies (the paper reports one count for all): the ops of a
    # stage do not depend on its graph, so only the number of edge weights differs.
    assert len(family) == 10
    models = {name: timm.create_model(name) for name in family}
    complete = models[family[0]]
    assert family[0].endswith('_complete')
    for name, model in models.items():
        assert _params_without_alpha(model) == _params_without_alpha(complete), name
        assert abs(count_parameters(model) / count_parameters(complete) - 1) <= 0.005, name
        # and the same tensors, not only the same total
        assert {k: v.shape for k, v in model.named_parameters() if not k.endswith('edge_weights')} == {
            k: v.shape for k, v in complete.named_parameters() if not k.endswith('edge_weights')}, name


def test_projection_wiring_grows_node_1_and_the_node1_wiring_follows_the_graph():
    projection = timm.create_model('toponet_complete')
    node1 = timm.create_model('toponet_complete', input_path='node1')
    assert projection.cfg.input_path == 'projection' and node1.cfg.input_path == 'node1'
    assert all(s.input_path == 'node1' for s in node1.stages)
    # node 1 of a sep stage in -> out at stride s becomes out -> out: (out - in) * (9 + out) more weights
    ins = (64, 128, 256, 512)
    outs = (128, 256, 512, 1024)
    grown = sum((o - i) * (9 + o) for i, o in zip(ins, outs))
    assert count_parameters(projection) - count_parameters(node1) == grown == 704960
    # the old wiring: BA's stage inputs feed node 1 alone in some stages, so they have no projection
    ba = timm.create_model('toponet_ba', input_path='node1')
    assert _params_without_alpha(ba) < _params_without_alpha(node1)


def test_weights_of_the_other_input_path_are_refused_loudly(tmp_path):
    from backbones.checkpoint import create_model_from_checkpoint, save_checkpoint
    from backbones.errors import InputError
    old = timm.create_model('toponet_fmnist_complete', input_path='node1').eval()
    new = timm.create_model('toponet_fmnist_complete')
    with pytest.raises(InputError, match="stages.0.nodes.0.*input_path='node1'"):
        new.load_state_dict(old.state_dict())
    # a checkpoint of the old wiring that does not say so does not load into the default one ...
    path = str(tmp_path / 'node1.safetensors')
    save_checkpoint(path, old, 'toponet_fmnist_complete', model_kwargs={'num_classes': 10})
    with pytest.raises(ValueError, match='stages.0.nodes.0'):
        create_model_from_checkpoint(path)
    # ... and rebuilds exactly where its keyword arguments name the wiring
    save_checkpoint(path, old, 'toponet_fmnist_complete', model_kwargs={'num_classes': 10, 'input_path': 'node1'})
    again = create_model_from_checkpoint(path).eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(again(x), old(x))


def test_macs_count_convs_and_aggregation_exactly():
    # one stage, hand-counted: node 1 (dw 4ch s2 + pw 4->8) and node 2 (dw 8 + pw 8->8) at 8x8,
    # the input projection (same as node 1) and 3 aggregation terms... edge (0,1):1, (0,2),(1,2):2,
    # (0,3),(1,3),(2,3):3 -> 6 multiply-adds per output element over 8*8*8 elements (node 1 reads 4ch).
    from backbones.dag import DAGStage
    from backbones.graphs import complete_graph
    stage = DAGStage(complete_graph(4), 4, 8, stride=2)
    hw = 8 * 8
    node1 = (4 * 9 + 4 * 8) * hw
    node2 = (8 * 9 + 8 * 8) * hw
    aggregation = 4 * 16 * 16 * 1 + 8 * hw * (2 + 3)
    assert count_macs(stage, (1, 4, 16, 16)) == 2 * node1 + node2 + aggregation
    # input_path 'projection': the projection (4 -> 8, stride 2), then nodes 1 and 2 alike
    # (8 -> 8); every edge, (0, 1) included, aggregates at the new shape: 1 + 2 + 3 terms
    stage = DAGStage(complete_graph(4), 4, 8, stride=2, input_path='projection')
    projection = (4 * 9 + 4 * 8) * hw
    assert count_macs(stage, (1, 4, 16, 16)) == projection + 2 * node2 + 8 * hw * (1 + 2 + 3)


@pytest.mark.parametrize('input_path', ['projection', 'node1'])
def test_macs_do_not_depend_on_the_aggregation_formulation(input_path):
    # the stacked sums run inside custom autograd functions; they are counted all the same
    model = timm.create_model('toponet_fmnist_ba', input_path=input_path)
    reference = count_macs(model, (1, 1, 28, 28))
    model.set_aggregation('stacked')
    assert count_macs(model, (1, 1, 28, 28)) == reference
    assert all(stage.aggregation == 'stacked' for stage in model.stages)  # restored afterwards


@pytest.mark.parametrize('name', IMAGENET)
def test_imagenet_forward_shape(name):
    model = timm.create_model(name).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


@pytest.mark.parametrize('name', FMNIST)
def test_fmnist_forward_shape(name):
    model = timm.create_model(name).eval()
    assert model.pretrained_cfg['input_size'] == (1, 28, 28)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_every_parameter_gets_a_gradient_c64():
    model = timm.create_model('toponet_complete', num_classes=10)
    model(torch.randn(2, 3, 224, 224)).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert sum(1 for n, _ in model.named_parameters() if n.endswith('edge_weights')) == 4


@pytest.mark.parametrize('name', FMNIST)
def test_every_parameter_gets_a_gradient_small(name):
    model = timm.create_model(name)
    model(torch.randn(4, 1, 28, 28)).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_same_seed_same_network():
    a = timm.create_model('toponet_random_p04', seed=3)
    b = timm.create_model('toponet_random_p04', seed=3)
    c = timm.create_model('toponet_random_p04', seed=4)
    assert a.graphs == b.graphs and a.graphs != c.graphs
    assert len({g.edges for g in a.graphs}) == 4, 'stages draw distinct graphs'


def test_graphs_override_rebuilds_the_same_network():
    a = timm.create_model('toponet_fmnist_random_p06', seed=1)
    b = timm.create_model('toponet_fmnist_random_p06', graphs=[g.to_dict() for g in a.graphs])
    assert a.graphs == b.graphs
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(a.eval()(x), b.eval()(x))


def test_alpha_off_baseline():
    model = timm.create_model('toponet_fmnist_complete', alpha_trainable=False)
    assert all(not s.edge_weights.requires_grad for s in model.stages)
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - sum(
        s.graph.num_edges for s in model.stages)


def test_timm_interface():
    model = timm.create_model('toponet_fmnist_complete')
    assert model.get_classifier().out_features == 10
    model.reset_classifier(5)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 5)
    model.reset_classifier(0)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, model.num_features)
    assert model.no_weight_decay() == {f'stages.{i}.edge_weights' for i in range(4)}
    matcher = model.group_matcher(coarse=True)
    assert set(matcher) == {'stem', 'blocks'}
    final, inter = model.forward_intermediates(torch.randn(2, 1, 28, 28))
    assert [t.shape[1] for t in inter] == [16, 32, 64, 128, 160] and final.shape[1] == 160


def test_features_only():
    model = timm.create_model('toponet_complete', features_only=True)
    assert model.feature_info.channels() == [64, 128, 256, 512, 1024]
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    feats = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]


def test_grad_checkpointing_same_gradients():
    model = timm.create_model('toponet_fmnist_complete')
    x = torch.randn(4, 1, 28, 28)
    model(x).sum().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[n], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('input_path', ['projection', 'node1'])
def test_torchscript(input_path):
    model = timm.create_model('toponet_fmnist_ws', input_path=input_path).eval()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(torch.jit.script(model)(x), model(x))


def test_weights_of_another_topology_are_refused():
    complete = timm.create_model('toponet_fmnist_complete')
    residual = timm.create_model('toponet_fmnist_residual_l2')
    with pytest.raises(ValueError, match='stages.0.edge_index: the weights are for another topology'):
        residual.load_state_dict(complete.state_dict())
    # same edge count, different wiring: still refused
    a = timm.create_model('toponet_fmnist_random_p06', seed=1)
    b = timm.create_model('toponet_fmnist_random_p06', seed=2)
    with pytest.raises(ValueError, match='another topology'):
        b.load_state_dict(a.state_dict())
    filtered = checkpoint_filter_fn({'state_dict': {'module.' + k: v for k, v in a.state_dict().items()}}, a)
    assert set(filtered) == set(a.state_dict())
    b2 = timm.create_model('toponet_fmnist_random_p06', graphs=a.graphs)
    b2.load_state_dict(filtered)


@pytest.mark.parametrize('kwargs, message', [
    (dict(nodes=(14, 20), stage_chs=(1, 2, 3), stage_strides=(2, 2)), 'one entry per stage'),
    (dict(nodes=(2, 20), stage_chs=(8, 16), stage_strides=(2, 2)), 'nodes entries must be ints >= 3'),
    (dict(nodes=(4, 4), stage_chs=(8, 16), stage_strides=(2, 2), node_op='mlp'), "unknown node op 'mlp'"),
    (dict(nodes=(4, 4), stage_chs=(8, 16), stage_strides=(2, 2), head_chs=-1), 'head_chs must be >= 0'),
    (dict(nodes=(4, 4), stage_chs=(8, 16), stage_strides=(2, 2), input_path='raw'), "unknown input_path 'raw'"),
])
def test_bad_cfg(kwargs, message):
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
        TopoNetCfg(**kwargs)


def test_bad_topology_cfg():
    with pytest.raises(ValueError, match="unknown topology 'grid'"):
        TopologyCfg('grid')
    with pytest.raises(ValueError, match='in \\(0, 1\\], got 1.2'):
        TopoNet(toponet_cfg(8, nodes=(4, 4, 4, 4), kind='random', p=1.2))
    with pytest.raises(ValueError, match='3 graphs given for a 4-stage network'):
        TopoNet(model_cfgs['toponet_fmnist_complete'], graphs=[GraphSpec(3, ((0, 1), (1, 2)))] * 3)
