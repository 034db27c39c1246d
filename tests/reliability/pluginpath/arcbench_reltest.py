"""A third-party-style test plugin, loaded only with ``--plugin arcbench_reltest``.

It registers ``reltiny``: a backbone small enough that a training step costs
milliseconds on a slow CPU, so fault tests exercise the harness, not the model.
Environment knobs (read at every forward, so spawned DDP workers see them):

* ``RELTEST_SLEEP``: seconds to sleep per training forward (to kill mid-epoch);
* ``RELTEST_DIE_RANK`` / ``RELTEST_DIE_AFTER``: that rank dies hard on its training
  forward number ``RELTEST_DIE_AFTER`` + 1: ``os._exit(3)``, or ``SIGKILL`` when
  ``RELTEST_DIE_HOW=kill`` (as the OOM killer would).
"""
import os
import signal
import time

import torch
from torch import nn

from arcbench import hookimpl


class RelTiny(nn.Module):
    def __init__(self, embedding_size: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=8, stride=8)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, embedding_size)
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            die_rank = os.environ.get("RELTEST_DIE_RANK")
            if die_rank is not None and os.environ.get("RANK", "0") == die_rank \
                    and self.calls > int(os.environ.get("RELTEST_DIE_AFTER", "0")):
                if os.environ.get("RELTEST_DIE_HOW") == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                os._exit(3)
            delay = float(os.environ.get("RELTEST_SLEEP", "0") or 0)
            if delay:
                time.sleep(delay)
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


@hookimpl
def register_backbones(register):
    register("reltiny", RelTiny, embedding_size=16, input_size=112, margin_scale=16.0)
