"""Where a run is: its epoch, the step inside it, and the global step.

The step inside the epoch is also the loader's position: a resumed run skips
that many batches of the (deterministic) epoch order.  ``steps_this_process``
is not checkpointed: warm-up is counted per process start, so a resumed run is
cold again.
"""
from __future__ import annotations


class Progress:
    """The training position; the part of it a checkpoint keeps comes from :meth:`state_dict`."""

    KEYS = ("epoch", "step_in_epoch", "global_step")

    def __init__(self):
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.steps_this_process = 0  # for warm-up and the ETA; not saved
        self.start_step = 0  # where this process's segment of the run started

    def begin_segment(self) -> None:
        """This process starts (or resumes) training here."""
        self.start_step = self.global_step

    def step(self) -> None:
        self.global_step += 1
        self.step_in_epoch += 1
        self.steps_this_process += 1

    def end_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = 0

    def steps_in_epoch(self, steps_per_epoch: int, total_steps: int) -> int:
        """Where the current epoch's steps stop: its end, or the run's last step inside it."""
        return min(steps_per_epoch, total_steps - self.global_step + self.step_in_epoch)

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.KEYS}

    def load_state_dict(self, state: dict) -> None:
        for k in self.KEYS:
            setattr(self, k, int(state[k]))
