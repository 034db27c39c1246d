"""Bounded fuzzing of the parsers that read files from strangers.

Whatever the bytes, :func:`parse_pairs`, :func:`read_annotation`,
:class:`RecordReader` and the .bin reader either return data or raise
:class:`ArcbenchError` (a one-line message naming the file) -- never another
exception, and never hang or allocate what a header merely claims.
"""
from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcbench.verification.binset import read_bin, safe_loads
from arcbench.data.index import read_annotation
from arcbench.verification.pairs import parse_pairs
from arcbench.data.recordio import IR_HEADER, MAGIC, RecordReader
from arcbench.errors import ArcbenchError
from arcbench.run.rundir import sanitize_run_id

#: ARCBENCH_FUZZ_EXAMPLES=5000 for a longer hunt
FUZZ = settings(max_examples=int(os.environ.get("ARCBENCH_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

_DIR = {}


@pytest.fixture(scope="module", autouse=True)
def _fuzz_dir(tmp_path_factory):
    _DIR["path"] = tmp_path_factory.mktemp("fuzz")
    yield
    _DIR.clear()


def _tmp() -> Path:
    return _DIR["path"]

# text that looks like the real formats, with the awkward bits mixed in
_TOKENS = st.sampled_from(["10", "300", "1", "0", "-1", "3", "x", "1e3", "0x10", "١٢", "person_0001", "Aaron",
                           "..", ".", "a/b", "\\", "", " ", "\t", ";", ";;", "12;", "train/a.jpg",
                           "/abs/p.jpg", "\x00", "\u00e9", "\ufeff", "99999999999999999999999", "nan"])
_SEPS = st.sampled_from([" ", "\t", "  ", ";", "\r\n", "\n", "\r", ""])


@st.composite
def texty(draw):
    parts = draw(st.lists(st.tuples(_TOKENS, _SEPS), max_size=40))
    return "".join(a + b for a, b in parts)


def _bytes_or_text():
    return st.one_of(st.binary(max_size=400), texty().map(lambda s: s.encode("utf-8", "surrogatepass")))


def _write(name: str, data: bytes) -> Path:
    path = _tmp() / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ pairs files
def _valid_pairs_text(folds: int, n: int) -> str:
    lines = [f"{folds}\t{n}"]
    for f in range(folds):
        lines += [f"p{f}_{i}\t1\t2" for i in range(n)]
        lines += [f"p{f}_{i}\t1\tq{f}_{i}\t1" for i in range(n)]
    return "\n".join(lines) + "\n"


@FUZZ
@given(data=_bytes_or_text())
def test_fuzz_parse_pairs(data):
    path = _write("pairs.txt", data)
    try:
        parsed = parse_pairs(path)
    except ArcbenchError as exc:
        assert "\n" not in str(exc)
        return
    assert len(parsed) > 0 and all(p.idx1 >= 0 and p.idx2 >= 0 for p in parsed.pairs)
    assert all("/" not in p.name1 and p.name1 not in (".", "..") for p in parsed.pairs)


@FUZZ
@given(folds=st.integers(1, 4), n=st.integers(1, 4), edits=st.lists(
    st.tuples(st.integers(0, 10_000), st.sampled_from(["delete", "insert", "replace"]), st.binary(max_size=3)),
    min_size=1, max_size=6))
def test_fuzz_parse_pairs_mutated(folds, n, edits):
    data = bytearray(_valid_pairs_text(folds, n).encode())
    for pos, op, chunk in edits:
        pos %= len(data) + 1
        if op == "delete":
            del data[pos:pos + len(chunk) + 1]
        elif op == "insert":
            data[pos:pos] = chunk
        else:
            data[pos:pos + len(chunk)] = chunk
    path = _write("pairs_mut.txt", bytes(data))
    try:
        parsed = parse_pairs(path)
    except ArcbenchError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    # what survives the edits is a well-formed protocol: whole folds, safe names, in-range indices
    assert len(parsed) > 0 and all(p.idx1 >= 0 and p.idx2 >= 0 for p in parsed.pairs)
    assert all("/" not in name and name not in (".", "..")
               for p in parsed.pairs for name in (p.name1, p.name2))


# ------------------------------------------------------------------ annotation files
@FUZZ
@given(data=_bytes_or_text(), check=st.booleans())
def test_fuzz_read_annotation(data, check):
    path = _write("cls_train.txt", data)
    try:
        paths, labels = read_annotation(path, check_exists=check)
    except ArcbenchError as exc:
        assert "\n" not in str(exc)
        return
    assert len(paths) == len(labels) > 0
    assert all(isinstance(lab, int) and lab >= 0 for lab in labels)
    assert all(os.path.isabs(p) for p in paths)


# ------------------------------------------------------------------ RecordIO
def _record(label: float, image: bytes, flag: int = 0, extra=()) -> bytes:
    payload = IR_HEADER.pack(flag, label, 0, 0) + b"".join(struct.pack("<f", x) for x in extra) + image
    pad = (-len(payload)) % 4
    return struct.pack("<II", MAGIC, len(payload)) + payload + b"\0" * pad


def _valid_recordio(n: int, with_meta: bool):
    rec, idx, off = b"", [], 0
    records = []
    if with_meta:
        records.append((0, _record(0.0, b"", flag=2, extra=(1.0 + n, 1.0 + n + 3))))
    for k in range(1, n + 1):
        records.append((k, _record(float(k % 3), b"\xff\xd8fake-jpeg" * k)))
    for key, blob in records:
        idx.append(f"{key}\t{off}")
        rec += blob
        off += len(blob)
    return rec, ("\n".join(idx) + "\n").encode()


def _exercise_reader(folder: Path) -> None:
    try:
        reader = RecordReader(folder)
        try:
            _ = reader.num_classes
            for key in reader.keys[:20]:
                reader.read(key)
                reader.label(key)
            len(reader)
        finally:
            reader.close()
    except ArcbenchError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(rec=st.binary(max_size=300), idx=_bytes_or_text())
def test_fuzz_recordio_random_bytes(rec, idx):
    folder = _tmp() / "rec_random"
    folder.mkdir(exist_ok=True)
    (folder / "train.rec").write_bytes(rec)
    (folder / "train.idx").write_bytes(idx)
    _exercise_reader(folder)


@FUZZ
@given(n=st.integers(1, 5), with_meta=st.booleans(), target=st.sampled_from(["rec", "idx", "property"]),
       edits=st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=4)), min_size=1, max_size=4),
       truncate=st.one_of(st.none(), st.integers(0, 10_000)))
