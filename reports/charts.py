"""Report charts as PNG bytes (matplotlib on an Agg canvas, no pyplot global state).

Each function returns ``None`` when the runs hold nothing to draw, so the HTML
report can say why a chart is missing instead of showing an empty frame.
"""
from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from ..plots import figure, png_bytes, style_axes

_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf"]


def _figure(w: float, h: float):
    return figure((w, h), dpi=96)


def _png(fig) -> bytes:
    """Charts keep their size (the page lays them out), so the axes are re-spaced rather than cropped."""
    return png_bytes(fig, fit="layout")


def _bar_axes(ax, labels, ylabel: str, title: str, ymargin: float, label_size: Optional[float] = None) -> None:
    """One tick per category, a small title, a y grid, and headroom above the bars for their value labels."""
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, **({} if label_size is None else {"fontsize": label_size}))
    style_axes(ax, title, ylabel=ylabel, title_size=10, grid="y")
    ax.margins(y=ymargin)


def _label_bar(ax, bar, text: str, size: float) -> None:
    ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                fontsize=size, xytext=(0, 2), textcoords="offset points")


def _usable(df: pd.DataFrame, col: str) -> pd.DataFrame:
    if not len(df):
        return df
    ok = df[col].notna() & (df["status"].astype("object").fillna("") != "failed")
    return df[ok]


def _synth(d: pd.DataFrame) -> list:
    """" (synthetic)" for rows on generated data: their numbers are always labelled as such."""
    return [" (synthetic)" if v is True else "" for v in d["synthetic"].astype("object")]


def _label(v) -> str:
    return "-" if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(v)


