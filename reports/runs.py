"""Load run directories into one pandas DataFrame (one row per run).

A run dir is any folder holding ``summary.json`` or ``config.json``; a path
given to :func:`load_runs` may be a run dir itself or a root searched below.

Values come from ``summary.json`` first, then ``config.json``, then
``system.json``, then what ``metrics.jsonl`` implies — so a run killed before
it wrote its summary still gets a row (status ``running`` when its log has
records, else ``unknown``).  A run dir whose ``summary.json`` (or, without a
summary, ``config.json``) cannot be parsed is skipped with a problem message:
its numbers cannot be trusted.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import warnings
from typing import Iterable, List, Optional, Sequence, Tuple

import pandas as pd

from ..errors import ArcbenchError
from ..run.rundir import lock_held
from . import curves
from .dllog import ParsedLog, parse_file, truthy
from .reference import DEFAULT_TOLERANCE, SET_ACCURACY_PREFIX, apply_references, canonical_dataset

COLUMNS = [
    "run_id", "date", "status", "device", "device_name", "backbone", "head", "precision", "nproc", "nnodes",
    "batch_size", "train_set", "eval_set", "synthetic", "epochs", "steps", "throughput_median", "amp_speedup",
    "scaling_efficiency", "peak_memory", "mfu", "lfw_accuracy", "lfw_accuracy_std", "val_at_far", "reference",
    "reference_check",
]
EXTRA_COLUMNS = [
    "mode", "reason", "amp", "wall_time", "throughput_mean", "compute_ips", "data_wait_fraction", "latency_p50",
    "latency_p95", "latency_p99", "best_lfw_accuracy", "lfw_accuracy_exact", "auc", "eer", "final_loss", "bad_images",
    "train_set_raw",
    "eval_set_raw", "input_size", "weights", "bad_log_lines", "source", "path",
    "amp_dtype", "compile", "num_classes", "sample_rate", "timing_warmup", "engine",
    "feed_ratio", "workers", "decode",  # bench --mode data,train; loader workers; decode "device": nvJPEG pixels
]
ALL_COLUMNS = COLUMNS + EXTRA_COLUMNS

INT_COLUMNS = ["nproc", "nnodes", "batch_size", "epochs", "steps", "peak_memory", "bad_images", "bad_log_lines",
               "input_size", "num_classes", "timing_warmup", "workers"]
FLOAT_COLUMNS = ["throughput_median", "amp_speedup", "scaling_efficiency", "mfu", "lfw_accuracy", "lfw_accuracy_std",
                 "val_at_far", "reference", "wall_time", "throughput_mean", "compute_ips", "data_wait_fraction",
                 "latency_p50", "latency_p95", "latency_p99", "best_lfw_accuracy", "lfw_accuracy_exact", "auc", "eer",
                 "final_loss", "sample_rate", "feed_ratio"]
BOOL_COLUMNS = ["synthetic", "amp", "compile"]
#: one column per verification set of a run with several (``acc:CFP-FP``), named by the set's canonical
#: name so runs that share a set share the column; ``ref:``/``check:`` columns beside them hold that
#: set's published figure and PASS/FAIL (:func:`arcbench.reports.reference.apply_references`)

#: summary.json keys copied as they are
_SUMMARY_KEYS = [
    "run_id", "date", "status", "reason", "device", "device_name", "backbone", "head", "precision", "amp", "nproc",
    "nnodes", "batch_size", "synthetic", "epochs", "steps", "wall_time", "throughput_median", "throughput_mean",
    "compute_ips", "data_wait_fraction", "latency_p50", "latency_p95", "latency_p99", "peak_memory", "mfu",
    "amp_speedup", "scaling_efficiency", "lfw_accuracy", "lfw_accuracy_std", "best_lfw_accuracy", "val_at_far",
    "auc", "eer", "final_loss", "bad_images", "mode", "input_size", "weights",
    "lfw_accuracy_exact",  # only where the 0.01 threshold grid could not read the distances
    "feed_ratio", "workers", "decode",
    "engine",  # eval and bench eval points: torch or onnxruntime
]
_CONFIG_KEYS = ["run_id", "mode", "device", "backbone", "head", "precision", "nproc", "nnodes", "batch_size",
                "epochs", "input_size"]
_SKIP_DIRS = {"checkpoints", "plots", "__pycache__", "node_modules"}


#: a run whose summary says running but whose lock no process holds: it was killed (kill -9, power loss)
STALE = "stale (process gone)"


def resume_command(run_dir) -> str:
    import shlex

    return f"arcbench run --resume {shlex.quote(os.fspath(run_dir))}"


class ReportWarning(UserWarning):
    """A run dir or log line that was skipped; the report goes on without it."""


def is_run_dir(path) -> bool:
    return os.path.isfile(os.path.join(path, "summary.json")) or os.path.isfile(os.path.join(path, "config.json"))


def discover(paths: Iterable) -> List[str]:
    """Run dirs under each path (or the path itself), sorted, without duplicates.

    A missing path is an :class:`ArcbenchError`.  Hidden folders, ``checkpoints``
    and ``plots`` are not searched; nothing below a run dir is.
    """
    found, seen = [], set()
    for p in paths:
        p = os.fspath(p)
        if not os.path.exists(p):
            raise ArcbenchError("runs directory not found", p)
        if not os.path.isdir(p):
            raise ArcbenchError("not a directory (give a runs dir or a run dir)", p)
        if is_run_dir(p):
            hits = [p]
        else:
            hits = []
            for root, dirs, _files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
                keep = []
                for d in dirs:
                    full = os.path.join(root, d)
                    if is_run_dir(full):
                        hits.append(full)
                    else:
                        keep.append(d)
                dirs[:] = keep
        for h in hits:
            real = os.path.realpath(h)
            if real not in seen:
                seen.add(real)
                found.append(h)
    return found


def read_json(path) -> Tuple[Optional[dict], Optional[str]]:
    """``(object, None)``, ``(None, None)`` when absent, ``(None, reason)`` when unreadable."""
    if not os.path.isfile(path):
        return None, None
    try:
        with open(path, "r", encoding="utf-8") as fh:
            obj = json.load(fh)
    except json.JSONDecodeError as exc:
        return None, f"{path}:{exc.lineno}: not valid JSON ({exc.msg})"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path}: cannot read ({exc})"
    if not isinstance(obj, dict):
        return None, f"{path}: expected a JSON object, got {type(obj).__name__}"
    return obj, None


def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and v != v) and v != ""


def _first(*values):
    for v in values:
        if _present(v):
            return v
    return None


def _basename(v) -> Optional[str]:
    if not _present(v):
        return None
    text = str(v).rstrip("/\\")
    return os.path.basename(text) or text


def _iso_mtime(path) -> Optional[str]:
    try:
        ts = os.path.getmtime(path)
    except OSError:
        return None
    return _dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


def read_metrics(run_dir) -> Optional[ParsedLog]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    return parse_file(path)


def _weights(run_dir, summary, config) -> Optional[str]:
    w = _first(summary.get("weights"), summary.get("checkpoint"), config.get("model_path"),
               config.get("checkpoint"), config.get("weights") if config.get("mode") == "eval" else None)
    if w:
        return _basename(w)
    if os.path.isfile(os.path.join(run_dir, "backbone.pth")):  # the trained run's exported weights
        return "backbone.pth"
    ck = os.path.join(run_dir, "checkpoints")
    if os.path.isdir(ck):
        names = sorted(n for n in os.listdir(ck) if n.endswith((".pth", ".pt")))
        for pref in ("best", "last", "final"):
            for n in names:
                if n.startswith(pref):
                    return n
        if names:
            return names[-1]
    return None


def load_run(run_dir, problems: Optional[list] = None) -> Optional[dict]:
    """One run dir as a row dict, or None (with a message in ``problems``) when unusable."""
    problems = [] if problems is None else problems
    files = _read_run_files(run_dir, problems)
    if files is None:
        return None
    summary, config, system = files
    sysdev = system.get("device") if isinstance(system.get("device"), dict) else {}
    parsed = _log_if_needed(run_dir, summary, problems)
    row = _merged_row(run_dir, summary, config, system, sysdev, parsed)
    if row["status"] == "running" and lock_held(run_dir) is False:
        row["status"] = STALE
        row["reason"] = f"its process is gone (killed?); resume with: {resume_command(run_dir)}"
    _add_data_sets(row, summary, config)
    _add_set_accuracies(row, summary)
    row["weights"] = _weights(run_dir, summary, config)
    row["bad_log_lines"] = (len(parsed.bad) + parsed.other) if parsed is not None else None
    if parsed is not None and parsed.bad:
        line, why = parsed.bad[0]
        problems.append(f"{parsed.path}:{line}: {len(parsed.bad)} unreadable line(s) skipped (first: {why})")
    row["source"] = "run"
    row["path"] = os.fspath(run_dir)
    _add_throughput_context(row, summary, config, sysdev)
    for k, v in summary.items():  # anything else the recorder wrote rides along as an extra column
        if k not in row and k not in ("train_set", "eval_set") and (v is None or isinstance(v, (str, int, float, bool))):
            row[k] = v
    return row


def _read_run_files(run_dir, problems: list) -> Optional[Tuple[dict, dict, dict]]:
    """summary, config and system JSON ({} when absent); None when the run's own numbers are unreadable."""
    summary, s_err = read_json(os.path.join(run_dir, "summary.json"))
    config, c_err = read_json(os.path.join(run_dir, "config.json"))
    system, y_err = read_json(os.path.join(run_dir, "system.json"))
    if s_err:
        problems.append(f"{s_err}; run skipped")
        return None
    if summary is None and c_err:
        problems.append(f"{c_err}; run skipped (no summary.json either)")
        return None
    for err in (c_err, y_err):
        if err:
            problems.append(f"{err}; ignored")
    return summary or {}, config or {}, system or {}


