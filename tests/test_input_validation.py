"""Bad input files are refused with an InputError naming the file and the field: image
pixels and labels of the classification datasets (IDX, CIFAR-100 pickles, image folders) and
malformed topology exports and checkpoint metadata (JSON, NPZ, zlib streams)."""
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import timm
import torch

import backbones  # noqa: F401  (registers the models)
from backbones.checkpoint import read_checkpoint, save_checkpoint
from backbones.errors import InputError
from backbones.topology_export import extract_topology, load_topology_json, load_topology_npz, save_topology_json, \
    save_topology_npz
from classification.datasets import Cifar100, FashionMNIST, ImageNetFolder, read_idx, write_idx
from helpers.tiny_data import make_cifar100, make_fmnist, make_image_folder


def _images_path(root):
    return os.path.join(root, 'train-images-idx3-ubyte.gz')


def _labels_path(root):
    return os.path.join(root, 'train-labels-idx1-ubyte.gz')


# -- Fashion-MNIST IDX files ----------------------------------------------------------------------
@pytest.fixture
def fmnist(tmp_path):
    root = make_fmnist(str(tmp_path), n_train=20, n_test=10)
    return root, read_idx(_images_path(root)), read_idx(_labels_path(root))


def test_float_pixels_in_0_255_become_the_same_uint8_image(fmnist):
    root, images, _ = fmnist
    write_idx(_images_path(root), images.astype(np.float32))
    dataset = FashionMNIST(root, 'train')
    assert dataset.images.dtype == torch.uint8
    assert torch.equal(dataset.images[:, 0], torch.from_numpy(images))


def test_float_pixels_scaled_to_0_1_are_refused_not_trained_on_as_black_images(fmnist):
    root, images, _ = fmnist
    write_idx(_images_path(root), images.astype(np.float32) / 255.0)
    with pytest.raises(InputError, match=r'images scaled to 0\.\.1 \(.*train-images-idx3-ubyte\.gz\): '
                                         r'pixels must be 0\.\.255') as err:
        FashionMNIST(root, 'train')
    assert err.value.where == _images_path(root)


@pytest.mark.parametrize('bad, match', [
    (lambda x: np.where(x > 200, np.nan, x).astype(np.float32), 'NaN or infinite'),
    (lambda x: np.where(x > 200, np.inf, x).astype(np.float64), 'NaN or infinite'),
    (lambda x: x.astype(np.float32) * 2.0, 'float pixels span 0..460'),
    (lambda x: x.astype(np.float32) - 1.0, 'float pixels span -1..229'),
    (lambda x: x.astype(np.int32), 'images have dtype int32'),
    (lambda x: x.astype(np.int16) - 300, 'images have dtype int16'),
])
def test_pixels_outside_uint8_are_refused_naming_the_file(fmnist, bad, match):
    root, images, _ = fmnist
    write_idx(_images_path(root), bad(images))
    with pytest.raises(InputError, match=match) as err:
        FashionMNIST(root, 'train')
    assert err.value.where == _images_path(root)


def test_labels_must_be_integers_in_range(fmnist):
    root, _, labels = fmnist
    write_idx(_labels_path(root), labels.astype(np.float32))  # class indices stored as floats
    with pytest.raises(InputError, match='labels are float32') as err:
        FashionMNIST(root, 'train')
    assert err.value.where == _labels_path(root)
    write_idx(_labels_path(root), labels.astype(np.int32) - 1)
    with pytest.raises(InputError, match=r'labels outside 0\.\.9 \(found -1\.\.8\)'):
        FashionMNIST(root, 'train')
    write_idx(_labels_path(root), labels.astype(np.int32))  # integer labels of another IDX type are fine
    assert FashionMNIST(root, 'train').labels.tolist() == labels.tolist()


def test_a_corrupt_gzip_stream_names_the_file(fmnist):
    root, _, _ = fmnist
    # a valid gzip header, then a deflate block of the reserved type 3: zlib.error, not a CRC mismatch
    open(_images_path(root), 'wb').write(b'\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff' + b'\x07' + bytes(20))
    with pytest.raises(InputError, match='corrupt gzip stream') as err:
        FashionMNIST(root, 'train')
    assert err.value.where == _images_path(root)


