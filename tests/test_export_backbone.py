"""The hub layout timm reads, BN folding, the inference ONNX export and tools/export_backbone.py."""
import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch

import backbones  # noqa: F401
from backbones.checkpoint import create_model_from_checkpoint, save_checkpoint
from backbones.export import export_onnx, inference_model, prune_to_compact, save_hub_layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _trained(name='toponet_fmnist_complete', **kwargs):
    """A network with learned-looking alpha and BN statistics (eval mode)."""
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs)
    c, h, _ = model.pretrained_cfg['input_size']
    side = min(h, 32)
    with torch.no_grad():
        for stage in model.stages:
            if stage.edge_weights.requires_grad:
                stage.edge_weights.uniform_(0.1, 1.5)
        model.train()
        for _ in range(3):
            model(torch.randn(8, c, side, side))
    return model.eval()


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('ckpt') / 'fmnist.safetensors')
    save_checkpoint(path, _trained(num_classes=10, in_chans=1), 'toponet_fmnist_complete',
                    dict(num_classes=10, in_chans=1), meta={'classes': [f'class{i}' for i in range(10)]})
    return path


def test_timm_save_for_hf_and_local_dir_rebuild_a_checkpointed_network(tmp_path, checkpoint):
    from timm.models import save_for_hf
    model = create_model_from_checkpoint(checkpoint).eval()
    save_for_hf(model, str(tmp_path / 'hub'), safe_serialization=True)  # timm's own export, no helper
    config = json.loads((tmp_path / 'hub' / 'config.json').read_text())
    assert config['architecture'] == 'toponet_fmnist_complete'
    assert [g['edges'] for g in config['model_args']['graphs']] == [[list(e) for e in g.edges] for g in model.graphs]
    rebuilt = timm.create_model(f'local-dir:{tmp_path / "hub"}', pretrained=True).eval()
    assert rebuilt.graphs == model.graphs
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def test_hub_layout_of_a_pruned_network_and_the_hf_hub_route(tmp_path, checkpoint):
    compact = prune_to_compact(create_model_from_checkpoint(checkpoint), keep_ratio=0.4).eval()
    registered = timm.create_model('toponet_fmnist_complete', num_classes=10, in_chans=1)
    assert compact.graphs != registered.graphs  # only config.json's graphs can rebuild it
    out = tmp_path / 'hub'
    report = save_hub_layout(compact, str(out), class_names=[f'class{i}' for i in range(10)])
    assert report['files'] == ['config.json', 'model.safetensors'] and report['max_abs_diff'] == 0.0
    assert json.loads((out / 'config.json').read_text())['label_names'][3] == 'class3'
    assert oct(os.stat(out / 'model.safetensors').st_mode & 0o777) == oct(0o666 & ~_umask())
    # a pushed copy, read by timm from the Hugging Face cache (offline: the layout on the hub)
    cache = tmp_path / 'hf_cache'
    snapshot = cache / 'models--toponet--fmnist-pruned' / 'snapshots' / ('0' * 40)
    snapshot.mkdir(parents=True)
    for name in report['files']:
        (snapshot / name).write_bytes((out / name).read_bytes())
    (cache / 'models--toponet--fmnist-pruned' / 'refs').mkdir()
    (cache / 'models--toponet--fmnist-pruned' / 'refs' / 'main').write_text('0' * 40)
    x = torch.randn(2, 1, 28, 28)
    np.save(tmp_path / 'x.npy', x.numpy())
    code = ('import sys, numpy as np, torch, timm, backbones; '
            'm = timm.create_model("hf-hub:toponet/fmnist-pruned", pretrained=True).eval(); '
            'x = torch.from_numpy(np.load(sys.argv[1])); '
            'np.save(sys.argv[2], m(x).detach().numpy()); print([g.num_edges for g in m.graphs])')
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache), PYTHONPATH=ROOT, PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'x.npy'), str(tmp_path / 'y.npy')], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str([g.num_edges for g in compact.graphs])
    with torch.no_grad():
        np.testing.assert_array_equal(np.load(tmp_path / 'y.npy'), compact(x).numpy())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize('name', ['toponet_fmnist_complete', 'resnet20_cifar', 'mobilenetv2_100_topo'])
def test_reparameterize_folds_every_batch_norm(name):
    from timm.utils.model import reparameterize_model
    model = _trained(name)
    c, h, _ = model.pretrained_cfg['input_size']
    x = torch.randn(2, c, min(h, 32), min(h, 32))
    with torch.no_grad():
        reference = model(x)
        folded = reparameterize_model(model)  # timm's walker, on a copy
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is kept
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        torch.testing.assert_close(folded(x), reference, rtol=1e-4, atol=1e-5)
        model.reparameterize()
        model.reparameterize()  # idempotent
        torch.testing.assert_close(model(x), reference, rtol=1e-4, atol=1e-5)
        scripted = torch.jit.script(model)
        torch.testing.assert_close(scripted(x), reference, rtol=1e-4, atol=1e-5)


