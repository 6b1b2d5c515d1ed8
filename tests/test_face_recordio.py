"""MXNet RecordIO in pure Python: the record layout, multi-part records, the IR header
with label arrays, insightface's header/identity records, and clear errors on damage."""
import struct

import numpy as np
import pytest

from face.recordio import (RECORDIO_MAGIC, FaceRecordSet, IndexedRecordIO, IRHeader, RecordIOError, RecordIOWriter,
                           folder_to_recordset, iter_records, pack_record, read_property, unpack_record,
                           write_face_recordset)

MAGIC = struct.pack('<I', RECORDIO_MAGIC)


def _write(tmp_path, payloads):
    rec, idx = str(tmp_path / 'x.rec'), str(tmp_path / 'x.idx')
    with RecordIOWriter(rec, idx) as w:
        for i, p in enumerate(payloads):
            w.write(i, p)
    return rec, idx


def test_record_layout_is_magic_lrecord_payload_padding(tmp_path):
    rec, _ = _write(tmp_path, [b'abcde', b'12345678'])
    raw = open(rec, 'rb').read()
    magic, lrecord = struct.unpack_from('<II', raw, 0)
    assert magic == RECORDIO_MAGIC and lrecord >> 29 == 0 and lrecord & ((1 << 29) - 1) == 5
    assert raw[8:13] == b'abcde' and raw[13:16] == b'\0\0\0'  # padded to 4 bytes
    assert struct.unpack_from('<II', raw, 16) == (RECORDIO_MAGIC, 8)
    assert len(raw) == 16 + 8 + 8


def test_payload_containing_the_magic_is_split_into_parts_and_rejoined(tmp_path):
    payload = b'head' + MAGIC + b'middle!!' + MAGIC + b'tail' + MAGIC[:3]  # two aligned magics, one partial
    rec, idx = _write(tmp_path, [payload, b'next'])
    raw = open(rec, 'rb').read()
    flags = []
    pos = 0
    while pos < len(raw):
        magic, lrec = struct.unpack_from('<II', raw, pos)
        assert magic == RECORDIO_MAGIC
        flags.append(lrec >> 29)
        pos += 8 + (lrec & ((1 << 29) - 1)) + (-(lrec & ((1 << 29) - 1)) % 4)
    assert flags == [1, 2, 3, 0]  # first, middle, last part; then a whole record
    reader = IndexedRecordIO(rec, idx)
    assert reader.read(0) == payload and reader.read(1) == b'next'
    assert list(iter_records(rec)) == [payload, b'next']


def test_ir_header_scalar_and_label_array():
    header, rest = unpack_record(pack_record(IRHeader(0, 7.0, 3, 4), b'JPEG'))
    assert header == IRHeader(0, 7.0, 3, 4) and rest == b'JPEG'
    header, rest = unpack_record(pack_record(IRHeader(3, (1.0, 2.5, -1.0)), b'img'))
    assert header.flag == 3 and header.label == (1.0, 2.5, -1.0) and rest == b'img'
    # flag > 0: flag float32 labels sit between the 24-byte header and the payload
    raw = pack_record(IRHeader(2, (5.0, 9.0)), b'zz')
    assert struct.unpack_from('<IfQQ', raw)[0] == 2 and np.frombuffer(raw[24:32], '<f4').tolist() == [5.0, 9.0]


def test_face_recordset_round_trip_with_header_and_identity_records(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(7)]
    labels = [2, 0, 1, 0, 2, 2, 1]
    write_face_recordset(str(tmp_path), images, labels, ext='.png')
    s = FaceRecordSet(str(tmp_path))
    assert len(s) == 7 and s.num_classes == 3 and (s.height, s.width) == (16, 16)
    header, _ = s.records.read_record(0)
    assert header.label == (8.0, 11.0)  # images are records 1..7, identities 8..10
    assert s.identity_ranges == [(1, 3), (3, 5), (5, 8)]
    got = sorted((lab, img.tobytes()) for img, lab in (s.read(i) for i in range(7)))
    want = sorted((lab, img.tobytes()) for img, lab in zip(images, labels))
    assert got == want  # PNG is lossless: identical pixels, RGB order kept


