"""A checkpoint is scored only when it is the network being scored: strict loads in
classification, detection and face evaluation; one source of truth for alpha (the tensors,
checked against the metadata); non-finite alpha and weights refused by pruning and analysis,
and a pruning self-check that never passes on NaN."""
import importlib.util
import json
import os
import re

import numpy as np
import pytest
import timm
import torch

import backbones  # noqa: F401  (registers the models)
from backbones import pruning
from backbones.analysis import edge_damage, graph_statistics, load_topology, node_damage
from backbones.checkpoint import create_model_from_checkpoint, read_checkpoint, save_checkpoint
from backbones.errors import InputError
from backbones.topology_export import StageTopology
from helpers.tiny_data import make_fmnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = 'toponet_fmnist_complete'
KWARGS = {'num_classes': 10, 'in_chans': 1}


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A toponet_fmnist_complete checkpoint with alpha in [0.1, 1.1)."""
    torch.manual_seed(0)
    model = timm.create_model(NAME, **KWARGS)
    with torch.no_grad():
        for stage in model.stages:
            stage.edge_weights.copy_(torch.rand(stage.edge_weights.shape) + 0.1)
    path = str(tmp_path_factory.mktemp('ckpt') / 'model.safetensors')
    save_checkpoint(path, model, NAME, KWARGS, meta={'iter': 7, 'metrics': {'cls/top1': 50.0}})
    return path


def _edit(src, dst, topology=None, tensors=None):
    """Rewrite a checkpoint file as-is except for ``topology(dict) -> dict`` (the metadata)
    and ``tensors(state) -> None`` (in place): a file edited behind the project's back."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    with safe_open(src, framework='pt') as f:
        metadata = dict(f.metadata())
    state = load_file(src)
    if topology is not None:
        metadata['topology'] = json.dumps(topology(json.loads(metadata['topology'])))
    if tensors is not None:
        tensors(state)
    save_file(state, dst, metadata=metadata)
    return dst


# -- one source of truth for alpha --------------------------------------------------------------
def test_metadata_alpha_that_disagrees_with_the_tensors_is_refused_by_every_reader(checkpoint, tmp_path):
    def edited(topology):
        topology['stages'][1]['alpha'][4] += 0.5
        return topology
    bad = _edit(checkpoint, str(tmp_path / 'edited.safetensors'), topology=edited)
    edge = read_checkpoint(checkpoint).topology[1].graph.edges[4]
    match = rf'stages\.1: the metadata alpha differs from stages\.1\.edge_weights at edge \({edge[0]}, {edge[1]}\)'
    with pytest.raises(InputError, match=match) as err:
        read_checkpoint(bad)
    assert err.value.where == bad
    from classification.study import run_summary
    for reader in (load_topology, create_model_from_checkpoint, run_summary,
                   lambda p: pruning.prune_checkpoint(p, str(tmp_path / 'pruned.safetensors'), threshold=0.0)):
        with pytest.raises(InputError, match=match):
            reader(bad)
    assert not (tmp_path / 'pruned.safetensors').exists()
    # the file as written: its readers see exactly the tensors' alpha and edges
    ckpt = read_checkpoint(checkpoint)
    for s, stage in enumerate(load_topology(checkpoint)):
        assert np.array_equal(stage.alpha, ckpt.state_dict[f'stages.{s}.edge_weights'].numpy())
        assert stage.graph.edges == tuple(map(tuple, ckpt.state_dict[f'stages.{s}.edge_index'].tolist()))


