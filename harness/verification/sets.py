"""A verification set: its one in-memory shape, its name, and which reader opens it.

Whatever the source (an LFW folder plus a pairs file, or an insightface ``.bin``), evaluation sees
unique images, index pairs into them, labels and fold ids; keeping images unique means each is
decoded and embedded once.  The readers (:mod:`~arcbench.verification.pairs`,
:mod:`~arcbench.verification.binset`) build it; :mod:`~arcbench.verification.load` picks the reader.  The name
a run records for its sets is the same in every state of the run: a generated set is named by what
its ``synth.json`` records, else by its folder, so two different ``data synth`` sets never read as one.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import numpy as np

from ..data.synth import SYNTHETIC_FACES, synth_root

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


#: the embedded default set lives in the cache under a key name (``synthfaces-v3-<digest>``)
_CACHE_PREFIX = "synthfaces-v"
HELD_OUT = " (held-out identities)"


def generated_set_name(path: Optional[str]) -> Optional[str]:
    """The name of the generated set ``path`` belongs to (None when it is not one)."""
    root = synth_root(path)
    if root is None:
        return None
    try:
        with open(os.path.join(root, "synth.json"), encoding="utf-8") as fh:
            recorded = json.load(fh).get("name")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, str) and recorded.strip():
        return recorded.strip()
    folder = os.path.basename(os.path.normpath(os.path.abspath(root)))
    return SYNTHETIC_FACES if not folder or folder.startswith(_CACHE_PREFIX) else folder


def train_set_name(train_data: Optional[str]) -> Optional[str]:
    if not train_data:
        return None
    if train_data == "synthetic":
        return "synthetic"
    generated = generated_set_name(train_data)
    if generated:
        return generated
    path = os.path.abspath(train_data)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    return os.path.basename(os.path.normpath(folder)) or train_data


def eval_set_name(val_data: Optional[str] = None, val_pairs: Optional[str] = None,
                  val_bin: Optional[str] = None) -> Optional[str]:
    generated = generated_set_name(val_data) if val_data else None
    if generated:
        return generated + HELD_OUT
    if val_bin:
        return default_name(val_bin)
    if val_data and os.fspath(val_data).lower().endswith(".bin") and not val_pairs:
        return default_name(val_data)
    if val_data and val_pairs:
        return default_name(val_pairs, val_data)
    return None


def run_set_names(cfg) -> Tuple[Optional[str], Optional[str]]:
    """``(train_set, eval_set)`` of a run config, as the run records them from its first moment: the
    eval set is the headline one (LFW when the run has it, else the first .bin, else the folder set)."""
    train = train_set_name(cfg.data.train_data) if cfg.mode != "eval" else None
    bins = cfg.data.val_bin_files()
    val_data = cfg.data.val_data
    if val_data and not cfg.data.val_pairs and str(val_data).lower().endswith(".bin"):
        val_data, bins = None, [val_data] + bins
    names = [default_name(b) for b in bins]
    folder = eval_set_name(val_data, cfg.data.val_pairs) if val_data else None
    names += [folder] if folder else []
    return train, ("LFW" if "LFW" in names else (names[0] if names else None))