def _log_if_needed(run_dir, summary: dict, problems: list) -> Optional[ParsedLog]:
    """metrics.jsonl, parsed only when the summary lacks the headline numbers (the log can be large)."""
    if summary and (_present(summary.get("throughput_median")) or _present(summary.get("lfw_accuracy"))):
        return None
    try:
        return read_metrics(run_dir)
    except ArcbenchError as exc:
        problems.append(str(exc))
        return None


def _merged_row(run_dir, summary: dict, config: dict, system: dict, sysdev: dict,
                parsed: Optional[ParsedLog]) -> dict:
    """The row from summary, then config, then what the log implies, with identity and precision filled in."""
    derived = curves.derive_summary(parsed) if parsed is not None else {}
    row = {k: summary.get(k) for k in _SUMMARY_KEYS}
    for k in _CONFIG_KEYS:
        row[k] = _first(row.get(k), config.get(k))
    for k, v in derived.items():
        row[k] = _first(row.get(k), v)
    row["run_id"] = _first(row["run_id"], os.path.basename(os.path.normpath(run_dir)))
    row["date"] = _first(row["date"], config.get("date"), _iso_mtime(os.path.join(run_dir, "config.json"))
                         if config else _iso_mtime(run_dir))
    if not _present(row["status"]):
        if summary:
            row["status"] = "unknown"
        else:
            row["status"] = "running" if parsed is not None and parsed.logs else "unknown"
    row["device"] = _first(row["device"], sysdev.get("device"))
    row["device_name"] = _first(row["device_name"], sysdev.get("device_name"))
    if not _present(row["nproc"]) and isinstance(system.get("world_size"), int):
        nnodes = pd.to_numeric(row["nnodes"], errors="coerce") if _present(row["nnodes"]) else 1
        row["nproc"] = system["world_size"] // max(1, 1 if pd.isna(nnodes) else int(nnodes))
    if not _present(row["amp"]) and _present(row["precision"]):
        row["amp"] = str(row["precision"]).lower() != "fp32"
    elif _present(row["amp"]) and not _present(row["precision"]):
        row["precision"] = "amp" if truthy(row["amp"]) else "fp32"
    return row


