"""Verification during training: when to verify, the verifying, and the record of what was found.

Every rank calls :class:`EpochVerifier` at the same points (sharded embedding:
each rank embeds its share of the images, rank 0 scores), so the collectives
inside match; the decision when to verify therefore depends only on what every
rank knows.  A run may verify on several sets (``--val-bin`` repeated, plus a
folder set): each is verified at every point, one after the other, in the same
order on every rank.  The first is the headline set, whose figures fill the
single-set summary fields (``lfw_accuracy`` ...) that reports have always read
(:func:`headline_figures`, shared with ``--mode eval``).

The verifier returns its results; the training loop keeps them in a
:class:`VerificationRecord` (rank 0), which a checkpoint saves and restores.
"""
from __future__ import annotations

import sys
from typing import List, Optional, Tuple

import numpy as np


class EpochVerifier:
    """Verify every ``eval_every`` epochs and after the last one; once at the end if never."""

    def __init__(self, vsets, cfg, device, world_size: int = 1, is_main: bool = True):
        from ..registry import get_backbone

        self.vsets = list(vsets) if isinstance(vsets, (list, tuple)) else [vsets]
        self.cfg, self.device, self.world_size, self.is_main = cfg, device, world_size, is_main
        self.spec = get_backbone(cfg.model.backbone)
        self.done = False  # set on every rank, so every rank takes the same branches

    @property
    def several(self) -> bool:
        return len(self.vsets) > 1

    def due(self, epoch: int, global_step: int, total_steps: int) -> bool:
        """After an epoch: every ``eval_every`` epochs, and after the run's last step."""
        every = self.cfg.eval.eval_every
        return bool(every) and (epoch % every == 0 or global_step >= total_steps)

    def verify(self, backbone) -> List[Tuple[str, Optional[dict]]]:
        """Every set in turn: ``(set name, result)``, the headline set first; the results are
        None on ranks other than 0."""
        if self.world_size > 1:
            from ..run import collectives

            # DDP keeps no BatchNorm statistics in step (broadcast_buffers=False): verify with rank 0's,
            # the ones backbone.pth exports, or the figure belongs to a mixture of per-rank models
            collectives.broadcast_buffers("eval.bn_buffers", backbone)
        results = [(vset.name, self.verify_set(backbone, vset)) for vset in self.vsets]
        self.done = True
        return results

    def verify_set(self, backbone, vset) -> Optional[dict]:
        from .evaluate import evaluate

        cfg = self.cfg
        start = self.device.timestamp()
        result = evaluate(backbone, self.device, vset, batch_size=cfg.eval.eval_batch_size, flip=cfg.eval.eval_flip,
                          amp=cfg.eval.eval_precision == "amp", workers=cfg.data.workers,
                          progress=self.is_main and not cfg.recording.quiet and sys.stdout.isatty(),
                          sharded=True, input_size=self.spec.input_size, fold_bn=self.spec.fold_bn)
        if self.is_main:
            result["seconds"] = self.device.timestamp() - start  # embedding and scoring: what this set costs
        return result


class VerificationRecord:
    """Rank 0's verification figures: the last result per set, the headline set's best accuracy,
    and the per-point history (``epoch_accuracy`` for the headline set, ``sets`` per set name)."""

    def __init__(self):
        self.best_accuracy: Optional[float] = None
        self.last: Optional[dict] = None  # the headline set's last result
        self.last_per_set: dict = {}  # in the order verified
        self.history: dict = {"epoch_accuracy": []}

    def add(self, epoch: int, name: str, result: dict, headline: bool) -> None:
        acc, std = float(result["accuracy"]), float(result["accuracy_std"])
        if headline:
            self.last = result
            self.best_accuracy = acc if self.best_accuracy is None else max(self.best_accuracy, acc)
            self.history["epoch_accuracy"].append([epoch, acc, std])
        self.last_per_set[name] = result
        self.history.setdefault("sets", {}).setdefault(name, []).append([epoch, acc, std])

    def figures(self) -> dict:
        """The summary's fields of the last verification (none before the first); the best
        accuracy is :attr:`best_accuracy`."""
        out = {}
        if self.last is not None:
            out.update(headline_figures(self.last))
        if self.last_per_set:
            sets = self.history.get("sets", {})
            out["eval_sets"] = list(self.last_per_set)
            out["verification"] = {name: set_figures(r, sets.get(name, [])) for name, r in self.last_per_set.items()}
        return out

    def state_dict(self) -> dict:
        """The checkpoint's ``best_accuracy`` and ``history`` (verification parts) entries."""
        return {"best_accuracy": self.best_accuracy, "history": dict(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.best_accuracy = state.get("best_accuracy")
        history = state.get("history") or {}
        for key in ("epoch_accuracy", "sets"):
            if key in history:
                self.history[key] = history[key]


def headline_figures(result: dict) -> dict:
    """The headline set's single-set summary fields, from one verification result."""
    out = {"lfw_accuracy": float(result["accuracy"]), "lfw_accuracy_std": float(result["accuracy_std"]),
           "val_at_far": result.get("val"), "auc": result.get("auc"), "eer": result.get("eer"),
           "eval_pairs": result.get("pairs_used"), "eval_pairs_skipped": result.get("pairs_skipped")}
    if result.get("grid_unresolved"):  # the grid read chance; what exact thresholds read
        out["lfw_accuracy_exact"] = result["accuracy_exact"]
    return out


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
