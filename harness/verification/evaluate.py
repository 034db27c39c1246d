"""Embedding a verification set and scoring it.

Each unique image is decoded and embedded once (a DataLoader with worker
processes does the JPEG work in parallel while the device computes), pair
distances are gathered from the embedding table, and
:func:`arcbench.verification.protocol.verification_metrics` does the rest.  The same function
runs between training epochs, so the model's train/eval mode and memory
format are put back as they were.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .sets import VerificationSet
from ..errors import ArcbenchError
from .protocol import grid_separates, verification_metrics
from ..data.preprocess import load_tensor
from ..inference.weights import inference_model
from ..registry import DEFAULT_INPUT_SIZE

#: keys of :func:`evaluate`'s result that are arrays (for scores), not printable numbers
ARRAY_KEYS = ("distances", "issame", "folds")


class _UniqueImages(torch.utils.data.Dataset):
    """Unique images of a set, decoded and preprocessed like the reference."""

    def __init__(self, vset: VerificationSet, size: int):
        self.images = vset.images
        self.size = size
        self.vset = vset

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return i, load_tensor(self.images[i], self.size, what=self.vset.image_label(i))


def _worker_init(_):
    torch.set_num_threads(1)  # decode is PIL's work; torch threads would only oversubscribe


def default_workers(num_images: int, batch_size: int) -> int:
    """Worker processes for decoding: none for tiny sets (start-up costs more than it saves)."""
    if num_images <= 2 * batch_size:
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module, channels_last: bool):
    was_training = model.training
    converted = False
    if channels_last:
        convs = [p for p in model.parameters() if p.dim() == 4]
        if convs and not all(p.is_contiguous(memory_format=torch.channels_last) for p in convs):
            model.to(memory_format=torch.channels_last)
            converted = True
    model.eval()
    try:
        yield
    finally:
        if converted:
            model.to(memory_format=torch.contiguous_format)
        model.train(was_training)


def _batches(n: int, batch_size: int) -> list:
    """The single-process batch partition of ``range(n)``: sharding hands out whole batches of it,
    so each image is embedded in the same batch as in one process (identical figures)."""
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def embed_set(model: torch.nn.Module, device, vset: VerificationSet, *, batch_size: int = 256,
              flip: bool = False, amp: bool = False, workers: Optional[int] = None, progress: bool = True,
              channels_last: bool = True, input_size: Optional[int] = None, fold_bn: bool = False,
              sharded: bool = False):
    """``(embeddings (num_images, D) float32, seconds)``; the timer covers decode and compute
    (the loader's worker processes are started before it), and the copy of the embeddings to the host.

    ``sharded``: in a multi-process run every rank embeds every ``world``-th batch and
    the shares are gathered; rank 0 gets the whole table, the other ranks ``None``.
    ``input_size``: the backbone spec's (None: the contract's default, 112).
    ``fold_bn``: the backbone spec's; embed with a conv+BN-folded copy (see :func:`inference_model`)."""
    from ..run import collectives

    if batch_size < 1:
        raise ArcbenchError(f"eval batch size must be at least 1, got {batch_size}")
    n = vset.num_images
    rank, world = (collectives.rank(), collectives.world_size()) if sharded else (0, 1)
    batches = _batches(n, batch_size)
    mine = batches[rank::world]
    share = sum(len(b) for b in mine)
    workers = default_workers(share, batch_size) if workers is None else max(0, int(workers))
    tdev = device.torch_device()
    loader = torch.utils.data.DataLoader(
        _UniqueImages(vset, input_size or DEFAULT_INPUT_SIZE), batch_sampler=mine,
        num_workers=workers, pin_memory=tdev.type != "cpu", worker_init_fn=_worker_init if workers else None,
        # cuda pins by default; other accelerators (sdaa registers as a PrivateUse1 backend) must be named
        pin_memory_device=tdev.type if tdev.type not in ("cpu", "cuda") else "")
    show = progress and sys.stderr is not None and sys.stderr.isatty()
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=share, unit="img", desc=f"eval {vset.name}", leave=False, file=sys.stderr)
    fast = inference_model(model, channels_last, fold_bn)
    rows = []
    fmt = torch.channels_last if channels_last else None
    try:
        with _eval_mode(fast, channels_last), torch.inference_mode():
            loaded = iter(loader)  # the worker processes start here, before the timer
            start = device.timestamp()
            for idx, batch in loaded:
                # channels_last on the device: the pinned batch is copied as it is, asynchronously
                rows.append(embed_batch(fast, batch, device, flip=flip, amp=amp, memory_format=fmt, to_host=False))
                if bar is not None:
                    bar.update(len(idx))
            local = torch.cat(rows).cpu() if rows else None  # one copy to the host per evaluation
            shares = collectives.all_gather_rows("eval.embeddings", local) if world > 1 else [local]
            seconds = device.timestamp() - start
    finally:
        if bar is not None:
            bar.close()
    if rank != 0:
        return None, seconds
    out: Optional[torch.Tensor] = None
    for r, part in enumerate(shares):  # rank r embedded batches r, r + world, ... in that order
        if part is None or not len(part):
            continue
        if out is None:
            out = torch.empty((n, part.shape[1]), dtype=torch.float32)
        out[torch.tensor(sum(batches[r::world], []), dtype=torch.long)] = part
    return out.numpy(), seconds


