"""insightface .bin verification sets: round trips, and refusing pickles that reach for code."""
from __future__ import annotations

import io
import os
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from arcbench.verification.binset import load_bin, read_bin, safe_loads
from arcbench.errors import ArcbenchError
from arcbench.verification.load import load_verification


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def py2_pickle(images, issame) -> bytes:
    """What Python 2's ``pickle.dump((bins, issame), f, 2)`` writes: str payloads as BINSTRING."""
    out = [b"\x80\x02", b"]", b"("]
    for img in images:
        out.append(b"U" + bytes([len(img)]) + img if len(img) < 256 else b"T" + struct.pack("<I", len(img)) + img)
    out += [b"e", b"]", b"("]
    out += [b"\x88" if s else b"\x89" for s in issame]
    out += [b"e", b"\x86", b"."]
    return b"".join(out)


@pytest.fixture
def images():
    return [jpeg(i) for i in range(8)]


@pytest.mark.parametrize("protocol", ["py2", 2, 4])
def test_round_trip(tmp_path, images, protocol):
    issame = [True, False, True, False]
    data = py2_pickle(images, issame) if protocol == "py2" else pickle.dumps((images, issame), protocol=protocol)
    path = tmp_path / "agedb_30.bin"
    path.write_bytes(data)
    got, flags = read_bin(path)
    assert got == images and flags.tolist() == issame
    vset = load_bin(path)
    assert vset.name == "agedb_30" and vset.source == str(path)
    assert vset.pairs.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert vset.folds.tolist() == [0, 1, 2, 3]        # fewer than 10 pairs: one fold each
    assert vset.image_label(3) == f"{path}: image 3"


def test_folds_dedup_and_name(tmp_path):
    a, b, c = jpeg(1), jpeg(2), jpeg(3)
    imgs = [a, b, a, c] * 10                      # 20 pairs, only 3 distinct images
    (tmp_path / "lfw.bin").write_bytes(pickle.dumps((imgs, [True, False] * 10)))
    vset = load_verification(val_bin=tmp_path / "lfw.bin")
    assert vset.name == "LFW" and len(vset) == 20 and vset.num_images == 3
    assert vset.images == [a, b, c]
    assert vset.pairs[:2].tolist() == [[0, 1], [0, 2]]
    assert np.bincount(vset.folds).tolist() == [2] * 10
    # bytearray images are accepted too, whichever protocol wrote them
    for protocol in (2, 4, 5):
        (tmp_path / "x.bin").write_bytes(pickle.dumps(([bytearray(a), bytearray(b)], [1]), protocol=protocol))
        assert read_bin(tmp_path / "x.bin")[0] == [a, b]


class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload, reached", [(_System, "system"), (_Eval, "builtins.eval")])
def test_refuses_code_and_runs_none_of_it(tmp_path, payload, reached):
    marker = tmp_path / "pwned"
    # The payload demonstrably works with the stock unpickler ...
    pickle.loads(pickle.dumps(payload(marker)))  # noqa: S301 - proving the payload is live
    assert marker.exists()
    marker.unlink()
    # ... and is refused by ours before it can run.
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([payload(marker), b"x"], [True])))
    with pytest.raises(ArcbenchError) as err:
        load_bin(path)
    assert str(err.value).startswith(f"{path}: refusing to load: the pickle references ")
    assert reached in str(err.value)
    assert not marker.exists()


def test_refuses_numpy_arrays_and_codecs_misuse(tmp_path):
    path = tmp_path / "np.bin"
    path.write_bytes(pickle.dumps(([np.zeros(4, np.uint8)] * 2, [True])))
    with pytest.raises(ArcbenchError, match="refusing to load: the pickle references numpy"):
        read_bin(path)
    # _codecs.encode is admitted only as the protocol-2 bytes constructor
    evil = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00zlib\x86R."
    with pytest.raises(ArcbenchError, match="refusing"):
        safe_loads(evil)
    # bytearray is admitted only from bytes: a size (a 1 GiB allocation here) is refused
    huge = b"\x80\x02c__builtin__\nbytearray\nJ\x00\x00\x00\x40\x85R."
    with pytest.raises(ArcbenchError, match=r"refusing.*bytearray\(int\)"):
        safe_loads(huge)


@pytest.mark.parametrize("obj, words", [
    ({"images": []}, "expected a pickled 2-tuple"),
    (([b"a", b"b"], [True], "extra"), "got tuple of length 3"),
    (([b"a", b"b", b"c"], [True]), "3 images for 1 pairs"),
    ((["a", "b"], [True]), "image 0 is str"),
    (([b"a", b""], [True]), "image 1 is empty"),
    (([b"a", b"b"], [2]), "issame[0] is 2"),
    (([b"a", b"b"], []), "no pairs"),
    ((b"ab", [True]), "expected (list of image bytes, list of bools)"),
])
def test_wrong_structures(tmp_path, obj, words):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(ArcbenchError) as err:
        read_bin(path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(ArcbenchError, match="not found"):
        read_bin(tmp_path / "missing.bin")
    (tmp_path / "junk.bin").write_bytes(b"this is not a pickle")
    with pytest.raises(ArcbenchError, match="not a readable pickle"):
        read_bin(tmp_path / "junk.bin")
    (tmp_path / "cut.bin").write_bytes(pickle.dumps(([b"a", b"b"], [True]))[:-5])
    with pytest.raises(ArcbenchError, match="not a readable pickle"):
        read_bin(tmp_path / "cut.bin")
