"""Compare two sets of runs (BASE vs NEW), configuration by configuration.

Runs are matched on :data:`KEYS` (device, backbone, head, precision, nproc,
batch_size, train_set).  Several runs of one configuration on a side are
pooled: median throughput, mean accuracy.  Failed and still-running runs
are left out.

A configuration is a regression when, in the spirit of
``pytest-benchmark compare --fail``:

* throughput fell by more than ``threshold`` percent (default 5), or
* accuracy fell by more than ``tolerance`` points (default 0.5, the same
  tolerance as the reference check: a relative 5% drop in accuracy would be
  far too lax to catch anything).
"""
from __future__ import annotations

import math

import pandas as pd

KEYS = ["device", "backbone", "head", "precision", "nproc", "batch_size", "train_set"]
DEFAULT_THRESHOLD = 5.0
#: a failed run's numbers, or a still-running run's partial ones, would skew the pooled figures
EXCLUDED_STATUS = ("failed", "running")
COMPARE_COLUMNS = KEYS + [
    "base_runs", "new_runs", "base_throughput", "new_throughput", "throughput_change_pct", "base_accuracy",
    "new_accuracy", "accuracy_change_points", "accuracy_change_pct", "regression", "verdict",
]


def _key(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return str(v)


def _pool(df: pd.DataFrame) -> pd.DataFrame:
    if len(df):
        df = df[~df["status"].astype("object").fillna("").isin(EXCLUDED_STATUS)]
    rows = {}
    for rec in df.to_dict("records"):
        k = tuple(_key(rec.get(c)) for c in KEYS)
        rows.setdefault(k, []).append(rec)
    out = []
    for k, recs in rows.items():
        thr = pd.Series([r.get("throughput_median") for r in recs], dtype="float64").dropna()
        acc = pd.Series([r.get("lfw_accuracy") for r in recs], dtype="float64").dropna()
        out.append(dict(zip(KEYS, k), runs=len(recs),
                        throughput=float(thr.median()) if len(thr) else math.nan,
                        accuracy=float(acc.mean()) * 100.0 if len(acc) else math.nan))
    return pd.DataFrame(out, columns=KEYS + ["runs", "throughput", "accuracy"])


def compare(base: pd.DataFrame, new: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD,
            tolerance: float = 0.5) -> pd.DataFrame:
    """One row per configuration seen on either side, with changes and a verdict."""
    b, n = _pool(base), _pool(new)
    m = b.merge(n, on=KEYS, how="outer", suffixes=("_base", "_new"), sort=True)
    rows = []
    for r in m.to_dict("records"):
        bt, nt = r["throughput_base"], r["throughput_new"]
        ba, na = r["accuracy_base"], r["accuracy_new"]
        thr_pct = (nt - bt) / bt * 100.0 if bt and not math.isnan(bt) and not math.isnan(nt) else math.nan
        acc_pts = na - ba if not (math.isnan(ba) or math.isnan(na)) else math.nan
        acc_pct = acc_pts / ba * 100.0 if not math.isnan(acc_pts) and ba else math.nan
        reasons = []
        if not math.isnan(thr_pct) and thr_pct < -float(threshold):
            reasons.append(f"throughput {thr_pct:+.1f}%")
        if not math.isnan(acc_pts) and acc_pts < -float(tolerance):
            reasons.append(f"accuracy {acc_pts:+.2f} points")
        if pd.isna(r["runs_base"]):
            verdict = "only in new"
        elif pd.isna(r["runs_new"]):
            verdict = "only in base"
        elif reasons:
            verdict = "REGRESSION (" + ", ".join(reasons) + ")"
        elif math.isnan(thr_pct) and math.isnan(acc_pts):
            verdict = "n/a (nothing to compare)"
        else:
            verdict = "ok"
        rows.append({**{k: r[k] for k in KEYS},
                     "base_runs": 0 if pd.isna(r["runs_base"]) else int(r["runs_base"]),
                     "new_runs": 0 if pd.isna(r["runs_new"]) else int(r["runs_new"]),
                     "base_throughput": bt, "new_throughput": nt, "throughput_change_pct": thr_pct,
                     "base_accuracy": ba, "new_accuracy": na, "accuracy_change_points": acc_pts,
                     "accuracy_change_pct": acc_pct, "regression": bool(reasons), "verdict": verdict})
    out = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    for c in ("base_throughput", "new_throughput", "throughput_change_pct", "base_accuracy", "new_accuracy",
              "accuracy_change_points", "accuracy_change_pct"):
        out[c] = out[c].astype("float64")
    return out


def summary_line(result: pd.DataFrame, threshold: float, tolerance: float) -> str:
    n = int(result["regression"].sum()) if len(result) else 0
    matched = int(((result["base_runs"] > 0) & (result["new_runs"] > 0)).sum()) if len(result) else 0
    return (f"{matched} configuration(s) matched, {n} regression(s) "
            f"(throughput drop > {threshold:g}% or accuracy drop > {tolerance:g} points)")
