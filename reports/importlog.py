"""Import SDAA model-zoo (tcap_dllogger) and NVIDIA DLLogger logs as run-like rows.

So that a model-zoo training log can sit in the same report as arcbench runs,
be aligned against one (``--align``), and be compared (``--compare``).

What a log says about its run comes from its ``INFO``/``PARAMETER`` records
(the model-zoo scripts dump their argparse flags: ``device``, ``batch_size``,
``use_amp``, ``nproc_per_node``, ``train_data_path`` ...).  Whatever is still
missing may be given as ``KEY=VALUE`` overrides (``--import-meta``); the device
alone is guessed from the file name (``train_sdaa_3rd.log`` -> ``sdaa``).
Nothing else is guessed: an imported log with no backbone gets "no reference".

:func:`materialise` writes the import as a run dir (``config.json``,
``summary.json``, ``metrics.jsonl`` in arcbench's ``DLLL`` form) so later
reports pick it up without the original log.
"""
from __future__ import annotations

import ast
import datetime as _dt
import json
import os
import re
from dataclasses import dataclass
from typing import Dict, Optional

import pandas as pd

from ..record import atomic
from ..errors import ArcbenchError
from . import curves
from .dllog import ParsedLog, parse_file, truthy
from .reference import canonical_dataset


@dataclass
class ImportedLog:
    path: str
    parsed: ParsedLog
    row: dict
    loss: pd.DataFrame
    accuracy: pd.DataFrame