def test_metadata_graphs_that_are_not_the_edge_index_are_refused(checkpoint, tmp_path):
    def rewired(topology):
        graph = topology['stages'][0]['graph']
        graph['edges'] = [[s, d] for s, d in graph['edges'] if (s, d) != (0, 2)] + [[0, 2]]  # same set, new order
        return topology
    bad = _edit(checkpoint, str(tmp_path / 'rewired.safetensors'), topology=rewired)
    graph_edges = read_checkpoint(checkpoint).topology[0].graph.edges
    # GraphSpec sorts its edges, so reordering alone is harmless; dropping one edge is not
    assert read_checkpoint(bad).topology[0].graph.edges == graph_edges

    def dropped(topology):
        topology['stages'][0]['graph']['edges'].pop(3)
        topology['stages'][0]['alpha'].pop(3)
        return topology
    bad = _edit(checkpoint, str(tmp_path / 'dropped.safetensors'), topology=dropped)
    with pytest.raises(InputError, match=r'stages\.0: the metadata graph \(complete, 27 edges\) is not the '
                                         r'edge_index tensor \(28 edges; first difference at edge 3\)'):
        load_topology(bad)
    bad = _edit(checkpoint, str(tmp_path / 'none.safetensors'), topology=lambda topology: None)
    with pytest.raises(InputError, match='the metadata records 0 DAG stages, the tensors hold 4'):
        read_checkpoint(bad)


# -- non-finite alpha and weights ----------------------------------------------------------------------
def _nan_alpha(checkpoint, dst, stage=2, edge=(0, 5), value=float('nan')):
    """The checkpoint with one alpha set to ``value``, in the tensors and in the metadata
    (as a diverged run would have written it)."""
    index = read_checkpoint(checkpoint).topology[stage].graph.edges.index(edge)

    def topology(data):
        data['stages'][stage]['alpha'][index] = value
        return data

    def tensors(state):
        state[f'stages.{stage}.edge_weights'][index] = value
    return _edit(checkpoint, dst, topology=topology, tensors=tensors)


def test_pruning_and_analysis_refuse_non_finite_alpha_naming_stage_and_edge(checkpoint, tmp_path):
    bad = _nan_alpha(checkpoint, str(tmp_path / 'nan.safetensors'))
    with pytest.raises(InputError, match=r'non-finite alpha nan') as err:
        load_topology(bad)
    assert err.value.where == f'{bad}: stages.2 edge (0, 5)'
    with pytest.raises(InputError, match=r'non-finite alpha nan \(.*: stages\.2 edge \(0, 5\)\)'):
        pruning.prune_checkpoint(bad, str(tmp_path / 'pruned.safetensors'), threshold=0.0)
    assert not (tmp_path / 'pruned.safetensors').exists()
    model = create_model_from_checkpoint(bad).eval()
    with pytest.raises(InputError, match=r'stages\.2 edge \(0, 5\)'):
        pruning.prune_masks(model, threshold=0.1)
    calls = []
    with pytest.raises(InputError, match=r'stages\.2 edge \(0, 5\)'):
        node_damage(model, lambda m: calls.append(1) or 0.0, progress=False)
    with pytest.raises(InputError, match=r'stages\.2 edge \(0, 5\)'):
        edge_damage(model, lambda m: calls.append(1) or 0.0, fractions=(0.0,), progress=False)
    assert not calls  # refused before anything was scored
    stages = load_topology(checkpoint)
    infinite = [stages[0], StageTopology(stages[1].graph, np.where(np.arange(45) == 7, np.inf, stages[1].alpha)),
                *stages[2:]]
    with pytest.raises(InputError, match=rf'non-finite alpha inf \(graph statistics: stages\.1 edge '
                                         rf'\({stages[1].graph.edges[7][0]}, {stages[1].graph.edges[7][1]}\)\)'):
        graph_statistics(infinite)


def test_pruning_refuses_non_finite_weights_naming_the_tensor(checkpoint, tmp_path):
    def tensors(state):
        state['stages.1.nodes.2.bn.running_var'][3] = float('inf')
    bad = _edit(checkpoint, str(tmp_path / 'inf.safetensors'), tensors=tensors)
    with pytest.raises(InputError, match=r'1 non-finite values in stages\.1\.nodes\.2\.bn\.running_var') as err:
        pruning.prune_checkpoint(bad, str(tmp_path / 'pruned.safetensors'), threshold=0.0)
    assert err.value.where.endswith(': stages.1.nodes.2.bn.running_var')


