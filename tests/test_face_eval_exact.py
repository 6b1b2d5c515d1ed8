"""Face evaluation numbers exactly as the protocols define them: every requested MegaFace
size after cleaning, bit-identical scores for bit-identical features at any chunk size, an
exact count of allowed false accepts, devkit feature files with their row stride, feature
caches keyed by checkpoint content, and record-level errors in RecordIO and .bin files."""
import glob
import json
import math
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from backbones.errors import InputError
from face.megaface import (allowed_false_accepts, evaluate_megaface, extract_list_features, identify,
                           identify_brute_force, pair_scores, read_feature_file, score_matrix,
                           write_feature_file)


# -- a tiny MegaFace-style set on disk ---------------------------------------------------

class _Embed(torch.nn.Module):
    """A fixed random projection of a 16x16 face to 8 dimensions (different seed, other features)."""

    input_size = 16

    def __init__(self, seed):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 16 * 16, 8, bias=False)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(seed))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.proj(x.flatten(1))


def _photos(root, rels, rng):
    import cv2
    from face.align import write_landmarks
    landmarks = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]], np.float32)
    for rel in rels:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cv2.imwrite(path, rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
        write_landmarks(path + '.json', landmarks + rng.normal(0, 1, landmarks.shape))


@pytest.fixture(scope='module')
def megaface(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('mf'))
    rng = np.random.default_rng(0)
    probes = [f'P{i}/P{i}_{k}.png' for i in range(3) for k in range(3)]
    distractors = [f'{n % 3:02d}/{n:04d}.jpg' for n in range(12)]
    _photos(os.path.join(root, 'facescrub'), probes, rng)
    _photos(os.path.join(root, 'megaface'), distractors, rng)
    with open(os.path.join(root, 'facescrub.json'), 'w') as f:
        json.dump({'path': probes, 'id': [p.split('/')[0] for p in probes]}, f)
    with open(os.path.join(root, 'megaface.json'), 'w') as f:
        json.dump({'path': distractors}, f)
    with open(os.path.join(root, 'megaface_noises.txt'), 'w') as f:  # two noisy entries among the first 10
        f.write(f'# noise\n3\t{distractors[3]}\n{distractors[7]}\n')
    return dict(root=root, probes=probes, distractors=distractors)


def _evaluate(mf, model, **kwargs):
    r = mf['root']
    return evaluate_megaface(model, f'{r}/facescrub', f'{r}/facescrub.json', f'{r}/megaface', f'{r}/megaface.json',
                             progress=False, **kwargs)


def test_cleaned_distractors_keep_every_requested_size(megaface):
    model = _Embed(0)
    result, info = _evaluate(megaface, model, megaface_noises=f"{megaface['root']}/megaface_noises.txt",
                             sizes=(5, 10, 12), max_rank=4, far=0.05)
    # sizes count list entries: the 12-entry list holds all three, whatever the cleaning removed
    assert sorted(result.cmc) == [5, 10, 12] and info['removed_distractors'] == 2
    assert result.scored == {5: 4, 10: 8, 12: 10}
    assert result.num_impostor == 9 * 12 and result.allowed_false_accepts == math.floor(0.05 * 9 * 12)
    # the same numbers as the reference on the whole list with the noisy entries out of reach
    r = megaface['root']
    probes = extract_list_features(model, f'{r}/facescrub', megaface['probes'], progress=False)
    distractors = extract_list_features(model, f'{r}/megaface', megaface['distractors'], progress=False)
    removed = np.zeros(12, bool)
    removed[[3, 7]] = True
    labels = np.repeat(np.arange(3), 3)
    want = identify_brute_force(probes, labels, distractors, sizes=(5, 10, 12), max_rank=4, far=0.05,
                                removed=removed)
    for size in (5, 10, 12):
        assert np.array_equal(result.cmc[size], want.cmc[size])
    assert result.tar == want.tar and result.threshold == want.threshold
    # removed is removed: size 12 ranks exactly as the 10 clean distractors alone do
    clean = identify_brute_force(probes, labels, distractors[~removed], sizes=(4, 8, 10), max_rank=4, far=None)
    assert [clean.cmc[s].tolist() for s in (4, 8, 10)] == [result.cmc[s].tolist() for s in (5, 10, 12)]


def test_a_distractor_identical_to_the_gallery_image_ties_at_every_chunk_size():
    rng = np.random.default_rng(1)
    dim, identities = 256, 20
    probes = rng.normal(size=(2 * identities, dim)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    probes = probes.astype(np.float32)
    labels = np.repeat(np.arange(identities), 2)
    # the second image of each identity is close to the first: genuine scores about 0.97
    probes[1::2] = probes[0::2] * 0.8 + probes[1::2] * 0.2
    probes = (probes / np.linalg.norm(probes, axis=1, keepdims=True)).astype(np.float32)
    # weak random distractors with a bit-identical copy of every probe spread among them:
    # against probe a (gallery b) the copy of b ties with the genuine score and the copy of
    # a beats it, so every pair ranks exactly 3rd
    full = (rng.normal(size=(300 + len(probes), dim)) * 0.01).astype(np.float32)
    full[rng.choice(len(full), len(probes), replace=False)] = probes
    want = identify_brute_force(probes, labels, full, sizes=[len(full)], max_rank=4, far=None)
    assert want.cmc[len(full)].tolist() == [0.0, 0.0, 1.0, 1.0]
    for chunk in (1, 2, 3, 7, 64, 1000):
        got = identify(probes, labels, full, sizes=[len(full)], max_rank=4, far=None, chunk_size=chunk)
        assert got.cmc[len(full)].tolist() == [0.0, 0.0, 1.0, 1.0], chunk
    # the score of two vectors depends on their bits only, not on the block or matrix they sit in
    p, x = np.repeat(probes[:1], 50, axis=0), full[:50]
    assert np.array_equal(pair_scores(p, x), pair_scores(p, x, block=3))
    assert np.array_equal(pair_scores(p, x), score_matrix(probes[:1], x)[0])


@pytest.mark.parametrize('seed', range(3))
def test_streaming_equals_brute_force_on_float_features_with_near_ties(seed):
    rng = np.random.default_rng(seed)
    probes = rng.normal(size=(12, 64)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    labels = np.repeat(np.arange(6), 2)
    base = rng.normal(size=(150, 64)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    # near-duplicates a few float32 ulps apart, exact duplicates, and copies of probes
    near = base[:40] * np.float32(1 + 2 ** -22)
    distractors = np.concatenate([base, near, base[:20], probes[::3]]).astype(np.float32)
    distractors = distractors[rng.permutation(len(distractors))]
    removed = rng.random(len(distractors)) < 0.1
    sizes = [1, 5, 100, len(distractors)]
    want = identify_brute_force(probes, labels, distractors, sizes=sizes, max_rank=5, far=0.01, removed=removed)
    for chunk in (1, 9, 50, 4096):
        got = identify(probes, labels, distractors, sizes=sizes, max_rank=5, far=0.01, chunk_size=chunk,
                       removed=removed)
        for size in sizes:
            assert np.array_equal(got.cmc[size], want.cmc[size]), (chunk, size)
        assert (got.threshold, got.tar, got.allowed_false_accepts) == (want.threshold, want.tar,
                                                                       want.allowed_false_accepts)


def test_allowed_false_accepts_is_an_exact_integer_count():
    # float arithmetic: 1e-6 * 3530 * 1e6 = 3529.9999999999995, 0.29 * 100 = 28.999999999999996
    assert allowed_false_accepts(1e-6, 3530 * 1_000_000) == 3530
    assert allowed_false_accepts(0.29, 100) == 29
    assert allowed_false_accepts('1e-6', 3530 * 999_314) == 3527  # 3527.57842
    assert allowed_false_accepts(1e-6, 999_999) == 0 and allowed_false_accepts(1.0, 7) == 7
    n = 3530 * 10 ** 6
    assert all(allowed_false_accepts(1e-6, m) == m // 10 ** 6 for m in range(n - 3000, n + 3000, 7))
    with pytest.raises(InputError, match=r'FAR 1.5 lies outside \[0, 1\]'):
        allowed_false_accepts(1.5, 10)
    with pytest.raises(InputError, match='not finite'):
        allowed_false_accepts(float('nan'), 10)


def test_tar_threshold_where_float_rounding_would_miss_by_one():
    # 4 probes x 25 distractors = 100 impostor pairs at FAR 0.29: exactly 29 may score above t
    probes = np.array([[1, 0], [2, 0], [0, 1], [0, 3]], np.float32)
    labels = np.array([0, 0, 1, 1])
    distractors = np.array([[j, 50 + j] for j in range(25)], np.float32)
    impostors = np.sort((probes.astype(np.float64) @ distractors.T.astype(np.float64)).ravel())[::-1]
    assert impostors[28] != impostors[29]
    for chunk in (1, 4, 25):
        res = identify(probes, labels, distractors, far=0.29, chunk_size=chunk)
        assert res.allowed_false_accepts == 29 and res.threshold == impostors[29]
        assert (impostors > res.threshold).sum() <= 29
    ref = identify_brute_force(probes, labels, distractors, far=0.29)
    assert ref.allowed_false_accepts == 29 and ref.threshold == impostors[29]


# -- devkit feature files ------------------------------------------------------------------

def test_devkit_feature_files_row_stride(tmp_path):
    feature = np.linspace(-1, 1, 128).astype(np.float32)
    row = tmp_path / 'row.bin'  # a (1, D) matrix, written as the devkit's matio does: stride cols * 4
    row.write_bytes(struct.pack('<4i', 1, 128, 128 * 4, 5) + feature.tobytes())
    assert np.array_equal(read_feature_file(str(row)), feature)
    column = tmp_path / 'column.bin'  # insightface's (D, 1): stride 1 * 4
    column.write_bytes(struct.pack('<4i', 128, 1, 4, 5) + feature.tobytes())
    assert np.array_equal(read_feature_file(str(column)), feature)
    write_feature_file(str(tmp_path / 'ours_row.bin'), feature[None, :])
    assert open(tmp_path / 'ours_row.bin', 'rb').read() == row.read_bytes()
    write_feature_file(str(tmp_path / 'ours_column.bin'), feature)
    assert open(tmp_path / 'ours_column.bin', 'rb').read() == column.read_bytes()
    row.write_bytes(struct.pack('<4i', 1, 128, 4, 5) + feature.tobytes())
    with pytest.raises(InputError, match=r'row stride 4 bytes for 128 float32 columns .*: 512 \(cols \* 4'):
        read_feature_file(str(row))
    row.write_bytes(struct.pack('<4i', 2, 64, 256, 5) + feature.tobytes())
    with pytest.raises(InputError, match='2x64 matrix'):
        read_feature_file(str(row))


def test_feature_cache_is_keyed_by_checkpoint_content(megaface, tmp_path):
    cache = str(tmp_path / 'features')
    ckpt_a, ckpt_b = tmp_path / 'a.safetensors', tmp_path / 'b.safetensors'
    ckpt_a.write_bytes(b'weights of model A')
    ckpt_b.write_bytes(b'weights of model B')
    model_a, model_b = _Embed(1), _Embed(2)
    res_a, info_a = _evaluate(megaface, model_a, sizes=(12,), far=None, feature_dir=cache, checkpoint=str(ckpt_a))
    # same paths, other checkpoint: its own folder, its own features
    res_b, info_b = _evaluate(megaface, model_b, sizes=(12,), far=None, feature_dir=cache, checkpoint=str(ckpt_b))
    assert model_b.calls > 0 and info_a['feature_dirs'] != info_b['feature_dirs']
    r = megaface['root']
    fresh_b = extract_list_features(_Embed(2), f'{r}/facescrub', megaface['probes'], progress=False)
    rel = megaface['probes'][0] + '_toponet.bin'
    assert np.array_equal(read_feature_file(os.path.join(info_b['feature_dirs']['facescrub'], rel)), fresh_b[0])
    assert not np.allclose(read_feature_file(os.path.join(info_a['feature_dirs']['facescrub'], rel)), fresh_b[0])
    manifest = json.load(open(os.path.join(info_b['feature_dirs']['facescrub'], 'features.json')))
    assert manifest['checkpoint_sha256'] == __import__('hashlib').sha256(b'weights of model B').hexdigest()
    # the first checkpoint again: every feature read back, none computed
    model_a.calls = 0
    again, _ = _evaluate(megaface, model_a, sizes=(12,), far=None, feature_dir=cache, checkpoint=str(ckpt_a))
    assert model_a.calls == 0 and np.array_equal(again.cmc[12], res_a.cmc[12])
    # the checkpoint file rewritten (training went on): a new key, nothing reused
    ckpt_a.write_bytes(b'weights of model A, later')
    _, info_c = _evaluate(megaface, model_a, sizes=(12,), far=None, feature_dir=cache, checkpoint=str(ckpt_a))
    assert model_a.calls > 0 and info_c['feature_dirs']['megaface'] != info_a['feature_dirs']['megaface']
    assert len(glob.glob(os.path.join(cache, 'megaface_*'))) == 3
    with pytest.raises(InputError, match='needs the checkpoint'):
        _evaluate(megaface, model_a, sizes=(12,), far=None, feature_dir=cache)


# -- record-level errors -------------------------------------------------------------------

def test_recordio_errors_name_the_record(tmp_path):
    from face.recordio import FaceRecordSet, IRHeader, RecordIOError, RecordIOWriter, pack_record, write_face_recordset
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(4)]
    write_face_recordset(str(tmp_path), images, [0, 1, 2, 2], ext='.png')
    with open(tmp_path / 'property', 'w') as f:
        f.write('2,8,8\n')  # two identities: label 2 is out of range
    s = FaceRecordSet(str(tmp_path))
    assert s.read(0)[1] == 0
    with pytest.raises(RecordIOError, match=r'label out of range: 2\.0 \(.*train\.rec record 3\): integer labels '
                                            r'0\.\.1 \(property: 2 identities\)') as info:
        s.read(2)
    assert isinstance(info.value, InputError) and info.value.where.endswith('train.rec record 3')
    # an undecodable image and a truncated record, each named by its record index
    rec, idx = str(tmp_path / 'x.rec'), str(tmp_path / 'x.idx')
    with RecordIOWriter(rec, idx) as w:
        w.write(0, pack_record(IRHeader(0, 0.0), b'\xff\xd8 not a jpeg'))
        w.write(1, pack_record(IRHeader(0, 1.0), b'z' * 64))
    from face.recordio import IndexedRecordIO, decode_image
    reader = IndexedRecordIO(rec, idx)
    with pytest.raises(InputError, match=r'not a decodable image \(.*x\.rec record 0\)'):
        decode_image(reader.read_record(0)[1], f'{rec} record 0')
    data = open(rec, 'rb').read()
    open(rec, 'wb').write(data[:-20])
    with pytest.raises(InputError, match=r'truncated record: .* \(.*x\.rec record 1\): a complete \.rec file'):
        IndexedRecordIO(rec, idx).read(1)
    with pytest.raises(InputError, match=r'record 5 is not in the index'):
        reader.read(5)


def _bin(path, payload):
    with open(path, 'wb') as f:
        f.write(payload if isinstance(payload, bytes) else pickle.dumps(payload, protocol=4))
    return str(path)


def test_malformed_bin_contents_name_the_field_or_pair(tmp_path):
    import cv2
    from face.verification import load_verification_bin, validate_bin
    png = cv2.imencode('.png', np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    other = cv2.imencode('.png', np.zeros((6, 8, 3), np.uint8))[1].tobytes()
    cases = [
        ((png, [True]), r'bins is a bytes \(.*bad\.bin bins\): a list of encoded images'),
        (([png, png], ['yes']), r"issame\[0\] is 'yes' \(.*bad\.bin issame\): True or False"),
        (([png, png, png, 7], [True, False]), r'image 3 is a int \(pair 1, second image\) \(.*bad\.bin bins\[3\]\)'),
        (([png, b'junk'], [True]), r'image 1 cannot be decoded \(pair 0, second image\) \(.*bins\[1\]\)'),
        (([png, other], [False]), r'image 1 is 8x6 \(pair 0, second image\), image 0 is 8x8'),
        (([], []), r'no pairs'),
        ({'bins': [png, png], 'issame': [True]}, r'the pickle holds a dict'),
    ]
    for payload, pattern in cases:
        path = _bin(tmp_path / 'bad.bin', payload)
        for load in (load_verification_bin, lambda p: validate_bin(p, n_folds=1)):
            with pytest.raises(InputError, match=pattern):
                load(path)
    # damaged pickle streams and codecs other than latin-1 are refused, as InputError
    for raw in (b'\x80\x02h\x05.', pickle.dumps(([png, png], [True]))[:-9],
                b'\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00zlib\x86R.'):
        with pytest.raises(InputError, match=r'not a verification \.bin that can be loaded safely'):
            validate_bin(_bin(tmp_path / 'bad.bin', raw))
    good = _bin(tmp_path / 'good.bin', ([png] * 24, [True, False] * 6))
    assert validate_bin(good) == dict(num_pairs=12, num_same=6, image_shape=(8, 8, 3))
    with pytest.raises(InputError, match=r'12 pairs cannot be split into 20 folds'):
        validate_bin(good, n_folds=20)
