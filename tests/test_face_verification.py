"""Verification .bin files (restricted unpickling) and the 10-fold accuracy protocol."""
import os
import pickle

import numpy as np
import pytest
import torch

from face.verification import (_fold_slices, extract_features, kfold_accuracy, load_verification_bin,
                               write_verification_bin)


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(n)]


def test_bin_round_trip(tmp_path):
    images = _images(6)
    write_verification_bin(str(tmp_path / 'v.bin'), images, [True, False, True], ext='.png')
    got, issame = load_verification_bin(str(tmp_path / 'v.bin'))
    assert got.shape == (6, 8, 8, 3) and issame.tolist() == [True, False, True]
    assert np.array_equal(got, np.stack(images))
    small, _ = load_verification_bin(str(tmp_path / 'v.bin'), image_size=4)
    assert small.shape == (6, 4, 4, 3)


def test_bin_with_numpy_arrays_as_written_by_some_releases(tmp_path):
    import cv2
    bins = [np.frombuffer(cv2.imencode('.png', im)[1].tobytes(), np.uint8) for im in _images(2)]
    path = tmp_path / 'np.bin'
    path.write_bytes(pickle.dumps((bins, np.array([True])), protocol=2))
    images, issame = load_verification_bin(str(path))
    assert images.shape == (2, 8, 8, 3) and issame.tolist() == [True]


class _Evil:
    def __reduce__(self):
        return (os.system, ('echo pwned > /tmp/face_bin_pwned',))


def test_malicious_pickle_is_refused_before_running_anything(tmp_path):
    path = tmp_path / 'evil.bin'
    path.write_bytes(pickle.dumps(([_Evil(), b''], [True])))
    with pytest.raises(ValueError, match=r'refusing to load (posix|os)\.system'):
        load_verification_bin(str(path))
    assert not os.path.exists('/tmp/face_bin_pwned')


def test_inconsistent_bin_contents(tmp_path):
    path = tmp_path / 'bad.bin'
    path.write_bytes(pickle.dumps(([b'x'] * 3, [True])))
    with pytest.raises(ValueError, match='3 images for 1 pairs'):
        load_verification_bin(str(path))
    path.write_bytes(pickle.dumps(([b'x', b'y'], [True])))
    with pytest.raises(ValueError, match='image 0 cannot be decoded'):
        load_verification_bin(str(path))
    path.write_bytes(b'garbage')
    with pytest.raises(ValueError, match='not a verification .bin'):
        load_verification_bin(str(path))


def test_folds_are_consecutive_like_kfold_without_shuffle():
    folds = _fold_slices(23, 10)
    assert [len(f) for f in folds] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert np.array_equal(np.concatenate(folds), np.arange(23))


def test_kfold_accuracy_separable_and_hand_computed():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(100, 16))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    issame = np.arange(100) % 2 == 0
    other = rng.normal(size=(100, 16))
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    second = np.where(issame[:, None], base, other)
    res = kfold_accuracy(base, second, issame)
    assert res['accuracy'] == 100.0 and res['std'] == 0.0
    # 20 pairs, distances 0 (same) or 2 (different), except one genuine pair at distance 2:
    # every fold's best threshold separates 0 from 2, so the bad pair's fold scores 1/2.
    f1 = np.zeros((20, 2)); f1[:, 0] = 1
    f2 = f1.copy(); issame = np.arange(20) % 2 == 0
    f2[~issame] = [-1, 0]
    f2[0] = [-1, 0]  # a genuine pair that looks different: distance 4
    res = kfold_accuracy(f1, f2, issame)
    assert res['accuracy'] == pytest.approx(100 * (9 + 0.5) / 10)
    with pytest.raises(ValueError, match='cannot be split into 10 folds'):
        kfold_accuracy(f1[:5], f2[:5], issame[:5])


def test_flip_features_add_the_mirrored_image():
    class Half(torch.nn.Module):  # a "network" that sees only the left half of the face
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x[..., :4].flatten(1) * self.w

    images = np.stack(_images(2))
    plain = extract_features(Half(), images, flip=False)
    fused = extract_features(Half(), images, flip=True)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - 127.5) / 127.5
    want = torch.nn.functional.normalize(x[..., :4].flatten(1) + x.flip(3)[..., :4].flatten(1), dim=1)
    assert np.allclose(fused, want.numpy(), atol=1e-6) and not np.allclose(plain, fused)
