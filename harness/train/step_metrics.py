"""The hot loop's log: per-step values kept on the card and read once per log interval.

The loop hands each step's figures to :meth:`StepMetrics.record`: device
scalars (the loss, and any other metric computed on the card) go into device
buffers without a host sync; plain values (the step, the learning rate, the
step's count in this process) travel beside them as a dict.  :meth:`flush`
reads the step timer and the buffers once, guards the loss, keeps the timed
steps (:class:`arcbench.record.timed_steps.TimedSteps`), the running epoch loss
and the loss history for the plots, and hands the interval to rank 0's
:class:`arcbench.record.train_log.TrainLog`.  A new metric is one more entry in
the ``values`` (or ``fields``) given to :meth:`record` and its use in the sink.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch

from ..errors import ArcbenchError
from ..record.timed_steps import TimedSteps


class NonFiniteLoss(ArcbenchError):
    """The loss became NaN or infinite: the run stops, the last good checkpoint stays."""

    exit_code = 1  # the run failed; not a usage error


class StepMetrics:
    """Owns the pending steps of the open log interval, the timed steps, the images seen, the running
    loss of the epoch and the per-step loss history (kept on rank 0 only, where ``sink`` is given)."""

    def __init__(self, timer, interval: int, warmup: int, sink=None):
        self.timer, self.sink = timer, sink
        self.size = max(1, interval)
        self.times = TimedSteps(warmup)
        self.samples = 0
        self.epoch_loss = [0.0, 0]  # sum and count of the losses read this epoch
        self.history: Dict[str, list] = {"loss": [], "epoch_loss": []}
        self._buffers: Dict[str, torch.Tensor] = {}
        self._rows: List[dict] = []

    # ------------------------------------------------------- the hot loop
    def open(self) -> None:
        """A timed window starts (an epoch's steps): the timer's one sync."""
        self._buffers, self._rows = {}, []
        self.timer.open()

    def record(self, values: Dict[str, torch.Tensor], images: int, **fields) -> None:
        """One step: ``values`` are device scalars (``loss`` among them), ``fields`` plain values; the
        fields ``step`` (0-based global step) and ``n`` (the step's count in this process) are read."""
        i = len(self._rows)
        for name, value in values.items():
            buf = self._buffers.get(name)
            if buf is None:
                buf = self._buffers[name] = torch.zeros(self.size, device=value.device)
            buf[i] = value
        self._rows.append(fields)
        self.samples += images

    @property
    def full(self) -> bool:
        return len(self._rows) == self.size

    @property
    def pending(self) -> int:
        return len(self._rows)

    def flush(self, bar=None) -> None:
        """One host sync per interval: read the step timer and the buffers, guard, keep, log."""
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        times = self.timer.read()  # waits for the interval's last step: the flush's one sync
        values = {name: buf[:len(rows)].tolist() for name, buf in self._buffers.items()}
        losses = values["loss"]
        self._guard(rows, losses)
        for row, (data, compute, host) in zip(rows, times):
            self.times.add(row["n"], data, compute, host)  # warm-up steps are left out
        self.epoch_loss = [self.epoch_loss[0] + sum(losses), self.epoch_loss[1] + len(losses)]
        if self.sink is not None:
            self.history["loss"].extend([[row["step"] + 1, v] for row, v in zip(rows, losses)])
            self.sink.steps([(row["step"], row["lr"], t[0], t[1]) for row, t in zip(rows, times)], losses, bar)

    @staticmethod
    def _guard(rows: List[dict], losses: List[float]) -> None:
        bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
        if bad:
            step = rows[bad[0]]["step"] + 1
            raise NonFiniteLoss(f"loss became {losses[bad[0]]} at step {step}; stopped, last good checkpoint kept")

    # ------------------------------------------------------------- epochs
    def start_epoch(self) -> None:
        self.epoch_loss = [0.0, 0]

    def end_epoch(self) -> float:
        """The epoch's mean loss, kept in the history."""
        loss = self.epoch_loss[0] / max(1, self.epoch_loss[1])
        self.history["epoch_loss"].append(loss)
        return loss

    @property
    def last_loss(self) -> Optional[float]:
        return self.history["loss"][-1][1] if self.history["loss"] else None

    # ---------------------------------------------------------- checkpoint
    def state_dict(self) -> dict:
        """The checkpoint's ``history`` (loss parts), ``timing`` and ``epoch_loss`` entries."""
        return {"history": dict(self.history), "timing": {**self.times.state_dict(), "samples": self.samples},
                "epoch_loss": list(self.epoch_loss)}

    def load_state_dict(self, state: dict) -> None:
        history = state.get("history") or {}
        for key in self.history:
            if key in history:
                self.history[key] = history[key]
        self.epoch_loss = list(state.get("epoch_loss") or [0.0, 0])  # the epoch's running loss so far
        timing = state.get("timing") or {}
        if "data" in timing:  # the timed steps of earlier segments (rank 0's; DDP ranks step in lock-step)
            self.times.load_state_dict(timing)
            self.samples = int(timing.get("samples", 0))
