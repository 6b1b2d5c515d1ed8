"""Edge pruning, node removal and the compact model (backbones/pruning.py, tools/prune.py)."""
import copy
import json

import numpy as np
import pytest
import timm
import torch

import backbones  # noqa: F401  (registers the models)
from backbones.checkpoint import create_model_from_checkpoint, read_checkpoint, save_checkpoint
from backbones.complexity import count_parameters
from backbones.graphs import complete_graph, residual_graph
from backbones.pruning import (build_compact_model, close_mask, edge_scores, export_onnx, export_torchscript,
                               keep_ratio_threshold, masked_alpha, max_threshold, measure_cpu_latency,
                               node_removal_masks, prune_checkpoint, prune_masks, threshold_masks)
from backbones.toponet import TopoNet, TopoNetCfg

NAME = 'toponet_fmnist_complete'


def _randomise(model, seed=0):
    """Spread alpha over [-1, 1], set BN statistics from random batches and give BN
    non-zero shifts, so a node fed only zeros still outputs something (its BN shift),
    outputs depend on the input, and equality tests can fail."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for stage in model.stages:
            stage.edge_weights.copy_(torch.rand(stage.edge_weights.shape, generator=gen) * 2 - 1)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.3)
        model.train()
        in_chans = model.stem.conv.in_channels
        for _ in range(2):
            model(torch.randn(8, in_chans, 28, 28, generator=gen))
        for m in bns:
            m.momentum = 0.1
        model.head.fc.weight.normal_(0, 0.3, generator=gen)
    return model.eval()


@pytest.fixture(scope='module')
def model():
    return _randomise(timm.create_model(NAME, num_classes=10, in_chans=1))  # input_path 'projection'


@pytest.fixture(scope='module')
def node1_model():
    """The wiring in which node 1 carries each stage's shape change (ResNet-CIFAR's)."""
    return _randomise(timm.create_model(NAME, num_classes=10, in_chans=1, input_path='node1'))


@pytest.fixture(scope='module')
def images():
    return torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def _masked_output(model, masks, x):
    with torch.no_grad(), masked_alpha(model, masks):
        return model(x)


# -- masks -------------------------------------------------------------------------------
def test_close_mask_removes_nodes_without_input_or_output_repeatedly():
    g = complete_graph(6)  # nodes 0..5
    keep = np.ones(g.num_edges, dtype=bool)
    for e, (src, dst) in enumerate(g.edges):
        # node 1 loses its only input; node 3 keeps input only from node 1
        if (src, dst) == (0, 1) or (dst == 3 and src != 1):
            keep[e] = False
    closed = close_mask(g, keep)
    kept = {g.edges[e] for e in range(g.num_edges) if closed[e]}
    # node 1 goes (no input), so node 3 goes (its only input was node 1): a chain
    assert all(1 not in e and 3 not in e for e in kept)
    assert kept == {(0, 2), (0, 4), (2, 4), (0, 5), (2, 5), (4, 5)}
    with pytest.raises(ValueError, match='mask has 3 entries, the stage has 15 edges'):
        close_mask(g, [True, True, True])


def test_close_mask_removes_node_without_output():
    g = residual_graph(6, 2)
    keep = np.array([src != 2 for src, _ in g.edges])  # node 2 loses every output edge
    closed = close_mask(g, keep)
    assert not any(2 in g.edges[e] for e in range(g.num_edges) if closed[e])


def test_keep_ratio_counts_and_threshold_errors(model):
    alphas = [s.edge_weights.detach().numpy() for s in model.stages]
    total = sum(a.size for a in alphas)
    for ratio in (0.25, 0.5, 0.9):
        t = keep_ratio_threshold(alphas, ratio)
        assert sum(int((np.abs(a) >= t).sum()) for a in alphas) == round(ratio * total)
    masks, thresholds = prune_masks(model, keep_ratio=0.5, per_stage=True)
    raw = threshold_masks(alphas, thresholds)
    assert len(set(thresholds)) == 4 and [int(m.sum()) for m in raw] == [round(0.5 * a.size) for a in alphas]
    assert all((closed <= r).all() for closed, r in zip(masks, raw))  # node removal only drops more
    with pytest.raises(ValueError, match='keep_ratio must be in'):
        keep_ratio_threshold(alphas, 0.0)
    with pytest.raises(ValueError, match='per_stage applies to keep_ratio'):
        prune_masks(model, threshold=0.1, per_stage=True)
    with pytest.raises(ValueError, match='3 thresholds given for 4 stages'):
        prune_masks(model, threshold=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match='exactly one of threshold and keep_ratio'):
        prune_masks(model)
    with pytest.raises(ValueError, match='threshold must be a number >= 0'):
        prune_masks(model, threshold=-0.1)


def test_node_removal_masks_drop_exactly_the_node_in_a_complete_graph(model):
    graphs = model.graphs
    masks = node_removal_masks(graphs, 1, 4)
    dropped = [graphs[1].edges[e] for e in range(graphs[1].num_edges) if not masks[1][e]]
    assert dropped and all(4 in e for e in dropped)
    assert len(dropped) == graphs[1].num_nodes - 1  # complete: every other node is a neighbour
    assert all(m.all() for s, m in enumerate(masks) if s != 1)
    with pytest.raises(ValueError, match='not a computing node'):
        node_removal_masks(graphs, 0, 7)


def test_masked_alpha_restores_and_apply_zeroes(model):
    before = [s.edge_weights.detach().clone() for s in model.stages]
    masks, _ = prune_masks(model, threshold=0.5)
    with masked_alpha(model, masks):
        for stage, mask in zip(model.stages, masks):
            assert torch.all(stage.edge_weights[torch.from_numpy(~mask)] == 0)
    for stage, alpha in zip(model.stages, before):
        assert torch.equal(stage.edge_weights.detach(), alpha)


# -- the compact model -------------------------------------------------------------------
@pytest.mark.parametrize('threshold', [0.0, 0.2, 0.35])
@pytest.mark.parametrize('wiring', ['model', 'node1_model'])
def test_compact_model_equals_masked_original(request, wiring, images, threshold):
    model = request.getfixturevalue(wiring)
    masks, _ = prune_masks(model, threshold=threshold)
    compact, plans = build_compact_model(model, masks)
    compact.eval()
    assert isinstance(compact, TopoNet) and compact is not model
    with torch.no_grad():
        expected = _masked_output(model, masks, images)
        assert (expected[0] - expected[1]).abs().max() > 0.1  # the outputs depend on the input
        # the same ops on the same values, zero-weighted terms left out: max diff 0
        torch.testing.assert_close(compact(images), expected, rtol=0, atol=0)
    for stage, mask, plan in zip(compact.stages, masks, plans):
        assert stage.graph.num_edges == int(mask.sum()) + plan.promotes_input_proj
    if threshold == 0.0:
        assert count_parameters(compact) == count_parameters(model)
    else:
        assert count_parameters(compact) < count_parameters(model)  # MACs: checked by the tool's test


def test_masking_only_the_threshold_is_not_the_compact_model(model, images):
    """Why node removal belongs to the mask: a node whose inputs are all dropped still
    outputs its BN shift, so zeroing only the sub-threshold edges gives another function."""
    alphas = [s.edge_weights.detach().numpy() for s in model.stages]
    raw = [np.abs(a) >= 0.35 for a in alphas]
    closed, _ = prune_masks(model, threshold=0.35)
    assert any((r != c).any() for r, c in zip(raw, closed))
    assert not torch.allclose(_masked_output(model, raw, images), _masked_output(model, closed, images), atol=1e-4)


def _drop_edges(graph, pred):
    return np.array([not pred(src, dst) for src, dst in graph.edges])


def test_node_1_removed_promotes_the_input_projection(node1_model, images):
    """Stage 1 loses edge (0, 1): node 1 goes, the input projection becomes node 1."""
    model = node1_model
    masks = [np.ones(g.num_edges, dtype=bool) for g in model.graphs]
    masks[1] = close_mask(model.graphs[1], _drop_edges(model.graphs[1], lambda s, d: (s, d) == (0, 1)))
    compact, plans = build_compact_model(model, masks)
    assert plans[1].promotes_input_proj and plans[1].node_sources[1] == 'proj'
    assert compact.stages[1].input_proj is None  # the projection moved into node 1
    assert compact.stages[1].graph.num_nodes == model.graphs[1].num_nodes  # -node 1, +projection
    assert compact.stages[1].edge_weights[0].item() == 1.0
    torch.testing.assert_close(compact.stages[1].nodes[0].conv_pw.weight, model.stages[1].input_proj.conv_pw.weight)
    with torch.no_grad():
        torch.testing.assert_close(compact.eval()(images), _masked_output(model, masks, images), rtol=0, atol=1e-5)
    # only node 1's weights and its edges' alpha are gone
    node1 = count_parameters(model.stages[1].nodes[0])
    removed_edges = model.graphs[1].num_edges - int(masks[1].sum())
    assert count_parameters(compact) == count_parameters(model) - node1 - removed_edges + 1


def test_input_projection_dropped_when_only_node_1_reads_the_input(node1_model, images):
    model = node1_model
    masks = [np.ones(g.num_edges, dtype=bool) for g in model.graphs]
    masks[2] = close_mask(model.graphs[2], _drop_edges(model.graphs[2], lambda s, d: s == 0 and d != 1))
    compact, plans = build_compact_model(model, masks)
    assert model.stages[2].input_proj is not None and compact.stages[2].input_proj is None
    proj = count_parameters(model.stages[2].input_proj)
    assert count_parameters(compact) == count_parameters(model) - proj - (model.graphs[2].num_edges - masks[2].sum())
    with torch.no_grad():
        torch.testing.assert_close(compact.eval()(images), _masked_output(model, masks, images), rtol=0, atol=1e-5)


def test_node_1_is_an_ordinary_removable_node_with_the_projection(model, images):
    """input_path 'projection': stage 1 loses edge (0, 1), node 1 goes like any node, the
    projection stays (it feeds the other input edges) and nothing is promoted."""
    masks = [np.ones(g.num_edges, dtype=bool) for g in model.graphs]
    masks[1] = close_mask(model.graphs[1], _drop_edges(model.graphs[1], lambda s, d: (s, d) == (0, 1)))
    compact, plans = build_compact_model(model, masks)
    assert not plans[1].promotes_input_proj and plans[1].keeps_input_proj
    assert plans[1].node_sources == (0,) + tuple(range(2, model.graphs[1].num_nodes))
    assert compact.stages[1].graph.num_nodes == model.graphs[1].num_nodes - 1
    assert compact.stages[1].input_path == 'projection'
    assert torch.equal(compact.stages[1].input_proj.conv_pw.weight, model.stages[1].input_proj.conv_pw.weight)
    assert torch.equal(compact.stages[1].nodes[0].conv_pw.weight, model.stages[1].nodes[1].conv_pw.weight)
    with torch.no_grad():
        assert torch.equal(compact.eval()(images), _masked_output(model, masks, images))  # max diff 0
    # node 1's weights and its edges' alpha are gone, nothing else
    node1 = count_parameters(model.stages[1].nodes[0])
    removed_edges = model.graphs[1].num_edges - int(masks[1].sum())
    assert count_parameters(compact) == count_parameters(model) - node1 - removed_edges


def test_projection_kept_while_only_node_1_reads_the_input(model, images):
    masks = [np.ones(g.num_edges, dtype=bool) for g in model.graphs]
    masks[2] = close_mask(model.graphs[2], _drop_edges(model.graphs[2], lambda s, d: s == 0 and d != 1))
    compact, plans = build_compact_model(model, masks)
    assert plans[2].keeps_input_proj and compact.stages[2].input_proj is not None
    assert count_parameters(compact) == count_parameters(model) - (model.graphs[2].num_edges - masks[2].sum())
    with torch.no_grad():
        assert torch.equal(compact.eval()(images), _masked_output(model, masks, images))


def test_pruned_projection_stage_keeps_its_input_path_through_the_checkpoint(model, images, tmp_path):
    masks = [np.ones(g.num_edges, dtype=bool) for g in model.graphs]
    masks[0] = close_mask(model.graphs[0], _drop_edges(model.graphs[0], lambda s, d: (s, d) == (0, 1)))
    src = str(tmp_path / 'full.safetensors')
    save_checkpoint(src, model, NAME, model_kwargs={'num_classes': 10, 'in_chans': 1})
    _, reloaded, report = prune_checkpoint(src, str(tmp_path / 'compact.safetensors'), threshold=0.0)
    assert all(s.input_path == 'projection' for s in reloaded.stages)
    assert not any(report['input_proj_promoted'])


def test_stage_without_shape_change_renumbers_first_kept_node():
    cfg = TopoNetCfg(nodes=(6, 5), stage_chs=(8, 8), stage_strides=(1, 1), stem_chs=8, stem_kernel_size=3,
                     stem_stride=1, head_chs=0)
    model = _randomise(TopoNet(cfg, num_classes=3, in_chans=1))
    masks = [close_mask(g, _drop_edges(g, lambda s, d: (s, d) == (0, 1))) for g in model.graphs]
    compact, plans = build_compact_model(model, masks)
    assert not any(p.promotes_input_proj for p in plans)
    assert [p.node_sources for p in plans] == [(0, 2, 3, 4, 5), (0, 2, 3, 4)]
    x = torch.randn(2, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(compact.eval()(x), _masked_output(model, masks, x), rtol=0, atol=1e-5)


@pytest.mark.parametrize('wiring', ['model', 'node1_model'])
def test_a_cut_stage_is_refused_with_the_largest_usable_threshold(request, wiring, tmp_path):
    model = request.getfixturevalue(wiring)
    limit = max_threshold(model)
    masks, _ = prune_masks(model, threshold=limit)
    build_compact_model(model, masks)  # at the limit every stage stays connected
    masks, _ = prune_masks(model, threshold=limit + 1e-4)
    # with the projection, a stage left with its direct input->output edge alone has no node to build
    with pytest.raises(ValueError, match='no edge into the output node survives|only the direct input->output edge'):
        build_compact_model(model, masks)
    path = str(tmp_path / 'm.safetensors')
    save_checkpoint(path, model, NAME, model_kwargs={'num_classes': 10, 'in_chans': 1,
                                                     'input_path': model.cfg.input_path})
    with pytest.raises(ValueError, match=f'largest threshold that keeps every stage connected is {limit:.6g}'):
        prune_checkpoint(path, str(tmp_path / 'p.safetensors'), threshold=limit + 1e-3)


def test_relative_criterion_keeps_every_nodes_strongest_input_and_never_cuts(model, images):
    alphas = [s.edge_weights.detach().numpy() for s in model.stages]
    scores = edge_scores(alphas, model.graphs, 'relative')
    for graph, score, alpha in zip(model.graphs, scores, alphas):
        for node in range(1, graph.num_nodes):
            idx = [e for e, (_, dst) in enumerate(graph.edges) if dst == node]
            assert score[idx].max() == 1.0 and score[idx[np.argmax(np.abs(alpha[idx]))]] == 1.0
    with pytest.raises(ValueError, match='no edge into the output node survives'):
        build_compact_model(model, prune_masks(model, keep_ratio=0.1)[0])  # |alpha|: a stage is cut
    masks, thresholds = prune_masks(model, keep_ratio=0.1, criterion='relative')
    compact, plans = build_compact_model(model, masks)
    assert all(0 < t <= 1 for t in thresholds) and sum(p.graph.num_edges for p in plans) < 60
    with torch.no_grad():
        torch.testing.assert_close(compact.eval()(images), _masked_output(model, masks, images), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="unknown pruning criterion 'l2'"):
        prune_masks(model, keep_ratio=0.5, criterion='l2')


def test_relative_criterion_never_empties_a_stage_whose_output_prefers_the_direct_edge(model, images):
    """The collapse the relative score alone allows: every stage's output draws mostly on
    the stage input, and every edge between computing nodes is weak next to the inputs'
    direct edges. Each node keeps its strongest input, yet node removal then strips every
    computing node, leaving only the direct edge, which the projection wiring cannot build.
    prune_masks must add back the best path through computing nodes instead."""
    collapsing = copy.deepcopy(model)
    with torch.no_grad():
        for stage in collapsing.stages:
            last = stage.graph.num_nodes - 1
            alpha = [1.0 if src == 0 else (0.2 if dst == last else 0.05) for src, dst in stage.graph.edges]
            best = next(e for e, (src, dst) in enumerate(stage.graph.edges) if src > 0 and dst == last)
            alpha[best] = 0.3  # the path the repair must choose ends with this edge
            stage.edge_weights.copy_(torch.tensor(alpha))
    scores = edge_scores([s.edge_weights.detach().numpy() for s in collapsing.stages], collapsing.graphs, 'relative')
    naive = [close_mask(g, s >= 0.5) for g, s in zip(collapsing.graphs, scores)]
    assert [int(m.sum()) for m in naive] == [1] * len(naive)  # the direct edge alone: the bug's trigger
    masks, _ = prune_masks(collapsing, threshold=0.5, criterion='relative')
    for graph, mask in zip(collapsing.graphs, masks):
        into_output = [graph.edges[e] for e in np.flatnonzero(mask) if graph.edges[e][1] == graph.num_nodes - 1]
        assert sorted(into_output)[-1][0] > 0 and len(into_output) == 2  # the direct edge and the chosen path
        best = next(e for e, (src, dst) in enumerate(graph.edges) if src > 0 and dst == graph.num_nodes - 1)
        assert mask[best]
    compact, plans = build_compact_model(collapsing, masks)
    assert all(p.graph.num_nodes == 3 for p in plans)  # input, one computing node, output
    with torch.no_grad():
        torch.testing.assert_close(compact.eval()(images), _masked_output(collapsing, masks, images),
                                   rtol=0, atol=1e-5)


def test_only_toponets_are_rebuilt_and_only_when_the_projection_can_be_node_1():
    mobilenet = timm.create_model('mobilenetv2_100_topo')
    with pytest.raises(TypeError, match='rebuilds TopoNets, got MobileNetV2Topo'):
        build_compact_model(mobilenet, [np.ones(s.graph.num_edges, dtype=bool) for s in mobilenet.stages])
    resnet = timm.create_model('resnet20_cifar_topo')  # a TopoNet whose projection is a 1x1 conv
    masks = [np.ones(g.num_edges, dtype=bool) for g in resnet.graphs]
    build_compact_model(resnet, masks)
    masks[1] = close_mask(resnet.graphs[1], _drop_edges(resnet.graphs[1], lambda s, d: (s, d) == (0, 1)))
    with pytest.raises(ValueError, match=r'stage 1: node 1 is pruned and the input projection \(conv1x1\)'):
        build_compact_model(resnet, masks)


# -- checkpoint, timm, exports ---------------------------------------------------------
@pytest.fixture(scope='module')
def pruned_files(model, tmp_path_factory):
    root = tmp_path_factory.mktemp('prune')
    src = str(root / 'full.safetensors')
    save_checkpoint(src, model, NAME, model_kwargs={'num_classes': 10, 'in_chans': 1}, meta={'top1': 50.0})
    out = str(root / 'compact.safetensors')
    full, compact, report = prune_checkpoint(src, out, keep_ratio=0.5)
    return root, src, out, full, compact, report


def test_pruned_checkpoint_round_trips_through_the_shared_format_and_timm(pruned_files, model, images):
    _, src, out, _, compact, report = pruned_files
    assert report['max_abs_diff_vs_masked'] <= 1e-5 and report['max_abs_diff_reloaded'] <= 1e-5
    assert sum(report['edges_after']) <= round(0.5 * sum(report['edges_before']))
    ckpt = read_checkpoint(out)
    assert ckpt.model_name == NAME and ckpt.meta['source_meta'] == {'top1': 50.0}
    assert all(g.kind == 'pruned' and g.params['pruned_from'] == 'complete' for g in ckpt.graphs)
    assert ckpt.meta['thresholds'] == report['thresholds'] == [g.params['threshold'] for g in ckpt.graphs]
    assert len(set(report['thresholds'])) == 1  # one global threshold
    masks, _ = prune_masks(model, keep_ratio=0.5)
    expected = _masked_output(model, masks, images)
    loaded = create_model_from_checkpoint(out).eval()
    via_timm = timm.create_model(NAME, num_classes=10, in_chans=1, graphs=ckpt.graphs, pretrained=True,
                                 pretrained_cfg_overlay=dict(file=out)).eval()
    with torch.no_grad():
        for net in (compact, loaded, via_timm):
            torch.testing.assert_close(net(images), expected, rtol=0, atol=1e-5)
    feats = create_model_from_checkpoint(out, features_only=True).eval()
    assert [f.shape[1] for f in feats(images)] == [info['num_chs'] for info in compact.feature_info]


def test_compact_model_exports_to_torchscript_and_onnx(pruned_files, images):
    import onnxruntime as ort
    root, _, _, _, compact, _ = pruned_files
    compact = copy.deepcopy(compact)
    timing = measure_cpu_latency(compact, (2, 1, 28, 28), runs=2, warmup=1, channels_last=True)  # as prune.py
    assert timing['median_ms'] > 0 and not any(p.is_inference() for p in compact.parameters())
    scripted = export_torchscript(compact, str(root / 'compact.pt'))
    loaded = torch.jit.load(str(root / 'compact.pt'))
    with torch.no_grad():
        eager = compact(images)
        torch.testing.assert_close(scripted(images), eager, rtol=0, atol=1e-6)
        torch.testing.assert_close(loaded(images), eager, rtol=0, atol=1e-6)
    export_onnx(compact, str(root / 'compact.onnx'), (1, 1, 28, 28))
    session = ort.InferenceSession(str(root / 'compact.onnx'), providers=['CPUExecutionProvider'])
    got = session.run(None, {'images': images.numpy()})[0]  # batch 4 through a dynamic batch axis
    np.testing.assert_allclose(got, eager.numpy(), rtol=0, atol=1e-4)


def test_prune_tool_writes_checkpoint_report_and_picture(pruned_files, capsys):
    import importlib.util
    import os
    root, src, _, _, _, _ = pruned_files
    spec = importlib.util.spec_from_file_location('prune_tool', os.path.join(os.path.dirname(__file__), '..',
                                                                                'tools', 'prune.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out_dir = root / 'tool'
    assert tool.main([src, '--threshold', '0.3', '--out-dir', str(out_dir), '--no-export', '--bench-batch', '2',
                      '--bench-runs', '3', '--bench-warmup', '1']) == 0
    report = json.loads((out_dir / 'prune_report.json').read_text())
    assert report['params_after'] < report['params_before'] and report['macs_after'] < report['macs_before']
    assert report['cpu_ms_before'] > 0 and report['cpu_ms_after'] > 0
    assert (out_dir / 'full_pruned.safetensors').is_file() and (out_dir / 'adjacency_pruned.png').is_file()
    assert f'params {report["params_before"]:,} ->' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        tool.main([src])  # neither --threshold nor --keep-ratio
    assert tool.main([src, '--threshold', '0.99', '--out-dir', str(root / 'cut')]) == 2
    assert 'keeps every stage connected is' in capsys.readouterr().err
