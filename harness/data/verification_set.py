"""The one in-memory shape of a verification set, whatever file it came from.

Whatever the source (an LFW folder plus a pairs file, or an insightface
``.bin``), evaluation sees unique images, index pairs into them, labels and
fold ids.  Keeping images unique means each is decoded and embedded once.
The readers (:mod:`~arcbench.data.pairs`, :mod:`~arcbench.data.binset`)
build it; :func:`arcbench.verification.load_verification` picks the reader.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Union

import numpy as np

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
