"""Signals during a run: a first one stops at the step boundary, a second at once, and a program
that embeds arcbench gets its own handlers back afterwards."""
from __future__ import annotations

import signal

import pytest

from arcbench.run.signals import REPEAT_WINDOW, StopRequest, stop_on_signals


def test_first_signal_in_the_step_loop_waits_for_the_boundary_second_stops_now():
    stop = StopRequest()
    stop.in_steps = True
    stop.handle(signal.SIGINT)  # no exception: the loop sees the request after this step
    assert stop and stop.reason == f"signal {int(signal.SIGINT)}" and not stop.hard
    stop.handle(signal.SIGINT)  # the same Ctrl-C forwarded by the launcher's agent: still the boundary
    assert not stop.hard
    stop._first -= 2 * REPEAT_WINDOW  # a real second Ctrl-C, later
    with pytest.raises(KeyboardInterrupt):
        stop.handle(signal.SIGTERM)
    assert stop.hard  # mid-step: the state is no step boundary


def test_first_signal_outside_the_step_loop_stops_at_once():
    stop = StopRequest()
    with pytest.raises(KeyboardInterrupt):
        stop.handle(signal.SIGTERM)
    assert stop and not stop.hard


def test_handlers_come_back_even_when_the_block_raises():
    def mine(signum, frame):
        pass

    before = {sig: signal.signal(sig, mine) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(RuntimeError):
            with stop_on_signals(StopRequest()) as stop:
                assert signal.getsignal(signal.SIGTERM) == stop.handle
                raise RuntimeError("boom")
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is mine
    finally:
        for sig, old in before.items():
            signal.signal(sig, old)


def test_an_embedding_program_keeps_its_sigterm_handler_after_a_run(tmp_path):
    from arcbench.config import RunConfig
    from arcbench.run.runner import execute

    def mine(signum, frame):
        pass

    old = signal.signal(signal.SIGTERM, mine)
    try:
        _, summary = execute(RunConfig(device="cpu", train_data="synthetic", synthetic_classes=4, synthetic_steps=2,
                                       epochs=1, batch_size=4, out=str(tmp_path), quiet=True, eval_every=0,
                                       checkpoint_every=0))
        assert summary["status"] == "completed" and summary["steps"] == 2
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, old)


@pytest.mark.slow
def test_a_launched_run_leaves_the_callers_handlers_as_they_were(tmp_path):
    """torch's elastic agent installs raising handlers for SIGTERM, SIGINT, SIGHUP and SIGQUIT; after a
    2-process run launched from this process, the caller's own are back (and no forked worker of a
    later pool inherits the agent's)."""
    from arcbench.config import RunConfig
    from arcbench.run.runner import execute
    from testutil import free_port

    def mine(signum, frame):
        pass

    watched = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    before = {sig: signal.signal(sig, mine) for sig in watched}
    interrupt = signal.getsignal(signal.SIGINT)
    try:
        _, summary = execute(RunConfig(device="cpu", train_data="synthetic", synthetic_classes=4, synthetic_steps=2,
                                       epochs=1, batch_size=4, nproc=2, master_port=free_port(), out=str(tmp_path),
                                       quiet=True, eval_every=0, checkpoint_every=0))
        assert summary["status"] == "completed" and summary["steps"] == 2 and summary["nproc"] == 2
        assert all(signal.getsignal(sig) is mine for sig in watched), {s: signal.getsignal(s) for s in watched}
        assert signal.getsignal(signal.SIGINT) is interrupt
    finally:
        for sig, old in before.items():
            signal.signal(sig, old)
