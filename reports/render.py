"""Text renderings of a runs DataFrame: the terminal ``table``, markdown tables, ``csv``, ``json``.

The ``md`` report document (the model-zoo README tables, then every run) is
:func:`arcbench.reports.modelzoo.markdown`.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from typing import Callable, Dict, List, Optional, Sequence

import pandas as pd

from ..errors import ArcbenchError
from . import fit
from .fit import ELLIPSIS, cut  # noqa: F401  (cut: part of this module's API)
from .runs import COLUMNS, set_accuracy_columns

FORMATS = ("table", "md", "csv", "json", "html")

#: the default terminal table: the columns a reader needs (``--columns`` gives others; csv/json keep every one)
TABLE_COLUMNS = ["run_id", "date", "status", "device", "backbone", "precision", "batch_size", "nproc", "train_set",
                 "eval_set", "throughput_median", "peak_memory", "lfw_accuracy", "reference_check"]
#: default columns hidden, in this order, while the table is wider than the terminal (after the columns
#: equal on every row were folded into one line); ``nproc`` goes only with ``batch_size`` (a global batch
#: needs its process count); :data:`TABLE_LAST_RESORT` only after long text has been cut as far as it goes
TABLE_DROP_ORDER = ["date", "eval_set", "peak_memory", "sample_rate", "num_classes", "reference_check",
                    "train_set", "nproc"]
#: added to the default table (after the batch) when a run used a Partial FC sample rate or the
#: runs differ in class count: the head's size then drives memory and throughput
CLASS_COLUMNS = ["num_classes", "sample_rate"]
TABLE_LAST_RESORT = ["device", "backbone", "status", "lfw_accuracy", "precision"]
#: never folded into the "all rows" line: the row's identity and the figures the rows were made for
TABLE_KEEP = ("run_id", "throughput_median", "amp_speedup", "scaling_efficiency")
#: folded values that read alone ("cpu", "synthetic"); the others read "header value" ("batch 16")
FOLD_BARE = ("status", "device", "backbone", "precision", "train_set", "mode")
#: short headers for the terminal table (csv, json, md and --columns use the column names)
TABLE_HEADERS = {"throughput_median": "img/s", "lfw_accuracy": "accuracy", "reference_check": "check",
                 "peak_memory": "memory", "batch_size": "batch", "nproc": "procs", "precision": "prec", "amp_dtype": "dtype",
                 "train_set": "train set", "eval_set": "eval set", "amp_speedup": "amp x",
                 "lfw_accuracy_std": "acc std", "throughput_mean": "img/s mean",
                 "base_runs": "base n", "new_runs": "new n", "base_throughput": "base img/s",
                 "new_throughput": "new img/s", "throughput_change_pct": "change", "change_interval": "95% interval",
                 "accuracy_change_points": "acc pts", "num_classes": "classes", "sample_rate": "r",
                 "lfw_accuracy_exact": "acc (exact thr)"}
#: text columns that may be cut (with an ellipsis in the middle) to fit, and the width they keep at least
SHRINKABLE = {"run_id": 14, "reason": 12, "path": 16, "device_name": 12, "train_set": 10, "eval_set": 10,
              "backbone": 10, "weights": 10, "reference_check": 17, "train_set_raw": 10, "eval_set_raw": 10,
              "verdict": 40}


def missing(v) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and v == ""


def _num(fmt: str) -> Callable:
    return lambda v: fmt.format(float(v))


def _frac_pct(nd: int) -> Callable:
    return lambda v: f"{float(v) * 100:.{nd}f}%"


def fmt_bytes(v) -> str:
    v = float(v)
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(v) >= size:
            return f"{v / size:.2f} {unit}"
    return f"{v:.0f} B"


def fmt_date(v) -> str:
    text = str(v)
    try:
        d = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return d.strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return text


def _yesno(v) -> str:
    if isinstance(v, str):  # already a label (e.g. a group key)
        t = v.strip().lower()
        return "yes" if t in ("true", "yes", "1") else "no" if t in ("false", "no", "0") else v
    return "yes" if bool(v) else "no"


FORMATTERS: Dict[str, Callable] = {
    "date": fmt_date,
    "throughput_median": _num("{:.1f}"), "throughput_mean": _num("{:.1f}"), "compute_ips": _num("{:.1f}"),
    "base_throughput": _num("{:.1f}"), "new_throughput": _num("{:.1f}"),
    "lfw_accuracy": _frac_pct(2), "best_lfw_accuracy": _frac_pct(2), "lfw_accuracy_exact": _frac_pct(2),
    "lfw_accuracy_std": lambda v: f"±{float(v) * 100:.2f}",
    "reference": _num("{:.2f}%"), "base_accuracy": _num("{:.2f}%"), "new_accuracy": _num("{:.2f}%"),
    "accuracy": _num("{:.2f}%"),
    "accuracy_change_points": _num("{:+.2f}"), "accuracy_change_pct": _num("{:+.2f}%"),
    "throughput_change_pct": _num("{:+.1f}%"), "change_low_pct": _num("{:+.1f}%"),
    "change_high_pct": _num("{:+.1f}%"),
    "val_at_far": _num("{:.4f}"), "auc": _num("{:.4f}"), "eer": _num("{:.4f}"), "final_loss": _num("{:.4f}"),
    "amp_speedup": _num("{:.2f}x"),
    "scaling_efficiency": _frac_pct(1), "mfu": _frac_pct(1), "data_wait_fraction": _frac_pct(1),
    "peak_memory": fmt_bytes,
    "latency_p50": _num("{:.4g}"), "latency_p95": _num("{:.4g}"), "latency_p99": _num("{:.4g}"),
    "wall_time": _num("{:.1f}s"),
    "synthetic": _yesno, "amp": _yesno, "regression": _yesno, "inconclusive": _yesno, "compile": _yesno,
}

#: the per-set columns of runs with several verification sets (``acc:CFP-FP``, ``ref:CFP-FP``)
_SET_FORMATTERS = {"acc:": _frac_pct(2), "ref:": _num("{:.2f}%")}


def display(df: pd.DataFrame, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """The frame as strings for people: units, percentages, ``-`` for missing."""
    cols = [c for c in (columns or list(df.columns)) if c in df.columns]
    out = {}
    for c in cols:
        f = FORMATTERS.get(c) or _SET_FORMATTERS.get(str(c).split(":", 1)[0] + ":", str)
        vals = []
        for v in df[c].tolist():
            if missing(v):
                vals.append("-")
                continue
            try:
                vals.append(f(v))
            except (TypeError, ValueError):
                vals.append(str(v))
        out[c] = vals
    return pd.DataFrame(out, columns=cols, index=range(len(df)))


def text_table(df: pd.DataFrame, columns: Optional[Sequence[str]] = None) -> str:
    if not len(df):
        return "(no runs)"
    d = display(df, columns)
    return d.to_string(index=False)


def short_set_name(name: str, limit: int = 20) -> str:
    """``synthetic-faces (held-out identities)`` -> ``synthetic-faces``: drop a parenthesised note, then cut."""
    text = str(name)
    if len(text) > limit and "(" in text:
        text = text.split("(", 1)[0].rstrip() or text
    return cut(text, limit)


def default_table_columns(df: pd.DataFrame) -> List[str]:
    """:data:`TABLE_COLUMNS`, plus :data:`CLASS_COLUMNS` after the batch when a run has a sample
    rate below 1 or the class counts differ between runs, plus the figures the rows were made for:
    ``amp_speedup`` when an AMP pair is present, ``scaling_efficiency`` when process counts differ."""
    cols = list(TABLE_COLUMNS)
    rates = pd.to_numeric(df["sample_rate"], errors="coerce") if "sample_rate" in df.columns else None
    classes = df["num_classes"].dropna() if "num_classes" in df.columns else None
    if (rates is not None and bool((rates < 1).any())) or (classes is not None and classes.nunique() > 1):
        at = cols.index("batch_size") + 1
        cols[at:at] = CLASS_COLUMNS
    at = cols.index("throughput_median") + 1
    if "amp_speedup" in df.columns and df["amp_speedup"].notna().any():
        cols.insert(at, "amp_speedup")
        at += 1
    if "scaling_efficiency" in df.columns and df["scaling_efficiency"].notna().any() \
            and "nproc" in df.columns and df["nproc"].dropna().nunique() > 1:
        cols.insert(at, "scaling_efficiency")
    at = cols.index("lfw_accuracy") + 1
    for c in set_accuracy_columns(df):  # runs with several verification sets: one column per set,
        check = "check:" + c.split(":", 1)[1]  # and its check where a published figure judged one
        judged = check in df.columns and df[check].isin(["PASS", "FAIL"]).any()
        cols[at:at] = [c, check] if judged else [c]
        at += 2 if judged else 1
    if "engine" in df.columns and df["engine"].dropna().nunique() > 1:  # torch beside onnxruntime
        cols.insert(cols.index("precision"), "engine")
    if "amp_dtype" in df.columns and df["amp_dtype"].notna().any():  # which autocast dtype ran (bf16, fp16)
        cols.insert(cols.index("precision") + 1, "amp_dtype")
    return cols


def layout(drop: Sequence[str] = (), keep: Sequence[str] = TABLE_KEEP, rows_are: str = "run(s)",
           more: str = "--columns all or --columns a,b,c shows others") -> fit.Layout:
    """How a runs-like table fits: ``drop`` hidden in turn while too wide (then, for the default
    table, :data:`TABLE_LAST_RESORT`), ``keep`` never folded."""
    first = [c for c in drop if c == "date"]  # a generated run id holds the date and time
    return fit.Layout(headers=TABLE_HEADERS, keep=tuple(keep), first=first, hide=tuple(c for c in drop if c not in first),
                      last_resort=TABLE_LAST_RESORT if drop else (), shrink=SHRINKABLE,
                      cutters={"run_id": fit.shorten_run_id, "reason": fit.cut_end, "verdict": fit.cut_end},
                      soft={"run_id": fit.run_id_soft_limit}, bare=FOLD_BARE,
                      fold_names={"sample_rate": "sample rate", "reference_check": "check"}, linked=(("batch_size", "nproc"),), rows_are=rows_are, more=more)


def fit_table(df: pd.DataFrame, columns: Optional[Sequence[str]] = None, width: Optional[int] = None,
              drop: Sequence[str] = (), rows_are: str = "run(s)",
              more: str = "--columns all or --columns a,b,c shows others",
              keep: Optional[Sequence[str]] = None, fold: bool = True) -> str:
    """The runs table for a terminal ``width`` characters wide (None: no limit).

    Set names are shortened; columns equal on every row are folded into an ``all rows:`` line
    (see :mod:`arcbench.reports.fit`); while the table is too wide, the columns in ``drop`` are
    hidden in turn (a last line names them), then long text cells are cut, then (default table
    only) the :data:`TABLE_LAST_RESORT` columns go too.  Numbers are never cut.
    """
    if not len(df):
        return "(no runs)"
    cols = [c for c in (columns or default_table_columns(df)) if c in df.columns]
    d = display(df, cols)
    for c in ("train_set", "eval_set"):
        if c in d.columns:
            d[c] = [short_set_name(v) for v in d[c]]
    numeric = {c: pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in cols}
    keep = TABLE_KEEP if keep is None else keep
    return fit.fit(d, layout(drop, keep, rows_are, more), width, numeric, fold=fold)


def _md_cell(v) -> str:
    return str(v).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def md_table(header: Sequence[str], rows: Sequence[Sequence], centre: bool = True) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join(":-:" if centre else "---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_md_cell(v) for v in r) + " |")
    return "\n".join(lines)


def md_frame(df: pd.DataFrame, columns: Optional[Sequence[str]] = None) -> str:
    d = display(df, columns)
    return md_table(list(d.columns), d.values.tolist(), centre=False)


def jsonable(df: pd.DataFrame) -> List[dict]:
    """Records with ``None`` for every kind of missing value and plain Python scalars."""
    out = []
    for rec in df.astype(object).to_dict("records"):
        clean = {}
        for k, v in rec.items():
            if missing(v):
                clean[k] = None
            elif hasattr(v, "item"):
                clean[k] = v.item()
            else:
                clean[k] = v
        out.append(clean)
    return out


def to_json(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n"


def to_csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, lineterminator="\n")


GROUP_METRICS = ["runs", "throughput_median", "lfw_accuracy", "amp_speedup", "peak_memory", "pass", "fail"]


def group_runs(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Aggregate per group: run count, median throughput, mean accuracy, median AMP speedup, max memory.

    ``synthetic`` is always added to the keys, so a group never mixes generated and real data.
    """
    by = [c.strip() for c in by if c.strip()]
    unknown = [c for c in by if c not in df.columns]
    if not by or unknown:
        raise ArcbenchError(f"--group-by: unknown column(s) {', '.join(unknown) or '(none given)'}; "
                            f"known: {', '.join(COLUMNS)}")
    if "synthetic" not in by:
        by = by + ["synthetic"]  # generated-data numbers never average with real-data ones
    keyed = df.copy()
    for c in by:
        f = _yesno if c in ("synthetic", "amp") else str
        keyed[c] = ["-" if missing(v) else f(v) for v in keyed[c]]
    rows = []
    for key, g in keyed.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        checks = g["reference_check"].astype("object")
        rows.append({**dict(zip(by, key)), "runs": len(g),
                     "throughput_median": g["throughput_median"].median(),
                     "lfw_accuracy": g["lfw_accuracy"].mean(),
                     "amp_speedup": g["amp_speedup"].median(),
                     "peak_memory": g["peak_memory"].astype("float64").max(),
                     "pass": int((checks == "PASS").sum()), "fail": int((checks == "FAIL").sum())})
    out = pd.DataFrame(rows, columns=list(by) + GROUP_METRICS)
    for c in ("throughput_median", "lfw_accuracy", "amp_speedup", "peak_memory"):
        out[c] = out[c].astype("float64")
    return out
