"""The Trainer's checkpointer: saves and restores a run's training state, told why it saves.

What is saved is the model, optimiser, schedule and AMP scaler it is given,
plus the state of the Trainer's parts (:class:`~arcbench.train.progress.Progress`,
:class:`~arcbench.train.step_metrics.StepMetrics`,
:class:`~arcbench.verification.epoch.VerificationRecord`), each through its
``state_dict()`` / ``load_state_dict()``.  Their entries are the flat keys of
the checkpoint format (:mod:`arcbench.train.checkpoints`); ``history`` is
shared, each part keeping its own keys in it.

Why it saves (:class:`SaveReason`) changes what it does: an epoch-end save
also keeps ``epochNNN.pt``, and an interrupt with a sharded head over several
processes saves nothing (rank 0 alone unwinds; gathering the centres would
wait for ranks that are not there), so the last periodic checkpoint stays.
"""
from __future__ import annotations

import enum
from typing import Dict, Optional

from . import checkpoints
from .. import head as head_contract
from ..errors import ArcbenchError
from ..record import atomic


class SaveReason(enum.Enum):
    """Why a checkpoint is written."""

    STEP_INTERVAL = "step_interval"  # every --checkpoint-steps, a boundary every rank reaches
    EPOCH_END = "epoch_end"  # every --checkpoint-every epochs: last.pt and epochNNN.pt
    INTERRUPT = "interrupt"  # a signal or Ctrl-C unwinds the loop (rank 0 may be alone)


#: the history keys laid out as the checkpoint format always had them
_HISTORY_ORDER = ("loss", "epoch_accuracy", "epoch_loss")


def merge_states(parts: Dict[str, object]) -> dict:
    """The parts' state dicts as one flat checkpoint entry set; ``history`` is merged."""
    flat, history = {}, {}
    for part in parts.values():
        state = part.state_dict()
        history.update(state.pop("history", {}) or {})
        flat.update(state)
    ordered = {k: history.pop(k) for k in _HISTORY_ORDER if k in history}
    flat["history"] = {**ordered, **history}
    return flat


class Checkpointer:
    """Saves (rank 0: ``last.pt``; other ranks: their RNG streams) and restores a trainer's state."""

    def __init__(self, training, parts: Dict[str, object], device, *, recorder=None, rank: int = 0,
                 world_size: int = 1, run_dir: Optional[str] = None, head: str = "", log=print, quiet: bool = False):
        """``training``: what :func:`arcbench.train.model.build_training` built (face, optimizer,
        scheduler, scaler); ``parts``: the checkpointed components by name, ``progress`` among them."""
        self.training, self.parts, self.device = training, parts, device
        self.rec, self.rank, self.world_size, self.run_dir = recorder, rank, world_size, run_dir
        self.head, self.log, self.quiet = head, log, quiet
        self.is_main = rank == 0

    @property
    def progress(self):
        return self.parts["progress"]

    # ---------------------------------------------------------------- save
    def save(self, reason: SaveReason) -> bool:
        """Save the state for ``reason``; False when nothing could be saved (the last one stays).
        With a sharded head every rank must call this at the same step (the centres are gathered)."""
        face = self.training.face
        head_full = None
        if face.head_sharded:
            if self.world_size > 1 and reason is SaveReason.INTERRUPT:
                if self.is_main and not self.quiet:
                    self.log("arcbench: interrupted; the sharded head is checkpointed only at step "
                             "boundaries all processes reach (--checkpoint-steps), so the last one is kept")
                return False
            head_full = head_contract.full_state(face.head, self.training.optimizer)  # a collective
        if not self.is_main and self.run_dir:
            checkpoints.save_rank_rng(self.run_dir, self.rank, self.progress.global_step, self.device)
        if self.is_main and self.rec:
            self._write(head_full, self._tag(reason))
        return True

    def _tag(self, reason: SaveReason) -> Optional[str]:
        return f"epoch{self.progress.epoch:03d}" if reason is SaveReason.EPOCH_END else None

    def _write(self, head_full, tag: Optional[str]) -> None:
        t = self.training
        kwargs = dict(face_model=t.face, head_full=head_full, optimizer=t.optimizer, scheduler=t.scheduler,
                      scaler=t.scaler, device=self.device, **merge_states(self.parts))
        checkpoints.save(self.rec.path("checkpoints", "last.pt"), **kwargs)
        if tag:
            checkpoints.save(self.rec.path("checkpoints", f"{tag}.pt"), **kwargs)

    # ------------------------------------------------------------- restore
    def restore(self, path: str) -> dict:
        """Put everything back where the checkpoint left it: weights, optimiser, schedule and the
        parts' state; sets this rank's RNG streams and returns them, to be set again after the
        resumed epoch's data skip."""
        tdev = self.device.torch_device()
        # straight onto this process's card (torch.load knows no host index: "cpu" for the host)
        state = checkpoints.load(path, map_location=tdev if tdev.type != "cpu" else "cpu")
        t = self.training
        checkpoints.unwrap(t.face).backbone.load_state_dict(state["backbone"])
        self._load_head(state, path)
        t.scheduler.load_state_dict(state["scheduler"])
        t.scaler.load_state_dict(state["scaler"])
        for part in self.parts.values():
            part.load_state_dict(state)
        own = checkpoints.load_rank_rng(self.run_dir, self.rank, self.progress.global_step)
        rng = own if own is not None else state["rng"]  # this rank's own RNG streams, not rank 0's
        checkpoints.set_rng_state(rng, self.device)
        return rng

    def _load_head(self, state: dict, path: str) -> None:
        face, optimizer = checkpoints.unwrap(self.training.face), self.training.optimizer
        head_full = state.get("head_full")
        if face.head_sharded != (head_full is not None):
            raise ArcbenchError(f"the checkpoint's head ({'sharded' if head_full is not None else 'not sharded'}) "
                                f"does not match --head {self.head}", path)
        if head_full is None:
            face.head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        if head_full is not None:
            # after the optimizer: re-shards the centres and their per-row state (momentum)
            # for this run's world size, whatever it was when saved
            head_contract.load_full_state(face.head, head_full, optimizer)

    # -------------------------------------------------------------- export
    def export_backbone(self) -> Optional[str]:
        """``backbone.pth``: the trained backbone's plain state dict, for ``eval``/``verify``."""
        if not (self.is_main and self.rec):
            return None
        path = self.rec.path("backbone.pth")
        atomic.torch_save(checkpoints.unwrap(self.training.face).backbone.state_dict(), path)
        return path