def _add_data_sets(row: dict, summary: dict, config: dict) -> None:
    """Train and eval set, raw and canonical (to match references), whether they are generated, and
    accuracies as fractions."""
    train_raw = _first(summary.get("train_set"), _basename(config.get("train_data")))
    if not _present(train_raw) and config and str(config.get("mode", "train")) in ("train", "bench") \
            and "train_data" in config:
        train_raw = "synthetic"  # arcbench trains on generated data when no train_data is given
    eval_raw = _first(summary.get("eval_set"), _basename(config.get("val_bin")), _basename(config.get("val_data")))
    row["train_set_raw"], row["eval_set_raw"] = train_raw, eval_raw
    row["train_set"], row["eval_set"] = canonical_dataset(train_raw), canonical_dataset(eval_raw)
    if not _present(row["synthetic"]):
        names = f"{train_raw or ''} {eval_raw or ''}".lower()
        row["synthetic"] = ("synthetic" in names) if (train_raw or eval_raw) else None
    for k in ("lfw_accuracy", "best_lfw_accuracy"):
        row[k] = curves.as_fraction(row.get(k))


def _add_set_accuracies(row: dict, summary: dict) -> None:
    """``acc:<set>`` for each set the summary's ``verification`` holds (runs with several sets)."""
    per_set = summary.get("verification")
    if not isinstance(per_set, dict) or len(per_set) < 2:
        return  # one set: its figure is lfw_accuracy, as it always was
    for name, fig in per_set.items():
        if isinstance(fig, dict):
            row[SET_ACCURACY_PREFIX + str(canonical_dataset(name))] = curves.as_fraction(fig.get("accuracy"))