def test_fuzz_recordio_mutated(n, with_meta, target, edits, truncate):
    rec, idx = _valid_recordio(n, with_meta)
    prop = f"{n},112,112\n".encode()
    data = bytearray({"rec": rec, "idx": idx, "property": prop}[target])
    for pos, chunk in edits:
        pos %= max(1, len(data))
        data[pos:pos + len(chunk)] = chunk
    if truncate is not None:
        del data[truncate % (len(data) + 1):]
    files = {"rec": rec, "idx": idx, "property": prop}
    files[target] = bytes(data)
    folder = _tmp() / "rec_mut"
    folder.mkdir(exist_ok=True)
    (folder / "train.rec").write_bytes(files["rec"])
    (folder / "train.idx").write_bytes(files["idx"])
    (folder / "property").write_bytes(files["property"])
    _exercise_reader(folder)


def test_recordio_huge_claims_do_not_allocate_or_loop(tmp_path):
    """A header may claim 512 MiB or a meta range of 2**31 keys: refused, quickly."""
    (tmp_path / "train.rec").write_bytes(struct.pack("<II", MAGIC, (1 << 29) - 1) + b"\0" * 64)
    (tmp_path / "train.idx").write_text("1\t0\n")
    with pytest.raises(ArcbenchError, match="truncated"):
        RecordReader(tmp_path).read(1)
    meta = _record(0.0, b"", flag=2, extra=(2.0 ** 30, 2.0 ** 30 + 8))
    (tmp_path / "train.rec").write_bytes(meta)
    (tmp_path / "train.idx").write_text("0\t0\n")
    with pytest.raises(ArcbenchError, match="missing"):
        RecordReader(tmp_path)


