"""Rank 0's training records: per-step, per-epoch and verification lines of the metrics log."""
from __future__ import annotations

import re
from typing import Optional

from .recorder import Recorder


def set_key(name: str) -> str:
    """A set name as a metric-name part: ``"AgeDB-30"`` -> ``agedb_30``."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_") or "set"


class TrainLog:
    """Rank 0's metrics sink for the training loop: the per-step, per-epoch and verification
    records (DLLL JSON lines, tcap_dllogger beside them), and the console line when no progress
    bar shows.  The loop hands over plain numbers, already on the host."""

    def __init__(self, rec: Optional[Recorder], *, steps_per_epoch: int, per_process_batch: int,
                 world_size: int, say=print, quiet: bool = False):
        self.rec, self.say, self.quiet = rec, say, quiet
        self.steps_per_epoch = steps_per_epoch
        self.per_process_batch = per_process_batch
        self.global_batch = per_process_batch * world_size

    def steps(self, pending: list, losses: list, bar=None) -> None:
        """``pending``: ``(global_step, lr, data_time, compute_time)`` per step, ``losses`` beside it."""
        # without a progress bar, the interval's last record is printed as well (tcap_dllogger's
        # stdout backend when present, else the DLLL line below); with a bar, nothing is
        echo = bar is None and not self.quiet
        n = len(pending)
        if self.rec:
            for i, ((gstep, lr, dt, ct), loss) in enumerate(zip(pending, losses)):
                ep, it = divmod(gstep, self.steps_per_epoch)
                self.rec.log((ep + 1, it + 1), {
                    "train.loss": loss, "train.lr": lr, "train.data_time": dt, "train.compute_time": ct,
                    # train.ips: this rank's images/s (the model-zoo contract); total: all ranks
                    "train.ips": self.per_process_batch / max(dt + ct, 1e-12),
                    "train.total_ips": self.global_batch / max(dt + ct, 1e-12),
                    "train.compute_ips": self.global_batch / max(ct, 1e-12)}, echo=echo and i == n - 1)
            echo = echo and not self.rec.echoes
        gstep, lr, dt, ct = pending[-1]
        ips = self.global_batch / max(dt + ct, 1e-12)
        if bar is not None:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", ips=f"{ips:.0f}", lr=f"{lr:.4g}")
        elif echo:
            ep, it = divmod(gstep, self.steps_per_epoch)
            self.say(f"DLLL epoch {ep + 1} step {it + 1}/{self.steps_per_epoch} "
                     f"train.loss {losses[-1]:.4f} train.total_ips {ips:.1f} train.lr {lr:.6f}")

    def epoch(self, epoch: int, loss: float) -> None:
        if self.rec:
            self.rec.log((epoch,), {"train.loss": loss})

    def verification(self, epoch: int, result: dict, headline: bool = True, several: bool = False) -> None:
        """One record per set per verification point, named by ``val.set``; its keys carry the set's
        name (``val.cfp_fp.accuracy``).  The headline set's record also has the ``val.lfw.*`` keys of
        the model-zoo contract (as ``lfw_accuracy`` in the summary is the headline set's figure,
        whatever its name); a run with one set writes only those, as it always did.  ``val.seconds`` is what verifying this set took."""
        acc, std = float(result["accuracy"]), float(result["accuracy_std"])
        name = result.get("name", "pairs")
        keys = ["lfw"] if headline else []
        if several and set_key(name) not in keys:
            keys.append(set_key(name))
        if self.rec:
            data = {"val.set": name}
            for key in keys:
                data.update({f"val.{key}.accuracy": acc, f"val.{key}.accuracy_std": std})
            data["val.ips"] = float(result.get("images_per_second") or 0.0)
            if result.get("seconds") is not None:
                data["val.seconds"] = float(result["seconds"])
            self.rec.log((epoch,), data)
        if not self.quiet:
            took = "" if result.get("seconds") is None else f", {result['seconds']:.1f} s"
            self.say(f"epoch {epoch}: verification accuracy {acc:.4f} ± {std:.4f} "
                     f"on {name} ({result.get('pairs_used')} pairs{took})")
