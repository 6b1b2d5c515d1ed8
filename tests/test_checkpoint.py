
import pytest
import timm
import torch

import backbones  # noqa: F401
from backbones.checkpoint import create_model_from_checkpoint, read_checkpoint, save_checkpoint


@pytest.fixture
def saved(tmp_path):
    model = timm.create_model('toponet_fmnist_random_p04', seed=5)
    with torch.no_grad():
        for stage in model.stages:
            stage.edge_weights.uniform_(-1, 1)
        model.head.fc.weight.normal_()
    path = str(tmp_path / 'model.safetensors')
    save_checkpoint(path, model, 'toponet_fmnist_random_p04', model_kwargs={'seed': 5, 'num_classes': 10},
                    meta={'task': 'test', 'top1': 0.5})
    return model.eval(), path


def test_round_trip_keeps_weights_topology_and_meta(saved):
    model, path = saved
    ckpt = read_checkpoint(path)
    assert ckpt.model_name == 'toponet_fmnist_random_p04' and ckpt.meta == {'task': 'test', 'top1': 0.5}
    assert ckpt.graphs == model.graphs
    for stage, saved_stage in zip(model.stages, ckpt.topology):
        torch.testing.assert_close(torch.from_numpy(saved_stage.alpha), stage.edge_weights.detach())
    rebuilt = create_model_from_checkpoint(path).eval()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(rebuilt(x), model(x))


def test_loads_through_timm_pretrained_file(saved):
    model, path = saved
    x = torch.randn(2, 1, 28, 28)
    loaded = timm.create_model('toponet_fmnist_random_p04', seed=5, pretrained=True,
                               pretrained_cfg_overlay=dict(file=path)).eval()
    torch.testing.assert_close(loaded(x), model(x))
    feats = timm.create_model('toponet_fmnist_random_p04', seed=5, pretrained=True, features_only=True,
                              pretrained_cfg_overlay=dict(file=path)).eval()
    expected = model.forward_intermediates(x, intermediates_only=True)
    for a, b in zip(feats(x), expected):
        torch.testing.assert_close(a, b)


def test_timm_refuses_weights_of_another_wiring(saved):
    _, path = saved
    with pytest.raises(ValueError, match='another topology'):
        timm.create_model('toponet_fmnist_random_p04', seed=6, pretrained=True, pretrained_cfg_overlay=dict(file=path))


def test_new_head_and_features_only(saved):
    model, path = saved
    five = create_model_from_checkpoint(path, num_classes=5)
    assert five.get_classifier().out_features == 5
    torch.testing.assert_close(five.stages[2].edge_weights, model.stages[2].edge_weights)
    feats = create_model_from_checkpoint(path, features_only=True).eval()
    x = torch.randn(2, 1, 28, 28)
    for a, b in zip(feats(x), model.forward_intermediates(x, intermediates_only=True)):
        torch.testing.assert_close(a, b)


def test_bad_checkpoint_files(tmp_path, saved):
    _, path = saved
    garbage = tmp_path / 'garbage.safetensors'
    garbage.write_bytes(b'not a safetensors file at all')
    with pytest.raises(ValueError, match='not a readable safetensors checkpoint'):
        read_checkpoint(str(garbage))
    from safetensors.torch import save_file
    other = tmp_path / 'other.safetensors'
    save_file({'w': torch.zeros(2)}, str(other), metadata={'format': 'something'})
    with pytest.raises(ValueError, match="not a TopoNet checkpoint \\(metadata format='something'"):
        read_checkpoint(str(other))
    with pytest.raises(FileNotFoundError):
        read_checkpoint(str(tmp_path / 'missing.safetensors'))
    with pytest.raises(ValueError, match='must end with .safetensors'):
        save_checkpoint(str(tmp_path / 'x.pth'), torch.nn.Linear(1, 1), 'linear')
    truncated = tmp_path / 'truncated.safetensors'
    truncated.write_bytes(open(path, 'rb').read()[:2000])
    with pytest.raises(ValueError, match='not a readable safetensors checkpoint'):
        read_checkpoint(str(truncated))


def test_save_is_atomic(tmp_path, monkeypatch, saved):
    model, path = saved
    before = open(path, 'rb').read()
    import safetensors.torch

    def crash(*args, **kwargs):
        raise RuntimeError('disk full')
    monkeypatch.setattr(safetensors.torch, 'save_file', crash)
    with pytest.raises(RuntimeError, match='disk full'):
        save_checkpoint(path, model, 'toponet_fmnist_random_p04')
    assert open(path, 'rb').read() == before
    assert [p.name for p in tmp_path.iterdir()] == ['model.safetensors']


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os
    import stat
    from backbones.io_utils import atomic_write_text
    path = tmp_path / 'note.txt'
    atomic_write_text(str(path), 'x')
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
    assert not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]
