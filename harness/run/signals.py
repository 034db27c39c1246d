"""Ctrl-C and SIGTERM during a run: stop at a step boundary, and give the handlers back.

A first signal inside the step loop asks the loop to stop after the current
step, so the checkpoint is a real step boundary; outside it (verification,
waiting for other ranks) there is no step to finish, so it stops at once.  A
second signal stops at once either way (one within a second of the first is the same
Ctrl-C delivered twice, by the terminal and by the launcher).  The handlers this replaced are put
back afterwards, so a program that embeds arcbench gets its own SIGTERM back.
"""
from __future__ import annotations

import contextlib
import signal
import time

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: what torch's elastic agent takes over while it runs workers (its TORCHELASTIC_SIGNALS_TO_HANDLE default)
AGENT_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT") if hasattr(signal, n))


#: a repeat within this many seconds is the same Ctrl-C delivered twice: a terminal signals the
#: whole process group, and the elastic agent forwards the signal it got to its workers as well
REPEAT_WINDOW = 1.0


class StopRequest:
    """What the signal handler tells the training loop."""

    def __init__(self):
        #: why a stop was asked for ("signal 2"); the loop stops at the next step boundary
        self.reason = ""
        #: True inside the step loop, where a first signal waits for the step boundary
        self.in_steps = False
        #: a second signal arrived mid-step: the state is no step boundary, keep the last checkpoint
        self.hard = False
        self._first = 0.0

    def __bool__(self) -> bool:
        return bool(self.reason)

    def handle(self, signum, frame=None) -> None:
        if self.reason:
            if time.monotonic() - self._first < REPEAT_WINDOW:
                return  # the same stop, delivered twice: let the step (or the checkpoint) finish
            self.hard = True
            raise KeyboardInterrupt(f"signal {signum}")
        self.reason, self._first = f"signal {signum}", time.monotonic()
        if not self.in_steps:
            raise KeyboardInterrupt(self.reason)


def _install(handler) -> dict:
    """Set ``handler`` for SIGINT and SIGTERM; returns the handlers it replaced."""
    previous = {}
    for sig in _SIGNALS:
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread (embedded use)
            pass
    return previous


def _put_back(previous: dict) -> None:
    for sig, old in previous.items():
        try:
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        except (ValueError, TypeError, OSError):
            pass


@contextlib.contextmanager
def stop_on_signals(request: StopRequest):
    """Route SIGINT/SIGTERM to ``request`` for the block; the earlier handlers come back after it."""
    previous = _install(request.handle)
    try:
        yield request
    finally:
        _put_back(previous)


@contextlib.contextmanager
def handlers_kept(signals=AGENT_SIGNALS):
    """The handlers of ``signals`` as they were before the block, whatever the block installs.

    torch's elastic agent installs handlers that raise and leaves them: a program that launched a
    run in-process would keep them, and so would every process it forks later."""
    previous = {}
    for sig in signals:
        try:
            previous[sig] = signal.getsignal(sig)
        except (ValueError, OSError):
            pass
    try:
        yield
    finally:
        _put_back(previous)


def default_signals() -> None:
    """A launched worker that is done: when the agent now stops it (another rank died), its
    SIGTERM should end it quietly, not raise KeyboardInterrupt inside interpreter shutdown."""
    _install(signal.SIG_DFL)
