"""MXNet RecordIO (``train.rec`` / ``train.idx`` / ``property``), read and written in pure
Python: the format MS1MV2 and the other insightface training sets ship in.

Layout of a ``.rec`` file, one record after the other:

* ``uint32 magic = 0xced7230a``, ``uint32 lrecord = cflag << 29 | length``, ``length`` bytes
  of payload, zero padding to a multiple of 4 bytes.
* ``cflag`` 0 is a whole record. A payload that contains the magic word at a 4-byte
  aligned offset is split there into parts (cflag 1: first, 2: middle, 3: last); the magic
  word itself is dropped from the payload and re-inserted between parts by the reader, so
  no part ever contains it and a reader can always resynchronise on it.
* A payload is an image record: the IR header ``struct 'IfQQ'`` (flag, label, id, id2);
  ``flag > 0`` means ``flag`` float32 labels follow the header (and ``label`` is unused);
  then the encoded image (JPEG for MS1MV2).

The ``.idx`` file is text, ``index<TAB>byte offset`` per line. In the insightface sets
record 0 is a header whose labels are ``(first identity record, end)``: records 1..first-1
are images (label: the class), records first..end-1 are identities whose labels are the
``[start, end)`` range of their images. ``property`` reads ``num_classes,height,width``.

Origin: this project, from the format description of dmlc-core's recordio and MXNet's
``recordio.pack``. Licence: Apache-2.0.
"""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from backbones.errors import InputError

__all__ = ['RECORDIO_MAGIC', 'IRHeader', 'RecordIOError', 'pack_record', 'unpack_record', 'encode_image',
           'decode_image', 'RecordIOWriter', 'IndexedRecordIO', 'FaceRecordSet', 'write_face_recordset',
           'read_property', 'write_property', 'folder_to_recordset', 'iter_records']

RECORDIO_MAGIC = 0xced7230a
_MAGIC_BYTES = struct.pack('<I', RECORDIO_MAGIC)
_HEAD = struct.Struct('<II')
_IR = struct.Struct('<IfQQ')
_LENGTH_MASK = (1 << 29) - 1


class RecordIOError(InputError):
    """A malformed or truncated RecordIO file, or a bad record: ``where`` names the file and
    the record index (``train.rec record 17``)."""


@dataclass(frozen=True)
class IRHeader:
    """Image-record header. ``label`` is a float, or a tuple of floats when ``flag > 0``."""

    flag: int
    label: Union[float, Tuple[float, ...]]
    id: int = 0
    id2: int = 0


def pack_record(header: IRHeader, payload: bytes) -> bytes:
    """Serialise an image record: IR header, optional label array, payload."""
    label = header.label
    if isinstance(label, (int, float, np.floating, np.integer)):
        if header.flag != 0:
            raise ValueError(f'a scalar label needs flag=0, got flag={header.flag}')
        return _IR.pack(0, float(label), header.id, header.id2) + bytes(payload)
    labels = np.asarray(label, dtype='<f4').ravel()
    return _IR.pack(labels.size, 0.0, header.id, header.id2) + labels.tobytes() + bytes(payload)


def unpack_record(record: bytes, where: str = 'record') -> Tuple[IRHeader, bytes]:
    """Split a payload into its IR header and the rest (``where`` names it in errors)."""
    if len(record) < _IR.size:
        raise RecordIOError(f'truncated record: {len(record)} bytes is shorter than the {_IR.size}-byte IR header',
                            where, 'an IR header (flag, label, id, id2) before the image')
    flag, label, id1, id2 = _IR.unpack_from(record, 0)
    offset = _IR.size
    if flag > 0:
        end = offset + 4 * flag
        if end > len(record):
            raise RecordIOError(f'truncated record: the IR header announces {flag} labels ({4 * flag} bytes) but '
                                f'only {len(record) - offset} bytes follow the header', where,
                                'the announced float32 labels after the header')
        labels = tuple(float(v) for v in np.frombuffer(record, dtype='<f4', count=flag, offset=offset))
        return IRHeader(flag, labels, id1, id2), record[end:]
    return IRHeader(0, float(label), id1, id2), record[offset:]


def encode_image(image: np.ndarray, ext: str = '.jpg', quality: int = 95) -> bytes:
    """Encode an HxWx3 uint8 BGR image (OpenCV's order, as MXNet's ``pack_img``)."""
    import cv2
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext.lower() in ('.jpg', '.jpeg') else []
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise ValueError(f'OpenCV could not encode a {image.shape} image as {ext}')
    return buf.tobytes()


