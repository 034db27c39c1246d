"""The IJB-B / IJB-C 1:1 verification meta files, read and checked line by line.

An IJB download (as insightface redistributes it) holds, under ``<root>/meta/``:

* ``<prefix>_face_tid_mid.txt``: ``image template_id media_id`` per face;
* ``<prefix>_name_5pts_score.txt``: ``image x1 y1 ... x5 y5 score`` per face, in the same order
  (five landmarks in the loose crop: eyes, nose tip, mouth corners; the detector's score);
* ``<prefix>_template_pair_label.txt``: ``template1 template2 label`` per pair (1 = same person);

and the loose crops under ``<root>/loose_crop/``.  A malformed line is a one-line error naming
the file and line; a face whose crop, landmarks or score cannot be used is kept here and dealt
with (skipped and counted) where it is embedded.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ...errors import ArcbenchError

#: prefix of the meta files -> the set's name in reports and references
KNOWN_TARGETS = {"ijbc": "IJB-C", "ijbb": "IJB-B", "synthijb": "synthetic-IJB"}


@dataclass
class IJBMeta:
    name: str                  # IJB-C, IJB-B, or the prefix of another set in this format
    root: str
    image_dir: str             # where the loose crops are
    images: List[str]          # file name of each face, relative to image_dir
    templates: np.ndarray      # (F,) int64 template id of each face
    medias: np.ndarray         # (F,) int64 media id of each face
    landmarks: np.ndarray      # (F, 5, 2) float32, in the loose crop's pixels
    scores: np.ndarray         # (F,) float32 detector score
    pairs: np.ndarray          # (P, 2) int64 template ids
    labels: np.ndarray         # (P,) int8, 1 = same identity
    files: dict = field(default_factory=dict)  # which file each part came from (for messages)

    @property
    def num_faces(self) -> int:
        return len(self.images)


def _meta_dir(root: str) -> str:
    meta = os.path.join(root, "meta")
    return meta if os.path.isdir(meta) else root


def find_prefix(root: str) -> str:
    """The meta files' prefix (``ijbc`` for ``ijbc_face_tid_mid.txt``); one set per root."""
    if not os.path.isdir(root):
        raise ArcbenchError("IJB root is not a folder", root)
    found = sorted(glob.glob(os.path.join(_meta_dir(root), "*_face_tid_mid.txt")))
    if not found:
        raise ArcbenchError("no *_face_tid_mid.txt here or in meta/: not an IJB-B/C folder "
                            "(see docs/IJB.md for the layout)", root)
    if len(found) > 1:
        raise ArcbenchError(f"several IJB sets here ({', '.join(os.path.basename(f) for f in found)}); "
                            "give one set's folder", root)
    return os.path.basename(found[0])[: -len("_face_tid_mid.txt")]


def _rows(path: str, columns: int, what: str):
    """``(line number, fields)`` of every non-empty line, each checked to have ``columns`` fields."""
    try:
        with open(path, "r", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        raise ArcbenchError(f"missing IJB meta file ({what})", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArcbenchError(f"cannot read IJB meta file: {exc}", path) from None
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != columns:
            raise ArcbenchError(f"expected {columns} fields ({what}), found {len(parts)}", path, n)
        yield n, parts


def _ints(parts, path, n, what):
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ArcbenchError(f"{what} must be whole numbers, got {' '.join(parts)!r}", path, n) from None


def read_meta(root: str, image_dir: Optional[str] = None) -> IJBMeta:
    """Read and cross-check the three meta files of the IJB set under ``root``."""
    root = os.fspath(root)
    prefix = find_prefix(root)
    meta = _meta_dir(root)
    tid_path = os.path.join(meta, f"{prefix}_face_tid_mid.txt")
    lmk_path = os.path.join(meta, f"{prefix}_name_5pts_score.txt")
    pair_path = os.path.join(meta, f"{prefix}_template_pair_label.txt")

    images, templates, medias = [], [], []
    for n, parts in _rows(tid_path, 3, "image template_id media_id"):
        t, m = _ints(parts[1:], tid_path, n, "template and media ids")
        images.append(parts[0])
        templates.append(t)
        medias.append(m)
    if not images:
        raise ArcbenchError("no faces listed", tid_path)

    landmarks, scores = [], []
    for n, parts in _rows(lmk_path, 12, "image, 10 landmark coordinates, score"):
        k = len(landmarks)
        if k >= len(images):
            raise ArcbenchError(f"more faces than the {len(images)} of {os.path.basename(tid_path)}", lmk_path, n)
        if parts[0] != images[k]:
            raise ArcbenchError(f"face {k + 1} is {parts[0]!r} here but {images[k]!r} in "
                                f"{os.path.basename(tid_path)}: the two files must list the faces in one order",
                                lmk_path, n)
        try:
            values = [float(p) for p in parts[1:]]
        except ValueError:
            raise ArcbenchError(f"landmarks and score must be numbers, got {' '.join(parts[1:])!r}",
                                lmk_path, n) from None
        if not np.all(np.isfinite(values)):
            raise ArcbenchError("landmarks and score must be finite numbers", lmk_path, n)
        landmarks.append(values[:10])
        scores.append(values[10])
    if len(landmarks) != len(images):
        raise ArcbenchError(f"{len(landmarks)} faces, but {os.path.basename(tid_path)} lists {len(images)}",
                            lmk_path)

    pairs, labels = [], []
    for n, parts in _rows(pair_path, 3, "template1 template2 label"):
        t1, t2, label = _ints(parts, pair_path, n, "template ids and label")
        if label not in (0, 1):
            raise ArcbenchError(f"label must be 0 or 1, got {label}", pair_path, n)
        pairs.append((t1, t2))
        labels.append(label)
    if not pairs:
        raise ArcbenchError("no template pairs listed", pair_path)

    if image_dir is None:
        image_dir = os.path.join(root, "loose_crop")
        if not os.path.isdir(image_dir):
            image_dir = root
    return IJBMeta(name=KNOWN_TARGETS.get(prefix.lower(), prefix), root=root, image_dir=image_dir,
                   images=images, templates=np.asarray(templates, dtype=np.int64),
                   medias=np.asarray(medias, dtype=np.int64),
                   landmarks=np.asarray(landmarks, dtype=np.float32).reshape(-1, 5, 2),
                   scores=np.asarray(scores, dtype=np.float32),
                   pairs=np.asarray(pairs, dtype=np.int64).reshape(-1, 2),
                   labels=np.asarray(labels, dtype=np.int8),
                   files={"faces": tid_path, "landmarks": lmk_path, "pairs": pair_path})
