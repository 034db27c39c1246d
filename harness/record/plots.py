"""PNG plots rendered off-screen and written atomically.

matplotlib is imported only when a plot is asked for, and through the
object-oriented ``Figure`` + Agg canvas, so no global backend is switched
(an interactive session importing arcbench keeps its own) and no pyplot
figure registry leaks memory in long training runs.
"""
from __future__ import annotations

import io
from typing import Dict, Optional, Sequence, Tuple

from .atomic import write_bytes


def figure(figsize=(6.0, 4.5), dpi: int = 100):
    """A Figure on its own Agg canvas: no pyplot registry to leak or close, no global backend switch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def style_axes(ax, title: Optional[str] = None, xlabel: Optional[str] = None, ylabel: Optional[str] = None,
               title_size: Optional[float] = None, grid: str = "both") -> None:
    """Title, axis labels and the light grid every arcbench chart uses (None leaves a part as it is)."""
    if title is not None:
        ax.set_title(title, **({} if title_size is None else {"fontsize": title_size}))
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    ax.grid(axis=grid, alpha=0.3)


def png_bytes(fig, fit: str = "crop") -> bytes:
    """The figure as PNG. ``crop``: the image is cut to what is drawn (run plots, any size);
    ``layout``: the axes are re-spaced inside the figure's own size (report charts keep theirs)."""
    if fit == "layout":
        fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight" if fit == "crop" else None)
    return buf.getvalue()


def save_png(fig, path) -> None:
    """Write a cropped PNG atomically (missing directories are created), so a reader never sees half a file."""
    write_bytes(path, png_bytes(fig))


def _value_text(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.4g}"


def lines_figure(series: Dict[str, Tuple[Sequence[float], Sequence[float]]], title: str = "",
                 xlabel: str = "", ylabel: str = "", logx: bool = False, logy: bool = False):
    """The figure :func:`plot_lines` saves.

    When every series holds a single point (a run that verified once), a curve
    would be one dot on a meaningless axis: each value is written out instead,
    labelled with its series and x (``verification accuracy: 0.8990 (epoch 3)``).
    """
    fig = figure()
    ax = fig.add_subplot(1, 1, 1)
    items = [(label, list(xs), list(ys)) for label, (xs, ys) in series.items()]
    if items and all(len(xs) == 1 and len(ys) == 1 for _label, xs, ys in items):
        ax.set_axis_off()
        rows = []
        for label, xs, ys in items:
            x = xs[0]
            where = f"{xlabel} {x:g}" if isinstance(x, (int, float)) and xlabel else str(x)
            rows.append(f"{label}: {_value_text(float(ys[0]))}" + (f"\n({where})" if where else ""))
        ax.text(0.5, 0.5, "\n\n".join(rows), ha="center", va="center", fontsize=18, transform=ax.transAxes)
        ax.set_title(f"{title}\none measurement" if title else "one measurement")
        return fig
    for label, xs, ys in items:
        ax.plot(xs, ys, label=str(label), marker="o" if len(xs) <= 12 else None)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    style_axes(ax, title, xlabel, ylabel)
    if series:
        ax.legend(loc="best")
    return fig


def plot_lines(series: Dict[str, Tuple[Sequence[float], Sequence[float]]], path, title: str = "",
               xlabel: str = "", ylabel: str = "", logx: bool = False, logy: bool = False) -> None:
    """One line per ``label -> (xs, ys)``; for loss and accuracy curves as well as ROC.

    A single measurement per series is drawn as a labelled value, not a one-point curve.
    """
    save_png(lines_figure(series, title, xlabel, ylabel, logx, logy), path)


def plot_roc(fpr: Sequence[float], tpr: Sequence[float], path, title: Optional[str] = None,
             auc: Optional[float] = None) -> None:
    """ROC curve (TPR against FPR) with the chance diagonal."""
    label = "ROC" if auc is None else f"ROC (AUC {auc:.4f})"
    fig = figure((5.0, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(list(fpr), list(tpr), label=label)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    style_axes(ax, title or "ROC", "false positive rate", "true positive rate")
    ax.legend(loc="lower right")
    save_png(fig, path)


def write_plots(rec, history: dict, last_eval: Optional[dict]) -> None:
    """Rank 0's pictures of a finished run: loss, verification accuracy per epoch."""
    if history["loss"]:
        xs, ys = zip(*history["loss"])
        plot_lines({"train.loss": (list(xs), list(ys))}, rec.path("plots", "loss.png"),
                   title="Training loss", xlabel="step", ylabel="loss")
    if history["epoch_accuracy"]:
        xs = [row[0] for row in history["epoch_accuracy"]]
        ys = [row[1] for row in history["epoch_accuracy"]]
        plot_lines({"verification accuracy": (xs, ys)}, rec.path("plots", "accuracy.png"),
                   title="Verification accuracy (10-fold)", xlabel="epoch", ylabel="accuracy")
    write_roc(rec, last_eval)


def write_roc(rec, result: Optional[dict]) -> None:
    """The ROC of the last verification (training) or of the evaluated weights (eval runs)."""
    if result and result.get("roc"):
        plot_roc(result["roc"]["fpr"], result["roc"]["tpr"], rec.path("plots", "roc.png"),
                 title=f"ROC on {result.get('name', 'verification pairs')}", auc=result.get("auc"))
