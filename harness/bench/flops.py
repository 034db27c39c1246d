"""FLOP counting with ``torch.utils.flop_counter`` (torch >= 2.1)."""
from __future__ import annotations

from typing import Callable, Optional

import torch


def count_flops(fn: Callable[[], object]) -> Optional[int]:
    """FLOPs of one call of ``fn`` (forward, or forward+backward), or None if unsupported."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:  # torch 2.0
        return None
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def forward_flops(model: torch.nn.Module, input_size: int, batch: int = 1, device=None) -> Optional[int]:
    """Forward FLOPs per ``batch`` images of side ``input_size`` (the backbone spec's; eval mode,
    no grad).  ``device="meta"`` counts without computing anything."""
    was_training = model.training
    model.eval()
    x = torch.zeros(batch, 3, input_size, input_size, device=device)
    try:
        with torch.no_grad():
            return count_flops(lambda: model(x))
    finally:
        model.train(was_training)
