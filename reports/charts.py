"""Report charts as PNG bytes (matplotlib on an Agg canvas, no pyplot global state).

Each function returns ``None`` when the runs hold nothing to draw, so the HTML
report can say why a chart is missing instead of showing an empty frame.
"""
from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from ..record.plots import figure, png_bytes, style_axes

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


#: what changes a throughput figure: runs that differ in any of these never pool into one bar
CONFIG_PARTS = ("device", "precision", "batch_per_process", "cards", "mode", "data", "compile")


_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "torch.bfloat16": "bf16", "torch.float16": "fp16"}


def _common_title(title: str, common, width: int = 60) -> str:
    """The title, then what every bar shares, wrapped to ``width`` characters (the axes' width)."""
    import textwrap

    lines = textwrap.wrap(title, width)
    if common:
        lines += textwrap.wrap("all bars: " + ", ".join(common), width)
    return "\n".join(lines)


def _cards(d: pd.DataFrame) -> pd.Series:
    return (d["nproc"].astype("Float64").fillna(1) * d["nnodes"].astype("Float64").fillna(1)).astype("float64")


def _data_kind(raw, synthetic) -> str:
    if raw == "synthetic":
        return "random tensors"  # compute only: no decoding, no input pipeline
    return "generated images" if synthetic is True else "images"


def configurations(df: pd.DataFrame) -> pd.DataFrame:
    """Each run's configuration as text, one column per :data:`CONFIG_PARTS` (plus ``backbone``)."""
    cards = _cards(df)
    batch = df["batch_size"].astype("Float64")
    extra = df["per_process_batch"] if "per_process_batch" in df.columns else pd.Series([None] * len(df),
                                                                                        index=df.index)
    per_proc = [p if p is not None and not pd.isna(p) else (None if pd.isna(b) else b / max(n, 1))
                for p, b, n in zip(extra.astype("object"), batch.astype("object"), cards)]
    amp_dtype = df["amp_dtype"].astype("object") if "amp_dtype" in df.columns else [None] * len(df)
    prec = [f"{_label(p)}" + (f" {_DTYPES.get(str(t), str(t))}"
                              if _label(p) == "amp" and t is not None and not pd.isna(t) else "")
            for p, t in zip(df["precision"].astype("object"), amp_dtype)]
    raw = df["train_set_raw"].astype("object") if "train_set_raw" in df.columns else df["train_set"].astype("object")
    return pd.DataFrame({
        "backbone": [_label(v) for v in df["backbone"].astype("object")],
        "device": [_label(v) for v in df["device"].astype("object")],
        "precision": prec,
        "batch_per_process": ["-" if v is None or pd.isna(v) else f"batch {int(v)}/proc" for v in per_proc],
        "cards": [f"{int(n)} proc" + ("s" if n > 1 else "") for n in cards],
        "mode": [_label(v) for v in df["mode"].astype("object")],
        "data": [_data_kind(r, syn) for r, syn in zip(raw, df["synthetic"].astype("object"))],
        "compile": ["compiled" if v is True else "eager" for v in df["compile"].astype("object")],
    }, index=df.index)


def _labelled(conf: pd.DataFrame, parts) -> tuple:
    """``(label per row, parts equal on every row)``: a label names only what tells rows apart."""
    varying = [p for p in parts if conf[p].nunique() > 1]
    common = [conf[p].iloc[0] for p in parts if p not in varying and conf[p].iloc[0] != "-"]
    labels = [", ".join(conf.at[i, p] for p in varying) or "all runs" for i in conf.index]
    return labels, common


def throughput_bars(df: pd.DataFrame) -> pd.DataFrame:
    """One bar per backbone and configuration: ``backbone, label, throughput, runs`` (median over the
    runs of exactly that configuration; unlike runs are never pooled), and ``attrs["common"]``."""
    d = _usable(df, "throughput_median")
    if not len(d):
        return pd.DataFrame(columns=["backbone", "label", "throughput", "runs"])
    conf = configurations(d)
    labels, common = _labelled(conf, CONFIG_PARTS)
    keyed = pd.DataFrame({"backbone": conf["backbone"], "label": labels,
                          "synthetic": [syn for syn in _synth(d)],
                          "key": ["|".join(conf.loc[i, list(CONFIG_PARTS)]) for i in conf.index],
                          "throughput": d["throughput_median"].astype("float64")})
    keyed["label"] = keyed["label"] + keyed["synthetic"]
    out = (keyed.groupby(["backbone", "key", "label"], sort=True)["throughput"].agg(["median", "size"])
           .reset_index().rename(columns={"median": "throughput", "size": "runs"}))
    out = out[["backbone", "label", "throughput", "runs"]]
    out.attrs["common"] = common
    return out