def _int(v) -> Optional[int]:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def parse_meta(items) -> Dict[str, object]:
    """``["backbone=mobilefacenet", "batch_size=96"]`` -> dict; values as literals when they are one."""
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ArcbenchError(f"--import-meta expects KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key] = value.strip()
    return out


def _guess_device(name: str) -> Optional[str]:
    tokens = set(re.split(r"[^a-z0-9]+", name.lower()))
    for token, dev in (("sdaa", "sdaa"), ("cuda", "cuda"), ("gpu", "cuda"), ("cpu", "cpu")):
        if token in tokens:
            return dev
    return None


def run_id_for(path) -> str:
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "log"
    return f"import-{stem}"


def _row_from(parsed: ParsedLog, path: str, meta: Dict[str, object]) -> dict:
    p = {k.replace("-", "_"): v for k, v in parsed.params.items()}
    amp = truthy(p.get("use_amp", p.get("amp")))
    distributed = truthy(p.get("distributed"))
    nproc = _int(p.get("nproc")) or (_int(p.get("nproc_per_node")) if distributed is not False else 1)
    if nproc is None and distributed is False:
        nproc = 1
    train_raw = p.get("train_set") or p.get("train_data_path") or p.get("train_data")
    eval_raw = p.get("eval_set") or p.get("val_data_path") or p.get("val_data")
    times = [r.timestamp for r in parsed.records if r.timestamp]
    if times:
        date = _dt.datetime.fromtimestamp(min(times)).isoformat(timespec="seconds")
    else:
        date = _dt.datetime.fromtimestamp(os.path.getmtime(path)).isoformat(timespec="seconds")
    row = {
        "run_id": run_id_for(path),
        "date": date,
        "status": "completed" if parsed.logs else "unknown",
        "reason": f"imported from {os.path.basename(path)}",
        "mode": "import",
        "device": p.get("device") or _guess_device(os.path.basename(path)),
        "backbone": p.get("backbone"),
        "head": p.get("head") or p.get("model_name"),
        "precision": p.get("precision") or (None if amp is None else ("amp" if amp else "fp32")),
        "amp": amp,
        "nproc": nproc,
        "nnodes": _int(p.get("nnodes")),
        "batch_size": _int(p.get("batch_size")),
        "epochs": _int(p.get("epochs", p.get("epoch", p.get("total_epochs")))),
        "synthetic": truthy(p.get("synthetic")) if "synthetic" in p else None,
        "train_set_raw": train_raw,
        "eval_set_raw": eval_raw,
    }
    derived = curves.derive_summary(parsed)
    derived["loss_series"] = curves.loss_curve(parsed).attrs.get("series")
    epochs_logged = derived.pop("epochs", None)
    row.update({k: v for k, v in derived.items()})
    if row["epochs"] is None:
        row["epochs"] = epochs_logged
    for k, v in meta.items():
        row[k] = v
    if "train_set" in meta:
        row["train_set_raw"] = meta["train_set"]
    if "eval_set" in meta:
        row["eval_set_raw"] = meta["eval_set"]
    row["train_set"] = canonical_dataset(row.get("train_set_raw"))
    row["eval_set"] = canonical_dataset(row.get("eval_set_raw"))
    if row.get("synthetic") is None and "synthetic" in f"{row['train_set'] or ''} {row['eval_set'] or ''}".lower():
        row["synthetic"] = True
    for k in ("lfw_accuracy", "best_lfw_accuracy"):
        if k in row:
            row[k] = curves.as_fraction(row[k])
    if row.get("precision") and row.get("amp") is None:
        row["amp"] = str(row["precision"]).lower() != "fp32"
    row["bad_log_lines"] = len(parsed.bad)
    row["source"] = "log"
    row["path"] = os.path.abspath(path)
    return row


def import_log(path, meta: Optional[Dict[str, object]] = None, problems: Optional[list] = None) -> ImportedLog:
    """Parse a DLLL/TCAPPDLL log into a run row plus its loss and accuracy curves."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ArcbenchError("log file not found", path)
    parsed = parse_file(path)
    if not parsed.records:
        raise ArcbenchError("no DLLL/TCAPPDLL records in this file", path)
    if parsed.bad and problems is not None:
        line, why = parsed.bad[0]
        problems.append(f"{path}:{line}: {len(parsed.bad)} unreadable line(s) skipped (first: {why})")
    return ImportedLog(path, parsed, _row_from(parsed, path, meta or {}),
                       curves.loss_curve(parsed), curves.accuracy_curve(parsed))


_SUMMARY_FIELDS = [
    "run_id", "status", "reason", "date", "device", "device_name", "backbone", "head", "precision", "amp", "nproc",
    "nnodes", "batch_size", "train_set", "eval_set", "synthetic", "epochs", "steps", "throughput_median",
    "throughput_mean", "lfw_accuracy", "lfw_accuracy_std", "best_lfw_accuracy", "final_loss",
]


def _dlll(obj) -> str:
    return "DLLL " + json.dumps(obj, default=str) + "\n"


def materialise(imported: ImportedLog, runs_dir) -> str:
    """Write the import as ``runs_dir/<run_id>/``; refuses to overwrite an existing dir."""
    row = imported.row
    run_dir = os.path.join(os.fspath(runs_dir), row["run_id"])
    if os.path.exists(run_dir):
        raise ArcbenchError("already exists; remove it or rename the log before importing again", run_dir)
    config = {
        "run_id": row["run_id"], "mode": "import", "source_log": imported.path,
        "device": row.get("device"), "backbone": row.get("backbone"), "head": row.get("head"),
        "precision": row.get("precision"), "nproc": row.get("nproc"), "nnodes": row.get("nnodes"),
        "batch_size": row.get("batch_size"), "epochs": row.get("epochs"),
        "train_data": row.get("train_set_raw"), "val_data": row.get("eval_set_raw"),
        "source_params": imported.parsed.params,
    }
    summary = {k: row.get(k) for k in _SUMMARY_FIELDS}
    summary["train_set"] = row.get("train_set_raw") or row.get("train_set")
    summary["eval_set"] = row.get("eval_set_raw") or row.get("eval_set")
    lines = []
    for metric, meta in imported.parsed.metadata.items():
        lines.append(_dlll({"type": "METADATA", "metric": metric, "metadata": meta}))
    if imported.parsed.params:
        lines.append(_dlll({"type": "LOG", "step": "PARAMETER", "data": imported.parsed.params}))
    for r in imported.parsed.records:
        if r.kind != "LOG":
            continue
        step = list(r.step) if isinstance(r.step, tuple) else r.step
        rec = {"type": "LOG", "step": step, "data": r.data}
        if r.timestamp:
            rec["timestamp"] = str(r.timestamp)
        lines.append(_dlll(rec))
    os.makedirs(run_dir)
    atomic.write_json(os.path.join(run_dir, "config.json"), config)
    atomic.write_text(os.path.join(run_dir, "metrics.jsonl"), "".join(lines))
    atomic.write_json(os.path.join(run_dir, "summary.json"), summary)  # last: marks the dir complete
    return run_dir
