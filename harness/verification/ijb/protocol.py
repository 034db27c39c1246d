"""The IJB-B / IJB-C 1:1 template protocol from face embeddings to TAR at FAR (numpy only).

Faces are pooled into templates as the published evaluation does: the faces of one media
(the frames of one video, or one still) are averaged, a template is the sum of its media,
and the template is L2-normalised.  A pair's score is the cosine of its two templates,
computed in batches so that IJB-C's 15.6M pairs never need one 15.6M x 512 array.

TAR at FAR follows insightface's ``eval_ijbc.py`` definition: from the ROC (one point per
distinct score, collinear runs dropped, a (0, 0) point first, as ``sklearn.metrics.roc_curve``
builds it), the point whose FAR is nearest the target; among equally near points the last in
threshold order (the largest TAR at that FAR).  With few impostor pairs the nearest point can
lie above the target FAR; the result records the FAR actually read.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

#: the FAR targets of the published tables
FAR_TARGETS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def pool_templates(feats: np.ndarray, templates: np.ndarray, medias: np.ndarray,
                   keep: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(template ids, unit template features)``: mean per (template, media), summed per template.

    ``feats``: (F, D) face features, already weighted as the protocol variant says.
    ``keep``: faces to use (skipped faces are left out; a template with none is absent).
    """
    feats = np.asarray(feats)  # float32 stays float32 (IJB-C: 469k x 512), as the published code averages
    templates, medias = np.asarray(templates), np.asarray(medias)
    if keep is not None:
        feats, templates, medias = feats[keep], templates[keep], medias[keep]
    if not len(feats):
        return np.zeros(0, dtype=np.int64), np.zeros((0, feats.shape[1]), dtype=np.float32)
    order = np.lexsort((medias, templates))  # faces sorted by template, then media
    t_s, m_s = templates[order], medias[order]
    starts = np.flatnonzero(np.r_[True, (t_s[1:] != t_s[:-1]) | (m_s[1:] != m_s[:-1])])  # each media
    counts = np.diff(np.r_[starts, len(order)])
    media_feats = np.add.reduceat(feats[order], starts, axis=0).astype(np.float64) / counts[:, None]
    media_t = t_s[starts]
    first = np.flatnonzero(np.r_[True, media_t[1:] != media_t[:-1]])  # each template's first media
    tids = media_t[first]
    out = np.add.reduceat(media_feats, first, axis=0)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out = out / np.where(norms > 0, norms, 1.0)
    return tids.astype(np.int64), out.astype(np.float32)


def pair_scores(tids: np.ndarray, tfeats: np.ndarray, pairs: np.ndarray,
                batch: int = 100_000) -> Tuple[np.ndarray, np.ndarray]:
    """``(scores, usable)``: cosine of each pair's templates, in batches of ``batch`` pairs.

    A pair naming a template that has no usable face gets score NaN and ``usable`` False."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    order = np.argsort(tids)
    sorted_ids = tids[order]

    def rows(ids):
        pos = np.searchsorted(sorted_ids, ids)
        pos = np.minimum(pos, max(0, len(sorted_ids) - 1))
        found = (sorted_ids[pos] == ids) if len(sorted_ids) else np.zeros(len(ids), dtype=bool)
        return order[pos] if len(order) else pos, found

    scores = np.full(len(pairs), np.nan, dtype=np.float32)
    usable = np.zeros(len(pairs), dtype=bool)
    for start in range(0, len(pairs), batch):
        part = pairs[start:start + batch]
        r1, ok1 = rows(part[:, 0])
        r2, ok2 = rows(part[:, 1])
        ok = ok1 & ok2
        s = np.einsum("ij,ij->i", tfeats[r1[ok]], tfeats[r2[ok]])
        block = scores[start:start + len(part)]
        block[ok] = s
        usable[start:start + len(part)] = ok
    return scores, usable


def roc(labels: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` as ``sklearn.metrics.roc_curve`` (drop_intermediate=True) gives them."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.where(np.diff(s))[0], len(s) - 1]  # the last pair at each distinct score
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1 - tps).astype(np.float64)
    thresholds = s[last]
    if len(fps) > 2:
        keep = np.where(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
    thresholds = np.r_[np.inf, thresholds]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full_like(fps, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full_like(tps, np.nan)
    return fpr, tpr, thresholds


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, targets: Sequence[float] = FAR_TARGETS) -> Dict[float, dict]:
    """For each target FAR: ``{"tar", "far", "index"}`` of the ROC point read (see module docstring)."""
    out = {}
    n = len(fpr)
    for x in targets:
        gap = np.abs(fpr - x)
        best = np.flatnonzero(gap == gap.min())[-1]  # nearest FAR; of equals, the last (largest TAR)
        out[float(x)] = {"tar": float(tpr[best]), "far": float(fpr[best]), "index": int(best)}
    assert n == len(tpr)
    return out


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC (trapezoids)."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
