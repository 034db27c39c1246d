"""Verification during training, as an epoch callback of the training loop.

Every rank calls it at the same points (sharded embedding: each rank embeds
its share of the images, rank 0 scores), so the collectives inside match;
the decision when to verify therefore depends only on what every rank knows.
A run may verify on several sets (``--val-bin`` repeated, plus a folder set):
each is verified at every point, one after the other, in the same order on
every rank.  The first is the headline set, whose figures fill the single-set
summary fields (``lfw_accuracy`` ...) that reports have always read.
"""
from __future__ import annotations

import sys

import numpy as np


class EpochVerification:
    """Verify every ``eval_every`` epochs and after the last one; once at the end if never."""

    def __init__(self, vsets, cfg):
        from ..registry import get_backbone

        self.vsets = list(vsets) if isinstance(vsets, (list, tuple)) else [vsets]
        self.vset, self.cfg = self.vsets[0], cfg  # the headline set
        self.spec = get_backbone(cfg.model.backbone)
        self.done = False  # set on every rank, so every rank takes the same branches

    def on_epoch_end(self, tr) -> None:
        every = self.cfg.eval.eval_every
        if every and (tr.epoch % every == 0 or tr.global_step >= tr.total_steps):
            self.verify(tr)

    def on_train_end(self, tr) -> None:
        if not self.done:
            self.verify(tr)

    def verify(self, tr) -> dict:
        """Every set in turn; returns the headline set's result (None on ranks other than 0)."""
        if tr.world_size > 1:
            from ..run import collectives
            from ..train import checkpoints

            # DDP keeps no BatchNorm statistics in step (broadcast_buffers=False): verify with rank 0's,
            # the ones backbone.pth exports, or the figure belongs to a mixture of per-rank models
            collectives.broadcast_buffers("eval.bn_buffers", checkpoints.unwrap(tr.face).backbone)
        results = [self.verify_set(tr, vset, headline=i == 0) for i, vset in enumerate(self.vsets)]
        self.done = True
        return results[0]

    def verify_set(self, tr, vset, headline: bool):
        from ..train import checkpoints
        from .evaluate import evaluate

        cfg = self.cfg
        start = tr.device.timestamp()
        result = evaluate(checkpoints.unwrap(tr.face).backbone, tr.device, vset,
                          batch_size=cfg.eval.eval_batch_size, flip=cfg.eval.eval_flip, amp=cfg.eval.eval_precision == "amp",
                          workers=cfg.data.workers, progress=tr.is_main and not cfg.recording.quiet and sys.stdout.isatty(),
                          sharded=True, input_size=self.spec.input_size,
                          fold_bn=self.spec.fold_bn)
        if tr.is_main:
            result["seconds"] = tr.device.timestamp() - start  # embedding and scoring: what this set costs
            acc, std = float(result["accuracy"]), float(result["accuracy_std"])
            if headline:
                tr.last_eval = result
                tr.best_accuracy = acc if tr.best_accuracy is None else max(tr.best_accuracy, acc)
                tr.history["epoch_accuracy"].append([tr.epoch, acc, std])
            tr.last_evals[vset.name] = result
            tr.history.setdefault("sets", {}).setdefault(vset.name, []).append([tr.epoch, acc, std])
            tr.sink.verification(tr.epoch, result, headline=headline, several=len(self.vsets) > 1)
        return result


def set_figures(result: dict, history: list) -> dict:
    """One set's summary entry: its last figures, best so far, thresholds, time and per-point history."""
    thresholds = [float(t) for t in result.get("best_thresholds", [])]
    out = {
        "accuracy": float(result["accuracy"]), "accuracy_std": float(result["accuracy_std"]),
        "best_accuracy": max([float(a) for _e, a, _s in history] or [float(result["accuracy"])]),
        "best_thresholds": thresholds, "threshold": float(np.mean(thresholds)) if thresholds else None,
        "val": result.get("val"), "far": result.get("far"), "auc": result.get("auc"), "eer": result.get("eer"),
        "n_folds": result.get("n_folds"), "pairs_used": result.get("pairs_used"),
        "pairs_skipped": result.get("pairs_skipped"), "num_images": result.get("num_images"),
        "images_per_second": result.get("images_per_second"), "seconds": result.get("seconds"),
        "history": [list(row) for row in history],
    }
    if result.get("grid_unresolved"):
        out["accuracy_exact"] = result["accuracy_exact"]
    return out