def test_truncated_file_names_the_record(tmp_path):
    rec, idx = _write(tmp_path, [b'a' * 40, b'b' * 40])
    data = open(rec, 'rb').read()
    open(rec, 'wb').write(data[:-10])
    reader = IndexedRecordIO(rec, idx)
    assert reader.read(0) == b'a' * 40
    with pytest.raises(RecordIOError, match=r'truncated record: .*\(.*x\.rec record 1\)'):
        reader.read(1)


def test_bad_magic_names_the_record(tmp_path):
    rec, idx = _write(tmp_path, [b'a' * 8, b'b' * 8])
    data = bytearray(open(rec, 'rb').read())
    data[16:20] = b'\0\0\0\0'
    open(rec, 'wb').write(bytes(data))
    with pytest.raises(RecordIOError, match=r'bad magic 0x00000000 at byte 16 \(.*x\.rec record 1\)'):
        IndexedRecordIO(rec, idx).read(1)


def test_bad_index_and_property_files(tmp_path):
    rec, idx = _write(tmp_path, [b'a'])
    open(idx, 'w').write('0\t0\n1\t999\n')
    with pytest.raises(RecordIOError, match='offset 999 of record 1 lies outside'):
        IndexedRecordIO(rec, idx)
    open(idx, 'w').write('zero 0\n')
    with pytest.raises(RecordIOError, match='expected "index<TAB>offset"'):
        IndexedRecordIO(rec, idx)
    prop = tmp_path / 'property'
    prop.write_text('85742,112\n')
    with pytest.raises(ValueError, match='num_classes,height,width'):
        read_property(str(prop))
    with pytest.raises(FileNotFoundError, match='index file not found'):
        IndexedRecordIO(rec, str(tmp_path / 'missing.idx'))


def test_short_ir_header_and_missing_label_bytes():
    with pytest.raises(RecordIOError, match='shorter than the 24-byte IR header'):
        unpack_record(b'1234', 'rec 5')
    raw = struct.pack('<IfQQ', 4, 0.0, 0, 0) + b'\0' * 8
    with pytest.raises(RecordIOError, match='announces 4 labels'):
        unpack_record(raw, 'rec 5')


def test_undecodable_image_names_the_record(tmp_path):
    rec, idx = str(tmp_path / 'train.rec'), str(tmp_path / 'train.idx')
    with RecordIOWriter(rec, idx) as w:
        w.write(1, pack_record(IRHeader(0, 0.0), b'not a jpeg'))
    s = FaceRecordSet(str(tmp_path))
    with pytest.raises(RecordIOError, match=r'the payload .* is not a decodable image \(.*train\.rec record 1\)'):
        s.read(0)


def test_image_folder_conversion(tmp_path):
    import cv2
    rng = np.random.default_rng(1)
    for ident, count in (('bob', 2), ('alice', 3)):
        (tmp_path / 'faces' / ident).mkdir(parents=True)
        for k in range(count):
            cv2.imwrite(str(tmp_path / 'faces' / ident / f'{k}.png'), rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    (tmp_path / 'faces' / 'alice' / 'notes.txt').write_text('not an image')
    assert folder_to_recordset(str(tmp_path / 'faces'), str(tmp_path / 'rec'), progress=False) == 2
    s = FaceRecordSet(str(tmp_path / 'rec'))
    assert len(s) == 5 and s.num_classes == 2
    assert sorted(s.read(i)[1] for i in range(5)) == [0, 0, 0, 1, 1]  # alice (sorted first) has 3
    with pytest.raises(ValueError, match='no images in identity sub-folders'):
        folder_to_recordset(str(tmp_path / 'faces' / 'bob'), str(tmp_path / 'rec2'), progress=False)