# -- CIFAR-100 pickles ------------------------------------------------------------------------------
def _rewrite(folder, split, **changes):
    path = os.path.join(folder, split)
    with open(path, 'rb') as f:
        batch = pickle.load(f, encoding='bytes')
    for key, value in changes.items():
        if value is None:
            batch.pop(key.encode())
        else:
            batch[key.encode()] = value
    with open(path, 'wb') as f:
        pickle.dump(batch, f, protocol=2)
    return path


@pytest.mark.parametrize('data, found', [
    (lambda d: d.astype(np.float64), 'float64 array of shape (40, 3072)'),
    (lambda d: d.astype(np.int64) + 100, 'int64 array of shape (40, 3072)'),  # values up to 355 would wrap
    (lambda d: d.reshape(40, 3, 32, 32), 'uint8 array of shape (40, 3, 32, 32)'),
    (lambda d: d.tolist(), 'list'),
])
def test_cifar_data_must_be_uint8_rows_of_3072(tmp_path, data, found):
    folder = make_cifar100(str(tmp_path))
    with open(os.path.join(folder, 'train'), 'rb') as f:
        raw = pickle.load(f, encoding='bytes')[b'data']
    path = _rewrite(folder, 'train', data=data(raw))
    with pytest.raises(InputError, match=r'data is a ' + found.replace('(', r'\(').replace(')', r'\)')) as err:
        Cifar100(str(tmp_path), 'train')
    assert err.value.where == f'{path} field data' and 'uint8 array of shape (N, 3072)' in str(err.value)


def test_cifar_labels_are_integers_in_range_one_per_image(tmp_path):
    folder = make_cifar100(str(tmp_path))
    path = _rewrite(folder, 'train', fine_labels=[float(i % 100) for i in range(40)])
    with pytest.raises(InputError, match='labels are float64') as err:
        Cifar100(str(tmp_path), 'train')
    assert err.value.where == f'{path} field fine_labels'
    _rewrite(folder, 'train', fine_labels=[100] * 40)
    with pytest.raises(InputError, match=r'labels outside 0\.\.99 \(found 100\.\.100\)'):
        Cifar100(str(tmp_path), 'train')
    _rewrite(folder, 'train', coarse_labels=list(range(20)) * 3)
    with pytest.raises(InputError, match='60 labels for 40 images') as err:
        Cifar100(str(tmp_path), 'train', label_type='coarse')
    assert err.value.where == f'{path} field coarse_labels'


def test_cifar_missing_fields_and_malformed_pickles_name_the_field(tmp_path):
    folder = make_cifar100(str(tmp_path))
    path = _rewrite(folder, 'test', data=None)
    with pytest.raises(InputError, match="missing key 'data'") as err:
        Cifar100(str(tmp_path), 'test')
    assert err.value.where == path
    with open(os.path.join(folder, 'meta'), 'wb') as f:
        pickle.dump({b'coarse_label_names': [b'x'] * 20}, f, protocol=2)
    with pytest.raises(InputError, match="missing key 'fine_label_names'") as err:
        Cifar100(str(tmp_path), 'train')
    assert err.value.where == os.path.join(folder, 'meta')
    open(os.path.join(folder, 'train'), 'wb').write(b'\x80\x02]q\x00(K\x01K\x02')  # a list, cut short
    with pytest.raises(InputError, match='cannot load safely'):
        Cifar100(str(tmp_path), 'train')


# -- image folders ----------------------------------------------------------------------------------
def test_an_image_pil_refuses_to_open_is_named(tmp_path, monkeypatch):
    from PIL import Image
    root = make_image_folder(str(tmp_path))
    dataset = ImageNetFolder(root, 'train')
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)  # 40 x 30 pixels is now a "decompression bomb"
    with pytest.raises(InputError, match='cannot decode image') as err:
        dataset[0]
    assert err.value.where == dataset.samples[0][0]


# -- topology exports and checkpoint metadata --------------------------------------------------------
@pytest.fixture(scope='module')
def stages():
    torch.manual_seed(0)
    return extract_topology(timm.create_model('toponet_fmnist_complete', num_classes=10, in_chans=1))


