"""Verification of given weights: the one path behind ``arcbench eval`` and ``run --do_eval``.

Both choose what to embed with in :func:`arcbench.engines.embedder` (a torch backbone, or an
ONNX file under ONNX Runtime) and embed at the registered input size, so the command line
and a recorded eval run report the same figures.
"""
from __future__ import annotations

from typing import Optional


def evaluate_weights(backbone: Optional[str], weights: str, device, vset, engine: Optional[str] = None,
                     **kwargs) -> dict:
    """Load ``weights`` for ``backbone`` on the bound card and verify on ``vset``; ``engine``: torch or
    onnxruntime (None: by the file); ``kwargs`` go to :func:`arcbench.evaluate.evaluate` (batch_size,
    flip, amp, workers, ...).  The result carries ``engine`` and ``backbone``."""
    from .engines import embedder
    from .errors import ArcbenchError
    from .evaluate import evaluate

    e = embedder(backbone, weights, device, engine)
    if e.engine != "torch" and kwargs.get("amp"):
        raise ArcbenchError("--amp autocasts torch; the onnxruntime engine runs the graph's own precision "
                            "(export with --dtype fp16 for a half-precision graph)")
    kwargs.setdefault("input_size", e.input_size)
    kwargs.setdefault("fold_bn", e.fold_bn)
    kwargs.setdefault("channels_last", e.channels_last)
    result = evaluate(e.model, device, vset, **kwargs)
    if result is not None:
        result.update(engine=e.engine, backbone=e.backbone, engine_notes=list(e.notes))
    return result