def test_the_pruning_self_check_fails_on_nan(checkpoint, tmp_path, monkeypatch):
    real = pruning.build_compact_model

    def broken(model, masks, **kwargs):  # a compact model whose outputs are NaN (a bug it must catch)
        compact, plans = real(model, masks, **kwargs)
        with torch.no_grad():
            compact.head.fc.bias.fill_(float('nan'))
        return compact, plans
    monkeypatch.setattr(pruning, 'build_compact_model', broken)
    out = tmp_path / 'pruned.safetensors'
    with pytest.raises(RuntimeError, match='compact model vs masked original: outputs differ by nan'):
        pruning.prune_checkpoint(checkpoint, str(out), threshold=0.0)
    assert not out.exists()


def test_check_same_outputs_is_relative_and_never_passes_nan():
    from backbones.checkpoint import check_same_outputs
    reference = torch.tensor([[100.0, -50.0]])
    assert check_same_outputs(reference + 1e-3, reference, 'x') == pytest.approx(1e-3, rel=1e-3)
    with pytest.raises(RuntimeError, match=r'x: outputs differ by 0\.5'):
        check_same_outputs(reference + 0.5, reference, 'x')
    with pytest.raises(RuntimeError, match='outputs differ by nan'):
        check_same_outputs(torch.tensor([[100.0, float('nan')]]), reference, 'x')


# -- classification and face evaluation ------------------------------------------------------------------
def test_classification_evaluation_refuses_weights_that_do_not_fit(tmp_path):
    from classification.evaluate import evaluate_checkpoint
    data = make_fmnist(str(tmp_path / 'data'), n_train=20, n_test=20)
    torch.manual_seed(0)
    path = str(tmp_path / 'five.safetensors')
    save_checkpoint(path, timm.create_model(NAME, num_classes=5, in_chans=1), NAME, {'num_classes': 5, 'in_chans': 1})
    config = os.path.join(ROOT, 'classification', 'configs', 'toponet_fmnist_adaptive.py')
    with pytest.raises(InputError, match=r'the weights do not fit the toponet_fmnist_complete of .*: 2 tensors of '
                                         r'another shape \(first \[.head\.fc\.weight \(5, 160\) vs \(10, 160\)') as err:
        evaluate_checkpoint(config, path, str(tmp_path / 'test'), {'test_dataloader.dataset.root': data})
    assert err.value.where == path


def test_face_evaluation_loads_only_a_whole_face_checkpoint(checkpoint, tmp_path):
    from face.model import FaceTopoNet, load_face_checkpoint
    with pytest.raises(InputError, match="the checkpoint holds a 'toponet_fmnist_complete' model"):
        load_face_checkpoint(checkpoint)
    face_kwargs = {'channels': 4, 'nodes': [4, 4, 4, 4], 'embedding_size': 8}
    path = str(tmp_path / 'face.safetensors')
    save_checkpoint(path, FaceTopoNet(**face_kwargs), 'face_toponet', face_kwargs)
    assert isinstance(load_face_checkpoint(path), FaceTopoNet)
    with pytest.raises(InputError, match="holds a 'face_toponet', not a timm model"):
        create_model_from_checkpoint(path)  # e.g. graph_damage or prune given a face checkpoint
    bad = _edit(path, str(tmp_path / 'no_fc.safetensors'), tensors=lambda state: state.pop('fc.bias'))
    with pytest.raises(InputError, match=r"the weights do not fit the face TopoNet: 1 missing keys \(first \['fc.bias'\]"):
        load_face_checkpoint(bad)


# -- detection ---------------------------------------------------------------------------------------------
DET_CONFIGS = {name: os.path.join(ROOT, 'detection', 'configs', 'toy', f'{name}_toponet-fmnist_fpn_toy.py')
               for name in ('retinanet', 'faster-rcnn')}


