"""The training loop's timing is honest and costs the card nothing between flushes.

* Throughput honesty: with 20 ms of host work injected between steps, the run's
  ``throughput_mean`` equals images / the timed window's wall time within 2 %.
  The old timer (data + compute, each after a sync) left the gap out and read
  several times higher: seen failing before the end-to-end step timer.
* Sync budget: inside the hot loop, at most one device synchronisation per
  ``log_interval`` steps (plus the one that opens an epoch's timed window), and
  no ``.item()``, ``.tolist()``, ``.cpu()``, ``bool(tensor)`` or ``nonzero``
  outside the flush, for the arcface, cosface and combined heads, at fp32 and
  AMP.  Seen failing before (three ``synchronize()`` per step on the SDAA
  stand-in, and the fp16 GradScaler's ``.item()`` every step).
"""
from __future__ import annotations

import json
import math
import time

import pytest
import torch
from click.testing import CliRunner
from torch.overrides import TorchFunctionMode

from arcbench.cli import main
from arcbench.train.trainer import Trainer

from test_sdaa_standin import names, standin  # noqa: F401  (the stand-in SDK fixture)

SYNCING = {"item", "tolist", "cpu", "__bool__", "nonzero", "__float__", "__int__"}


def _run(tmp_path, device, *extra):
    result = CliRunner().invoke(main, ["--plugin", "tinyplugin", "run", "--device", device, "--backbone", "tiny",
                                       "--train-data", "synthetic", "--synthetic-classes", "10", "--batch-size", "4",
                                       "--quiet", "--out", str(tmp_path / "runs"), *extra])
    assert result.exit_code == 0, result.output
    run = next((tmp_path / "runs").iterdir())
    return json.loads((run / "summary.json").read_text())


@pytest.mark.parametrize("device", ["cpu", "sdaa"])
def test_throughput_mean_is_images_over_the_timed_windows_wall_time(tmp_path, tiny, standin, monkeypatch, device):
    if device == "sdaa":
        standin()  # timing events on the stand-in SDK
    marks = []
    count = Trainer._count_step

    def slow_host(self, *args, **kwargs):
        marks.append(time.perf_counter())  # right after the step's end mark
        count(self, *args, **kwargs)
        time.sleep(0.02)  # host work between steps: the card idles through it

    monkeypatch.setattr(Trainer, "_count_step", slow_host)
    s = _run(tmp_path, device, "--synthetic-steps", "16", "--epochs", "1", "--log-interval", "4")
    warmup, steps = 5, 16
    assert s["timed_steps"] == steps - warmup and len(marks) == steps
    window = marks[-1] - marks[warmup - 1]  # from the last warm-up step's end to the last step's end
    honest = 4 * (steps - warmup) / window
    assert s["throughput_mean"] == pytest.approx(honest, rel=0.02)
    assert s["step_timer"] == ("events" if device == "sdaa" else "synchronize")


class _HostReads(TorchFunctionMode):
    """Counts tensor calls that make the host wait for the device; off while the loop flushes."""

    def __init__(self):
        super().__init__()
        self.seen, self.active = [], True

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if self.active and name in SYNCING:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def _watch_hot_loop(monkeypatch, sdk=None):
    """Count host reads in ``Trainer._steps`` (outside ``_flush``) and the SDK's waits per ``_steps`` call."""
    mode = _HostReads()
    waits = []
    steps, flush = Trainer._steps, Trainer._flush

    def watched_steps(self, *args):
        n = len(sdk.CALLS) if sdk else 0
        with mode:
            steps(self, *args)
        if sdk:
            calls = [c[0] for c in sdk.CALLS[n:]]
            waits.append(calls.count("synchronize") + calls.count("Event.synchronize"))

    def watched_flush(self, *args):
        mode.active = False
        try:
            flush(self, *args)
        finally:
            mode.active = True

    monkeypatch.setattr(Trainer, "_steps", watched_steps)
    monkeypatch.setattr(Trainer, "_flush", watched_flush)
    return mode, waits


HEADS = ["arcface", "cosface", "combined"]


