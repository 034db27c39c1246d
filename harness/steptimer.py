"""Step timers: what the training loop marks at step boundaries and reads once per flush.

A step's time runs **end to end**, from the previous step's end mark to its
own, so host work between steps (logging, the flush, checkpoint and stop
checks, a slow loader) counts; summed over a timed window the step times are
the window's wall time.  Each step is split at its begin mark (after the batch
is on the card, before the first kernel of the step): ``data`` is the time the
card waited before the step, ``compute`` the rest.  Beside it, ``host_wait`` is
the time the host was blocked in ``next(it)``; with a queue that runs ahead the
host can wait while the card is still busy, so only ``data`` costs throughput.

* :class:`EventStepTimer` records device events (``torch.cuda.Event`` and
  runtimes like it) on the current stream and never waits: the events are read
  at the flush, which waits once for the last one.
* :class:`SyncStepTimer` is the fallback for devices without timing events (and
  the CPU, where the host clock is exact): each mark is ``synchronize()`` then
  ``perf_counter()``.

A timed window opens with one synchronisation (:meth:`open`); nothing else in
the loop waits for the card except the flush.
"""
from __future__ import annotations

import time
from typing import List, Tuple

#: (data, compute, host_wait) seconds of one step
StepTime = Tuple[float, float, float]


class SyncStepTimer:
    """Marks are ``device.timestamp()``: synchronise, then read the host clock."""

    kind = "synchronize"

    def __init__(self, device):
        self.device = device
        self._last = self._begin = 0.0
        self._fetch = self._host = 0.0
        self._steps: List[StepTime] = []

    def open(self) -> None:
        """Start a timed window: the one sync, and the mark the first step's time starts from."""
        self._steps = []
        self._last = self._mark()
        self._host = 0.0

    def fetch_start(self) -> None:
        """The host is about to ask the loader for the next batch."""
        self._fetch = time.perf_counter()

    def fetch_end(self) -> None:
        self._host = time.perf_counter() - self._fetch

    def begin(self) -> None:
        """The batch is on the card; the step's first kernel comes next."""
        self._begin = self._mark()

    def end(self) -> None:
        """The step's last work is queued."""
        t = self._mark()
        self._steps.append((self._begin - self._last, t - self._begin, self._host))
        self._last, self._host = t, 0.0

    def read(self) -> List[StepTime]:
        """The steps marked since the last read, in order (called at the flush)."""
        out, self._steps = self._steps, []
        return out

    def _mark(self):
        return self.device.timestamp()


class EventStepTimer(SyncStepTimer):
    """Marks are timing events recorded on the current stream: no host wait in the loop."""

    kind = "events"

    def __init__(self, device, event_class):
        super().__init__(device)
        self.event_class = event_class
        self._marks: list = []  # (previous end, begin, end, host_wait) events per step

    def open(self) -> None:
        self._marks = []
        self.device.synchronize()
        self._last = self._mark()
        self._host = 0.0

    def end(self) -> None:
        e = self._mark()
        self._marks.append((self._last, self._begin, e, self._host))
        self._last, self._host = e, 0.0

    def read(self) -> List[StepTime]:
        if not self._marks:
            return []
        self._marks[-1][2].synchronize()  # the flush's wait: every earlier event has completed too
        out = [(prev.elapsed_time(b) / 1e3, b.elapsed_time(e) / 1e3, host) for prev, b, e, host in self._marks]
        self._marks = []
        return out

    def _mark(self):
        event = self.event_class(enable_timing=True)
        event.record()
        return event