def _ort_op_counts(path, tmp_path):
    import onnx
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp_path / 'optimized.onnx')
    ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    graph = onnx.load(str(tmp_path / 'optimized.onnx')).graph
    return collections.Counter(('nchwc:' if 'nchwc' in n.domain else '') + n.op_type for n in graph.node)


@pytest.mark.parametrize('aggregation', ['conv', 'mul'])
def test_onnx_export_matches_pytorch_in_onnxruntime(tmp_path, aggregation):
    import onnxruntime as ort
    model = _trained(num_classes=10, in_chans=1)
    path = str(tmp_path / 'model.onnx')
    report = export_onnx(model, path, batch_size=6, aggregation=aggregation)
    assert report['exporter'] == 'dynamo' and 'dynamo_error' not in report
    assert report['max_abs_diff'] < 1e-4 * max(1.0, report['max_abs_reference']) and report['top1_agreement'] == 1.0
    assert report['scaled_edges'] == report['edges']  # no weight is exactly 1 here
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    x = torch.randn(3, 1, 28, 28)  # another batch size than the export's
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {'images': x.numpy()})[0], model(x).numpy(), rtol=1e-4,
                                   atol=1e-5)
    counts = _ort_op_counts(path, tmp_path)
    if not any(k.startswith('nchwc:') for k in counts):
        pytest.skip("this CPU has no onnxruntime NCHWc kernels: nothing to compare the graph's layout with")
    elementwise = counts['Mul'] + counts['Add'] + counts['Relu'] + counts['Sum']
    reorders = counts['nchwc:ReorderInput'] + counts['nchwc:ReorderOutput']
    if aggregation == 'conv':
        # every weighted sum runs as blocked-layout convolutions with fused sums and ReLUs
        assert elementwise == 0 and reorders <= 2, counts
    else:
        assert elementwise >= sum(report['edges']) and reorders > 2 * len(report['edges']), counts


@pytest.mark.parametrize('name', ['resnet20_cifar', 'resnet20_cifar_topo', 'mobilenetv2_100_orig'])
def test_inference_form_of_node1_wiring_and_fixed_alpha(tmp_path, name):
    model = _trained(name)
    form = inference_model(model)
    c, h, _ = model.pretrained_cfg['input_size']
    x = torch.randn(2, c, min(h, 64), min(h, 64))
    with torch.no_grad():
        torch.testing.assert_close(form(x), model(x), rtol=1e-4, atol=1e-5)
    fixed = not model.stages[0].alpha_trainable
    # weights fixed at 1 are plain additions: nothing to scale
    assert all((len(s.coefficients) == 0) == fixed for s in form.stages)
    if name.startswith('resnet'):  # ONNX of a 'node1' wiring (MobileNetV2 at 224 px: the form check is enough)
        report = export_onnx(model, str(tmp_path / 'm.onnx'), batch_size=2)
        assert report['max_abs_diff'] < 1e-4 * max(1.0, report['max_abs_reference'])


def test_pruned_onnx_export_is_the_compact_network(tmp_path):
    model = _trained(num_classes=10, in_chans=1)
    report = export_onnx(model, str(tmp_path / 'p.onnx'), keep_ratio=0.5, batch_size=4)
    assert sum(report['edges']) < sum(report['pruned']['edges_before']) == sum(s.graph.num_edges for s in model.stages)
    assert report['top1_agreement'] == 1.0


def _tool(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS='ignore')
    return subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'export_backbone.py'), *args], env=env,
                          capture_output=True, text=True, timeout=600)


def test_export_backbone_tool_writes_every_format(tmp_path, checkpoint):
    out = tmp_path / 'export'
    proc = _tool(checkpoint, '--format', 'hf', 'torchscript', 'onnx', '--keep-ratio', '0.5', '--out-dir', str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['onnx']['exporter'] == 'dynamo' and result['onnx']['top1_agreement'] == 1.0
    assert sum(result['edges']) < sum(result['pruned']['edges_before'])
    compact = timm.create_model(f'local-dir:{out / "hf"}', pretrained=True).eval()
    assert [g.num_edges for g in compact.graphs] == result['edges']
    scripted = torch.jit.load(str(out / 'fmnist.pt'))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), compact(x), rtol=1e-4, atol=1e-5)
    assert os.path.isfile(out / 'fmnist.onnx')


def test_export_backbone_tool_user_errors(tmp_path):
    bad = tmp_path / 'not_a_checkpoint.safetensors'
    bad.write_bytes(b'nothing here')
    proc = _tool(str(bad), '--out-dir', str(tmp_path / 'x'))
    assert proc.returncode == 2 and proc.stderr.startswith('error: ') and 'Traceback' not in proc.stderr
    proc = _tool(str(bad), '--keep-ratio', '1.5')
    assert proc.returncode == 2 and '--keep-ratio 1.5' in proc.stderr
