"""Curves and fallback summary numbers computed from parsed DLLogger records.

Used for every run's plots, for runs whose ``summary.json`` is missing (still
running, or killed), and for imported model-zoo logs that have no summary at all.
:func:`load_loss_curve` and :func:`load_accuracy_curve` read them straight from
a run dir's ``metrics.jsonl`` or a log file.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Iterable, List, Optional

import pandas as pd

from .dllog import ParsedLog, Record, parse_file

#: first key present wins; QA.loss is tcap_dllogger's rename of a bare "loss"
LOSS_KEYS = ("train.loss", "QA.loss", "train.loss_avg", "loss")
#: global (summed over ranks) throughput first; per-rank keys are summed per step
GLOBAL_IPS_KEYS = ("train.total_ips",)
RANK_IPS_KEYS = ("train.ips", "train.throughput", "QA.speed", "train.speed")
ACC_KEYS = ("val.lfw.accuracy", "val.lfw_accuracy", "lfw.accuracy", "val.accuracy", "val.acc", "eval.accuracy")
ACC_STD_KEYS = ("val.lfw.accuracy_std", "val.lfw_accuracy_std", "lfw.accuracy_std", "val.accuracy_std")

#: the model-zoo ArcFace script logs no per-step loss: ``total_losss`` (sic) is the running mean
#: of the epoch's loss so far, used only when a log has no per-step loss key
RUNNING_MEAN_KEYS = ("total_losss",)
#: keys of the model-zoo script's validation records (their ``total_loss`` is the validation loss)
VALIDATION_KEYS = ("val_ips", "val_time", "val.ips", "val.loss")
#: what ``loss_curve(...).attrs["series"]`` says
SERIES_PER_STEP = "per-step training loss"
SERIES_RUNNING_MEAN = "running mean of the epoch's training loss (total_losss)"

LOSS_COLUMNS = ["step", "epoch", "iteration", "loss"]
ACC_COLUMNS = ["epoch", "accuracy", "accuracy_std"]


def as_fraction(x) -> Optional[float]:
    """Accuracy as a fraction: some logs write percent (98.48), arcbench writes 0.9848."""
    x = _finite(x)
    if x is None:
        return None
    return x / 100.0 if 1.0 < x <= 100.0 else x


def _finite(x) -> Optional[float]:
    if isinstance(x, bool) or x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _first(data: dict, keys: Iterable[str]):
    for k in keys:
        if k in data:
            v = _finite(data[k])
            if v is not None:
                return v
    return None


def _lead_rank(records: List[Record]) -> List[Record]:
    """Keep rank 0's records when several ranks log into one file (DDP)."""
    ranks = {r.data.get("rank") for r in records if "rank" in r.data}
    if len(ranks) <= 1:
        return records
    lead = min(ranks, key=lambda v: (_finite(v) is None, _finite(v) or 0))
    return [r for r in records if r.data.get("rank", lead) == lead]


def loss_curve(parsed: ParsedLog) -> pd.DataFrame:
    """Per-step training loss from LOG records with ``(epoch, iteration)`` steps.

    Sorted by step; a step logged twice (a resumed run) keeps its last value.
    ``step`` is the 0-based position after sorting.  ``attrs["series"]`` says what the
    values are: :data:`SERIES_PER_STEP`, or :data:`SERIES_RUNNING_MEAN` for a model-zoo
    log that has only ``total_losss``.  Validation records are never training loss.
    """
    steps = _lead_rank([r for r in parsed.logs if isinstance(r.step, tuple) and len(r.step) == 2
                        and not any(k in r.data for k in VALIDATION_KEYS)])
    series = SERIES_PER_STEP
    rows = []
    for keys, label in ((LOSS_KEYS, SERIES_PER_STEP), (RUNNING_MEAN_KEYS, SERIES_RUNNING_MEAN)):
        for r in steps:
            loss = _first(r.data, keys)
            if loss is not None:
                rows.append((r.step[0], r.step[1], loss))
        if rows:
            series = label
            break
    if not rows:
        df = pd.DataFrame(columns=LOSS_COLUMNS)
        df.attrs["series"] = series
        return df
    df = pd.DataFrame(rows, columns=["epoch", "iteration", "loss"])
    df = df.drop_duplicates(["epoch", "iteration"], keep="last").sort_values(["epoch", "iteration"], kind="stable")
    df.insert(0, "step", range(len(df)))
    df = df.reset_index(drop=True)[LOSS_COLUMNS]
    df.attrs["series"] = series
    return df


def running_mean(curve: pd.DataFrame) -> pd.DataFrame:
    """A per-step loss curve as the running mean of each epoch's loss (what ``total_losss`` is)."""
    out = curve.sort_values(["epoch", "iteration"], kind="stable").copy()
    g = out.groupby("epoch", sort=False)["loss"]
    out["loss"] = g.cumsum() / (g.cumcount() + 1)
    out.attrs["series"] = SERIES_RUNNING_MEAN
    return out


def epoch_loss_curve(parsed: ParsedLog) -> pd.DataFrame:
    """Per-epoch training loss (epoch-summary records), for runs without per-step losses."""
    rows = {}
    for r in _lead_rank([r for r in parsed.logs if isinstance(r.step, tuple) and len(r.step) == 1]):
        loss = _first(r.data, LOSS_KEYS)
        if loss is not None:
            rows[r.step[0]] = loss
    return pd.DataFrame(sorted(rows.items()), columns=["epoch", "loss"])


