"""Learning-rate schedules.

``reference`` and ``step`` are the per-**epoch** schedules of the implementation the
SDAA model zoo ported (bubbliiiing/arcface-pytorch, ``get_lr_scheduler``), written
from their formulas; ``cosine`` is arcbench's per-iteration schedule for
insightface-style runs.  Every schedule is exposed as a multiplier of the
optimizer's base lr per global step, so one ``LambdaLR`` drives all three and a
checkpoint resumes any of them.

With ``E`` epochs, ``lr`` the starting lr and ``min_lr`` the floor, at epoch
``e`` (0-based):

``reference``
    warm = min(max(0.1 E, 1), 3) epochs, start = max(0.1 lr, 1e-6),
    tail = min(max(0.3 E, 1), 15) epochs:

    * ``e <= warm``: ``(lr - start) * (e / warm)**2 + start`` (quadratic warm-up);
    * ``e >= E - tail``: ``min_lr`` (flat);
    * otherwise ``min_lr + (lr - min_lr) / 2 * (1 + cos(pi (e - warm) / (E - warm - tail)))``.

``step``
    ``lr * ((min_lr / lr) ** (1/9)) ** floor(e / (E / 10))``: ten levels from ``lr``
    down to ``min_lr``.  The reference refuses fewer than 10 epochs (a step shorter
    than one epoch); arcbench steps every epoch then, so the decay stops early.

The floor (reference ``Min_lr_fit``) is ``clamp(batch/64 * 0.01 lr, 5e-6, 1e-3)`` for
SGD and ``clamp(batch/64 * 0.01 lr, 3e-6, 1e-5)`` for Adam(W); without lr scaling it
is ``0.01 lr``.
"""
from __future__ import annotations

import math
from typing import Callable

SCHEDULES = ("reference", "cosine", "step")
#: the reference's nominal batch and min-lr clamps (Min_lr_fit), per optimizer
MIN_LR_LIMITS = {"sgd": (5e-6, 1e-3), "adamw": (3e-6, 1e-5)}
MIN_LR_RATIO = 0.01
STEP_LEVELS = 10


def reference_min_lr(lr: float, batch_size: int, optimizer: str, scale: bool = True, nominal: int = 64) -> float:
    """The reference's ``Min_lr_fit`` for a nominal lr given for batch ``nominal``."""
    if not scale:
        return MIN_LR_RATIO * lr
    lo, hi = MIN_LR_LIMITS[optimizer]
    return min(max(batch_size / nominal * MIN_LR_RATIO * lr, lo), hi)


def reference_lr(epoch: int, lr: float, min_lr: float, epochs: int) -> float:
    """The reference's ``cos`` schedule (warm-up, cosine, flat tail) at 0-based ``epoch``."""
    warm = min(max(0.1 * epochs, 1), 3)
    start = max(0.1 * lr, 1e-6)
    tail = min(max(0.3 * epochs, 1), 15)
    if epoch <= warm:
        return (lr - start) * (epoch / warm) ** 2 + start
    if epoch >= epochs - tail:
        return min_lr
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * (epoch - warm) / (epochs - warm - tail)))


def step_lr(epoch: int, lr: float, min_lr: float, epochs: int) -> float:
    """The reference's ``step`` schedule at 0-based ``epoch`` (see the module notes for E < 10)."""
    rate = (min_lr / lr) ** (1.0 / (STEP_LEVELS - 1))
    size = max(epochs / STEP_LEVELS, 1.0)
    return lr * rate ** int(epoch // size)


def cosine_factor(step: int, total_steps: int, warmup: int) -> float:
    """Per-iteration: linear warm-up over ``warmup`` steps, then cosine to 1%."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def lr_factor(cfg, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of ``cfg.effective_lr()`` for global step ``step`` (0-based)."""
    kind = cfg.schedule.lr_schedule
    if kind == "cosine":
        warmup = cfg.schedule.warmup_steps
        if warmup is None:
            warmup = min(steps_per_epoch, max(1, int(0.05 * total_steps)))
        warmup = min(warmup, max(total_steps - 1, 0))
        return lambda step: cosine_factor(step, total_steps, warmup)
    base = cfg.effective_lr()
    floor = cfg.min_lr()
    per_epoch = reference_lr if kind == "reference" else step_lr
    table = [per_epoch(e, base, floor, cfg.schedule.epochs) / base for e in range(cfg.schedule.epochs)]
    spe = max(1, steps_per_epoch)
    return lambda step: table[min(step // spe, len(table) - 1)]
