import json

import networkx as nx
import numpy as np
import pytest
import timm
import torch

import backbones  # noqa: F401
from backbones.family_report import family_report
from backbones.topology_export import (extract_topology, load_topology_json, load_topology_npz, save_topology_json,
                                       save_topology_npz, topology_to_networkx)
from backbones.viz import plot_adjacency


@pytest.fixture
def trained_topology():
    model = timm.create_model('toponet_fmnist_random_p06', seed=2)
    with torch.no_grad():
        for stage in model.stages:
            stage.edge_weights.normal_()
    return model, extract_topology(model)


def test_json_and_npz_round_trip(tmp_path, trained_topology):
    model, stages = trained_topology
    save_topology_json(stages, str(tmp_path / 'topo.json'))
    save_topology_npz(stages, str(tmp_path / 'topo.npz'))
    for loaded in (load_topology_json(str(tmp_path / 'topo.json')), load_topology_npz(str(tmp_path / 'topo.npz'))):
        assert [s.graph for s in loaded] == model.graphs
        for a, b in zip(loaded, stages):
            np.testing.assert_array_equal(a.alpha, b.alpha)
    with np.load(tmp_path / 'topo.npz', allow_pickle=False) as data:
        for i, stage in enumerate(model.stages):
            np.testing.assert_array_equal(data[f'stage{i}_alpha_matrix'], stage.alpha_matrix().numpy())


def test_networkx_export(trained_topology):
    model, stages = trained_topology
    graphs = topology_to_networkx(stages)
    assert len(graphs) == 4
    for dg, stage in zip(graphs, model.stages):
        assert nx.is_directed_acyclic_graph(dg) and dg.number_of_edges() == stage.graph.num_edges
        src, dst = stage.graph.edges[3]
        assert dg.edges[src, dst]['alpha'] == pytest.approx(float(stage.edge_weights[3].detach()))


def test_bad_topology_files(tmp_path):
    path = tmp_path / 'bad.json'
    path.write_text(json.dumps({'format': 'something-else'}))
    with pytest.raises(ValueError, match="expected format 'toponet-topology'"):
        load_topology_json(str(path))
    path.write_text('{"format": ')
    with pytest.raises(ValueError, match='not valid JSON'):
        load_topology_json(str(path))
    np.savez(tmp_path / 'other.npz', x=np.zeros(3))
    with pytest.raises(ValueError, match='not a TopoNet topology NPZ'):
        load_topology_npz(str(tmp_path / 'other.npz'))
    with pytest.raises(FileNotFoundError):
        load_topology_json(str(tmp_path / 'missing.json'))


def test_adjacency_png(tmp_path, trained_topology):
    _, stages = trained_topology
    path = tmp_path / 'adj.png'
    plot_adjacency(stages, str(path), title='test')
    data = path.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 5000


def test_family_report_writes_table_and_pngs(tmp_path):
    rows = family_report(['toponet_complete', 'toponet_residual_l3'], out_dir=str(tmp_path), progress=False)
    assert rows[0]['edges'] == [91, 190, 325, 91] == rows[0]['paper_edges']
    assert rows[1]['edges'] == [23, 40, 61, 23] == rows[1]['paper_edges']
    assert abs(rows[0]['params_m'] / 23.23 - 1) < 0.03
    assert (tmp_path / 'toponet_complete_adjacency.png').read_bytes()[:4] == b'\x89PNG'
    assert json.loads((tmp_path / 'report.json').read_text())[1]['model'] == 'toponet_residual_l3'
    assert '| toponet_complete | {91,190,325,91} |' in (tmp_path / 'report.md').read_text()


def test_extracted_topology_is_a_snapshot():
    # Later training steps must not change a topology taken earlier.
    model = timm.create_model('toponet_fmnist_complete', num_classes=10, in_chans=1)
    before = extract_topology(model)
    with torch.no_grad():
        model.stages[0].edge_weights.mul_(3.0)
    assert all(np.all(s.alpha == 1.0) for s in before)