def pair_distances(embeddings: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Euclidean distance per pair, in float64 (0..2 for unit embeddings)."""
    e = np.asarray(embeddings, dtype=np.float64)
    return np.linalg.norm(e[pairs[:, 0]] - e[pairs[:, 1]], axis=1)


def evaluate(model: torch.nn.Module, device, vset: VerificationSet, *, batch_size: int = 256,
             flip: bool = False, amp: bool = False, workers: Optional[int] = None, progress: bool = True,
             channels_last: bool = True, thresholds="grid", far_target: float = 1e-3,
             input_size: Optional[int] = None, fold_bn: bool = False, sharded: bool = False) -> Optional[dict]:
    """Embed every unique image once, then the 10-fold verification metrics.

    Returns the :func:`verification_metrics` keys plus ``name``, ``pairs_used``,
    ``pairs_skipped``, ``num_images``, ``images_per_second``, ``embed_seconds``
    and the arrays ``distances``, ``issame``, ``folds`` (see :data:`ARRAY_KEYS`).
    ``sharded``: every rank of a multi-process run calls this and embeds a share;
    rank 0 returns the result, the other ranks ``None``.  ``input_size`` and ``fold_bn``
    come from the backbone's spec (see :func:`embed_set`).
    """
    if len(vset) == 0:
        raise ArcbenchError(f"verification set {vset.name} has no pairs", vset.source or None)
    emb, seconds = embed_set(model, device, vset, batch_size=batch_size, flip=flip, amp=amp,
                             workers=workers, progress=progress, channels_last=channels_last,
                             input_size=input_size, fold_bn=fold_bn, sharded=sharded)
    if emb is None:
        return None  # another rank scores
    distances = pair_distances(emb, vset.pairs)
    result = verification_metrics(distances, vset.issame, folds=vset.folds, thresholds=thresholds,
                                  far_target=far_target)
    if isinstance(thresholds, str) and thresholds == "grid" and not grid_separates(distances):
        _grid_unresolved(result, distances, vset, far_target)
    result.update({
        "name": vset.name,
        "pairs_used": int(len(vset)),
        "pairs_skipped": int(vset.pairs_skipped),
        "num_images": int(vset.num_images),
        "images_per_second": vset.num_images / seconds if seconds > 0 else None,
        "embed_seconds": seconds,
        "distances": distances,
        "issame": vset.issame.copy(),
        "folds": vset.folds.copy(),
    })
    return result


def _grid_unresolved(result: dict, distances: np.ndarray, vset: VerificationSet, far_target: float) -> None:
    """Say so when the published grid cannot read the distances, and give the exact-threshold figure."""
    import warnings

    exact = verification_metrics(distances, vset.issame, folds=vset.folds, thresholds="exact",
                                 far_target=far_target)
    result.update(grid_unresolved=True, accuracy_exact=float(exact["accuracy"]))
    warnings.warn(f"{vset.name}: every pair distance lies in [{distances.min():.2g}, {distances.max():.2g}], "
                  f"between two steps of the 0.01 threshold grid, so the grid protocol reads chance "
                  f"({result['accuracy']:.4f}); exact thresholds give {exact['accuracy']:.4f}. The embeddings "
                  f"have barely spread yet (an early model: BatchNorm statistics not settled)", stacklevel=2)


def printable(result: dict) -> dict:
    """The result without its arrays and ROC (for JSON lines and summaries)."""
    return {k: v for k, v in result.items() if k not in ARRAY_KEYS and k != "roc"}


def save_scores(path, result: dict) -> None:
    """CSV ``pair,fold,distance,issame`` with round-trip float precision, written atomically.

    Reading it back and calling ``verification_metrics(distance, issame, fold)``
    reproduces the reported accuracy exactly.
    """
    from ..record.atomic import write_text

    d, y, f = result["distances"], result["issame"], result["folds"]
    lines = ["pair,fold,distance,issame"]
    lines += [f"{i},{int(f[i])},{float(d[i])!r},{int(bool(y[i]))}" for i in range(len(d))]
    write_text(path, "\n".join(lines) + "\n")


def evaluate_weights(backbone: Optional[str], weights: str, device, vset, engine: Optional[str] = None,
                     **kwargs) -> dict:
    """Load ``weights`` for ``backbone`` on the bound card and verify on ``vset``; ``engine``: torch or
    onnxruntime (None: by the file); ``kwargs`` go to :func:`arcbench.verification.evaluate.evaluate` (batch_size,
    flip, amp, workers, ...).  The result carries ``engine`` and ``backbone``."""
    from ..inference.engines import embedder

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


@torch.no_grad()
def embed_batch(model: torch.nn.Module, images: torch.Tensor, device=None, flip: bool = False,
                amp: bool = False, memory_format=None, to_host: bool = True) -> torch.Tensor:
    """L2-normalised embeddings (float32, on the host) for a CHW batch in [-1, 1].

    With ``flip`` the embedding of the mirrored image is added before normalising.
    ``memory_format``: converted on the device, after the copy (a pinned host batch stays pinned,
    so the copy stays asynchronous).  ``to_host=False`` leaves the embeddings on the device (a
    caller embedding many batches copies them once).
    """
    tdev = device.torch_device() if device is not None else images.device
    x = images.to(tdev, non_blocking=True)
    if memory_format is not None:
        x = x.contiguous(memory_format=memory_format)
    ctx = device.autocast(amp) if device is not None else torch.autocast("cpu", enabled=False)
    with ctx:
        out = model(x).float().flatten(1)
        if flip:
            out = out + model(torch.flip(x, dims=[3])).float().flatten(1)
    out = F.normalize(out, dim=1)
    return out.cpu() if to_host else out