@pytest.mark.parametrize("precision", ["fp32", "amp"])
@pytest.mark.parametrize("head", HEADS)
def test_sync_budget_on_the_cpu(tmp_path, tiny, monkeypatch, head, precision):
    mode, _ = _watch_hot_loop(monkeypatch)
    _run(tmp_path, "cpu", "--head", head, "--precision", precision, "--synthetic-steps", "6", "--epochs", "1",
         "--log-interval", "3")
    assert mode.seen == []


@pytest.mark.parametrize("precision", ["fp32", "amp"])
@pytest.mark.parametrize("head", HEADS)
def test_sync_budget_on_an_accelerator_with_events(tmp_path, tiny, standin, monkeypatch, head, precision):
    """The SDAA stand-in: timing events, fp16 autocast with the SDK's GradScaler at AMP (fused step)."""
    from arcbench.plugins.devices.sdaa import SDAADevice

    sdk = standin()
    monkeypatch.setattr(SDAADevice, "fused_optimizer", True, raising=False)  # an SDK whose torch has fused kernels for it
    mode, waits = _watch_hot_loop(monkeypatch, sdk)
    steps, interval, epochs = 7, 3, 2
    _run(tmp_path, "sdaa", "--head", head, "--precision", precision, "--synthetic-steps", str(steps),
         "--epochs", str(epochs), "--log-interval", str(interval))
    assert mode.seen == []
    # each epoch: one sync opens the timed window, then one wait per flush (every `interval` steps)
    assert waits == [1 + math.ceil(steps / interval)] * epochs
    if precision == "amp":
        assert names(sdk).count("GradScaler.step") == steps * epochs


def test_an_unfused_fp16_step_costs_one_host_read_per_step(tmp_path, tiny, standin, monkeypatch):
    """Where the device plugin keeps the foreach optimizer (SDAA by default: its fused kernels are not
    known to exist), the GradScaler's inf check reads one value per step: the documented price."""
    sdk = standin()
    mode, _ = _watch_hot_loop(monkeypatch, sdk)
    _run(tmp_path, "sdaa", "--precision", "amp", "--synthetic-steps", "4", "--epochs", "1", "--log-interval", "2")
    assert mode.seen == ["item"] * 4


def test_the_fused_step_is_used_where_torch_has_it():
    from arcbench.train.model import make_optimizer
    from arcbench.config import RunConfig

    params = [torch.nn.Parameter(torch.zeros(2))]
    for optimizer in ("sgd", "adamw"):
        opt = make_optimizer(RunConfig(optimizer=optimizer).optim, 0.1, params, fused=True)
        assert opt.defaults.get("fused") is True and getattr(opt, "_step_supports_amp_scaling", False)
        assert not make_optimizer(RunConfig(optimizer=optimizer).optim, 0.1, params, fused=False).defaults.get("fused")


def _step_losses(tmp_path):
    run = next((tmp_path / "runs").iterdir())
    rows = [json.loads(line[5:]) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["data"]["train.loss"] for r in rows if r["type"] == "LOG" and len(r["step"]) == 2]


def test_a_fused_fp16_step_trains_like_foreach_through_skipped_first_steps(tmp_path, tiny, monkeypatch):
    """fp16's GradScaler skips the first steps (inf gradients at scale 65536); fused SGD left its
    momentum buffers uninitialised there and the loss became NaN at step 5 (seen before the fix)."""
    from arcbench.plugins.devices.cpu import CPUDevice

    losses = []
    for fused in (False, True):
        monkeypatch.setattr(CPUDevice, "fused_optimizer", fused)
        _run(tmp_path / str(fused), "cpu", "--precision", "amp", "--amp-dtype", "fp16", "--synthetic-steps", "8",
             "--epochs", "1", "--log-interval", "1")
        losses.append(_step_losses(tmp_path / str(fused)))
    assert len(losses[1]) == 8 and all(math.isfinite(v) for v in losses[1])
    assert losses[1][0] == losses[1][1] > losses[1][-1]  # the first steps were skipped, then it trained
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
