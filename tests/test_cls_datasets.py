import gzip
import os
import pickle

import numpy as np
import pytest
import torch

from classification.datasets import Cifar100, FashionMNIST, ImageNetFolder, read_idx, restricted_pickle_load, write_idx
from classification.transforms import Cutout, build_transform
from helpers.tiny_data import make_cifar100, make_fmnist, make_image_folder


def test_idx_round_trip(tmp_path):
    for dtype in (np.uint8, np.int32, np.float32):
        arr = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
        write_idx(str(tmp_path / 'a.gz'), arr)
        write_idx(str(tmp_path / 'a.idx'), arr, compress=False)
        for name in ('a.gz', 'a.idx'):
            out = read_idx(str(tmp_path / name))
            assert out.dtype == np.dtype(dtype) and np.array_equal(out, arr)


def test_idx_header_matches_the_mnist_format(tmp_path):
    write_idx(str(tmp_path / 'l.idx'), np.array([3, 1, 4], dtype=np.uint8), compress=False)
    assert (tmp_path / 'l.idx').read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 3, 1, 4])


def test_bad_idx_files(tmp_path):
    bad = tmp_path / 'bad.idx'
    bad.write_bytes(b'\x01\x02\x08\x01abcd')
    with pytest.raises(ValueError, match='not an IDX file'):
        read_idx(str(bad))
    bad.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(ValueError, match='payload has 2 bytes, header dims \\[5\\] need 5'):
        read_idx(str(bad))
    bad.write_bytes(bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 1]))
    with pytest.raises(ValueError, match='unknown IDX data type 0x42'):
        read_idx(str(bad))
    bad.write_bytes(gzip.compress(b'\x00\x00\x08\x01\x00\x00\x00\x04ab')[:-6])
    with pytest.raises(ValueError, match='corrupt gzip'):
        read_idx(str(bad))


def test_fashion_mnist_reads_the_idx_layout(tmp_path):
    root = make_fmnist(str(tmp_path), n_train=30, n_test=20)
    train = FashionMNIST(root, 'train')
    test = FashionMNIST(root, 'test', indices=range(5))
    assert len(train) == 30 and len(test) == 5
    sample = train[0]
    assert sample['inputs'].shape == (1, 28, 28) and sample['inputs'].dtype == torch.uint8
    raw = read_idx(os.path.join(root, 'train-labels-idx1-ubyte.gz'))
    assert [train[i]['labels'] for i in range(30)] == raw.tolist()
    assert train.metainfo['classes'][9] == 'Ankle boot'


def test_fashion_mnist_validation_holdout_is_stratified_disjoint_and_fixed(tmp_path):
    root = make_fmnist(str(tmp_path), n_train=200, n_test=20)
    full = FashionMNIST(root, 'train')
    train = FashionMNIST(root, 'train', holdout=50)
    val = FashionMNIST(root, 'val', holdout=50)
    assert len(train) == 150 and len(val) == 50
    assert torch.bincount(val.labels, minlength=10).tolist() == [5] * 10  # 5 per class
    # disjoint, and together exactly the training set (compare images as bytes)
    as_keys = lambda ds: {bytes(ds.images[i].numpy().tobytes()) + bytes([int(ds.labels[i])]) for i in range(len(ds))}
    assert not as_keys(train) & as_keys(val)
    assert as_keys(train) | as_keys(val) == as_keys(full)
    # the same images on every call; another seed draws others
    assert torch.equal(FashionMNIST(root, 'val', holdout=50).images, val.images)
    assert not torch.equal(FashionMNIST(root, 'val', holdout=50, holdout_seed=1).images, val.images)
    with pytest.raises(ValueError, match='does not split evenly over 10 classes'):
        FashionMNIST(root, 'val', holdout=55)


