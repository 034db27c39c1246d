"""Compare two sets of runs (BASE vs NEW), configuration by configuration, and tell a regression from noise.

Runs are matched on :data:`KEYS`: everything that changes the figures
(device, backbone, head, precision and AMP dtype, compile, nproc, batch size,
input size, train and eval set, and ``num_classes`` / ``sample_rate`` where a
run records them).  Within a configuration, runs are compared only with runs
of the same length (:data:`LENGTH_KEYS`, epochs and steps): a 12-step and a
24-step run are "not comparable (steps 12 vs 24)", never a regression.
Failed and still-running runs are left out.

Throughput is judged from the samples each run recorded: the per-step
images/s in its ``metrics.jsonl`` (warm-up steps excluded at the start of
each segment).  Several runs of one configuration on a side are pooled.  A
seeded (hence deterministic) hierarchical bootstrap — resample the runs, then
the steps within each run — gives a :data:`CONFIDENCE` interval of the ratio
NEW median / BASE median.  With ``threshold`` percent (default 5):

* the interval lies wholly below ``1 - threshold/100``: a regression;
* it straddles that limit: ``inconclusive`` (more steps or more runs decide it);
* otherwise: ``ok``.

Runs without per-step times (summary-only runs, eval-mode bench points) fall
back to one sample per run, their ``throughput_median``: with one run per
side that interval is a single point, and the verdict says so.

Accuracy falls by more than ``tolerance`` points (default 0.5, the same
tolerance as the reference check): a regression as well.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

KEYS = ["device", "backbone", "head", "precision", "amp_dtype", "compile", "nproc", "batch_size", "input_size",
        "train_set", "eval_set", "num_classes", "sample_rate"]
LENGTH_KEYS = ["epochs", "steps"]
DEFAULT_THRESHOLD = 5.0
CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
#: per-run cap on the steps that enter the bootstrap (evenly spaced), to bound time and memory
MAX_STEPS_PER_RUN = 2000
#: a failed run's numbers, or a still-running run's partial ones, would skew the pooled figures
EXCLUDED_STATUS = ("failed", "running", "stale (process gone)")
COMPARE_COLUMNS = KEYS + LENGTH_KEYS + [
    "base_runs", "new_runs", "base_samples", "new_samples", "samples_kind", "base_throughput", "new_throughput",
    "throughput_change_pct", "change_low_pct", "change_high_pct", "base_accuracy", "new_accuracy",
    "accuracy_change_points", "accuracy_change_pct", "regression", "inconclusive", "verdict",
]
#: the terminal table of --compare: what a reader needs to act on a verdict
TABLE_COLUMNS = ["device", "backbone", "precision", "batch_size", "train_set", "steps", "base_runs", "new_runs",
                 "base_throughput", "new_throughput", "throughput_change_pct", "change_interval",
                 "accuracy_change_points", "verdict"]

#: hidden in this order when the compare table is wider than the terminal
TABLE_DROP_ORDER = ["base_throughput", "new_throughput", "accuracy_change_points", "train_set", "precision", "steps"]

#: never folded into the table's "all rows" line: what the comparison is for
TABLE_KEEP = ("base_runs", "new_runs", "base_throughput", "new_throughput", "throughput_change_pct",
              "change_interval", "accuracy_change_points", "verdict")

SampleLoader = Callable[[dict], Optional[np.ndarray]]


def _missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) or v == ""


def _key(v) -> str:
    if _missing(v):
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def step_samples(row: dict) -> Optional[np.ndarray]:
    """Per-step global images/s a run recorded (warm-up excluded), from its run dir or log file; else None."""
    from ..errors import ArcbenchError
    from .curves import timed_step_throughputs
    from .dllog import parse_file

    path = row.get("path")
    if _missing(path):
        return None
    path = os.fspath(path)
    log = os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path
    if not os.path.isfile(log):
        return None
    warmup = row.get("timing_warmup")
    warmup = 5 if _missing(warmup) else int(warmup)
    try:
        ips = timed_step_throughputs(parse_file(log), warmup)
    except ArcbenchError:
        return None
    vals = ips.to_numpy(dtype="float64")
    vals = vals[np.isfinite(vals) & (vals > 0)]
    return vals if vals.size else None


def _cap(a: np.ndarray) -> np.ndarray:
    if a.size <= MAX_STEPS_PER_RUN:
        return a
    return a[np.linspace(0, a.size - 1, MAX_STEPS_PER_RUN).round().astype(int)]


def _boot_medians(runs: List[np.ndarray], rng: np.random.Generator, b: int) -> np.ndarray:
    """Bootstrap medians of the pooled samples: resample the runs, then the samples within each run."""
    if len(runs) == 1:
        a = runs[0]
        out = np.empty(b)
        chunk = max(1, 4_000_000 // max(1, a.size))
        for s in range(0, b, chunk):
            n = min(chunk, b - s)
            out[s:s + n] = np.median(a[rng.integers(0, a.size, size=(n, a.size))], axis=1)
        return out
    out = np.empty(b)
    for i in range(b):
        picked = rng.integers(0, len(runs), size=len(runs))
        out[i] = np.median(np.concatenate([runs[j][rng.integers(0, runs[j].size, size=runs[j].size)]
                                           for j in picked]))
    return out


def ratio_interval(base_runs: Sequence[np.ndarray], new_runs: Sequence[np.ndarray],
                   confidence: float = CONFIDENCE, n_boot: int = BOOTSTRAP_SAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> Tuple[float, float, float]:
    """``(ratio, low, high)``: NEW / BASE pooled median and its bootstrap percentile interval.

    Each argument is a list of per-run sample arrays (pooled, hierarchically resampled).
    The same inputs always give the same interval (fixed seed).
    """
    base = [_cap(np.asarray(r, dtype="float64")) for r in base_runs if len(r)]
    new = [_cap(np.asarray(r, dtype="float64")) for r in new_runs if len(r)]
    if not base or not new:
        return math.nan, math.nan, math.nan
    ratio = float(np.median(np.concatenate(new)) / np.median(np.concatenate(base)))
    rng = np.random.default_rng(seed)
    rb = _boot_medians(new, rng, n_boot) / _boot_medians(base, rng, n_boot)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(rb, [alpha, 1.0 - alpha])
    return ratio, float(min(lo, ratio)), float(max(hi, ratio))


def _usable(df: pd.DataFrame) -> List[dict]:
    if len(df):
        df = df[~df["status"].astype("object").fillna("").isin(EXCLUDED_STATUS)]
    return df.to_dict("records")


def _length_text(b: Tuple[str, str], n: Tuple[str, str]) -> str:
    parts = [f"{name} {x} vs {y}" for name, x, y in zip(LENGTH_KEYS, b, n) if x != y]
    return ", ".join(parts)


def _samples(recs: List[dict], loader: SampleLoader) -> Tuple[List[np.ndarray], str]:
    per_step = [loader(r) for r in recs]
    if recs and all(s is not None and len(s) for s in per_step):
        return per_step, "steps"
    runs = [np.array([float(r["throughput_median"])]) for r in recs if not _missing(r.get("throughput_median"))]
    return runs, "runs"


def _acc(recs: List[dict]) -> float:
    acc = pd.Series([r.get("lfw_accuracy") for r in recs], dtype="float64").dropna()
    return float(acc.mean()) * 100.0 if len(acc) else math.nan


def _run_median(recs: List[dict]) -> float:
    thr = pd.Series([r.get("throughput_median") for r in recs], dtype="float64").dropna()
    return float(thr.median()) if len(thr) else math.nan


def _row(key, length, b_recs, n_recs, threshold, tolerance, loader) -> dict:
    row = {**dict(zip(KEYS, key)), **dict(zip(LENGTH_KEYS, length)),
           "base_runs": len(b_recs), "new_runs": len(n_recs), "base_samples": 0, "new_samples": 0,
           "samples_kind": None, "base_throughput": _run_median(b_recs), "new_throughput": _run_median(n_recs),
           "throughput_change_pct": math.nan, "change_low_pct": math.nan, "change_high_pct": math.nan,
           "base_accuracy": _acc(b_recs), "new_accuracy": _acc(n_recs), "accuracy_change_points": math.nan,
           "accuracy_change_pct": math.nan, "regression": False, "inconclusive": False}
    if not b_recs or not n_recs:
        row["verdict"] = "only in new" if not b_recs else "only in base"
        return row
    ba, na = row["base_accuracy"], row["new_accuracy"]
    if not (math.isnan(ba) or math.isnan(na)):
        row["accuracy_change_points"] = na - ba
        row["accuracy_change_pct"] = (na - ba) / ba * 100.0 if ba else math.nan
    b_s, b_kind = _samples(b_recs, loader)
    n_s, n_kind = _samples(n_recs, loader)
    if b_kind != n_kind:  # judge both sides the same way
        b_s, b_kind = _samples(b_recs, lambda r: None)
        n_s, n_kind = _samples(n_recs, lambda r: None)
    reasons, notes = [], []
    if b_s and n_s:
        ratio, lo, hi = ratio_interval(b_s, n_s)
        bm, nm = float(np.median(np.concatenate(b_s))), float(np.median(np.concatenate(n_s)))
        if b_kind == "steps":
            row["base_throughput"], row["new_throughput"] = bm, nm
        row.update(samples_kind=b_kind, base_samples=int(sum(len(s) for s in b_s)),
                   new_samples=int(sum(len(s) for s in n_s)), throughput_change_pct=(nm - bm) / bm * 100.0,
                   change_low_pct=(lo - 1) * 100.0, change_high_pct=(hi - 1) * 100.0)
        limit = 1.0 - float(threshold) / 100.0
        pct, lo_pct, hi_pct = row["throughput_change_pct"], row["change_low_pct"], row["change_high_pct"]
        point = b_kind == "runs" and len(b_s) == 1 and len(n_s) == 1
        interval = "" if point else f" [{lo_pct:+.1f}%, {hi_pct:+.1f}%]"
        if hi < limit:
            reasons.append(f"throughput {pct:+.1f}%{interval}")
            if point:
                notes.append("one run a side, no per-step times: no noise estimate")
        elif lo < limit:
            row["inconclusive"] = True
            notes.append(f"throughput {pct:+.1f}%: interval straddles -{float(threshold):g}%")
    acc_pts = row["accuracy_change_points"]
    if not math.isnan(acc_pts) and acc_pts < -float(tolerance):
        reasons.append(f"accuracy {acc_pts:+.2f} points")
    row["regression"] = bool(reasons)
    if reasons:
        row["verdict"] = "REGRESSION (" + ", ".join(reasons) + ")" + (f"; {notes[0]}" if notes else "")
        row["inconclusive"] = False  # a regression on accuracy settles it whatever the throughput says
    elif row["inconclusive"]:
        row["verdict"] = "inconclusive (" + notes[0] + ")"
    elif math.isnan(row["throughput_change_pct"]) and math.isnan(acc_pts):
        row["verdict"] = "n/a (nothing to compare)"
    else:
        row["verdict"] = "ok"
    return row


def compare(base: pd.DataFrame, new: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD,
            tolerance: float = 0.5, samples: Optional[SampleLoader] = None) -> pd.DataFrame:
    """One row per configuration and run length seen on either side, with changes and a verdict.

    ``samples(row)`` gives a run's per-step throughputs (default :func:`step_samples`).
    """
    loader = samples or step_samples
    sides: List[Dict[tuple, Dict[tuple, List[dict]]]] = []
    for df in (base, new):
        groups: Dict[tuple, Dict[tuple, List[dict]]] = {}
        for rec in _usable(df):
            k = tuple(_key(rec.get(c)) for c in KEYS)
            ln = tuple(_key(rec.get(c)) for c in LENGTH_KEYS)
            groups.setdefault(k, {}).setdefault(ln, []).append(rec)
        sides.append(groups)
    b_groups, n_groups = sides
    rows = []
    for key in sorted(set(b_groups) | set(n_groups)):
        b_len, n_len = b_groups.get(key, {}), n_groups.get(key, {})
        common = sorted(set(b_len) & set(n_len))
        if b_len and n_len and not common:
            # the same configuration, but no run length in common: never judged against each other
            bl, nl = sorted(b_len), sorted(n_len)
            b_recs = [r for ln in bl for r in b_len[ln]]
            n_recs = [r for ln in nl for r in n_len[ln]]
            row = _row(key, bl[0] if len(bl) == 1 else ("-", "-"), b_recs, n_recs, threshold, tolerance,
                       lambda r: None)
            text = "; ".join(_length_text(b, n) for b in bl for n in nl)
            row.update(throughput_change_pct=math.nan, change_low_pct=math.nan, change_high_pct=math.nan,
                       accuracy_change_points=math.nan, accuracy_change_pct=math.nan, regression=False,
                       inconclusive=False, samples_kind=None, verdict=f"not comparable ({text})")
            rows.append(row)
            continue
        for ln in sorted(set(b_len) | set(n_len)):
            rows.append(_row(key, ln, b_len.get(ln, []), n_len.get(ln, []), threshold, tolerance, loader))
    out = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    for c in ("base_throughput", "new_throughput", "throughput_change_pct", "change_low_pct", "change_high_pct",
              "base_accuracy", "new_accuracy", "accuracy_change_points", "accuracy_change_pct"):
        out[c] = out[c].astype("float64")
    for c in ("regression", "inconclusive"):
        out[c] = out[c].astype(bool)
    return out


def table(result: pd.DataFrame) -> pd.DataFrame:
    """The result with ``change_interval`` text, for the terminal table."""
    out = result.copy()
    out["change_interval"] = [
        "-" if _missing(lo) or _missing(hi) else f"[{lo:+.1f}%, {hi:+.1f}%]"
        for lo, hi in zip(result["change_low_pct"], result["change_high_pct"])]
    return out[[c for c in TABLE_COLUMNS if c in out.columns]]


def summary_line(result: pd.DataFrame, threshold: float, tolerance: float) -> str:
    n = int(result["regression"].sum()) if len(result) else 0
    unsure = int(result["inconclusive"].sum()) if len(result) else 0
    apart = int(result["verdict"].astype(str).str.startswith("not comparable").sum()) if len(result) else 0
    matched = int(((result["base_runs"] > 0) & (result["new_runs"] > 0)).sum()) - apart if len(result) else 0
    line = (f"{matched} configuration(s) matched, {n} regression(s), {unsure} inconclusive"
            + (f", {apart} not comparable (different length)" if apart else "")
            + f" (throughput drop beyond {threshold:g}% at {CONFIDENCE:.0%} confidence, "
              f"or accuracy drop > {tolerance:g} points)")
    if len(result):
        single = result[(result["base_runs"] == 1) & (result["new_runs"] == 1) & result["samples_kind"].notna()]
        if len(single):
            line += (f"; {len(single)} judged from one run a side: run-to-run noise is not measured, "
                     "pool repeated runs")
    return line
