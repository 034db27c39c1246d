"""insightface RecordIO reading without mxnet, against a small writer written here."""
from __future__ import annotations

import io
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from arcbench.data.recordio import MAGIC, RecordReader, is_recordio_folder
from arcbench.errors import ArcbenchError

_MAGIC_BYTES = struct.pack("<I", MAGIC)


def _frame(cflag: int, chunk: bytes, pad: bool) -> bytes:
    out = _MAGIC_BYTES + struct.pack("<I", (cflag << 29) | len(chunk)) + chunk
    if pad:
        out += b"\0" * (-len(chunk) % 4)
    return out


def encode_record(payload: bytes) -> bytes:
    """dmlc-core framing: split where the magic word sits at an aligned offset."""
    out, start = b"", 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i:i + 4] == _MAGIC_BYTES:
            out += _frame(1 if start == 0 else 2, payload[start:i], pad=False)
            start = i + 4
    return out + _frame(3 if start else 0, payload[start:], pad=True)


def pack(label, img: bytes = b"", labels=None, id1=0, id2=0) -> bytes:
    if labels is not None:
        arr = np.asarray(labels, dtype="<f4")
        return struct.pack("<IfQQ", len(arr), float(arr[0]), id1, id2) + arr.tobytes() + img
    return struct.pack("<IfQQ", 0, float(label), id1, id2) + img


def write_rec(folder, records, prop=None):
    """records: [(key, payload)] in file order -> train.rec, train.idx (+ property)."""
    folder.mkdir(parents=True, exist_ok=True)
    rec, idx = b"", []
    for key, payload in records:
        idx.append(f"{key}\t{len(rec)}\n")
        rec += encode_record(payload)
    (folder / "train.rec").write_bytes(rec)
    (folder / "train.idx").write_text("".join(idx))
    if prop is not None:
        (folder / "property").write_text(prop)
    return folder


def jpeg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "JPEG")
    return buf.getvalue()


def test_meta_record_layout(tmp_path):
    imgs = {1: (0, b"img-one"), 2: (0, b"img-two!"), 3: (1, b"three"), 4: (2, b"4444")}
    records = [(0, pack(0, labels=[5, 8]))]  # images are keys 1..4, identity records 5..7
    records += [(k, pack(lab, data)) for k, (lab, data) in imgs.items()]
    records += [(5, pack(0, labels=[1, 3])), (6, pack(0, labels=[3, 4])), (7, pack(0, labels=[4, 5]))]
    folder = write_rec(tmp_path / "ms1m", records)
    assert is_recordio_folder(folder)
    r = RecordReader(folder)
    assert r.keys == [1, 2, 3, 4] and len(r) == 4
    assert r.meta == (5, 8)
    assert r.num_classes == 3  # from the meta record's identity range
    for k, (lab, data) in imgs.items():
        assert r.read(k) == (lab, data)
        assert r.label(k) == lab
    (folder / "property").write_text("10,112,112\n")
    assert RecordReader(folder).num_classes == 10  # the property file wins


def test_no_meta_record_all_keys_are_images(tmp_path):
    records = [(0, pack(3, b"zero")), (1, pack(0, b"one")), (7, pack(5, b"seven", labels=[5, 99]))]
    r = RecordReader(write_rec(tmp_path / "r", records))
    assert r.meta is None and r.keys == [0, 1, 7]
    assert r.read(0) == (3, b"zero")
    assert r.read(7) == (5, b"seven")  # label array: the first label counts
    assert r.num_classes == 6  # max label + 1


def test_magic_inside_payload_is_split_and_rejoined(tmp_path):
    data = b"abcd" + _MAGIC_BYTES + b"efgh" + _MAGIC_BYTES + _MAGIC_BYTES + b"tail!"
    payload = pack(4, data)
    assert encode_record(payload).count(_MAGIC_BYTES) == 4  # really split into 4 chunks
    r = RecordReader(write_rec(tmp_path / "r", [(0, pack(1, b"x")), (1, payload), (2, pack(2, b"y"))]))
    assert r.read(1) == (4, data)
    assert r.read(2) == (2, b"y")


def test_pickled_reader_works(tmp_path):
    r = RecordReader(write_rec(tmp_path / "r", [(0, pack(1, jpeg("red")))]))
    r.read(0)
    clone = pickle.loads(pickle.dumps(r))
    label, data = clone.read(0)
    assert label == 1 and Image.open(io.BytesIO(data)).size == (8, 8)


def test_corrupt_framing_names_file_and_record(tmp_path):
    folder = write_rec(tmp_path / "r", [(0, pack(1, b"a" * 10)), (1, pack(2, b"b" * 10)), (2, pack(3, b"c" * 40))])
    good_idx = (folder / "train.idx").read_text()
    assert good_idx.split() == ["0", "0", "1", "44", "2", "88"]  # 8-byte frame + 24-byte header + padded image
    # record 1 points into the middle of record 0: bad magic
    (folder / "train.idx").write_text("0\t0\n1\t4\n2\t88\n")
    r = RecordReader(folder)
    with pytest.raises(ArcbenchError) as info:
        r.read(1)
    assert "record 1" in str(info.value) and "bad magic" in str(info.value)
    assert info.value.path == str(folder / "train.rec")
    # truncate the last record
    rec = (folder / "train.rec").read_bytes()
    (folder / "train.idx").write_text(good_idx)
    (folder / "train.rec").write_bytes(rec[:-20])
    with pytest.raises(ArcbenchError, match="record 2: truncated"):
        RecordReader(folder).read(2)
    assert RecordReader(folder).read(0) == (1, b"a" * 10)


def test_missing_and_bad_index(tmp_path):
    folder = write_rec(tmp_path / "r", [(0, pack(1, b"a"))])
    (folder / "train.idx").write_text("0\tnot-a-number\n")
    with pytest.raises(ArcbenchError) as info:
        RecordReader(folder)
    assert info.value.line == 1 and info.value.path.endswith("train.idx")
    (folder / "train.idx").unlink()
    with pytest.raises(ArcbenchError, match="no train.idx"):
        RecordReader(folder)
    assert not is_recordio_folder(folder)


def test_train_set_reads_record_images(tmp_path):
    from arcbench.data.train_sets import open_train_set

    records = [(0, pack(0, labels=[3, 5])), (1, pack(0, jpeg("red"))), (2, pack(1, b"not a jpeg")),
               (3, pack(0, labels=[1, 2])), (4, pack(0, labels=[2, 3]))]
    folder = write_rec(tmp_path / "faces_rec", records)
    ds = open_train_set(str(folder), augment=False)
    assert len(ds) == 2 and ds.num_classes == 2 and ds.name == "faces_rec"
    img, label, bad = ds[0]
    assert tuple(img.shape) == (112, 112, 3) and img.dtype == torch.uint8 and label == 0 and bad == ""
    assert img[56, 56, 0] > 242 and img[56, 56, 2] < 13  # red, letterboxed to fill the canvas (HWC uint8)
    img, label, bad = ds[1]
    assert label == -1 and "train.rec#2" in bad and int(img.sum()) == 0
