"""Loss-curve alignment: the SDAA model zoo's acceptance rule for two training runs.

Run B is the baseline (e.g. the CUDA or FP32 run) and is the denominator:

    MRE = mean(|a - b| / |b|)        MAE = mean(|a - b|)

over the aligned steps; the pair PASSes when ``MRE <= 5%`` **or** ``MAE <= 2e-4``
(the absolute rule rescues losses that converge to ~0, where relative error
explodes).  Steps where ``b == 0`` are left out of the MRE (and counted).

Alignment: on the ``(epoch, iteration)`` steps both runs logged.  When the two
runs share no step at all (different logging intervals or numbering), the
curves are aligned by position instead, truncated to the shorter one; the
result says which was used.

Like is compared with like: the SDAA model-zoo ArcFace script logs no per-step
loss, only ``total_losss``, the running mean of the epoch's loss so far.  When one
side is such a running mean and the other a per-step loss, the per-step side is
turned into its per-epoch running mean first; the result names the series compared.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..record import atomic
from ..errors import ArcbenchError
from ..record.plots import figure, png_bytes, style_axes
from .curves import SERIES_PER_STEP, SERIES_RUNNING_MEAN, running_mean

MRE_LIMIT = 0.05
MAE_LIMIT = 2e-4


@dataclass
class AlignResult:
    label_a: str
    label_b: str
    mode: str  # "step" or "index"
    n: int
    n_a: int
    n_b: int
    mre: float  # fraction; nan when every baseline value is 0
    mae: float
    zero_baseline: int
    passed: bool
    aligned: pd.DataFrame  # columns: step, epoch, iteration, loss_a, loss_b
    series: str = SERIES_PER_STEP  # which loss series was compared
    series_note: str = ""  # how a side was converted to it, if one was

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def to_dict(self) -> dict:
        return {
            "run_a": self.label_a, "run_b": self.label_b, "baseline": self.label_b, "aligned_on": self.mode,
            "steps": self.n, "steps_a": self.n_a, "steps_b": self.n_b,
            "mean_relative_error": None if math.isnan(self.mre) else self.mre,
            "mean_absolute_error": self.mae, "zero_baseline_steps": self.zero_baseline,
            "mre_limit": MRE_LIMIT, "mae_limit": MAE_LIMIT, "verdict": self.verdict,
            "loss_series": self.series, "loss_series_note": self.series_note or None,
        }

    def text(self) -> str:
        how = ("common (epoch, iteration) steps" if self.mode == "step"
               else "position (no common steps; truncated to the shorter run)")
        mre = "n/a (baseline all zero)" if math.isnan(self.mre) else f"{self.mre * 100:.4f}%"
        lines = [
            f"RUN_A: {self.label_a} ({self.n_a} steps)",
            f"RUN_B: {self.label_b} ({self.n_b} steps, baseline)",
            f"aligned on {self.n} {how}",
            f"loss series compared: {self.series}" + (f" ({self.series_note})" if self.series_note else ""),
            f"mean relative error: {mre}   (mean |a-b|/|b|, b = RUN_B)",
            f"mean absolute error: {self.mae:.6g}",
        ]
        if self.zero_baseline:
            lines.append(f"note: {self.zero_baseline} step(s) with b == 0 left out of the relative error")
        lines.append(f"verdict: {self.verdict}   (PASS when MRE <= {MRE_LIMIT:.0%} or MAE <= {MAE_LIMIT:g})")
        return "\n".join(lines)


def align(a: pd.DataFrame, b: pd.DataFrame, label_a: str = "RUN_A", label_b: str = "RUN_B") -> AlignResult:
    """Align two loss curves (``DataFrame(step, epoch, iteration, loss)``) and apply the rule."""
    for df, label in ((a, label_a), (b, label_b)):
        if df is None or not len(df):
            raise ArcbenchError(f"no per-step train.loss records in {label}")
    sa, sb = a.attrs.get("series", SERIES_PER_STEP), b.attrs.get("series", SERIES_PER_STEP)
    series, note = sa, ""
    if sa != sb:
        series = SERIES_RUNNING_MEAN
        if sa == SERIES_PER_STEP:
            a, note = running_mean(a), "RUN_A's per-step loss turned into its per-epoch running mean"
        else:
            b, note = running_mean(b), "RUN_B's per-step loss turned into its per-epoch running mean"
    merged = a.merge(b, on=["epoch", "iteration"], suffixes=("_a", "_b"), how="inner")
    if len(merged):
        mode = "step"
        merged = merged.sort_values(["epoch", "iteration"], kind="stable")
        aligned = pd.DataFrame({"step": range(len(merged)), "epoch": merged["epoch"].to_numpy(),
                                "iteration": merged["iteration"].to_numpy(),
                                "loss_a": merged["loss_a"].to_numpy(), "loss_b": merged["loss_b"].to_numpy()})
    else:
        mode = "index"
        n = min(len(a), len(b))
        aligned = pd.DataFrame({"step": range(n), "epoch": a["epoch"].to_numpy()[:n],
                                "iteration": a["iteration"].to_numpy()[:n],
                                "loss_a": a["loss"].to_numpy()[:n], "loss_b": b["loss"].to_numpy()[:n]})
    va = aligned["loss_a"].to_numpy(dtype="float64")
    vb = aligned["loss_b"].to_numpy(dtype="float64")
    diff = np.abs(va - vb)
    mae = float(diff.mean())
    nz = vb != 0
    mre = float((diff[nz] / np.abs(vb[nz])).mean()) if nz.any() else float("nan")
    passed = (not math.isnan(mre) and mre <= MRE_LIMIT + 1e-12) or mae <= MAE_LIMIT
    return AlignResult(label_a, label_b, mode, len(aligned), len(a), len(b), mre, mae,
                       int((~nz).sum()), bool(passed), aligned, series, note)


def plot_png(result: AlignResult) -> bytes:
    """Both curves and their relative error as a PNG (Agg canvas; no pyplot state)."""
    fig = figure((8, 5.5))
    ax, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    x = result.aligned["step"]
    ax.plot(x, result.aligned["loss_b"], label=f"B (baseline): {result.label_b}", color="#1f77b4", lw=1.4)
    ax.plot(x, result.aligned["loss_a"], label=f"A: {result.label_a}", color="#d62728", lw=1.0, alpha=0.85)
    ax.legend(loc="upper right", fontsize=8)
    mre = "n/a" if math.isnan(result.mre) else f"{result.mre:.2%}"
    style_axes(ax, f"loss alignment: {result.verdict}  (MRE {mre}, MAE {result.mae:.3g})", ylabel="train.loss",
               title_size=10)
    vb = result.aligned["loss_b"].to_numpy(dtype="float64")
    va = result.aligned["loss_a"].to_numpy(dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(vb != 0, np.abs(va - vb) / np.abs(vb), np.nan)
    ax2.plot(x, rel * 100, color="#555555", lw=0.8)
    ax2.axhline(MRE_LIMIT * 100, color="#d62728", ls="--", lw=0.8)
    ax2.set_ylim(bottom=0)
    style_axes(ax2, xlabel="aligned step" if result.mode == "step" else "position", ylabel="|a-b|/|b| %")
    return png_bytes(fig, fit="layout")


def write_plot(result: AlignResult, path) -> None:
    atomic.write_bytes(path, plot_png(result))


def default_plot_name(label_a: str, label_b: str) -> str:
    def safe(s: str) -> str:
        s = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(s))
        return s.strip("._")[:60] or "run"

    return f"align_{safe(label_a)}_vs_{safe(label_b)}.png"
