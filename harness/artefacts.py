"""Rank 0's pictures of a finished run: loss, verification accuracy per epoch, ROC."""
from __future__ import annotations

from typing import Optional


def write_plots(rec, history: dict, last_eval: Optional[dict]) -> None:
    from .plots import plot_lines

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
        from .plots import plot_roc

        plot_roc(result["roc"]["fpr"], result["roc"]["tpr"], rec.path("plots", "roc.png"),
                 title=f"ROC on {result.get('name', 'verification pairs')}", auc=result.get("auc"))
