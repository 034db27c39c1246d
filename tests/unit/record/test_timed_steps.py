"""One place times steps after warm-up for the run and the bench modes."""
from __future__ import annotations

import pytest
import torch

from arcbench.record.timed_steps import TimedSteps, time_steps


class Clock:
    """A device whose timestamps advance by one second per call."""

    def __init__(self):
        self.t = 0.0

    def timestamp(self):
        self.t += 1.0
        return self.t


def test_warm_up_steps_are_left_out_and_the_figures_come_from_the_rest():
    t = TimedSteps(warmup=2)
    kept = [t.add(n, 0.1, 0.4, 0.05) for n in range(1, 6)]
    assert kept == [False, False, True, True, True] and len(t) == 3
    assert t.median_step() == pytest.approx(0.5)
    figures = t.figures(images_per_step=10)
    assert figures["timed_steps"] == 3 and figures["throughput_median"] == pytest.approx(20.0)
    assert figures["host_wait_fraction"] == pytest.approx(0.1)
    assert t.figures(10, host_wait=False)["host_wait_fraction"] is None
    assert TimedSteps().figures(10) == {} and TimedSteps().median_step() is None


def test_timed_steps_round_trip_as_float64_tensors():
    t = TimedSteps()
    t.add(1, 0.1, 0.2, 0.3)
    state = t.state_dict()
    assert all(v.dtype == torch.float64 for v in state.values())
    back = TimedSteps()
    back.load_state_dict(state)
    assert (back.data, back.compute, back.host_wait) == ([0.1], [0.2], [0.3])


def test_the_bench_loop_times_data_and_work_from_end_mark_to_end_mark():
    done = []
    timed = time_steps(Clock(), iter(range(5)), warmup=2, steps=3, work=done.append)
    assert done == [0, 1, 2, 3, 4]
    assert timed.data == [1.0, 1.0, 1.0] and timed.compute == [1.0, 1.0, 1.0]
    only_data = time_steps(Clock(), iter(range(3)), warmup=1, steps=2)
    assert only_data.data == [1.0, 1.0] and only_data.compute == [0.0, 0.0]


def test_the_bench_loop_names_what_ran_out():
    with pytest.raises(ValueError, match="no usable batch"):
        time_steps(Clock(), iter([]), warmup=0, steps=1, on_empty=lambda: ValueError("no usable batch"))
    with pytest.raises(StopIteration):
        time_steps(Clock(), iter([]), warmup=0, steps=1)