def set_accuracy_columns(df: pd.DataFrame) -> List[str]:
    """The per-set accuracy columns of a runs frame, in the order they first appear."""
    return [c for c in df.columns if str(c).startswith(SET_ACCURACY_PREFIX)]


def _add_throughput_context(row: dict, summary: dict, config: dict, sysdev: dict) -> None:
    """What else changes a throughput figure (``report --compare`` matches on these when present)."""
    row["compile"] = _first(summary.get("compile"), config.get("compile"))
    row["num_classes"] = _first(summary.get("num_classes"), config.get("num_classes"),
                                config.get("synthetic_classes") if config.get("train_data") == "synthetic" else None)
    row["sample_rate"] = _first(summary.get("sample_rate"), config.get("sample_rate"))
    row["timing_warmup"] = _first(summary.get("timing_warmup"), config.get("timing_warmup"))
    amp_on = truthy(row["amp"]) if _present(row["amp"]) else None
    row["amp_dtype"] = _first(summary.get("amp_dtype"), sysdev.get("amp_dtype") if amp_on else None)


def frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows -> DataFrame with :data:`ALL_COLUMNS` first (then any extras) and stable dtypes."""
    df = pd.DataFrame(list(rows))
    for c in ALL_COLUMNS:
        if c not in df.columns:
            df[c] = None
    df = df[ALL_COLUMNS + [c for c in df.columns if c not in ALL_COLUMNS]]
    for c in FLOAT_COLUMNS + set_accuracy_columns(df):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in INT_COLUMNS:
        num = pd.to_numeric(df[c], errors="coerce")
        df[c] = num.round().astype("Int64")
    for c in BOOL_COLUMNS:
        df[c] = pd.array([truthy(v) if _present(v) else None for v in df[c]], dtype="boolean")
    typed = set(FLOAT_COLUMNS) | set(INT_COLUMNS) | set(BOOL_COLUMNS) | set(set_accuracy_columns(df))
    for c in df.columns:
        if c in typed:
            continue
        # known text columns hold str or None only, so sorting and grouping never meet mixed types;
        # unknown extras keep their values
        conv = str if c in ALL_COLUMNS else (lambda v: v)
        df[c] = pd.Series([conv(v) if _present(v) else None for v in df[c]], index=df.index, dtype="object")
    return df


def load_runs(paths, problems: Optional[list] = None, references: Optional[pd.DataFrame] = None,
              tolerance: float = DEFAULT_TOLERANCE, extra_rows: Sequence[dict] = ()) -> pd.DataFrame:
    """One row per run under ``paths`` (a path or a list), reference-checked, sorted by date.

    Problems (skipped runs, unreadable lines) are appended to ``problems`` when
    a list is given, otherwise issued as :class:`ReportWarning`.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    sink: list = [] if problems is None else problems
    start = len(sink)
    rows = []
    for d in discover(paths):
        row = load_run(d, sink)
        if row is not None:
            rows.append(row)
    rows.extend(extra_rows)
    if problems is None:
        for msg in sink[start:]:
            warnings.warn(msg, ReportWarning, stacklevel=2)
    df = frame(rows)
    apply_references(df, references, tolerance)
    if len(df):
        df = df.sort_values(["date", "run_id"], kind="stable", na_position="first").reset_index(drop=True)
    return df


def load_system(run_dir) -> Optional[dict]:
    obj, _err = read_json(os.path.join(run_dir, "system.json"))
    return obj
