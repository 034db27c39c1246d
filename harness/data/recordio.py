"""Read insightface's MXNet RecordIO training sets (``train.rec``/``train.idx``) without mxnet.

Framing (dmlc-core ``recordio``): each chunk is ``uint32 magic 0xced7230a``,
``uint32 lrecord`` (upper 3 bits ``cflag``, lower 29 bits length), the
payload, then zero padding to a multiple of 4.  ``cflag`` 0 is a whole
record; 1/2/3 are the first/middle/last chunk of a record that the writer
split where the payload contained the magic word at an aligned offset, and
the reader puts the magic word back between chunks.  (This is rare but real
on large sets, so it is handled.)

``train.idx`` holds ``<key>\\t<byte offset>`` lines.  Each payload starts with
``IRHeader`` = ``<IfQQ`` (flag, label, id, id2), 24 bytes; when ``flag > 0``
it is followed by ``flag`` float32 labels and the header's label is the
first of them; the image bytes come after.

Which keys are images, as insightface's ``MXFaceDataset`` decides: if record
0 exists and its ``flag > 0`` it is a meta record whose labels are
``(first_identity_key, end_identity_key)``; images are keys
``1 .. first_identity_key-1`` and the identity records that follow are not
images.  Otherwise (no key 0, or ``flag == 0``) every key is an image.

``num_classes``: the ``property`` file (``num_classes,h,w``) if present, else
``end - first`` from the meta record, else the largest image label + 1
(found by reading every header once, lazily).
"""
from __future__ import annotations

import os
import struct
import threading
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import ArcbenchError

MAGIC = 0xCED7230A
_FRAME = struct.Struct("<II")
IR_HEADER = struct.Struct("<IfQQ")  # flag, label, id, id2
_LEN_MASK = (1 << 29) - 1


def is_recordio_folder(folder) -> bool:
    p = Path(folder)
    return (p / "train.rec").is_file() and (p / "train.idx").is_file()


def unpack_header(payload: bytes):
    """Split a record payload into (flag, labels array, id, id2, image bytes)."""
    if len(payload) < IR_HEADER.size:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than the 24-byte header")
    flag, label, id1, id2 = IR_HEADER.unpack_from(payload)
    off = IR_HEADER.size
    if flag > 0:
        need = off + 4 * flag
        if len(payload) < need:
            raise ValueError(f"header announces {flag} labels but the payload is {len(payload)} bytes")
        labels = np.frombuffer(payload, dtype="<f4", count=flag, offset=off)
        off = need
    else:
        labels = np.array([label], dtype=np.float32)
    return flag, labels, id1, id2, payload[off:]


