"""Topology analysis: graph statistics, alpha similarity, graph damage, snapshots, and the
command lines (backbones/analysis.py, classification/damage.py, tools/)."""
import copy
import importlib.util
import json
import os

import numpy as np
import pytest
import timm
import torch

import backbones  # noqa: F401  (registers the models)
from backbones.analysis import (alpha_similarity, edge_damage, graph_statistics, load_topology, node_damage,
                                stage_statistics, statistics_markdown)
from backbones.checkpoint import save_checkpoint
from backbones.graphs import GraphSpec, complete_graph, residual_graph
from backbones.pruning import build_compact_model, masked_alpha, node_removal_masks, prune_masks
from backbones.topology_export import StageTopology, save_topology_json
from backbones.toponet import TopoNet, TopoNetCfg
from classification.damage import (Normalizer, accuracy_evaluator, evaluate_accuracy, fashion_mnist_loader,
                                   search_snapshots, standalone_accuracy, train_weights)
from tests.helpers.tiny_data import make_fmnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST_CONFIG = os.path.join(ROOT, 'classification', 'configs', 'toponet_fmnist_adaptive.py')


def _data_options(root):
    return ['--cfg-options', f'train_dataloader.dataset.root={root}', 'train_dataloader.dataset.holdout=0',
            f'test_dataloader.dataset.root={root}']


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- graph statistics --------------------------------------------------------------------
def test_statistics_of_a_hand_made_stage():
    g = GraphSpec(5, ((0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (0, 4), (3, 4)))
    alpha = np.array([0.9, 0.001, 0.5, -0.004, 0.7, 0.3, -0.8])  # in g.edges order (sorted by dst)
    stats = stage_statistics(StageTopology(g, alpha), near_zero=0.01)
    assert stats['num_edges'] == 7 and stats['density'] == pytest.approx(7 / 10)
    assert stats['in_degree'] == [0, 1, 2, 2, 2] and stats['out_degree'] == [3, 2, 1, 1, 0]
    assert stats['mean_in_degree'] == pytest.approx(5 / 3) and stats['max_out_degree'] == 2
    assert stats['longest_path'] == 4  # 0-1-2-3-4
    assert stats['near_zero_share'] == pytest.approx(2 / 7)
    eff = stats['effective']  # without (0,2) and (1,3): still 0-1-2-3-4
    assert eff['num_edges'] == 5 and eff['longest_path'] == 4 and eff['isolated_nodes'] == []
    alpha_cut = alpha.copy()
    alpha_cut[4] = 0.0  # (2,3) also near zero: node 3 loses every input, node 2 every output
    eff = stage_statistics(StageTopology(g, alpha_cut))['effective']
    assert eff['isolated_nodes'] == [2, 3] and eff['longest_path'] == 1  # only 0-4 reaches the output
    with pytest.raises(ValueError, match='near_zero must be >= 0'):
        stage_statistics(StageTopology(g, alpha), near_zero=-1)


def test_statistics_reproduce_table_4_edge_counts():
    """Table 4: complete {91,190,325,91} edges, residual l=2 {34,64,103,34} for N={14,20,26,14}."""
    nodes = (14, 20, 26, 14)
    complete = graph_statistics([StageTopology(complete_graph(n), np.ones(n * (n - 1) // 2)) for n in nodes])
    assert [s['num_edges'] for s in complete] == [91, 190, 325, 91]
    assert all(s['density'] == 1.0 and s['longest_path'] == n - 1 for s, n in zip(complete, nodes))
    residual = [residual_graph(n, 2) for n in nodes]
    stats = graph_statistics([StageTopology(g, np.ones(g.num_edges)) for g in residual])
    assert [s['num_edges'] for s in stats] == [34, 64, 103, 34]
    assert stats[0]['density'] == pytest.approx(34 / 91)
    assert all(s['longest_path'] == n - 1 for s, n in zip(stats, nodes))  # a chain through every layer
    assert all(s['near_zero_share'] == 0.0 for s in stats)
    text = statistics_markdown(stats, 'residual')
    assert text.count('\n| ') == 5 and '| 1 | 14 | 34 | 0.374 |' in text


# -- alpha similarity ------------------------------------------------------------------------
def test_alpha_similarity_of_repeated_runs():
    g = complete_graph(8)
    rng = np.random.default_rng(0)
    base = rng.normal(size=g.num_edges)
    same = [[StageTopology(g, base)], [StageTopology(g, 2 * base)]]
    assert alpha_similarity(same)[0]['mean_cosine'] == pytest.approx(1.0)
    flipped = alpha_similarity([[StageTopology(g, base)], [StageTopology(g, -base)]])[0]
    assert flipped['mean_cosine'] == pytest.approx(-1.0) and flipped['mean_pearson'] == pytest.approx(-1.0)
    noisy = [[StageTopology(g, base + 0.1 * rng.normal(size=g.num_edges))] for _ in range(3)]
    result = alpha_similarity(noisy)[0]
    assert np.asarray(result['cosine']).shape == (3, 3) and result['mean_cosine'] > 0.98
    independent = [[StageTopology(g, rng.normal(size=g.num_edges))] for _ in range(4)]
    assert abs(alpha_similarity(independent)[0]['mean_pearson']) < 0.3
    with pytest.raises(ValueError, match='at least two runs'):
        alpha_similarity(same[:1])
    with pytest.raises(ValueError, match='run 1 stage 0 is wired differently'):
        other = residual_graph(8, 2)
        alpha_similarity([[StageTopology(g, base)], [StageTopology(other, np.ones(other.num_edges))]])


# -- damage on a small trained network -------------------------------------------------------
@pytest.fixture(scope='module')
def tiny_root(tmp_path_factory):
    return make_fmnist(str(tmp_path_factory.mktemp('fmnist')), n_train=256, n_test=128)


SMALL_CFG = TopoNetCfg(nodes=(5, 6, 5, 5), stage_chs=(8, 16, 32, 32), stage_strides=(2, 2, 2, 1), stem_chs=8,
                       stem_kernel_size=3, stem_stride=1, head_chs=0)
NORM = Normalizer((0.2860,), (0.3530,))


@pytest.fixture(scope='module')
def trained(tiny_root):
    torch.manual_seed(0)
    model = TopoNet(SMALL_CFG, num_classes=10, in_chans=1)
    train_loader = fashion_mnist_loader('train', tiny_root, batch_size=32)
    test_loader = fashion_mnist_loader('test', tiny_root, batch_size=64)
    train_weights(model, train_loader, 40, NORM, lr=0.1, progress=False)
    return model.eval(), train_loader, test_loader


def test_tiny_network_learns_the_task(trained):
    model, _, test_loader = trained
    assert evaluate_accuracy(model, test_loader, NORM) > 60.0  # chance is 10%


def test_node_damage_removes_each_node_once_and_restores_alpha(trained):
    model, _, test_loader = trained
    evaluate = accuracy_evaluator(test_loader, NORM)
    alpha = [s.edge_weights.detach().clone() for s in model.stages]
    result = node_damage(model, evaluate, progress=False)
    assert result['baseline'] == pytest.approx(evaluate(model))
    assert [(r['stage'], r['node']) for r in result['nodes']] == [
        (s, i) for s, n in enumerate(SMALL_CFG.nodes) for i in range(1, n - 1)]
    for stage, before in zip(model.stages, alpha):
        assert torch.equal(stage.edge_weights.detach(), before)
    # one row checked independently: zero the node's edges by hand in a copy
    row = result['nodes'][4]
    manual = copy.deepcopy(model)
    stage = manual.stages[row['stage']]
    with torch.no_grad():
        for e, (src, dst) in enumerate(stage.graph.edges):
            if row['node'] in (src, dst):
                stage.edge_weights[e] = 0.0
    assert row['accuracy'] == pytest.approx(evaluate(manual))
    assert row['nodes_removed'] == [row['node']]  # complete graphs: nothing else is cut off
    # removing every node of a stage but the last leaves a chain; a removal changes the function
    masks = node_removal_masks(model.graphs, 0, 1)
    x = NORM(next(iter(test_loader))['inputs'])
    with torch.no_grad(), masked_alpha(model, masks):
        damaged = model(x)
    assert not torch.allclose(damaged, model(x))


def test_edge_damage_prunes_more_with_each_fraction_and_retrains_with_frozen_alpha(trained):
    model, train_loader, test_loader = trained
    evaluate = accuracy_evaluator(test_loader, NORM)
    before = copy.deepcopy(model.state_dict())
    seen = []

    def retrain(pruned):
        assert all(not s.edge_weights.requires_grad for s in pruned.stages)
        frozen = [s.edge_weights.clone() for s in pruned.stages]
        weight = pruned.stem.conv.weight.detach().clone()
        train_weights(pruned, train_loader, 2, NORM, lr=0.05, progress=False)
        assert all(torch.equal(s.edge_weights, a) for s, a in zip(pruned.stages, frozen))
        assert not torch.equal(pruned.stem.conv.weight, weight)
        seen.append(sum(s.graph.num_edges for s in pruned.stages))

    result = edge_damage(model, evaluate, fractions=(0.0, 0.3, 0.6), retrain=retrain, progress=False)
    rows = result['rows']
    assert rows[0]['accuracy'] == pytest.approx(evaluate(model)) and rows[0]['fraction_pruned'] == 0.0
    assert all(r['fraction_pruned'] >= r['fraction'] - 1e-9 for r in rows)
    kept = [r['edges_kept'] for r in rows]
    assert kept[0] == result['num_edges'] and kept[0] > kept[1] > kept[2]
    # retrained copies are the compact networks (exactly the kept edges) unless pruning cut a
    # stage off, where only the masked full network exists
    kinds = [r['retrained_model'] for r in rows]
    assert kinds[:2] == ['compact', 'compact']
    expected = []
    for row, kind in zip(rows, kinds):
        if kind == 'compact':  # kept edges, plus (0, 1) where the input projection became node 1
            _, plans = build_compact_model(model, prune_masks(model, threshold=row['thresholds'])[0])
            expected.append(sum(p.graph.num_edges for p in plans))
        else:
            expected.append(result['num_edges'])
    assert seen == expected
    assert all(bool(r['stages_cut']) == (kind == 'masked') for r, kind in zip(rows, kinds))
    assert rows[1]['retrained_params'] < rows[0]['retrained_params']
    assert all('accuracy_retrained' in r for r in rows)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the analysed model is untouched
    with pytest.raises(ValueError, match=r'prune fractions must be in \[0, 1\)'):
        edge_damage(model, evaluate, fractions=(1.0,))


def test_search_snapshots_and_standalone_training_keep_alpha_frozen(trained, tiny_root):
    _, train_loader, test_loader = trained
    torch.manual_seed(0)
    search = TopoNet(SMALL_CFG, num_classes=10, in_chans=1)
    snaps = search_snapshots(search, train_loader, 6, [0, 3, 6], lr=0.05, normalizer=NORM, progress=False)
    assert sorted(snaps) == [0, 3, 6]
    assert all(np.all(s.alpha == 1.0) for s in snaps[0])  # iteration 0: the untrained complete graph
    assert not np.allclose(snaps[6][0].alpha, snaps[3][0].alpha)
    checked = []

    def evaluate(model):
        for stage, snap in zip(model.stages, snaps[6]):
            np.testing.assert_array_equal(stage.edge_weights.detach().numpy(), snap.alpha)
        checked.append(True)
        return evaluate_accuracy(model, test_loader, NORM)

    acc = standalone_accuracy(lambda: TopoNet(SMALL_CFG, num_classes=10, in_chans=1), snaps[6], train_loader,
                              evaluate, iters=4, normalizer=NORM, progress=False)
    assert checked and 0.0 <= acc <= 100.0
    other = residual_graph(5, 2)
    wrong = [StageTopology(other, np.ones(other.num_edges))] + snaps[6][1:]
    with pytest.raises(ValueError, match='stage 0: the snapshot is wired differently'):
        standalone_accuracy(lambda: TopoNet(SMALL_CFG, num_classes=10, in_chans=1), wrong, train_loader,
                            evaluate, iters=1, normalizer=NORM, progress=False)


def test_normalizer_and_loaders_refuse_bad_input(tiny_root):
    with pytest.raises(ValueError, match='std > 0'):
        Normalizer((0.5,), (0.0,))
    with pytest.raises(ValueError, match='images have 3 channels, expected 1'):
        NORM(torch.zeros(1, 3, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match='no pretrained_cfg mean/std'):
        Normalizer.for_model(TopoNet(SMALL_CFG, num_classes=10, in_chans=1))
    with pytest.raises(FileNotFoundError, match='Fashion-MNIST file'):
        fashion_mnist_loader('test', os.path.join(tiny_root, 'missing'))
    assert len(fashion_mnist_loader('test', tiny_root, samples=20).dataset) == 20
    with pytest.raises(ValueError, match='iters must be an int >= 0'):
        train_weights(TopoNet(SMALL_CFG, num_classes=10, in_chans=1), None, -1, NORM)
    with pytest.raises(ValueError, match='expected a .safetensors checkpoint or a .json/.npz'):
        load_topology('model.pth')


# -- the command lines -------------------------------------------------------------------------
@pytest.fixture(scope='module')
def fmnist_checkpoints(tmp_path_factory):
    """Two toponet_fmnist_complete checkpoints: alpha in [0.05, 1.05) with every third edge
    near zero ("sparse"), and all alpha 1 ("dense")."""
    root = tmp_path_factory.mktemp('ckpts')
    paths = {}
    for name, scale in (('sparse', 1.0), ('dense', None)):
        torch.manual_seed(3)
        model = timm.create_model('toponet_fmnist_complete', num_classes=10, in_chans=1)
        if scale is not None:
            with torch.no_grad():
                for stage in model.stages:
                    stage.edge_weights.copy_(torch.rand(stage.edge_weights.shape) + 0.05)
                    stage.edge_weights[::3] = 0.001  # every third edge near zero
        paths[name] = str(root / name / 'toponet_fmnist.safetensors')
        save_checkpoint(paths[name], model, 'toponet_fmnist_complete', model_kwargs={'num_classes': 10, 'in_chans': 1})
    return root, paths


def test_analyze_topology_tool(fmnist_checkpoints, capsys):
    root, paths = fmnist_checkpoints
    out = root / 'analysis'
    assert _tool('analyze_topology').main([paths['sparse'], '--label', 'adaptive', '--compare',
                                           f'w/o sparsity={paths["dense"]}', '--out-dir', str(out)]) == 0
    for name in ('alpha_hist.png', 'adjacency.png', 'adjacency_w_o_sparsity.png', 'graph_stats.json', 'summary.md'):
        assert (out / name).is_file(), name
    stats = json.loads((out / 'graph_stats.json').read_text())['runs']
    sparse, dense = stats['adaptive']['stages'], stats['w/o sparsity']['stages']
    assert [s['num_edges'] for s in sparse] == [28, 45, 66, 28]
    assert [s['near_zero_share'] for s in sparse] == pytest.approx([10 / 28, 15 / 45, 22 / 66, 10 / 28])
    assert all(s['near_zero_share'] == 0.0 for s in dense)
    summary = (out / 'summary.md').read_text()
    assert '## adaptive' in summary and '## w/o sparsity' in summary
    assert 'adaptive: |alpha| < 0.01 per stage: 35.7%' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _tool('analyze_topology').main([paths['sparse'], '--compare', 'no-equals-sign'])


def test_alpha_similarity_tool(fmnist_checkpoints, tmp_path):
    _, paths = fmnist_checkpoints
    stages = load_topology(paths['sparse'])
    save_topology_json([StageTopology(s.graph, s.alpha + 0.01) for s in stages], str(tmp_path / 'close.json'))
    rng = np.random.default_rng(0)
    save_topology_json([StageTopology(s.graph, rng.uniform(0.05, 1.05, s.graph.num_edges)) for s in stages],
                       str(tmp_path / 'other.json'))
    out = tmp_path / 'sim'
    assert _tool('alpha_similarity').main([f'a={paths["sparse"]}', f'b={tmp_path / "close.json"}',
                                           f'c={tmp_path / "other.json"}', '--out-dir', str(out)]) == 0
    result = json.loads((out / 'similarity.json').read_text())
    assert [r['label'] for r in result['runs']] == ['a', 'b', 'c'] and len(result['stages']) == 4
    for stage in result['stages']:
        cosine, pearson = np.asarray(stage['cosine']), np.asarray(stage['pearson'])
        assert cosine[0, 1] > 0.99 and pearson[0, 1] > 0.99
        assert abs(pearson[0, 2]) < 0.6 and cosine[0, 2] < cosine[0, 1]
    assert (out / 'similarity.png').is_file() and (out / 'adjacency_runs.png').is_file()
    with pytest.raises(SystemExit):
        _tool('alpha_similarity').main([paths['sparse']])  # one run: nothing to compare


def test_graph_damage_tool(fmnist_checkpoints, tiny_root, capsys):
    root, paths = fmnist_checkpoints
    out = root / 'damage'
    assert _tool('graph_damage').main([FMNIST_CONFIG, paths['sparse'], '--eval-samples', '16',
                                       '--fractions', '0.5', '--per-stage', '--retrain-iters', '1',
                                       '--batch-size', '8', '--out-dir', str(out), *_data_options(tiny_root)]) == 0
    nodes = json.loads((out / 'node_damage.json').read_text())
    assert len(nodes['nodes']) == 6 + 8 + 10 + 6 and nodes['eval_samples'] == 16
    edges = json.loads((out / 'edge_damage.json').read_text())
    assert edges['per_stage'] and [r['fraction'] for r in edges['rows']] == [0.5]
    assert edges['rows'][0]['fraction_pruned'] >= 0.5 and 'accuracy_retrained' in edges['rows'][0]
    assert edges['rows'][0]['retrained_model'] == 'compact'
    for name in ('node_damage.png', 'edge_damage.png', 'damage_summary.md'):
        assert (out / name).is_file(), name
    assert 'Figure 4, left' in (out / 'damage_summary.md').read_text()


def test_snapshot_eval_tool(tiny_root, tmp_path):
    out = tmp_path / 'snap'
    assert _tool('snapshot_eval').main([FMNIST_CONFIG, '--search-iters', '2', '--snapshot-at', '0', '2',
                                        '--train-iters', '1', '--batch-size', '8', '--eval-samples', '16',
                                        '--out-dir', str(out), *_data_options(tiny_root)]) == 0
    result = json.loads((out / 'snapshot_accuracy.json').read_text())
    assert [r['iteration'] for r in result['rows']] == [0, 2]
    assert result['rows'][0]['alpha_abs_mean'] == 1.0
    assert (out / 'snapshots' / 'iter_2.json').is_file() and (out / 'snapshot_accuracy.png').is_file()
    # the saved snapshots score again through --snapshots
    out2 = tmp_path / 'again'
    assert _tool('snapshot_eval').main([FMNIST_CONFIG, '--snapshots', str(out / 'snapshots' / 'iter_2.json'),
                                        '--iterations', '2', '--train-iters', '1', '--batch-size', '8',
                                        '--eval-samples', '16', '--out-dir', str(out2),
                                        *_data_options(tiny_root)]) == 0
    assert json.loads((out2 / 'snapshot_accuracy.json').read_text())['rows'][0]['iteration'] == 2


def _stages_with(alpha_by_run, graph):
    from backbones.topology_export import StageTopology
    return [[StageTopology(graph, np.asarray(a, dtype=np.float32))] for a in alpha_by_run]


def test_relative_alpha_agreement_finds_a_shared_pattern_and_ranks_resist_near_zero_nodes():
    from backbones.analysis import relative_alpha_agreement
    from backbones.graphs import complete_graph
    graph = complete_graph(9)
    rng = np.random.default_rng(0)
    pattern = rng.uniform(0.5, 1.5, graph.num_edges)
    shared = [pattern * rng.uniform(0.9, 1.1, graph.num_edges) for _ in range(4)]
    agree = relative_alpha_agreement(_stages_with(shared, graph), n_resamples=199)
    assert agree['mean_correlation'] > 0.5 and agree['p_value'] <= 0.01 and agree['rank_p_value'] <= 0.01
    unrelated = relative_alpha_agreement(_stages_with([rng.uniform(0.5, 1.5, graph.num_edges) for _ in range(4)],
                                                      graph), n_resamples=199)
    assert abs(unrelated['mean_correlation']) < 0.2 and unrelated['p_value'] > 0.05
    # every run also has one node (a different one per run) whose inputs nearly cancel: their
    # relative alpha is huge, swamps the Pearson correlation, and leaves the ranks of the rest intact
    spoiled = []
    for r, alpha in enumerate(shared):
        alpha = alpha.copy()
        inputs = [e for e, (_, dst) in enumerate(graph.edges) if dst == 4 + r]
        alpha[inputs] = rng.normal(0, 1, len(inputs))
        alpha[inputs[-1]] -= alpha[inputs].sum() - 1e-3  # node mean 1e-3 / in-degree
        spoiled.append(alpha)
    spoiled = relative_alpha_agreement(_stages_with(spoiled, graph), n_resamples=199)
    assert spoiled['mean_correlation'] < 0.2 < spoiled['mean_rank_correlation'] and spoiled['rank_p_value'] <= 0.01
    assert 0.99 < agree['mean_raw_cosine'] <= 1.0
