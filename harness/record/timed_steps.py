"""Timed steps: the one place that keeps per-step times after warm-up and turns them into figures.

The training loop, ``bench --mode eval`` and ``bench --mode data`` all report
the same throughput and latency fields (:func:`arcbench.record.stats.step_stats`)
from steps timed the same way: the first ``warmup`` steps of a process are left
out, and a step's time runs from the previous step's end to its own.
:class:`TimedSteps` holds those times (and saves them with a training
checkpoint, so a resumed run's figures cover the whole run);
:func:`time_steps` is the synchronous loop the bench modes time with.
"""
from __future__ import annotations

from typing import Callable, Iterator, List, Optional

import torch

from .stats import step_stats


class TimedSteps:
    """Per timed step: the card's wait before it (``data``), the rest (``compute``), and the host's
    time blocked on the loader (``host_wait``); steps up to ``warmup`` (counted per process) are dropped."""

    def __init__(self, warmup: int = 0):
        self.warmup = warmup
        self.data: List[float] = []
        self.compute: List[float] = []
        self.host_wait: List[float] = []

    def add(self, step_of_process: int, data: float, compute: float, host_wait: float = 0.0) -> bool:
        """Keep one step's times unless it is a warm-up step (1-based count in this process)."""
        if step_of_process <= self.warmup:
            return False
        self.data.append(data)
        self.compute.append(compute)
        self.host_wait.append(host_wait)
        return True

    def __len__(self) -> int:
        return len(self.compute)

    def median_step(self) -> Optional[float]:
        """The median step's seconds (data + compute), None before the first timed step."""
        if not self.compute:
            return None
        import statistics

        return statistics.median(d + c for d, c in zip(self.data, self.compute))

    def figures(self, images_per_step: int, host_wait: bool = True) -> dict:
        """The throughput and latency fields of a summary (empty without a timed step)."""
        return step_stats(self.data, self.compute, images_per_step, self.host_wait if host_wait else None)

    def state_dict(self) -> dict:
        """As a checkpoint's ``timing`` stores them: float64 tensors (loadable with weights_only)."""
        return {k: torch.tensor(getattr(self, k), dtype=torch.float64) for k in ("data", "compute", "host_wait")}

    def load_state_dict(self, state: dict) -> None:
        self.data = state["data"].tolist()
        self.compute = state["compute"].tolist()
        self.host_wait = state["host_wait"].tolist() if "host_wait" in state else []


def time_steps(device, batches: Iterator, warmup: int, steps: int,
               work: Optional[Callable] = None, on_empty: Optional[Callable[[], Exception]] = None) -> TimedSteps:
    """Time ``warmup + steps`` steps, each synchronised at its marks: ``data`` from the previous
    step's end until the next batch is on the card, ``compute`` for ``work(batch)`` (0 without
    ``work``).  ``on_empty``: the error to raise when the batches run out (default: StopIteration)."""
    timed = TimedSteps(warmup)
    last = device.timestamp()
    for i in range(warmup + steps):
        try:
            batch = next(batches)
        except StopIteration:
            if on_empty is None:
                raise
            raise on_empty() from None
        ready = device.timestamp()  # synchronised: the copy (and any normalisation) is done
        if work is not None:
            work(batch)
            end = device.timestamp()
        else:
            end = ready
        timed.add(i + 1, ready - last, end - ready)
        last = end
    return timed
