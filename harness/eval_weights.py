"""Verification of given weights: the one path behind ``arcbench eval`` and ``run --do_eval``.

Both load the backbone the same way and embed at the registered input size,
so the command line and a recorded eval run report the same figures.
"""
from __future__ import annotations


def evaluate_weights(backbone: str, weights: str, device, vset, **kwargs) -> dict:
    """Load ``weights`` into ``backbone`` on the bound card and verify on ``vset``;
    ``kwargs`` go to :func:`arcbench.evaluate.evaluate` (batch_size, flip, amp, workers, ...)."""
    from .checkpoint import load_backbone
    from .evaluate import evaluate
    from .registry import get_backbone

    spec = get_backbone(backbone)
    model = load_backbone(backbone, weights).to(device.torch_device())
    kwargs.setdefault("input_size", spec.input_size)
    kwargs.setdefault("fold_bn", spec.fold_bn)
    return evaluate(model, device, vset, **kwargs)