def test_fashion_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='dataset-fashion-mnist'):
        FashionMNIST(str(tmp_path), 'train')
    with pytest.raises(ValueError, match=r"split 'val' without a hold-out \(dataset.holdout\)"):
        FashionMNIST(str(tmp_path), 'val')
    with pytest.raises(ValueError, match="unknown Fashion-MNIST split 'valid'"):
        FashionMNIST(str(tmp_path), 'valid')
    root = make_fmnist(str(tmp_path / 'mismatch'), n_train=10, n_test=10)
    write_idx(os.path.join(root, 'train-labels-idx1-ubyte.gz'), np.zeros(9, dtype=np.uint8))
    with pytest.raises(ValueError, match='do not pair up'):
        FashionMNIST(root, 'train')
    write_idx(os.path.join(root, 'train-labels-idx1-ubyte.gz'), np.full(10, 12, dtype=np.uint8))
    with pytest.raises(ValueError, match='labels outside 0..9'):
        FashionMNIST(root, 'train')


@pytest.mark.skipif(not os.path.isfile('/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz'),
                    reason='the Debian Fashion-MNIST package is not installed')
def test_real_fashion_mnist():
    test = FashionMNIST(split='test')
    assert len(test) == 10000
    assert torch.bincount(test.labels).tolist() == [1000] * 10


def test_cifar100_pickles(tmp_path):
    folder = make_cifar100(str(tmp_path))
    train = Cifar100(str(tmp_path), 'train')
    coarse = Cifar100(folder, 'test', label_type='coarse')
    assert len(train) == 40 and len(coarse) == 20
    with open(os.path.join(folder, 'train'), 'rb') as f:
        raw = pickle.load(f, encoding='bytes')
    np.testing.assert_array_equal(train[3]['inputs'].numpy().reshape(-1), raw[b'data'][3])
    assert train[3]['labels'] == 3 and train.metainfo['classes'][3] == 'fine3'
    assert coarse[5]['labels'] == 5 and coarse.metainfo['classes'][5] == 'coarse5'


class _Evil:
    def __reduce__(self):
        return (os.system, ('echo pwned > /dev/null',))


def test_cifar_loader_refuses_arbitrary_objects(tmp_path):
    folder = tmp_path / 'cifar-100-python'
    folder.mkdir()
    with open(folder / 'train', 'wb') as f:
        pickle.dump({b'data': _Evil()}, f, protocol=2)
    with pytest.raises(ValueError, match='refusing to load posix.system|refusing to load os.system'):
        Cifar100(str(tmp_path), 'train')
    (folder / 'test').write_bytes(b'\x80\x02}q\x00')  # truncated pickle
    with pytest.raises(ValueError, match='cannot load safely'):
        restricted_pickle_load(str(folder / 'test'))


def test_cifar_missing_keys(tmp_path):
    folder = tmp_path / 'cifar-100-python'
    folder.mkdir()
    with open(folder / 'train', 'wb') as f:
        pickle.dump({b'data': np.zeros((2, 3072), np.uint8)}, f, protocol=2)
    with pytest.raises(ValueError, match="missing key 'fine_labels'"):
        Cifar100(str(tmp_path), 'train')


def test_image_folder(tmp_path):
    root = make_image_folder(str(tmp_path))
    ds = ImageNetFolder(root, 'train', transform='imagenet_val')
    assert len(ds) == 6 and ds.metainfo['classes'] == ('n01440764', 'n01443537')
    sample = ds[4]
    assert sample['inputs'].shape == (3, 224, 224) and sample['labels'] == 1
    (tmp_path / 'train' / 'n01440764' / 'broken.JPEG').write_bytes(b'not a jpeg')
    ds = ImageNetFolder(root, 'train')
    with pytest.raises(ValueError, match='cannot decode image .*broken.JPEG'):
        ds[[p for p, _ in ds.samples].index(str(tmp_path / 'train' / 'n01440764' / 'broken.JPEG'))]
    with pytest.raises(FileNotFoundError, match='split folder not found'):
        ImageNetFolder(root, 'test')


def test_transforms():
    image = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    torch.manual_seed(1)
    out = Cutout(16, (0.5, 0.5, 0.5))(image)
    filled = (out == 128).all(0)
    assert 0 < int(filled.sum()) <= 256 and image.eq(200).all()
    assert build_transform('cifar_train')(image).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="unknown transform preset 'mixup'"):
        build_transform('mixup')