def throughput_by_device(df: pd.DataFrame) -> Optional[bytes]:
    """Median throughput per backbone, one bar per device/precision."""
    d = _usable(df, "throughput_median")
    if not len(d):
        return None
    cards = (d["nproc"].astype("Float64").fillna(1) * d["nnodes"].astype("Float64").fillna(1)).astype("float64")
    # the process count is part of the series: a 4-card median must not pool with 1-card runs
    d = d.assign(backbone=[_label(v) for v in d["backbone"]],
                 series=[f"{_label(a)} {_label(b)}" + (f" x{int(n)}" if n > 1 else "") + syn
                         for a, b, n, syn in zip(d["device"], d["precision"], cards, _synth(d))])
    table = d.groupby(["backbone", "series"])["throughput_median"].median().unstack("series")
    backbones, series = list(table.index), list(table.columns)
    colour = {s: _PALETTE[j % len(_PALETTE)] for j, s in enumerate(series)}
    widest = max(int(table.loc[b].notna().sum()) for b in backbones)
    fig = _figure(max(6.0, 1.5 + 0.45 * widest * len(backbones)), 4.0)
    ax = fig.subplots()
    width = 0.8 / max(1, widest)
    labelled = set()
    for i, b in enumerate(backbones):
        present = [(s, table.loc[b, s]) for s in series if not pd.isna(table.loc[b, s])]
        left = i - width * len(present) / 2  # only the series a backbone has, centred on its tick
        for j, (s, v) in enumerate(present):
            bar = ax.bar(left + width * (j + 0.5), v, width, color=colour[s],
                         label=None if s in labelled else s)[0]
            labelled.add(s)
            _label_bar(ax, bar, f"{v:.0f}", 7)
    _bar_axes(ax, backbones, "images/s (median over runs)", "Training throughput by backbone and device", 0.12)
    ax.legend(fontsize=8, title="device precision [x processes]", title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _png(fig)


def amp_speedup(df: pd.DataFrame) -> Optional[bytes]:
    """AMP/FP32 throughput ratio per device and backbone (below 1 is a valid result, e.g. bf16 on CPU)."""
    d = _usable(df, "amp_speedup")
    if not len(d):
        return None
    d = d.assign(key=[f"{_label(a)}\n{_label(b)}{syn}" for a, b, syn in zip(d["device"], d["backbone"], _synth(d))])
    s = d.groupby("key")["amp_speedup"].median()
    fig = _figure(max(5.0, 1.5 + 0.9 * len(s)), 3.6)
    ax = fig.subplots()
    colors = ["#2ca02c" if v >= 1 else "#d62728" for v in s.values]
    bars = ax.bar(range(len(s)), s.values, color=colors, width=0.6)
    for b, v in zip(bars, s.values):
        _label_bar(ax, b, f"{v:.2f}x", 8)
    ax.axhline(1.0, color="#555555", lw=0.8, ls="--")
    _bar_axes(ax, list(s.index), "AMP / FP32 throughput", "AMP speedup (device, backbone)", 0.15, label_size=8)
    return _png(fig)


def scaling(df: pd.DataFrame) -> Optional[bytes]:
    """Throughput against process count per device/backbone/precision, with ideal linear scaling dashed."""
    d = _usable(df, "throughput_median")
    if not len(d):
        return None
    nproc = d["nproc"].astype("Float64").fillna(1)
    nnodes = d["nnodes"].astype("Float64").fillna(1)
    d = d.assign(cards=(nproc * nnodes).astype("float64"),
                 series=[f"{_label(a)} {_label(b)} {_label(c)}{syn}" for a, b, c, syn in
                         zip(d["device"], d["backbone"], d["precision"], _synth(d))])
    groups = [(k, g.groupby("cards")["throughput_median"].median()) for k, g in d.groupby("series")]
    groups = [(k, s) for k, s in groups if len(s) >= 2]
    if not groups:
        return None
    fig = _figure(6.5, 4.0)
    ax = fig.subplots()
    for j, (k, s) in enumerate(groups):
        color = _PALETTE[j % len(_PALETTE)]
        ax.plot(s.index, s.values, marker="o", color=color, label=k)
        base_n, base_v = s.index[0], s.values[0]
        ax.plot(s.index, [base_v * n / base_n for n in s.index], ls="--", lw=0.8, color=color, alpha=0.6)
    style_axes(ax, "Scaling (dashed: ideal linear from the smallest run)", "processes (nproc x nnodes)",
               "images/s", title_size=10)
    ax.set_xticks(sorted({int(c) for _k, s in groups for c in s.index}))
    ax.legend(fontsize=8)
    return _png(fig)


def run_curves(loss: pd.DataFrame, acc: pd.DataFrame, per_epoch_loss: bool = False) -> Optional[bytes]:
    """One run's loss (per step, or per epoch) and accuracy (per epoch) side by side (caption is the page's)."""
    from matplotlib.ticker import MaxNLocator

    panels = int(len(loss) > 0) + int(len(acc) > 0)
    if not panels:
        return None
    fig = _figure(3.4 * panels + 0.4, 2.7)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    i = 0
    if len(loss):
        ax = axes[i]
        i += 1
        x = loss["epoch"] if per_epoch_loss else loss["step"]
        ax.plot(x, loss["loss"], color="#1f77b4", lw=1.0, marker="o" if len(loss) < 30 else None, ms=3)
        style_axes(ax, xlabel="epoch" if per_epoch_loss else "step", ylabel="train.loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(acc):
        ax = axes[i]
        ax.plot(acc["epoch"], acc["accuracy"] * 100, color="#2ca02c", marker="o", ms=3)
        if acc["accuracy_std"].notna().any():
            std = acc["accuracy_std"].fillna(0) * 100
            ax.fill_between(acc["epoch"], acc["accuracy"] * 100 - std, acc["accuracy"] * 100 + std,
                            color="#2ca02c", alpha=0.15, lw=0)
        style_axes(ax, xlabel="epoch", ylabel="val accuracy %")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(acc) == 1:
            e0 = float(acc["epoch"].iloc[0])
            ax.set_xlim(e0 - 1, e0 + 1)
    return _png(fig)