def _detector(kind, **backbone):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    import detection  # noqa: F401  (registrations, mmdet:: config paths)
    import backbones.mmdet_backbone  # noqa: F401
    init_default_scope('mmdet')
    model = Config.fromfile(DET_CONFIGS[kind]).model
    model.backbone = dict(model.backbone, init_cfg=None, **backbone)
    return MODELS.build(model)


def _save_detector(model, path):
    torch.save({'meta': {'epoch': 1}, 'state_dict': model.state_dict()}, str(path))
    return str(path)


@pytest.fixture(scope='module')
def toy_coco(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('toy_coco'))
    assert _tool('make_toy_coco').main([root, '--num-train', '4', '--num-val', '4', '--image-size', '64',
                                        '--min-size', '12', '--max-size', '28']) == 0
    return root


def _test_det(config, checkpoint, toy_coco, tmp_path, capsys):
    """Run tools/test_det.py in-process; returns the error text (raised InputError, or the
    ``error:`` line of a tool that exits non-zero)."""
    root = toy_coco.rstrip('/') + '/'
    options = ['model.test_cfg.score_thr=0.0'] + \
        [f'{loader}.dataset.data_root={root}' for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')] + \
        [f'{evaluator}.ann_file={root}annotations/instances_val.json' for evaluator in ('val_evaluator', 'test_evaluator')]
    try:
        code = _tool('test_det').main([config, checkpoint, '--work-dir', str(tmp_path / 'test'),
                                       '--cfg-options', *options])
    except InputError as err:
        return str(err)
    except SystemExit as exit_:
        code = exit_.code
    assert code not in (0, None), 'test_det scored a checkpoint that does not fit the detector'
    return capsys.readouterr().err


def test_test_det_refuses_a_classification_checkpoint(checkpoint, toy_coco, tmp_path, capsys):
    message = _test_det(DET_CONFIGS['retinanet'], checkpoint, toy_coco, tmp_path, capsys)
    assert 'a TopoNet backbone checkpoint (.safetensors), not a detector checkpoint' in message
    assert checkpoint in message


def test_test_det_refuses_a_checkpoint_of_another_detector(toy_coco, tmp_path, capsys):
    other = _save_detector(_detector('faster-rcnn'), tmp_path / 'faster_rcnn.pth')
    message = _test_det(DET_CONFIGS['retinanet'], other, toy_coco, tmp_path, capsys)
    assert re.search(r'the weights do not fit this config\'s RetinaNet: \d+ missing keys .*\d+ unexpected keys',
                     message), message
    assert other in message


def test_detector_loads_are_strict_and_must_change_the_detector(tmp_path):
    from detection.checkpoints import load_detector_checkpoint
    trained = _detector('retinanet')
    path = _save_detector(trained, tmp_path / 'epoch_1.pth')
    fresh = _detector('retinanet')
    load_detector_checkpoint(fresh, path)
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    # weights the detector already holds (as a detector's own initial weights): nothing changes
    with pytest.raises(InputError, match='changed no tensor of the detector'):
        load_detector_checkpoint(fresh, path)
    # the same detector with another backbone topology
    rewired = _save_detector(_detector('retinanet', name='toponet_fmnist_residual_l2'), tmp_path / 'residual.pth')
    with pytest.raises(InputError, match=r'stages\.\d wired differently \(another topology\)'):
        load_detector_checkpoint(_detector('retinanet'), rewired)
    state = trained.state_dict()
    state.pop('bbox_head.retina_cls.bias')
    torch.save({'state_dict': state}, str(tmp_path / 'partial.pth'))
    with pytest.raises(InputError, match=r"1 missing keys \(first \['bbox_head.retina_cls.bias'\]\)"):
        load_detector_checkpoint(_detector('retinanet'), str(tmp_path / 'partial.pth'))
    (tmp_path / 'garbage.pth').write_bytes(b'PK\x03\x04 not a torch file')
    with pytest.raises(InputError, match='not a readable torch checkpoint'):
        load_detector_checkpoint(_detector('retinanet'), str(tmp_path / 'garbage.pth'))
