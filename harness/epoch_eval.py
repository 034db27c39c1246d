"""Verification during training, as an epoch callback of the training loop.

Every rank calls it at the same points (sharded embedding: each rank embeds
its share of the images, rank 0 scores), so the collectives inside match;
the decision when to verify therefore depends only on what every rank knows.
"""
from __future__ import annotations

import sys


class EpochVerification:
    """Verify every ``eval_every`` epochs and after the last one; once at the end if never."""

    def __init__(self, vset, cfg):
        from .registry import get_backbone

        self.vset, self.cfg = vset, cfg
        self.spec = get_backbone(cfg.backbone)
        self.done = False  # set on every rank, so every rank takes the same branches

    def on_epoch_end(self, tr) -> None:
        every = self.cfg.eval_every
        if every and (tr.epoch % every == 0 or tr.global_step >= tr.total_steps):
            self.verify(tr)

    def on_train_end(self, tr) -> None:
        if not self.done:
            self.verify(tr)

    def verify(self, tr) -> dict:
        from . import train_state
        from .evaluate import evaluate

        cfg = self.cfg
        backbone = train_state.unwrap(tr.face).backbone
        if tr.world_size > 1:
            from . import collectives

            # DDP keeps no BatchNorm statistics in step (broadcast_buffers=False): verify with rank 0's,
            # the ones backbone.pth exports, or the figure belongs to a mixture of per-rank models
            collectives.broadcast_buffers("eval.bn_buffers", backbone)
        result = evaluate(backbone, tr.device, self.vset,
                          batch_size=cfg.eval_batch_size, flip=cfg.eval_flip, amp=cfg.eval_precision == "amp",
                          workers=cfg.workers, progress=tr.is_main and not cfg.quiet and sys.stdout.isatty(),
                          sharded=True, input_size=self.spec.input_size,
                          fold_bn=self.spec.fold_bn)
        self.done = True
        if tr.is_main:
            acc = float(result["accuracy"])
            tr.last_eval = result
            tr.best_accuracy = acc if tr.best_accuracy is None else max(tr.best_accuracy, acc)
            tr.history["epoch_accuracy"].append([tr.epoch, acc, float(result["accuracy_std"])])
            tr.sink.verification(tr.epoch, result)
        return result