def test_topology_json_with_a_malformed_stage_names_the_field(tmp_path, stages):
    path = str(tmp_path / 'topology.json')
    save_topology_json(stages, path)
    data = json.loads(open(path).read())
    del data['stages'][2]['graph']
    open(path, 'w').write(json.dumps(data))
    with pytest.raises(InputError, match=r'malformed stage') as err:
        load_topology_json(path)
    assert err.value.where == f'{path} stages[2]'
    data = json.loads(open(path).read())
    data['stages'][2]['graph'] = data['stages'][1]['graph']  # 45 edges, 66 alpha values
    open(path, 'w').write(json.dumps(data))
    with pytest.raises(InputError, match='66 alpha values for a graph of 45 edges') as err:
        load_topology_json(path)
    assert err.value.where == f'{path} stages[2].alpha'
    data['stages'][2] = {'graph': {'num_nodes': 'twelve', 'edges': [[0, 1]]}, 'alpha': [1.0]}
    open(path, 'w').write(json.dumps(data))
    with pytest.raises(InputError, match='malformed graph spec') as err:
        load_topology_json(path)
    assert err.value.where == f'{path} stages[2].graph'
    open(path, 'wb').write(b'\xff\xfe not text')
    with pytest.raises(InputError, match='not valid JSON'):
        load_topology_json(path)


def test_topology_npz_with_a_corrupt_member_names_the_array(tmp_path, stages):
    path = str(tmp_path / 'topology.npz')
    save_topology_npz(stages, path)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo('stage1_alpha.npy')
    raw = bytearray(open(path, 'rb').read())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)  # the member's deflate stream
    raw[start + 4:start + 40] = b'\xff' * 36
    bad = str(tmp_path / 'bad.npz')
    open(bad, 'wb').write(bytes(raw))
    with pytest.raises(InputError, match="cannot read array 'stage1_alpha'") as err:
        load_topology_npz(bad)
    assert err.value.where == f'{bad} stage1_alpha'
    # graphs_json that is not JSON, and edges that disagree with it
    with np.load(path) as data:
        arrays = dict(data)
    np.savez(bad, **dict(arrays, graphs_json=np.array('[{"num_nodes": ')))
    with pytest.raises(InputError, match='not valid JSON') as err:
        load_topology_npz(bad)
    assert err.value.where == f'{bad} graphs_json'
    np.savez(bad, **dict(arrays, stage3_edges=arrays['stage3_edges'][::-1]))
    with pytest.raises(InputError, match='stage3_edges are not the edges of graphs_json'):
        load_topology_npz(bad)
    np.savez(bad, **{k: v for k, v in arrays.items() if k != 'stage2_alpha'})
    with pytest.raises(InputError, match='no stage2_alpha array for stage 2'):
        load_topology_npz(bad)


def _rewrite_metadata(src, dst, **metadata):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    with safe_open(src, framework='pt') as f:
        meta = dict(f.metadata())
    meta.update(metadata)
    save_file(load_file(src), dst, metadata=meta)


def test_checkpoint_metadata_that_is_malformed_names_the_field(tmp_path):
    torch.manual_seed(0)
    path = str(tmp_path / 'model.safetensors')
    save_checkpoint(path, timm.create_model('toponet_fmnist_complete', num_classes=10, in_chans=1),
                    'toponet_fmnist_complete', {'num_classes': 10, 'in_chans': 1})
    from safetensors import safe_open
    with safe_open(path, framework='pt') as f:
        topology = json.loads(f.metadata()['topology'])
    bad = str(tmp_path / 'bad.safetensors')
    broken = json.loads(json.dumps(topology))
    del broken['stages'][1]['graph']
    _rewrite_metadata(path, bad, topology=json.dumps(broken))
    with pytest.raises(InputError, match='malformed stage') as err:
        read_checkpoint(bad)
    assert err.value.where == f'{bad} metadata "topology" stages[1]'
    _rewrite_metadata(path, bad, model_kwargs='{"num_classes": 10,')
    with pytest.raises(InputError, match='corrupt checkpoint metadata') as err:
        read_checkpoint(bad)
    assert err.value.where == f'{bad} metadata "model_kwargs"'
    _rewrite_metadata(path, bad, meta='[1, 2]')
    with pytest.raises(InputError, match='checkpoint metadata holds a JSON list') as err:
        read_checkpoint(bad)
    assert err.value.where == f'{bad} metadata "meta"'
    _rewrite_metadata(path, bad, topology=json.dumps(dict(topology, stages=topology['stages'][:3])))
    with pytest.raises(InputError, match='the metadata records 3 DAG stages, the tensors hold 4'):
        read_checkpoint(bad)
