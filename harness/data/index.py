"""Identity-folder scanning and the seed's ``cls_train.txt`` annotation format.

The format is one ``<label>;<path>`` per line, as the reference's
``txt_annotation.py`` writes it.  Labels are the position of the identity
folder in sorted order.

Empty identity folders: they contribute no lines but still *reserve* their
label, exactly as the reference tool does (it enumerates the sorted folder
list).  So a folder's label never depends on whether an earlier folder
happens to be empty, and an index written by the reference tool and one
written here agree line for line.  The scan reports how many were empty so
the caller can warn; ``num_classes`` (max label + 1) counts them, which only
costs an unused row in the margin head.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Union

from ..record import atomic
from ..errors import ArcbenchError
from . import nonnegative_int

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

# Non-UTF-8 file names (common in scraped face sets) must round-trip.
_ENC = dict(encoding="utf-8", errors="surrogateescape")


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


@dataclass
class FolderScan:
    """What :func:`scan_folder` found: parallel ``paths``/``labels`` lists."""

    root: str
    identities: List[str]  # label -> folder name, empty folders included
    paths: List[str] = field(default_factory=list)
    labels: List[int] = field(default_factory=list)
    empty_identities: List[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.identities)

    @property
    def empty_count(self) -> int:
        return len(self.empty_identities)


def scan_folder(root: PathLike, warn: bool = True) -> FolderScan:
    """Scan ``root/<identity>/<image>`` into absolute paths and labels.

    Hidden entries (leading ``.``) are ignored; so are files directly in
    ``root``.  Files inside an identity folder are sorted by name so the
    result is the same on every file system.
    """
    root_p = Path(root)
    if not root_p.is_dir():
        raise ArcbenchError("not a folder of identity folders", root_p)
    root_abs = os.path.abspath(root_p)
    try:
        entries = sorted(e.name for e in os.scandir(root_abs) if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise ArcbenchError(f"cannot list folder: {exc.strerror or exc}", root_p) from None
    scan = FolderScan(root=root_abs, identities=entries)
    for label, name in enumerate(entries):
        folder = os.path.join(root_abs, name)
        try:
            files = sorted(
                e.name for e in os.scandir(folder)
                if not e.name.startswith(".") and is_image_name(e.name) and e.is_file()
            )
        except OSError as exc:
            raise ArcbenchError(f"cannot list folder: {exc.strerror or exc}", folder) from None
        if not files:
            scan.empty_identities.append(name)
            continue
        scan.paths.extend(os.path.join(folder, f) for f in files)
        scan.labels.extend([label] * len(files))
    if not entries:
        raise ArcbenchError("no identity folders found (expected ROOT/<identity>/<image>)", root_p)
    if not scan.paths:
        raise ArcbenchError("no images found in any identity folder "
                            f"(extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})", root_p)
    if warn and scan.empty_identities:
        warnings.warn(f"{root_abs}: {scan.empty_count} empty identity folder(s) skipped "
                      f"(their labels stay reserved), e.g. {scan.empty_identities[0]!r}", stacklevel=2)
    return scan


def format_annotation(paths, labels) -> str:
    return "".join(f"{int(lab)};{p}\n" for p, lab in zip(paths, labels))


def write_annotation(path: PathLike, paths, labels) -> None:
    """Write ``<label>;<path>`` lines atomically (readers never see half a file)."""
    paths, labels = list(paths), list(labels)
    if len(paths) != len(labels):
        raise ValueError("paths and labels differ in length")
    for p in paths:
        if "\n" in p or "\r" in p:
            raise ArcbenchError("a path contains a line break and cannot be indexed", p)
    data = format_annotation(paths, labels).encode(**_ENC)
    atomic.write_bytes(path, data)


def index_folder(root: PathLike, out: PathLike, warn: bool = True) -> FolderScan:
    """Scan ``root`` and write its annotation to ``out``; returns the scan."""
    scan = scan_folder(root, warn=warn)
    write_annotation(out, scan.paths, scan.labels)
    return scan


def read_annotation(path: PathLike, root: Optional[PathLike] = None,
                    check_exists: bool = False) -> Tuple[List[str], List[int]]:
    """Read ``<label>;<path>`` lines.

    Relative image paths resolve against ``root`` when given, else against
    the annotation file's folder (not the working directory, so an index
    travels with its data).  Blank lines are ignored; leading/trailing
    whitespace is not part of a path.  A missing image is only an error here
    with ``check_exists``; otherwise the loader treats it as a bad image.
    """
    path = os.fspath(path)
    try:
        with open(path, "r", newline=None, **_ENC) as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ArcbenchError("annotation file not found", path) from None
    except IsADirectoryError:
        raise ArcbenchError("annotation path is a folder, expected a <label>;<path> text file", path) from None
    except OSError as exc:
        raise ArcbenchError(f"cannot read annotation file: {exc.strerror or exc}", path) from None
    base = os.path.abspath(os.fspath(root) if root is not None else os.path.dirname(os.path.abspath(path)))
    paths: List[str] = []
    labels: List[int] = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        sep = line.find(";")
        if sep < 0:
            raise ArcbenchError(f"expected '<label>;<image path>', got {_clip(line)!r}", path, lineno)
        lab_s, img = line[:sep].strip(), line[sep + 1:].strip()
        lab = nonnegative_int(lab_s, path, lineno, "label")
        if not img:
            raise ArcbenchError("empty image path", path, lineno)
        if not os.path.isabs(img):
            img = os.path.normpath(os.path.join(base, img))
        if check_exists and not os.path.isfile(img):
            raise ArcbenchError(f"image not found: {img}", path, lineno)
        paths.append(img)
        labels.append(lab)
    if not paths:
        raise ArcbenchError("annotation file has no entries", path)
    return paths, labels


def pick_root(annotation: PathLike, candidates) -> Optional[str]:
    """The first candidate folder under which the annotation's first relative path exists.

    For ``--train_data_path D --train_annotation_path A``: relative paths in
    ``A`` may be relative to ``D`` (hand-written lists) or to ``A``'s folder
    (arcbench's synthetic set).  One ``stat`` decides; ``None`` when the
    first path is absolute or nothing matches (then the caller's default applies).
    """
    try:
        with open(annotation, "r", **_ENC) as fh:
            for line in fh:
                if line.strip() and ";" in line:
                    rel = line.split(";", 1)[1].strip()
                    break
            else:
                return None
    except OSError:
        return None
    if not rel or os.path.isabs(rel):
        return None
    for c in candidates:
        if c is not None and os.path.exists(os.path.join(os.fspath(c), rel)):
            return os.fspath(c)
    return None


def _clip(s: str, n: int = 60) -> str:
    return s if len(s) <= n else s[:n] + "..."