class RecordReader:
    """Random access to one insightface RecordIO folder.

    Safe in DataLoader workers: the file descriptor is opened lazily and
    re-opened after a fork (tracked by pid), and reads use ``os.pread``
    (no shared file position), so threads can share one reader too.
    """

    def __init__(self, folder):
        self.folder = os.path.abspath(os.fspath(folder))
        self.rec_path = os.path.join(self.folder, "train.rec")
        self.idx_path = os.path.join(self.folder, "train.idx")
        if not os.path.isfile(self.rec_path):
            raise ArcbenchError("RecordIO folder has no train.rec", self.folder)
        if not os.path.isfile(self.idx_path):
            raise ArcbenchError("RecordIO folder has no train.idx (the index is needed for random access)",
                                self.folder)
        self._offsets: Dict[int, int] = self._read_idx()
        self._fd: Optional[int] = None
        self._pid: Optional[int] = None
        self._lock = threading.Lock()
        self._rec_size = os.path.getsize(self.rec_path)
        self.meta: Optional[Tuple[int, int]] = None
        keys = list(self._offsets)
        if 0 in self._offsets:
            try:
                flag, labels, _, _, _ = unpack_header(self.read_payload(0))
            except ValueError as exc:
                raise self._bad(0, str(exc)) from None
            if flag > 0:
                first = self._whole(labels[0], 0, "meta record's first identity key")
                end = self._whole(labels[1], 0, "meta record's end key") if flag > 1 else first
                if first - 1 > len(self._offsets):
                    raise ArcbenchError(f"meta record says images are keys 1..{first - 1} but train.idx has "
                                        f"only {len(self._offsets)} entries; {first - 1 - len(self._offsets)} "
                                        "or more of them are missing", self.idx_path)
                self.meta = (first, end)
                keys = [k for k in range(1, first) if k in self._offsets]
                missing = (first - 1) - len(keys)
                if missing:
                    raise ArcbenchError(f"meta record says images are keys 1..{first - 1} but "
                                        f"{missing} of them are missing from train.idx", self.idx_path)
        self.keys: List[int] = keys
        self._num_classes: Optional[int] = self._read_property()
        if self._num_classes is None and self.meta is not None and self.meta[1] > self.meta[0]:
            self._num_classes = self.meta[1] - self.meta[0]

    # -- index and metadata -------------------------------------------------
    def _read_idx(self) -> Dict[int, int]:
        offsets: Dict[int, int] = {}
        try:
            with open(self.idx_path, "r", encoding="utf-8", errors="replace") as fh:
                lines = fh.read().split("\n")
        except OSError as exc:
            raise ArcbenchError(f"cannot read index: {exc.strerror or exc}", self.idx_path) from None
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                key, off = int(parts[0]), int(parts[1])
                if not 0 <= off < 1 << 62:
                    raise ValueError
            except (ValueError, IndexError):
                raise ArcbenchError(f"expected '<key>\\t<offset>', got {line.strip()[:60]!r}",
                                    self.idx_path, lineno) from None
            offsets[key] = off
        if not offsets:
            raise ArcbenchError("index has no entries", self.idx_path)
        return offsets

    def _read_property(self) -> Optional[int]:
        prop = os.path.join(self.folder, "property")
        if not os.path.isfile(prop):
            return None
        try:
            with open(prop, "r", encoding="utf-8", errors="replace") as fh:
                text = fh.read().strip()
        except OSError as exc:
            raise ArcbenchError(f"cannot read: {exc.strerror or exc}", prop) from None
        try:
            n = int(text.split(",")[0])
            if n <= 0:
                raise ValueError
        except (ValueError, IndexError):
            raise ArcbenchError(f"expected 'num_classes,height,width', got {text[:60]!r}", prop, 1) from None
        return n

    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            self._num_classes = max(self.label(k) for k in self.keys) + 1
        return self._num_classes

    def __len__(self) -> int:
        return len(self.keys)

    # -- reading ---------------------------------------------------------------
    def _fileno(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._pid != pid:
            self._fd = os.open(self.rec_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._pid = pid
        return self._fd

    def _pread(self, n: int, off: int) -> bytes:
        fd = self._fileno()
        if hasattr(os, "pread"):
            return os.pread(fd, n, off)
        with self._lock:  # Windows: no pread
            os.lseek(fd, off, os.SEEK_SET)
            return os.read(fd, n)

    def _bad(self, key: int, what: str) -> ArcbenchError:
        return ArcbenchError(f"record {key}: {what}", self.rec_path)

    def _whole(self, value, key: int, what: str = "label") -> int:
        """A float32 label or key as an int, refusing NaN, infinities, negatives and absurd sizes."""
        v = float(value)
        if not (v == v and 0 <= v < 2 ** 31):
            raise self._bad(key, f"{what} {v} is not a usable non-negative integer")
        return int(v)

    def read_payload(self, key: int) -> bytes:
        """The record's payload (header + image), multi-chunk records joined."""
        try:
            off = self._offsets[key]
        except KeyError:
            raise ArcbenchError(f"record {key} is not in the index", self.idx_path) from None
        parts = []
        while True:
            head = self._pread(_FRAME.size, off)
            if len(head) < _FRAME.size:
                raise self._bad(key, f"truncated at byte {off} (file is {self._rec_size} bytes)")
            magic, lrec = _FRAME.unpack(head)
            if magic != MAGIC:
                raise self._bad(key, f"bad magic 0x{magic:08x} at byte {off} (not a RecordIO record; "
                                      f"wrong offset in train.idx?)")
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            if off + _FRAME.size + length > self._rec_size:  # do not even allocate what a bad header claims
                present = max(0, self._rec_size - off - _FRAME.size)
                raise self._bad(key, f"truncated: record announces {length} bytes, "
                                     f"{present} present at byte {off + _FRAME.size}")
            body = self._pread(length, off + _FRAME.size) if length else b""
            if len(body) < length:
                raise self._bad(key, f"truncated: record announces {length} bytes, "
                                     f"{len(body)} present at byte {off + _FRAME.size}")
            parts.append(body)
            off += _FRAME.size + ((length + 3) & ~3)
            if cflag in (0, 3):
                if cflag == 3 and len(parts) == 1:
                    raise self._bad(key, "continuation chunk without a first chunk")
                break
            if cflag not in (1, 2) or (cflag == 1 and len(parts) > 1) or (cflag == 2 and len(parts) == 1):
                raise self._bad(key, f"bad chunk flag {cflag}")
        if len(parts) == 1:
            return parts[0]
        return struct.pack("<I", MAGIC).join(parts)

    def read(self, key: int) -> Tuple[int, bytes]:
        """``(label, encoded image bytes)`` for an image key."""
        payload = self.read_payload(key)
        try:
            _, labels, _, _, img = unpack_header(payload)
        except ValueError as exc:
            raise self._bad(key, str(exc)) from None
        return self._whole(labels[0], key), img

    def label(self, key: int) -> int:
        """Just the label (reads only the header; used for ``num_classes``)."""
        off = self._offsets[key]
        head = self._pread(_FRAME.size + IR_HEADER.size + 4, off)
        if len(head) < _FRAME.size + IR_HEADER.size:
            raise self._bad(key, "truncated header")
        magic, _ = _FRAME.unpack_from(head)
        if magic != MAGIC:
            raise self._bad(key, f"bad magic 0x{magic:08x} at byte {off}")
        flag, label, _, _ = IR_HEADER.unpack_from(head, _FRAME.size)
        if flag > 0 and len(head) >= _FRAME.size + IR_HEADER.size + 4:
            (label,) = struct.unpack_from("<f", head, _FRAME.size + IR_HEADER.size)
        return self._whole(label, key)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    # Picklable for spawn/forkserver DataLoader workers: no fd, no lock.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fd"] = None
        state["_pid"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
