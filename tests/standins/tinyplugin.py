"""A third-party-style plugin with a tiny backbone, so training tests run in seconds.

Loaded with ``--plugin tinyplugin`` (the tests put this folder on PYTHONPATH,
so spawned DDP workers import it too).  Knobs for fault tests are module
globals or environment variables (``TINY_SLEEP_FROM=N``: the Nth training forward hangs).
"""
from __future__ import annotations

import os
import signal

from torch import nn

from arcbench import hookimpl

#: raise SIGINT in this process on the Nth training forward call (resume/interrupt tests)
INTERRUPT_AT = None
_calls = {"n": 0}


class Tiny(nn.Module):
    """Two strided convs and a linear embedding: ~15k parameters."""

    def __init__(self, embedding_size: int = 32, nan_after=None, **_):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=4, padding=2, bias=False), nn.BatchNorm2d(16), nn.PReLU(16),
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.PReLU(32),
            nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(288, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size))
        self.nan_after = nan_after

    def forward(self, x):
        if self.training:
            _calls["n"] += 1
            _elastic_faults(_calls["n"])
        if self.training and os.environ.get("TINY_SLEEP_FROM") and _calls["n"] >= int(os.environ["TINY_SLEEP_FROM"]):
            import time

            time.sleep(600)  # a run that hangs here until the test kills it (kill -9)
        if self.training and INTERRUPT_AT is not None and _calls["n"] == INTERRUPT_AT:
            signal.raise_signal(signal.SIGINT)
        out = self.body(x)
        if self.nan_after is not None and self.training and _calls["n"] > self.nan_after:
            out = out * float("nan")
        return out


def _elastic_faults(n: int) -> None:
    """Elastic-restart tests: on the first attempt, rank ``$TINY_KILL_RANK`` kills itself with
    SIGKILL at its ``$TINY_KILL_AT``-th training forward; on a restarted attempt, rank 0 copies
    the run directory under ``$TINY_SNAPSHOT_FROM`` to ``$TINY_SNAPSHOT`` at its first one (the
    state the restart resumed from)."""
    attempt, rank = os.environ.get("TORCHELASTIC_RESTART_COUNT"), os.environ.get("RANK")
    if attempt == "0" and rank == os.environ.get("TINY_KILL_RANK") and str(n) == os.environ.get("TINY_KILL_AT"):
        os.kill(os.getpid(), signal.SIGKILL)
    if attempt not in (None, "0") and rank == "0" and n == 1 and os.environ.get("TINY_SNAPSHOT"):
        import glob
        import shutil

        (run_dir,) = [d for d in glob.glob(os.path.join(os.environ["TINY_SNAPSHOT_FROM"], "*", ""))]
        shutil.copytree(run_dir, os.environ["TINY_SNAPSHOT"])


class TinyStall(Tiny):
    """Tiny, but rank ``$TINY_STALL_RANK`` sleeps ``$TINY_STALL_SECONDS`` in its first evaluation
    forward: a straggler that reaches the verification gather long after the others."""

    def forward(self, x):
        if not self.training and os.environ.get("RANK") == os.environ.get("TINY_STALL_RANK", "-1"):
            import time

            time.sleep(float(os.environ.get("TINY_STALL_SECONDS", "60")))
        return super().forward(x)


class Tiny64(Tiny):
    """Tiny registered with ``input_size=64``: it refuses any other image size, so a 112 that
    slips through anywhere (training data, evaluation, bench, FLOP counts) fails loudly."""

    SIZE = 64

    def forward(self, x):
        assert tuple(x.shape[1:]) == (3, self.SIZE, self.SIZE), \
            f"tiny64 takes 3x{self.SIZE}x{self.SIZE} images, got {'x'.join(map(str, x.shape[1:]))}"
        return super().forward(x)


class TinyStatic(Tiny):
    """Tiny without the fault-test knobs: no Python state in ``forward``, so torch.compile traces
    it once (the call counter above would be a guard and recompile every step)."""

    def forward(self, x):
        return self.body(x)


def reset_calls():
    _calls["n"] = 0


@hookimpl
def register_backbones(register):
    register("tiny", Tiny, embedding_size=32, margin_scale=16.0)
    register("tiny_nan", lambda **kw: Tiny(nan_after=int(os.environ.get("TINY_NAN_AFTER", "3")), **kw),
             embedding_size=32, margin_scale=16.0)
    register("tiny_stall", TinyStall, embedding_size=32, margin_scale=16.0)
    register("tiny_static", TinyStatic, embedding_size=32, margin_scale=16.0)
    register("tiny64", Tiny64, embedding_size=32, input_size=Tiny64.SIZE, margin_scale=16.0)