def accuracy_curve(parsed: ParsedLog) -> pd.DataFrame:
    """Per-epoch verification accuracy (fraction) and its 10-fold std."""
    rows: Dict[int, tuple] = {}
    for r in _lead_rank([r for r in parsed.logs if isinstance(r.step, tuple) and len(r.step) >= 1]):
        acc = as_fraction(_first(r.data, ACC_KEYS))
        if acc is None:
            continue
        std = _first(r.data, ACC_STD_KEYS)
        if std is not None and std > 1.0:
            std = std / 100.0
        rows[r.step[0]] = (acc, std)
    out = [(e, a, s) for e, (a, s) in sorted(rows.items())]
    return pd.DataFrame(out, columns=ACC_COLUMNS)


def throughput_series(parsed: ParsedLog) -> pd.Series:
    """Global images/s per logged step: ``train.total_ips``, else per-rank ips summed per step."""
    steps = [r for r in parsed.logs if isinstance(r.step, tuple) and len(r.step) == 2]
    total = [_first(r.data, GLOBAL_IPS_KEYS) for r in steps]
    total = [v for v in total if v is not None]
    if total:
        return pd.Series(total, dtype="float64")
    per_step: Dict[tuple, float] = {}
    seen = set()
    for r in steps:
        v = _first(r.data, RANK_IPS_KEYS)
        if v is None:
            continue
        key = (r.step, r.data.get("rank"))
        if key in seen:  # the same rank logging a step twice: keep one
            continue
        seen.add(key)
        per_step[r.step] = per_step.get(r.step, 0.0) + v
    return pd.Series(list(per_step.values()), dtype="float64")


def timed_step_throughputs(parsed: ParsedLog, warmup: int = 5) -> pd.Series:
    """Global images/s of every timed step, warm-up excluded at the start of each segment.

    A run's log gains a block of METADATA records each time a process opens it (a
    resumed run), so a segment starts at such a block or where the step goes back.
    Its first ``warmup`` steps are dropped, as the recorder drops them from its figures.
    Logs with per-rank ips only fall back to :func:`throughput_series` minus the first ``warmup``.
    """
    warmup = max(0, int(warmup))
    segments: List[List[float]] = [[]]
    last = None
    fresh = False
    lead = {id(r) for r in _lead_rank(parsed.logs)}
    for r in parsed.records:
        if r.kind == "METADATA":
            fresh = True
            continue
        if id(r) not in lead or r.superseded or not isinstance(r.step, tuple) or len(r.step) != 2:
            continue
        v = _first(r.data, GLOBAL_IPS_KEYS)
        if v is None:
            continue
        if (fresh or (last is not None and r.step <= last)) and segments[-1]:
            segments.append([])
        fresh, last = False, r.step
        segments[-1].append(v)
    timed = [v for seg in segments for v in seg[warmup:]]
    if any(segments):
        return pd.Series(timed, dtype="float64")
    return throughput_series(parsed).iloc[warmup:].reset_index(drop=True)


def derive_summary(parsed: ParsedLog) -> dict:
    """The summary.json fields that can be recomputed from the log alone."""
    out: dict = {}
    ips = throughput_series(parsed)
    if len(ips):
        out["throughput_median"] = float(ips.median())
        out["throughput_mean"] = float(ips.mean())
    acc = accuracy_curve(parsed)
    if len(acc):
        out["lfw_accuracy"] = float(acc["accuracy"].iloc[-1])
        std = acc["accuracy_std"].iloc[-1]
        out["lfw_accuracy_std"] = None if pd.isna(std) else float(std)
        out["best_lfw_accuracy"] = float(acc["accuracy"].max())
    else:
        # an eval-only log may report accuracy in its run summary record (step [])
        for r in parsed.logs:
            if r.step == ():
                a = as_fraction(_first(r.data, ACC_KEYS))
                if a is not None:
                    out["lfw_accuracy"] = out["best_lfw_accuracy"] = a
    loss = loss_curve(parsed)
    if len(loss):
        out["final_loss"] = float(loss["loss"].iloc[-1])
        out["steps"] = int(len(loss))
        out["epochs"] = int(loss["epoch"].nunique())
    else:
        eloss = epoch_loss_curve(parsed)
        if len(eloss):
            out["final_loss"] = float(eloss["loss"].iloc[-1])
            out["epochs"] = int(len(eloss))
    return out


def _parsed_for(source) -> ParsedLog:
    """A run dir's metrics.jsonl, or a log file, parsed."""
    source = os.fspath(source)
    if os.path.isdir(source):
        path = os.path.join(source, "metrics.jsonl")
        if not os.path.isfile(path):
            return ParsedLog(path=path)
        return parse_file(path)
    return parse_file(source)


def load_loss_curve(source) -> pd.DataFrame:
    """``DataFrame(step, epoch, iteration, loss)`` from a run dir or a log file."""
    return loss_curve(_parsed_for(source))


def load_accuracy_curve(source) -> pd.DataFrame:
    """``DataFrame(epoch, accuracy, accuracy_std)`` (fractions) from a run dir or a log file."""
    return accuracy_curve(_parsed_for(source))