def decode_image(payload: bytes, where: str = 'record') -> np.ndarray:
    """Decode an encoded image into an HxWx3 uint8 **RGB** array."""
    import cv2
    img = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise RecordIOError(f'the payload ({len(payload)} bytes) is not a decodable image', where,
                            'an encoded image (JPEG for MS1MV2) after the IR header')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _split_on_magic(data: bytes) -> List[bytes]:
    """Cut ``data`` at every 4-byte aligned occurrence of the magic word (dropping it)."""
    parts, start = [], 0
    aligned_end = len(data) - len(data) % 4
    pos = data.find(_MAGIC_BYTES, 0)
    while pos != -1 and pos + 4 <= aligned_end:
        if pos % 4 == 0 and pos >= start:
            parts.append(data[start:pos])
            start = pos + 4
            pos = data.find(_MAGIC_BYTES, start)
        else:
            pos = data.find(_MAGIC_BYTES, pos + 1)
    parts.append(data[start:])
    return parts


class RecordIOWriter:
    """Writes ``.rec`` records and, when ``idx_path`` is given, the ``.idx`` index.

    Use as a context manager; ``write(index, payload)`` returns the byte offset.
    """

    def __init__(self, rec_path: str, idx_path: Optional[str] = None):
        self.rec_path = rec_path
        self.idx_path = idx_path
        self._rec = open(rec_path, 'wb')
        self._idx = open(idx_path, 'w') if idx_path else None

    def write(self, index: int, payload: bytes) -> int:
        offset = self._rec.tell()
        parts = _split_on_magic(bytes(payload))
        for i, part in enumerate(parts):
            if len(part) > _LENGTH_MASK:
                raise ValueError(f'record {index}: a part of {len(part)} bytes exceeds the 2^29-1 byte limit')
            if len(parts) == 1:
                cflag = 0
            else:
                cflag = 1 if i == 0 else (3 if i == len(parts) - 1 else 2)
            self._rec.write(_HEAD.pack(RECORDIO_MAGIC, (cflag << 29) | len(part)))
            self._rec.write(part)
            self._rec.write(b'\0' * (-len(part) % 4))
        if self._idx is not None:
            self._idx.write(f'{int(index)}\t{offset}\n')
        return offset

    def close(self) -> None:
        self._rec.close()
        if self._idx is not None:
            self._idx.close()

    def __enter__(self) -> 'RecordIOWriter':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class IndexedRecordIO:
    """Random access to a ``.rec`` file through its ``.idx`` index.

    Args:
        rec_path (str): The ``.rec`` file.
        idx_path (str, optional): Its index (default: ``.rec`` replaced by ``.idx``).

    ``read(index)`` returns the raw payload, ``read_record(index)`` its IR header and
    image bytes. Errors name the file, the record index and what was wrong.
    """

    def __init__(self, rec_path: str, idx_path: Optional[str] = None):
        idx_path = idx_path or os.path.splitext(rec_path)[0] + '.idx'
        for path, what in ((rec_path, 'record file'), (idx_path, 'index file')):
            if not os.path.isfile(path):
                raise FileNotFoundError(f'RecordIO {what} not found: {path}')
        self.rec_path = rec_path
        self.idx_path = idx_path
        self.size = os.path.getsize(rec_path)
        self.offsets: Dict[int, int] = {}
        with open(idx_path) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                fields = line.split('\t')
                try:
                    key, offset = int(fields[0]), int(fields[1])
                except (ValueError, IndexError):
                    raise RecordIOError(f'malformed index line {line.rstrip()!r}',
                                        f'{idx_path}:{line_no}', 'expected "index<TAB>offset" per line')
                if not 0 <= offset < self.size:
                    raise RecordIOError(f'offset {offset} of record {key} lies outside {rec_path} ({self.size} bytes)',
                                        f'{idx_path}:{line_no}', 'the .idx written with this .rec')
                self.offsets[key] = offset
        self.keys = sorted(self.offsets)
        self._file = None

    def __len__(self) -> int:
        return len(self.offsets)

    def _handle(self):
        # Opened lazily, per process: DataLoader workers must not share a file position.
        if self._file is None or self._pid != os.getpid():
            self._file = open(self.rec_path, 'rb')
            self._pid = os.getpid()
        return self._file

    def __getstate__(self):
        state = dict(self.__dict__)
        state['_file'] = None
        return state

    def read(self, index: int) -> bytes:
        if index not in self.offsets:
            raise RecordIOError(f'record {index} is not in the index ({len(self)} records)', self.idx_path,
                                'an index listed in the .idx file')
        f = self._handle()
        f.seek(self.offsets[index])
        parts = []
        where = f'{self.rec_path} record {index}'
        while True:
            pos = f.tell()
            cflag, data = _read_part(f, where)
            expected = (0, 1) if not parts else (2, 3)
            if cflag not in expected:
                raise RecordIOError(f'part flag {cflag} at byte {pos}', where, f'one of {expected} (a damaged record)')
            parts.append(data)
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts)

    def read_record(self, index: int) -> Tuple[IRHeader, bytes]:
        return unpack_record(self.read(index), f'{self.rec_path} record {index}')

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_property(path: str) -> Tuple[int, int, int]:
    """``property``: ``num_classes,height,width``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'property file not found: {path}')
    text = open(path).read().strip()
    try:
        values = tuple(int(v) for v in text.split(','))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise InputError(f'property {text!r} is not three positive integers', path, '"num_classes,height,width"')
    return values


def write_property(path: str, num_classes: int, height: int, width: int) -> None:
    from backbones.io_utils import atomic_write_text
    atomic_write_text(path, f'{num_classes},{height},{width}\n')


class FaceRecordSet:
    """An insightface training set: ``train.rec``, ``train.idx``, ``property``.

    ``samples`` lists the image record indices; ``label(i)`` and ``image(i)`` read one.
    Without the record-0 header every record is taken as an image.
    """

    def __init__(self, root: str, name: str = 'train'):
        self.root = root
        self.records = IndexedRecordIO(os.path.join(root, f'{name}.rec'), os.path.join(root, f'{name}.idx'))
        prop = os.path.join(root, 'property')
        self.num_classes, self.height, self.width = read_property(prop) if os.path.isfile(prop) else (0, 0, 0)
        self.identity_ranges: List[Tuple[int, int]] = []
        header, _ = self.records.read_record(0) if 0 in self.records.offsets else (IRHeader(0, 0.0), b'')
        if header.flag > 0:
            if len(header.label) < 2:
                raise RecordIOError(f'the header record has labels {header.label}', f'{self.records.rec_path} record 0',
                                    '2 labels (first identity record, end)')
            first_identity, end = header.label[0], header.label[1]
            if not (math.isfinite(first_identity) and math.isfinite(end) and 1 <= first_identity <= end):
                raise RecordIOError(f'the header record has labels {header.label}', f'{self.records.rec_path} record 0',
                                    '(first identity record, end) with 1 <= first <= end')
            first_identity, end = int(first_identity), int(end)
            self.samples = [k for k in range(1, first_identity)]
            missing = [k for k in self.samples if k not in self.records.offsets]
            if missing:
                raise RecordIOError(f'record 0 announces images 1..{first_identity - 1} but {len(missing)} are missing '
                                    f'from the index (first: record {missing[0]})', self.records.idx_path,
                                    'an index entry for every image record')
            for k in range(first_identity, end):
                if k in self.records.offsets:
                    ident, _ = self.records.read_record(k)
                    if ident.flag >= 2:
                        self.identity_ranges.append((int(ident.label[0]), int(ident.label[1])))
        else:
            self.samples = list(self.records.keys)
        if not self.samples:
            raise RecordIOError('no image records', self.records.rec_path, 'at least one image record')

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, i: int) -> Tuple[np.ndarray, int]:
        """Decoded RGB image and integer label of the i-th sample; a label that is not an
        identity of the set (``0..num_classes-1`` by ``property``) is an error naming the record."""
        key = self.samples[i]
        where = f'{self.records.rec_path} record {key}'
        header, payload = self.records.read_record(key)
        label = header.label[0] if isinstance(header.label, tuple) else header.label
        if (not math.isfinite(label) or label != int(label) or label < 0
                or (self.num_classes and label >= self.num_classes)):
            expected = (f'integer labels 0..{self.num_classes - 1} (property: {self.num_classes} identities)'
                        if self.num_classes else 'integer labels >= 0')
            raise RecordIOError(f'label out of range: {label}', where, expected)
        return decode_image(payload, where), int(label)


def write_face_recordset(root: str, images: Sequence[np.ndarray], labels: Sequence[int], name: str = 'train',
                         ext: str = '.jpg', quality: int = 95, progress: bool = False) -> None:
    """Write an insightface-style set (header record, images sorted by label, identity
    records, ``property``) from RGB uint8 images."""
    import cv2
    from tqdm import tqdm
    if len(images) != len(labels) or not len(images):
        raise ValueError(f'need as many labels as images (and at least one), got {len(images)} and {len(labels)}')
    labels = [int(v) for v in labels]
    if min(labels) < 0:
        raise ValueError(f'labels must be >= 0, got {min(labels)}')
    num_classes = max(labels) + 1
    order = sorted(range(len(images)), key=lambda i: labels[i])
    os.makedirs(root, exist_ok=True)
    rec_path, idx_path = os.path.join(root, f'{name}.rec'), os.path.join(root, f'{name}.idx')
    tmp_rec, tmp_idx = rec_path + '.tmp', idx_path + '.tmp'
    ranges: Dict[int, List[int]] = {}
    n = len(images)
    with RecordIOWriter(tmp_rec, tmp_idx) as writer:
        writer.write(0, pack_record(IRHeader(2, (float(n + 1), float(n + 1 + num_classes))), b''))
        for key, i in enumerate(tqdm(order, desc='writing records', disable=not progress), start=1):
            img = np.asarray(images[i])
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f'image {i}: expected HxWx3 uint8 RGB, got {img.shape} {img.dtype}')
            payload = encode_image(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), ext, quality)
            writer.write(key, pack_record(IRHeader(0, float(labels[i]), key, 0), payload))
            ranges.setdefault(labels[i], [key, key + 1])[1] = key + 1
        for c in range(num_classes):
            start, end = ranges.get(c, (0, 0))
            writer.write(n + 1 + c, pack_record(IRHeader(2, (float(start), float(end))), b''))
    os.replace(tmp_rec, rec_path)
    os.replace(tmp_idx, idx_path)
    h, w = np.asarray(images[0]).shape[:2]
    write_property(os.path.join(root, 'property'), num_classes, h, w)


def folder_to_recordset(folder: str, root: str, name: str = 'train', progress: bool = True) -> int:
    """Convert an image folder, one sub-folder per identity (``folder/<identity>/*.jpg``,
    aligned faces), into an insightface-style set under ``root``. Identities are numbered
    in sorted folder order; returns how many there are."""
    import cv2
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'image folder not found: {folder}')
    identities = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    images, labels = [], []
    for label, ident in enumerate(identities):
        for fname in sorted(os.listdir(os.path.join(folder, ident))):
            if os.path.splitext(fname)[1].lower() not in ('.jpg', '.jpeg', '.png', '.bmp'):
                continue
            path = os.path.join(folder, ident, fname)
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f'cannot read image {path}')
            images.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            labels.append(label)
    if not images:
        raise ValueError(f'{folder}: no images in identity sub-folders (expected {folder}/<identity>/*.jpg)')
    write_face_recordset(root, images, labels, name=name, progress=progress)
    return len(identities)


def _read_part(f, where: str) -> Tuple[int, bytes]:
    """One physical part at the file position: its continuation flag and payload (the file
    is left at the next 4-byte-aligned part)."""
    pos = f.tell()
    head = f.read(_HEAD.size)
    if len(head) < _HEAD.size:
        raise RecordIOError(f'truncated record: the file ends at byte {pos}, before the record header', where,
                            'a complete .rec file')
    magic, lrecord = _HEAD.unpack(head)
    if magic != RECORDIO_MAGIC:
        raise RecordIOError(f'bad magic 0x{magic:08x} at byte {pos}', where,
                            f'0x{RECORDIO_MAGIC:08x} at the start of every record (a damaged file or a stale .idx)')
    cflag, length = lrecord >> 29, lrecord & _LENGTH_MASK
    data = f.read(length)
    if len(data) < length:
        raise RecordIOError(f'truncated record: it announces {length} bytes at byte {pos} but only {len(data)} '
                            f'remain', where, 'a complete .rec file')
    f.seek(-length % 4, os.SEEK_CUR)
    return cflag, data


def iter_records(rec_path: str) -> Iterator[bytes]:
    """Sequential read of every record of a ``.rec`` file (no index needed)."""
    size = os.path.getsize(rec_path)
    with open(rec_path, 'rb') as f:
        parts: List[bytes] = []
        count = 0
        while f.tell() < size:
            cflag, data = _read_part(f, f'{rec_path} record {count}')
            parts.append(data)
            if cflag in (0, 3):
                yield _MAGIC_BYTES.join(parts)
                parts = []
                count += 1
        if parts:
            raise RecordIOError('truncated record: the file ends inside a multi-part record',
                                f'{rec_path} record {count}', 'a complete .rec file')
