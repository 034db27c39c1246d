"""Published reference accuracies and the PASS/FAIL check against them.

The shipped table is ``references.csv`` beside this module (one row per
published figure, with where it comes from and under which conditions).

Matching a run to a row: the backbone, train set and eval set must agree after
name normalisation (:func:`canonical_backbone`, :func:`canonical_dataset`).
When several rows match (MobileFaceNet has the SDAA model-zoo figure 98.48 and
the original arcface-pytorch figure 98.78), the row whose ``device`` equals the
run's device wins; otherwise the first matching row in file order.  The SDAA
row is listed first, so every MobileFaceNet run is held to 98.48, the figure
this project is qualified against.

A run whose train set is unknown (e.g. an eval of downloaded weights) matches
on backbone and eval set only when all candidate rows share one train set.
A run whose eval set is unknown (an imported log) is matched as LFW, the set its
``lfw_accuracy`` has always meant.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
from importlib import resources
from typing import List, Optional, Tuple

import pandas as pd

from ..errors import ArcbenchError
from .dllog import truthy

REFERENCE_COLUMNS = ["backbone", "train_set", "eval_set", "accuracy", "device", "cards", "amp",
                     "batch_size", "source", "notes"]
REQUIRED = ("backbone", "train_set", "eval_set", "accuracy")
DEFAULT_TOLERANCE = 0.5  # accuracy points

PASS, FAIL = "PASS", "FAIL"
#: a runs frame's per-set accuracy columns (see :mod:`arcbench.reports.runs`)
SET_ACCURACY_PREFIX = "acc:"
NA_SYNTHETIC = "n/a (synthetic)"
NA_NO_ACCURACY = "n/a (no accuracy)"
NO_REFERENCE = "no reference"
#: statuses whose accuracy is not final: the run is reported but not judged
UNJUDGED_STATUS = ("running", "failed", "interrupted", "stale (process gone)")

_DATASET_ALIASES = {
    "casia": "CASIA-WebFace",
    "casia-webface": "CASIA-WebFace",
    "casia_webface": "CASIA-WebFace",
    "casiawebface": "CASIA-WebFace",
    "webface": "CASIA-WebFace",
    "faces_webface_112x112": "CASIA-WebFace",
    "datasets": "CASIA-WebFace",  # the seed README's folder name for CASIA-WebFace
    "ms1mv3": "MS1MV3",
    "ms1m-retinaface-t1": "MS1MV3",
    "ms1m_retinaface_t1": "MS1MV3",
    "lfw": "LFW",
    "lfw.bin": "LFW",
    "cfp_fp": "CFP-FP",
    "cfp-fp": "CFP-FP",
    "cfpfp": "CFP-FP",
    "cfp_fp.bin": "CFP-FP",
    "agedb_30": "AgeDB-30",
    "agedb-30": "AgeDB-30",
    "agedb30": "AgeDB-30",
    "agedb_30.bin": "AgeDB-30",
    "ijbc": "IJB-C",
    "ijb-c": "IJB-C",
    "ijb_c": "IJB-C",
    "ijbb": "IJB-B",
    "ijb-b": "IJB-B",
    "ijb_b": "IJB-B",
}


def canonical_dataset(name) -> Optional[str]:
    """``"casia_webface"`` -> ``"CASIA-WebFace"``; unknown names come back stripped, paths as basenames."""
    if name is None or (isinstance(name, float) and math.isnan(name)):
        return None
    text = str(name).strip()
    if not text:
        return None
    base = os.path.basename(text.rstrip("/\\")) or text
    return _DATASET_ALIASES.get(base.lower(), base)


def canonical_backbone(name) -> Optional[str]:
    """``"MobileNet_V1"`` -> ``"mobilenetv1"``, ``"r50"``/``"iresnet-50"`` -> ``"iresnet50"``."""
    if name is None or (isinstance(name, float) and math.isnan(name)):
        return None
    key = re.sub(r"[\s_-]", "", str(name).lower())
    if not key:
        return None
    m = re.fullmatch(r"(?:iresnet|ir|r)(\d+)", key)
    if m:
        return f"iresnet{m.group(1)}"
    if key in ("mobilenet", "mobilenetv1"):
        return "mobilenetv1"
    return key


def default_references_path() -> str:
    return str(resources.files(__package__).joinpath("references.csv"))


def load_references(path=None) -> pd.DataFrame:
    """The reference table (the shipped one unless ``path`` is given), validated."""
    path = path or default_references_path()
    try:
        with open(path, "r", encoding="utf-8", newline="") as fh:
            text = fh.read()
    except OSError as exc:
        raise ArcbenchError(f"cannot read reference table: {exc.strerror or exc}", path) from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise ArcbenchError(f"reference table lacks column(s) {', '.join(missing)}", path, 1)
    rows = []
    for row in reader:
        line = reader.line_num
        try:
            acc = float(row["accuracy"])
        except (TypeError, ValueError):
            raise ArcbenchError(f"accuracy {row.get('accuracy')!r} is not a number", path, line) from None
        if not 0.0 < acc <= 100.0:
            raise ArcbenchError(f"accuracy {acc} is not a percentage in (0, 100]", path, line)
        if not (row.get("backbone") or "").strip():
            raise ArcbenchError("empty backbone", path, line)
        out = {c: (row.get(c) or "").strip() for c in REFERENCE_COLUMNS}
        out["accuracy"] = acc
        rows.append(out)
    return pd.DataFrame(rows, columns=REFERENCE_COLUMNS)


def _isnull(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


def match(refs: pd.DataFrame, backbone, train_set, eval_set, device=None) -> Optional[dict]:
    """The reference row for a run, by the rules in the module docstring, or None."""
    bb = canonical_backbone(backbone)
    if bb is None:
        return None
    # an unnamed eval set (an imported log) is LFW: the figure judged is lfw_accuracy, and the
    # table's other sets (CFP-FP, AgeDB-30, IJB-C) must not make such a run ambiguous
    ts, es = canonical_dataset(train_set), canonical_dataset(eval_set) or "LFW"
    cands = []
    for row in refs.to_dict("records"):
        if canonical_backbone(row["backbone"]) != bb:
            continue
        if canonical_dataset(row["eval_set"]) != es:
            continue
        if ts is not None and canonical_dataset(row["train_set"]) != ts:
            continue
        cands.append(row)
    if not cands:
        return None
    if ts is None and len({canonical_dataset(r["train_set"]) for r in cands}) > 1:
        return None  # ambiguous: the train set decides which figure applies
    dev = str(device).lower() if not _isnull(device) else ""
    for row in cands:
        if dev and str(row.get("device") or "").lower() == dev:
            return row
    return cands[0]


def is_synthetic(run: dict) -> bool:
    flag = run.get("synthetic")
    if hasattr(flag, "item"):  # numpy bool
        flag = flag.item()
    if not _isnull(flag) and truthy(flag):
        return True
    names = " ".join(str(run.get(k) or "") for k in ("train_set", "eval_set"))
    return "synthetic" in names.lower()


def verdict(run: dict, refs: pd.DataFrame, tolerance: float = DEFAULT_TOLERANCE,
            eval_set: Optional[str] = None) -> Tuple[Optional[float], str]:
    """``(reference accuracy in percent or None, verdict string)`` for one run row; with ``eval_set``,
    for that one of the run's verification sets (its ``acc:<set>`` column)."""
    acc = run.get("lfw_accuracy") if eval_set is None else run.get(SET_ACCURACY_PREFIX + eval_set)
    if is_synthetic(run):
        # a run that never verified (a bench run) says so, synthetic or not, as `report --help` does
        return None, NA_NO_ACCURACY if _isnull(acc) else NA_SYNTHETIC
    ref = match(refs, run.get("backbone"), run.get("train_set"), eval_set or run.get("eval_set"), run.get("device"))
    ref_acc = None if ref is None else float(ref["accuracy"])
    if _isnull(acc):
        return ref_acc, NA_NO_ACCURACY
    if ref is None:
        return None, NO_REFERENCE
    status = run.get("status")
    if not _isnull(status) and status in UNJUDGED_STATUS:
        return ref_acc, f"n/a ({str(status).split(' (')[0]})"
    # 1e-9 keeps 97.98 == 98.48 - 0.5 from failing on float rounding
    ok = float(acc) * 100.0 + 1e-9 >= ref_acc - float(tolerance)
    return ref_acc, PASS if ok else FAIL


def apply_references(df: pd.DataFrame, refs: Optional[pd.DataFrame] = None,
                     tolerance: float = DEFAULT_TOLERANCE) -> pd.DataFrame:
    """Fill the ``reference`` and ``reference_check`` columns in place (and return ``df``)."""
    refs = load_references() if refs is None else refs
    refvals: List[Optional[float]] = []
    checks: List[str] = []
    for run in df.to_dict("records"):
        r, c = verdict(run, refs, tolerance)
        refvals.append(r)
        checks.append(c)
    df["reference"] = pd.Series(refvals, index=df.index, dtype="float64")
    df["reference_check"] = pd.Series(checks, index=df.index, dtype="object")
    for col in [c for c in df.columns if str(c).startswith(SET_ACCURACY_PREFIX)]:
        name = col[len(SET_ACCURACY_PREFIX):]  # each set against the published figure for that set
        per = [verdict(run, refs, tolerance, eval_set=name) for run in df.to_dict("records")]
        df["ref:" + name] = pd.Series([r for r, _ in per], index=df.index, dtype="float64")
        df["check:" + name] = pd.Series([c for _, c in per], index=df.index, dtype="object")
    return df
