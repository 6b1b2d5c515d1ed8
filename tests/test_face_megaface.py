"""MegaFace identification: the streaming computation equals a brute-force count exactly
(ties included), the devkit protocol and tie rule on a hand-made case, TAR at FAR, the
cleaned lists and the devkit's matio feature files."""
import json
import struct

import numpy as np
import pytest

from face.megaface import (clean_probes, identify, identify_brute_force, pair_indices, read_feature_file,
                           read_image_list, read_noise_list, write_feature_file)


def test_protocol_and_tie_rule_on_a_hand_made_case():
    # identity 0: probes a, b; identity 1: c alone (never a pair, still an impostor source)
    probes = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    labels = np.array([0, 0, 1])
    # distractor 0 scores exactly the genuine score 1.0 against a and b: a tie
    distractors = np.array([[1, 0], [0.5, 0], [0, -1]], np.float32)
    res = identify(probes, labels, distractors, sizes=[1, 2, 3], max_rank=3, far=None)
    assert res.num_pairs == 2  # (a vs gallery b) and (b vs gallery a)
    # with distractor 0 in the gallery both pairs rank 2: a tie counts as a miss
    assert res.cmc[1].tolist() == [0.0, 1.0, 1.0]
    assert res.cmc[3].tolist() == [0.0, 1.0, 1.0]
    no_tie = identify(probes, labels, distractors[1:], sizes=[2], max_rank=2, far=None)
    assert no_tie.rank1[2] == 100.0


@pytest.mark.parametrize('seed', range(6))
def test_streaming_equals_brute_force_exactly(seed):
    rng = np.random.default_rng(seed)
    num_probes, num_distractors = int(rng.integers(6, 40)), int(rng.integers(30, 300))
    # small integer features: every dot product is exact in float32 and ties abound
    probes = rng.integers(-2, 3, (num_probes, 5)).astype(np.float32)
    distractors = rng.integers(-2, 3, (num_distractors, 5)).astype(np.float32)
    labels = np.concatenate([[0, 0], rng.integers(0, 5, num_probes - 2)])
    sizes = sorted({1, 7, num_distractors // 2, num_distractors})
    for far in (None, 1e-3, 0.05, 0.5):
        fast = identify(probes, labels, distractors, sizes=sizes, max_rank=6, far=far,
                        chunk_size=int(rng.integers(1, 64)))
        slow = identify_brute_force(probes, labels, distractors, sizes=sizes, max_rank=6, far=far)
        assert fast.num_pairs == slow.num_pairs
        for size in sizes:
            assert np.array_equal(fast.cmc[size], slow.cmc[size]), (size, fast.cmc[size], slow.cmc[size])
        assert fast.tar == slow.tar and fast.threshold == slow.threshold


def test_tar_at_far_counts_impostors_above_the_threshold():
    probes = np.array([[1, 0], [0.8, 0.6], [0, 1], [0, 1]], np.float32)
    labels = np.array([0, 0, 1, 1])
    distractors = np.array([[0.9, 0.1], [0.1, 0.1], [0.0, 0.5], [0.2, 0.95]], np.float32)
    # 16 impostor scores, the highest 0.95 (c, d vs distractor 3, twice) and 0.9 (a vs 0);
    # FAR 1/8 allows 2 above the threshold: the third highest, 0.9
    res = identify(probes, labels, distractors, far=0.125)
    assert res.threshold == pytest.approx(0.9)
    # genuine (unordered) pairs: (a, b) = 0.8 (below) and (c, d) = 1.0 (above)
    assert res.num_genuine == 2 and res.tar == 50.0 and res.num_impostor == 16


def test_bad_inputs():
    with pytest.raises(ValueError, match='must share D'):
        identify(np.zeros((2, 3)), [0, 0], np.zeros((4, 2)))
    with pytest.raises(ValueError, match='no identity has two probe images'):
        identify(np.eye(2), [0, 1], np.eye(2))
    with pytest.raises(ValueError, match=r'sizes \(10,\) must lie in \[1, 2\]'):
        identify(np.eye(2), [0, 0], np.eye(2), sizes=[10])


def test_pair_indices_are_ordered_pairs_within_identities():
    p, g = pair_indices(np.array([3, 3, 3, 1]))
    assert sorted(zip(p.tolist(), g.tolist())) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]


def test_matio_feature_files(tmp_path):
    feature = np.linspace(-1, 1, 256).astype(np.float32)
    path = str(tmp_path / 'a' / 'img.jpg_toponet.bin')
    write_feature_file(path, feature)
    raw = open(path, 'rb').read()
    assert struct.unpack_from('<4i', raw) == (256, 1, 4, 5) and len(raw) == 16 + 256 * 4
    assert np.array_equal(read_feature_file(path), feature)
    open(path, 'wb').write(raw[:-4])
    with pytest.raises(ValueError, match='announces 256x1 float32 \\(1024 bytes\\), the file holds 1020'):
        read_feature_file(path)
    open(path, 'wb').write(struct.pack('<4i', 4, 1, 8, 6) + b'\0' * 32)
    with pytest.raises(ValueError, match=r'matio type 6 \(.*\): CV_32F \(type 5\)'):
        read_feature_file(path)


def test_cleaned_lists(tmp_path):
    features = np.array([[1, 0], [0.6, 0.8], [0, -1], [0, 1]], np.float32)
    labels = np.array([0, 0, 0, 1])
    noisy = np.array([False, False, True, False])
    cleaned = clean_probes(features, labels, noisy)
    centre = (features[0] + features[1]) / np.linalg.norm(features[0] + features[1])
    assert np.allclose(cleaned[2], centre) and np.array_equal(cleaned[[0, 1, 3]], features[[0, 1, 3]])
    with pytest.raises(ValueError, match='identity 1: every probe image is on the noise list'):
        clean_probes(features, labels, np.array([False, False, False, True]))
    noise = tmp_path / 'megaface_noises.txt'
    noise.write_text('# comment\n12\tab/cd/x.jpg\nef/gh/y.jpg\n')
    assert read_noise_list(str(noise)) == {'ab/cd/x.jpg', 'ef/gh/y.jpg'}


def test_image_lists_json_and_text(tmp_path):
    js = tmp_path / 'facescrub_features_list.json'
    js.write_text(json.dumps({'path': ['A/A_1.png', 'B/B_1.png'], 'id': ['A', 'B']}))
    assert read_image_list(str(js)) == (['A/A_1.png', 'B/B_1.png'], ['A', 'B'])
    txt = tmp_path / 'megaface_lst'
    txt.write_text('x/y/1.jpg\n\nx/y/2.jpg\n')
    assert read_image_list(str(txt)) == (['x/y/1.jpg', 'x/y/2.jpg'], None)
    js.write_text(json.dumps({'paths': []}))
    with pytest.raises(ValueError, match='needs a "path" array'):
        read_image_list(str(js))
