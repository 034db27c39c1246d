"""Progress and StepMetrics own their state: counters, the hot loop's log, and their checkpoint entries."""
from __future__ import annotations

import math

import pytest
import torch

from arcbench.train.progress import Progress
from arcbench.train.step_metrics import NonFiniteLoss, StepMetrics


class FakeTimer:
    """A step timer whose read gives (data, compute, host) = (0.1 * i, 1.0, 0.01) per marked step."""

    kind = "fake"

    def __init__(self):
        self.opened = 0
        self.steps = 0

    def open(self):
        self.opened += 1
        self.steps = 0

    def mark(self):
        self.steps += 1

    def read(self):
        out = [(0.1 * (i + 1), 1.0, 0.01) for i in range(self.steps)]
        self.steps = 0
        return out


class Sink:
    def __init__(self):
        self.calls = []

    def steps(self, pending, losses, bar=None):
        self.calls.append((pending, losses))


def test_progress_counts_steps_and_epochs_and_saves_only_the_position():
    p = Progress()
    for _ in range(5):
        p.step()
    p.end_epoch()
    p.step()
    assert (p.epoch, p.step_in_epoch, p.global_step, p.steps_this_process) == (1, 1, 6, 6)
    state = p.state_dict()
    assert state == {"epoch": 1, "step_in_epoch": 1, "global_step": 6}
    q = Progress()
    q.load_state_dict(state)
    assert q.state_dict() == state and q.steps_this_process == 0  # a resumed process starts cold
    q.begin_segment()
    assert q.start_step == 6
    assert q.steps_in_epoch(steps_per_epoch=5, total_steps=8) == 3  # the run ends two steps further


def run_steps(metrics, timer, losses, first_step=0):
    metrics.open()
    for i, loss in enumerate(losses):
        timer.mark()
        n = first_step + i + 1
        metrics.record({"loss": torch.tensor(loss)}, images=4, step=first_step + i, lr=0.1, n=n)
        if metrics.full:
            metrics.flush()
    metrics.flush()


def test_step_metrics_flushes_once_per_interval_and_keeps_timed_steps_after_warm_up():
    timer, sink = FakeTimer(), Sink()
    m = StepMetrics(timer, interval=2, warmup=1, sink=sink)
    m.start_epoch()
    run_steps(m, timer, [4.0, 3.0, 2.0])
    assert [len(p) for p, _ in sink.calls] == [2, 1]  # two per interval, the rest at the end
    assert sink.calls[0][0] == [(0, 0.1, 0.1, 1.0), (1, 0.1, 0.2, 1.0)] and sink.calls[0][1] == [4.0, 3.0]
    assert m.history["loss"] == [[1, 4.0], [2, 3.0], [3, 2.0]]
    assert len(m.times) == 2 and m.times.data == pytest.approx([0.2, 0.1])  # step 1 was warm-up
    assert m.samples == 12 and m.last_loss == 2.0
    assert m.end_epoch() == pytest.approx(3.0) and m.history["epoch_loss"] == [pytest.approx(3.0)]


def test_step_metrics_without_a_sink_keeps_no_history_but_counts_the_epoch_loss():
    timer = FakeTimer()
    m = StepMetrics(timer, interval=4, warmup=0)  # a rank other than 0
    run_steps(m, timer, [1.0, 2.0])
    assert m.history["loss"] == [] and m.epoch_loss == [3.0, 2]


def test_a_new_device_metric_is_one_more_entry_in_the_record():
    timer = FakeTimer()
    m = StepMetrics(timer, interval=4, warmup=0)
    m.open()
    timer.mark()
    m.record({"loss": torch.tensor(1.0), "grad_norm": torch.tensor(7.0)}, images=1, step=0, lr=0.1, n=1)
    assert set(m._buffers) == {"loss", "grad_norm"} and float(m._buffers["grad_norm"][0]) == 7.0
    m.flush()


def test_a_non_finite_loss_stops_at_the_flush_naming_the_step():
    timer = FakeTimer()
    m = StepMetrics(timer, interval=4, warmup=0)
    with pytest.raises(NonFiniteLoss, match="at step 2"):
        run_steps(m, timer, [1.0, math.nan])


def test_step_metrics_state_dict_round_trip():
    timer = FakeTimer()
    m = StepMetrics(timer, interval=2, warmup=0, sink=Sink())
    run_steps(m, timer, [4.0, 3.0, 2.0])
    m.end_epoch()
    m.start_epoch()
    run_steps(m, timer, [1.5], first_step=3)
    state = m.state_dict()
    assert set(state) == {"history", "timing", "epoch_loss"}  # the checkpoint's keys
    assert state["timing"]["data"].dtype == torch.float64 and state["timing"]["samples"] == 16
    restored = StepMetrics(FakeTimer(), interval=2, warmup=0, sink=Sink())
    restored.load_state_dict(state)
    assert restored.history == m.history and restored.epoch_loss == m.epoch_loss == [1.5, 1]
    assert restored.times.data == m.times.data and restored.times.compute == m.times.compute
    assert restored.times.host_wait == m.times.host_wait and restored.samples == 16


def test_step_metrics_reads_a_checkpoint_without_host_wait_or_timing():
    """Checkpoints from before host-wait timing (or with no timing at all) still load."""
    m = StepMetrics(FakeTimer(), interval=2, warmup=0)
    m.load_state_dict({"history": {"loss": [[1, 2.0]], "epoch_accuracy": [], "epoch_loss": []},
                       "timing": {"data": torch.tensor([0.5], dtype=torch.float64),
                                  "compute": torch.tensor([1.0], dtype=torch.float64), "samples": 8}})
    assert m.times.data == [0.5] and m.times.host_wait == [] and m.samples == 8 and m.epoch_loss == [0.0, 0]
    m2 = StepMetrics(FakeTimer(), interval=2, warmup=0)
    m2.load_state_dict({"history": {"loss": []}})
    assert m2.samples == 0 and len(m2.times) == 0
