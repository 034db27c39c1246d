"""LFW-style pairs files: parsing, then resolving to image paths.

Two steps on purpose: :func:`parse_pairs` reads only the text (so the
protocol can be checked without the images) and :func:`resolve_pairs` maps
names to ``<root>/<name>/<name>_<idx:04d>.jpg`` and handles missing images.

Accepted shapes (tabs or spaces, CRLF or LF):

* header ``folds<ws>n`` (the reference ``lfw_pair.txt`` and the official LFW
  ``pairs.txt`` both start ``10 300``), then per fold ``n`` positive lines
  ``name idx1 idx2`` followed by ``n`` negative lines ``name1 idx1 name2 idx2``;
* header ``n`` alone (``pairsDevTrain.txt``/``pairsDevTest.txt``): one fold;
* no header (the first line already has 3 or 4 columns): each line's column
  count says positive or negative, and the pairs are cut into 10 contiguous
  folds the way ``KFold(10, shuffle=False)`` would.  This is unambiguous
  because a header has at most 2 columns and a pair line at least 3.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ..errors import ArcbenchError
from .protocol import contiguous_folds
from ..data import nonnegative_int
from .sets import VerificationSet, default_name


@dataclass(frozen=True)
class PairLine:
    line: int          # 1-based line in the pairs file
    name1: str
    idx1: int
    name2: str
    idx2: int
    issame: bool
    fold: int


@dataclass
class PairsFile:
    path: str
    n_folds: int
    per_fold: Optional[int]            # n positive (= n negative) pairs per fold; None without header
    has_header: bool
    pairs: List[PairLine] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)


def _name(token: str, path: str, line: int) -> str:
    # Names become folder names: refuse anything that could leave the image root.
    if token in (".", "..") or "/" in token or "\\" in token:
        raise ArcbenchError(f"bad person name {token!r}", path, line)
    return token


def _pair(tokens: List[str], path: str, line: int, fold: int) -> PairLine:
    if len(tokens) == 3:
        name = _name(tokens[0], path, line)
        return PairLine(line, name, nonnegative_int(tokens[1], path, line, "image index"),
                        name, nonnegative_int(tokens[2], path, line, "image index"), True, fold)
    if len(tokens) == 4:
        return PairLine(line, _name(tokens[0], path, line), nonnegative_int(tokens[1], path, line, "image index"),
                        _name(tokens[2], path, line), nonnegative_int(tokens[3], path, line, "image index"), False, fold)
    raise ArcbenchError(f"expected 3 columns (name idx1 idx2) or 4 (name1 idx1 name2 idx2), "
                        f"got {len(tokens)}", path, line)


def _read_lines(path: str) -> List[tuple]:
    """Non-blank lines as ``(lineno, tokens)``."""
    if not os.path.exists(path):
        raise ArcbenchError("pairs file not found", path)
    if os.path.isdir(path):
        raise ArcbenchError("pairs file is a directory (expected e.g. lfw_pair.txt or pairs.txt)", path)
    try:
        with open(path, "r", encoding="utf-8-sig", newline=None) as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise ArcbenchError(f"not a text pairs file ({exc.reason} at byte {exc.start})", path) from None
    except OSError as exc:
        raise ArcbenchError(f"cannot read pairs file: {exc.strerror or exc}", path) from None
    out = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        tokens = raw.split()
        if tokens:
            out.append((lineno, tokens))
    return out


def parse_pairs(path) -> PairsFile:
    """Read a pairs file into :class:`PairLine` records with fold ids; no image access."""
    path = os.fspath(path)
    lines = _read_lines(path)
    if not lines:
        raise ArcbenchError("pairs file is empty", path)
    first_no, first = lines[0]
    if len(first) >= 3:                                   # header-less
        pairs = [_pair(tokens, path, no, 0) for no, tokens in lines]
        folds = contiguous_folds(len(pairs))
        pairs = [PairLine(p.line, p.name1, p.idx1, p.name2, p.idx2, p.issame, int(f))
                 for p, f in zip(pairs, folds)]
        return PairsFile(path, int(folds.max()) + 1, None, False, pairs)

    if len(first) == 2:
        n_folds = nonnegative_int(first[0], path, first_no, "header: number of folds")
        per_fold = nonnegative_int(first[1], path, first_no, "header: pairs per fold")
    else:
        n_folds, per_fold = 1, nonnegative_int(first[0], path, first_no, "header: number of pairs")
    if n_folds < 1 or per_fold < 1:
        raise ArcbenchError(f"bad header {' '.join(first)!r}: expected 'folds n' with both at least 1",
                            path, first_no)
    body = lines[1:]
    expected = n_folds * 2 * per_fold
    # lines are checked in file order, so the first bad line is the one reported; the count
    # checks come only once every line before the point they refer to has been read
    pairs = []
    for i, (no, tokens) in enumerate(body):
        if i == expected:
            raise ArcbenchError(f"more lines than the header ({' '.join(first)}) promises: {expected} pairs "
                                f"end before this line", path, no)
        fold, pos = divmod(i, 2 * per_fold)
        want = 3 if pos < per_fold else 4
        if len(tokens) != want:
            kind = ("positive pair 'name idx1 idx2'" if want == 3
                    else "negative pair 'name1 idx1 name2 idx2'")
            note = (f"; the header promises {expected} pairs, the file has {len(body)}"
                    if len(body) != expected else "")
            raise ArcbenchError(f"expected a {kind} ({want} columns) at position {pos + 1} of fold "
                                f"{fold + 1}, got {len(tokens)} columns{note}", path, no)
        pairs.append(_pair(tokens, path, no, fold))
    if len(body) < expected:
        raise ArcbenchError(f"header promises {n_folds} folds x (2 x {per_fold}) = {expected} pairs "
                            f"but the file has {len(body)}", path, first_no)
    return PairsFile(path, n_folds, per_fold, True, pairs)


def image_path(root, name: str, idx: int, ext: str = "jpg") -> str:
    """``<root>/<name>/<name>_<idx:04d>.<ext>``, the LFW layout."""
    return os.path.join(os.fspath(root), name, f"{name}_{idx:04d}.{ext}")


def resolve_pairs(parsed: PairsFile, root, strict: bool = False, name: Optional[str] = None,
                  ext: str = "jpg") -> VerificationSet:
    """Turn parsed pairs into a :class:`~arcbench.verification.sets.VerificationSet`.

    Each distinct image path appears once in ``images`` however many pairs use
    it.  A pair with a missing image is skipped and counted, or with ``strict``
    is an error naming the image and the pairs-file line.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ArcbenchError("image folder not found (expected <root>/<name>/<name>_0001.jpg)", root)
    index: Dict[str, int] = {}
    exists: Dict[str, bool] = {}
    images: List[str] = []
    rows, issame, folds, lines = [], [], [], []
    skipped = 0
    for p in parsed.pairs:
        a, b = image_path(root, p.name1, p.idx1, ext), image_path(root, p.name2, p.idx2, ext)
        ok = True
        for img in (a, b):
            if img not in exists:
                exists[img] = os.path.isfile(img)
            if not exists[img]:
                if strict:
                    raise ArcbenchError(f"image not found: {img} (--strict; without it the pair is skipped)",
                                        parsed.path, p.line)
                ok = False
        if not ok:
            skipped += 1
            continue
        for img in (a, b):
            if img not in index:
                index[img] = len(images)
                images.append(img)
        rows.append((index[a], index[b]))
        issame.append(p.issame)
        folds.append(p.fold)
        lines.append(p.line)
    if not rows:
        raise ArcbenchError(f"none of the {len(parsed.pairs)} pairs has both images under {root}; "
                            f"expected files like {image_path(root, parsed.pairs[0].name1, parsed.pairs[0].idx1, ext)}",
                            parsed.path)
    return VerificationSet(
        name=name or default_name(parsed.path, root),
        images=images,
        pairs=np.asarray(rows, dtype=np.int64).reshape(-1, 2),
        issame=np.asarray(issame, dtype=bool),
        folds=np.asarray(folds, dtype=np.int64),
        pairs_skipped=skipped,
        lines=np.asarray(lines, dtype=np.int64),
        source=parsed.path,
    )


def load_pairs(root, pairs_path, strict: bool = False, name: Optional[str] = None) -> VerificationSet:
    """Parse and resolve in one go."""
    return resolve_pairs(parse_pairs(pairs_path), root, strict=strict, name=name)