def test_recordio_valid_sample_reads():
    rec, idx = _valid_recordio(4, with_meta=True)
    folder = _tmp() / "rec_ok"
    folder.mkdir(exist_ok=True)
    (folder / "train.rec").write_bytes(rec)
    (folder / "train.idx").write_bytes(idx)
    reader = RecordReader(folder)
    assert len(reader) == 4 and reader.num_classes == 3
    assert reader.read(2) == (2, b"\xff\xd8fake-jpeg" * 2)


# ------------------------------------------------------------------ .bin and run ids
@FUZZ
@given(data=st.one_of(st.binary(max_size=300),
                      st.builds(lambda imgs, flags, proto: pickle.dumps((imgs, flags), protocol=proto),
                                st.lists(st.one_of(st.binary(max_size=8), st.integers(), st.text(max_size=4)),
                                         max_size=6),
                                st.lists(st.one_of(st.booleans(), st.integers(-2, 2), st.none()), max_size=3),
                                st.integers(0, 5))))
def test_fuzz_read_bin(data):
    try:
        images, issame = read_bin(_write("fuzz.bin", data))
    except ArcbenchError as exc:
        assert "\n" not in str(exc)
        return
    assert len(images) == 2 * len(issame) and all(isinstance(i, bytes) and i for i in images)
    assert issame.dtype == np.bool_


#: set by :func:`_sentinel`; a pickle that reached it resolved (and ran) a global
_CALLED = []


def _sentinel(*args):
    _CALLED.append(args)
    return b"ran"


def _global_call(protocol_op: str, module: str, name: str) -> bytes:
    """Pickle opcodes that resolve ``module.name`` and call it with no arguments."""
    if protocol_op == "GLOBAL":
        ref = b"c" + module.encode() + b"\n" + name.encode() + b"\n"
    else:  # STACK_GLOBAL, protocol 4
        ref = b"".join(b"\x8c" + bytes([len(s)]) + s.encode() for s in (module, name)) + b"\x93"
    return ref + b")R"


def _plain(obj) -> bool:
    if isinstance(obj, (list, tuple)):
        return all(_plain(o) for o in obj)
    if isinstance(obj, dict):
        return all(_plain(k) and _plain(v) for k, v in obj.items())
    return obj is None or isinstance(obj, (bytes, bytearray, str, bool, int, float, complex))


@FUZZ
@given(head=st.binary(max_size=60), tail=st.binary(max_size=60), op=st.sampled_from(["GLOBAL", "STACK_GLOBAL"]),
       wrap=st.booleans())
def test_fuzz_safe_loads_never_resolves_code(head, tail, op, wrap):
    """A global reference anywhere in the bytes is refused, never resolved; what loads is plain data."""
    call = _global_call(op, __name__, "_sentinel")
    data = b"\x80\x04" + (b"]" + call + b"a." if wrap else head + call + tail)
    _CALLED.clear()
    try:
        obj = safe_loads(data)
    except ArcbenchError as exc:
        assert "\n" not in str(exc)
    else:
        assert _plain(obj), type(obj)
    assert not _CALLED, "safe_loads resolved and called a global"
    if wrap:  # a well-formed pickle whose only fault is the global: refused by name
        with pytest.raises(ArcbenchError, match="refusing to load.*_sentinel"):
            safe_loads(data)


@FUZZ
@given(run_id=st.text(max_size=300))
def test_fuzz_run_ids_stay_one_safe_path_component(run_id):
    try:
        rid = sanitize_run_id(run_id)
    except ArcbenchError:
        return
    out = os.path.abspath("/srv/runs")
    assert os.path.dirname(os.path.abspath(os.path.join(out, rid))) == out
    assert rid not in (".", "..") and not rid.startswith(".") and "/" not in rid and "\\" not in rid
    assert 0 < len(rid) <= 128 and "\x00" not in rid