def throughput_by_device(df: pd.DataFrame) -> Optional[bytes]:
    """Median throughput per backbone, one bar per configuration (device, precision, batch per process,
    processes, mode, data kind, compile), labelled with what differs between the configurations."""
    bars = throughput_bars(df)
    if not len(bars):
        return None
    backbones = sorted(bars["backbone"].unique())
    series = list(dict.fromkeys(bars["label"]))
    colour = {s: _PALETTE[j % len(_PALETTE)] for j, s in enumerate(series)}
    widest = max(int((bars["backbone"] == b).sum()) for b in backbones)
    axes_w = max(3.5, 1.0 + 0.45 * widest * len(backbones))
    legend_w = 0.5 + 0.065 * max(len(str(v)) for v in series)  # the legend sits right of the axes
    fig = _figure(axes_w + legend_w + 1.0, 4.4)
    ax = fig.subplots()
    width = 0.8 / max(1, widest)
    labelled = set()
    for i, b in enumerate(backbones):
        present = bars[bars["backbone"] == b]
        left = i - width * len(present) / 2  # only the configurations a backbone has, centred on its tick
        for j, r in enumerate(present.itertuples(index=False)):
            bar = ax.bar(left + width * (j + 0.5), r.throughput, width, color=colour[r.label],
                         label=None if r.label in labelled else r.label)[0]
            labelled.add(r.label)
            _label_bar(ax, bar, f"{r.throughput:.{1 if r.throughput < 10 else 0}f}"
                       + (f" ({r.runs} runs)" if r.runs > 1 else ""), 7)
    common = bars.attrs.get("common") or []
    _bar_axes(ax, backbones, "images/s (median over like runs)",
              _common_title("Throughput by backbone and configuration", common, int(axes_w * 11)), 0.12)
    ax.legend(fontsize=8, title="configuration", title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _png(fig)


def amp_speedup(df: pd.DataFrame) -> Optional[bytes]:
    """AMP/FP32 throughput ratio per configuration (below 1 is a valid result, e.g. bf16 on CPU)."""
    d = _usable(df, "amp_speedup")
    if not len(d):
        return None
    conf = configurations(d)
    parts = ("device", "backbone", "precision", "batch_per_process", "cards", "data", "compile")
    labels, common = _labelled(conf, parts)
    d = d.assign(key=[f"{lab}{syn}".replace(", ", "\n") for lab, syn in zip(labels, _synth(d))])
    s = d.groupby("key")["amp_speedup"].median()
    fig = _figure(max(5.0, 1.5 + 0.9 * len(s)), 3.8)
    ax = fig.subplots()
    colors = ["#2ca02c" if v >= 1 else "#d62728" for v in s.values]
    bars = ax.bar(range(len(s)), s.values, color=colors, width=0.6)
    for b, v in zip(bars, s.values):
        _label_bar(ax, b, f"{v:.2f}x", 8)
    ax.axhline(1.0, color="#555555", lw=0.8, ls="--")
    _bar_axes(ax, list(s.index), "AMP / FP32 throughput",
              _common_title("AMP speedup", common), 0.15, label_size=8)
    return _png(fig)


def scaling(df: pd.DataFrame) -> Optional[bytes]:
    """Throughput against process count per configuration (all but the process count), with ideal
    linear scaling dashed."""
    d = _usable(df, "throughput_median")
    if not len(d):
        return None
    conf = configurations(d)
    parts = ("device", "backbone", "precision", "batch_per_process", "mode", "data", "compile")
    d = d.assign(cards=_cards(d),
                 series=[", ".join(conf.loc[i, list(parts)]) + syn for i, syn in zip(conf.index, _synth(d))])
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
