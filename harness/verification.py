"""One in-memory shape for every verification set, and the loader that picks the reader.

Whatever the source (an LFW folder plus a pairs file, or an insightface
``.bin``), evaluation sees unique images, index pairs into them, labels and
fold ids.  Keeping images unique means each is decoded and embedded once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Union

import numpy as np

from .errors import ArcbenchError

ImageSource = Union[str, bytes]


@dataclass
class VerificationSet:
    name: str
    images: List[ImageSource]          # unique file paths or encoded image bytes
    pairs: np.ndarray                  # (N, 2) int64 indices into images
    issame: np.ndarray                 # (N,) bool
    folds: np.ndarray                  # (N,) int64, 0..k-1
    pairs_skipped: int = 0
    lines: Optional[np.ndarray] = None  # pairs-file line of each pair (None for .bin)
    source: str = ""                   # the pairs file or .bin, for messages

    def __post_init__(self):
        self.pairs = np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)
        self.issame = np.asarray(self.issame, dtype=bool)
        self.folds = np.asarray(self.folds, dtype=np.int64)
        n = len(self.pairs)
        if len(self.issame) != n or len(self.folds) != n or (self.lines is not None and len(self.lines) != n):
            raise ValueError("pairs, issame, folds (and lines) must have one entry per pair")
        if n and (self.pairs.min() < 0 or self.pairs.max() >= len(self.images)):
            raise ValueError("pair index out of range of images")

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def num_images(self) -> int:
        return len(self.images)

    @property
    def n_folds(self) -> int:
        return int(len(np.unique(self.folds)))

    def image_label(self, i: int) -> str:
        """How to name image ``i`` in an error message."""
        src = self.images[i]
        if isinstance(src, (bytes, bytearray)):
            return f"{self.source or self.name}: image {i}"
        return os.fspath(src)


def default_name(path, root=None) -> str:
    """``LFW`` for anything LFW-looking, else the file's stem (``cfp_fp``, ``agedb_30``)."""
    candidates = [os.path.basename(os.path.normpath(os.fspath(p))) for p in (root, path) if p]
    if any("lfw" in c.lower() for c in candidates):
        return "LFW"
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    return stem or "verification"


def load_verification(val_data=None, val_pairs=None, val_bin=None, strict: bool = False,
                      name: Optional[str] = None) -> VerificationSet:
    """Load from ``val_data`` + ``val_pairs`` (LFW layout) or from ``val_bin``.

    ``val_data`` may itself be a ``.bin`` file when no pairs file is given, so the
    seed's ``--val_data_path lfw.bin`` works.
    """
    if val_bin is None and val_pairs is None and val_data is not None \
            and os.fspath(val_data).lower().endswith(".bin"):
        val_bin, val_data = val_data, None
    if val_bin is not None:
        if val_data is not None or val_pairs is not None:
            raise ArcbenchError("give either a .bin verification set or an image folder with a pairs file, "
                                "not both")
        from .data.binset import load_bin

        return load_bin(val_bin, name=name)
    if val_data is None and val_pairs is None:
        raise ArcbenchError("no verification set given: an image folder with a pairs file "
                            "(--val-data DIR --val-pairs FILE), or a .bin (--val-bin FILE)")
    if val_data is None:
        raise ArcbenchError("a pairs file needs the image folder it refers to (--val-data DIR)", val_pairs)
    if val_pairs is None:
        raise ArcbenchError("an image folder needs a pairs file (--val-pairs FILE, e.g. lfw_pair.txt)", val_data)
    from .data.pairs import load_pairs

    return load_pairs(val_data, val_pairs, strict=strict, name=name)
