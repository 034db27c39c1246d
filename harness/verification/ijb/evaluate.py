"""IJB-B / IJB-C 1:1 verification of given weights: embed (cached), weigh, pool, score, read the ROC.

The variant implemented by default is the one insightface's ``eval_ijbc.py`` reports
(its ``N1D1F1``): the embedding of a face is the raw sum of the image's and its mirror's
embeddings (its norm kept: a blurred, unsure face weighs less), multiplied by the detector
score.  ``detector_score=False`` leaves the score out (``D0``); ``unit_faces=True``
L2-normalises each face before pooling (``N0``); ``flip=False`` embeds the image alone (``F0``).
"""
from __future__ import annotations

import os
import time
from typing import Optional

import numpy as np

from ...record import atomic
from .meta import IJBMeta
from .embed import OK, SKIP_REASONS, embed_faces, weights_digest
from .protocol import FAR_TARGETS, auc, pair_scores, pool_templates, roc, tar_at_far


def face_weights(feats: np.ndarray, status: np.ndarray, scores: np.ndarray, *, detector_score: bool = True,
                 unit_faces: bool = False) -> np.ndarray:
    """The features that enter pooling, as the protocol variant says (unusable faces: zeros)."""
    out = np.array(feats, dtype=np.float32)  # a copy: the cache is never changed
    if unit_faces:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.where(norms > 0, norms, 1.0)
    if detector_score:
        out *= np.asarray(scores, dtype=np.float32)[:, None]
    out[status != OK] = 0.0
    return out


def score_meta(meta: IJBMeta, feats: np.ndarray, status: np.ndarray, *, detector_score: bool = True,
               unit_faces: bool = False, batch: int = 100_000) -> dict:
    """Pool templates, score the pairs, read TAR at each FAR; counts of what was skipped."""
    keep = status == OK
    x = face_weights(feats, status, meta.scores, detector_score=detector_score, unit_faces=unit_faces)
    tids, tfeats = pool_templates(x, meta.templates, meta.medias, keep=keep)
    scores, usable = pair_scores(tids, tfeats, meta.pairs, batch=batch)
    labels = meta.labels[usable]
    fpr, tpr, _thr = roc(labels, scores[usable])
    tars = tar_at_far(fpr, tpr, FAR_TARGETS)
    skipped = {SKIP_REASONS[c]: int(np.count_nonzero(status == c)) for c in SKIP_REASONS
               if np.count_nonzero(status == c)}
    return {
        "name": meta.name, "faces": int(meta.num_faces), "faces_used": int(keep.sum()), "faces_skipped": skipped,
        "templates": int(len(np.unique(meta.templates))), "templates_used": int(len(tids)),
        "pairs": int(len(meta.pairs)), "pairs_used": int(usable.sum()),
        "pairs_skipped": int(len(meta.pairs) - usable.sum()),
        "genuine_pairs": int(labels.sum()), "impostor_pairs": int(len(labels) - labels.sum()),
        "tar_at_far": {f"{x:.0e}": v["tar"] for x, v in tars.items()},
        "far_read": {f"{x:.0e}": v["far"] for x, v in tars.items()},
        "auc": auc(fpr, tpr) if len(fpr) > 1 and np.isfinite(fpr).all() and np.isfinite(tpr).all() else None,
        "roc": {"fpr": fpr, "tpr": tpr}, "scores": scores, "usable": usable,
    }


def evaluate_ijb(meta: IJBMeta, backbone: str, weights: str, device, out_dir: str, *, batch_size: int = 128,
                 flip: bool = True, amp: bool = False, workers: Optional[int] = None, resume: bool = False,
                 detector_score: bool = True, unit_faces: bool = False, progress: bool = True, log=None) -> dict:
    """Embed every face of ``meta`` with ``weights`` (cached in ``out_dir``) and score the protocol."""
    from ...inference.weights import load_backbone
    from ...inference.weights import inference_model
    from ...registry import get_backbone

    spec = get_backbone(backbone)
    size = spec.input_size
    model = inference_model(load_backbone(backbone, weights).to(device.torch_device()), False, spec.fold_bn)
    key = {"backbone": backbone, "weights_sha256": weights_digest(weights), "flip": bool(flip),
           "amp": bool(amp), "input_size": int(size), "faces": int(meta.num_faces),
           "face_list": weights_digest(meta.files["faces"]), "landmarks": weights_digest(meta.files["landmarks"])}
    start = time.perf_counter()
    feats, status = embed_faces(meta, model, device, out_dir, key=key, batch_size=batch_size, flip=flip,
                                amp=amp, workers=workers, input_size=size, resume=resume, progress=progress,
                                log=log)
    embed_seconds = time.perf_counter() - start
    result = score_meta(meta, feats, status, detector_score=detector_score, unit_faces=unit_faces)
    result.update(backbone=backbone, weights=os.path.abspath(weights), device=device.name, flip=flip, amp=amp,
                  detector_score=detector_score, unit_faces=unit_faces, embed_seconds=embed_seconds,
                  variant=f"N{0 if unit_faces else 1}D{1 if detector_score else 0}F{1 if flip else 0}")
    return result


def printable(result: dict) -> dict:
    """The result without its arrays (for JSON)."""
    return {k: v for k, v in result.items() if k not in ("roc", "scores", "usable")}


def plot_roc(fpr, tpr, path: str, title: str, marks=FAR_TARGETS) -> None:
    """The ROC on a log FAR axis (1e-6 .. 1), the table's FAR targets marked."""
    from ...record.plots import figure, png_bytes, style_axes

    fig = figure()
    ax = fig.add_subplot(111)
    fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
    ok = fpr > 0  # a log axis cannot show FAR 0
    ax.plot(fpr[ok], tpr[ok], lw=1.2)
    for x in marks:
        ax.axvline(x, color="grey", lw=0.5, ls="--")
    ax.set_xscale("log")
    ax.set_xlim(min(marks) / 2, 1.0)
    ax.set_ylim(0.0, 1.0)
    style_axes(ax, title=title, xlabel="FAR (false accept rate)", ylabel="TAR (true accept rate)")
    atomic.write_bytes(path, png_bytes(fig))


def save_outputs(result: dict, out_dir: str, meta: Optional[IJBMeta] = None) -> dict:
    """``result.json``, ``tar_far.csv`` and ``roc.png`` in ``out_dir`` (with ``meta``, also ``scores.csv``:
    one row per scored pair, so the table can be recomputed from it); returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"result": os.path.join(out_dir, "result.json"), "table": os.path.join(out_dir, "tar_far.csv"),
             "roc": os.path.join(out_dir, "roc.png")}
    atomic.write_json(paths["result"], printable(result))
    rows = ["far,tar,far_read"] + [f"{k},{v!r},{result['far_read'][k]!r}" for k, v in result["tar_at_far"].items()]
    atomic.write_text(paths["table"], "\n".join(rows) + "\n")
    plot_roc(result["roc"]["fpr"], result["roc"]["tpr"], paths["roc"],
             title=f"{result['name']} 1:1 ROC: {result.get('backbone', '')}")
    if meta is not None:
        paths["scores"] = os.path.join(out_dir, "scores.csv")
        ok = result["usable"]
        lines = ["template1,template2,label,score"]
        lines += [f"{int(p[0])},{int(p[1])},{int(lab)},{float(sc)!r}"
                  for p, lab, sc in zip(meta.pairs[ok], meta.labels[ok], result["scores"][ok])]
        atomic.write_text(paths["scores"], "\n".join(lines) + "\n")
    return paths
