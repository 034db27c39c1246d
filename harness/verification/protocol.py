"""Verification metrics under the protocol behind published LFW numbers (numpy only).

Distances are Euclidean between unit embeddings (0..2); a pair is predicted
"same" when ``distance < threshold``.  The pairs are cut into 10 contiguous,
unshuffled folds; for each fold the threshold with the best accuracy on the
other nine (the first best of ``np.arange(0, 4, 0.01)``, as the reference's
``np.argmax``) is applied to the held-out fold, and the fold accuracies give
mean +- std (population std, as ``np.std``).  VAL@FAR follows the same
train/test split with the reference's finer grid ``np.arange(0, 4, 0.001)``.

Counting uses ``searchsorted`` on sorted distances instead of a Python loop
over thresholds; ``searchsorted(..., side="left")`` counts exactly the values
``< t``, so results match the reference's ``np.less`` bit for bit.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np

GRID = np.arange(0, 4, 0.01)
VAL_GRID = np.arange(0, 4, 0.001)


def grid_separates(distances) -> bool:
    """Whether some threshold of :data:`GRID` falls between the pairs' distances.  When none
    does (an early model whose embeddings have barely spread: every distance below 0.01),
    every grid threshold calls all pairs alike and the grid protocol reads chance,
    whatever the distances' order says."""
    d = np.asarray(distances, dtype=np.float64)
    return bool(d.size) and bool(np.any((GRID > d.min()) & (GRID <= d.max())))
ROC_POINTS = 1000


def contiguous_folds(n: int, n_folds: int = 10) -> np.ndarray:
    """Fold id per item, contiguous blocks sized like sklearn's unshuffled KFold (the reference's split)."""
    k = max(1, min(n_folds, n))
    sizes = np.full(k, n // k, dtype=np.int64)
    sizes[: n % k] += 1
    return np.repeat(np.arange(k, dtype=np.int64), sizes)


def _relabel_folds(folds, n: int) -> np.ndarray:
    """Given fold labels (any values, any sizes) as ids 0..k-1."""
    folds = np.asarray(folds).ravel()
    if len(folds) != n:
        raise ValueError(f"folds has {len(folds)} entries for {n} pairs")
    return np.unique(folds, return_inverse=True)[1].astype(np.int64).ravel()


def _count_below(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return np.searchsorted(sorted_values, thresholds, side="left")


def exact_thresholds(distances: np.ndarray) -> np.ndarray:
    """Every threshold that separates the sorted distinct distances differently, ascending.

    The lowest predicts nothing "same", then the midpoints, then one above the
    largest (everything "same").
    """
    u = np.unique(distances[np.isfinite(distances)])
    if len(u) == 0:
        return np.zeros(1)
    return np.concatenate([u[:1], (u[:-1] + u[1:]) / 2.0, u[-1:] + 1.0])


def accuracy_curve(distances, issame, thresholds) -> np.ndarray:
    """Accuracy at each threshold (same when distance < threshold)."""
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(issame, dtype=bool)
    tp = _count_below(np.sort(d[y]), thresholds)
    neg = np.sort(d[~y])
    tn = len(neg) - _count_below(neg, thresholds)
    return (tp + tn) / float(max(len(d), 1))


def threshold_at_far(thresholds: np.ndarray, far: np.ndarray, target: float) -> float:
    """The threshold where the (non-decreasing) FAR curve reaches ``target``.

    Linear interpolation between the last threshold with FAR <= target and the
    first with FAR > target.  Runs of equal FAR values (the usual case: FAR is
    a step function of the threshold) are fine, unlike ``interp1d(far, thr)``.
    """
    ok = np.nonzero(far <= target)[0]
    if len(ok) == 0:
        return float(thresholds[0])
    lo = int(ok[-1])
    if lo == len(thresholds) - 1 or far[lo] >= target:
        return float(thresholds[lo])
    hi = lo + 1
    frac = (target - far[lo]) / (far[hi] - far[lo])
    return float(thresholds[lo] + frac * (thresholds[hi] - thresholds[lo]))


def val_far(distances, issame, threshold: float):
    """``(VAL, FAR)`` at one threshold; VAL is NaN without positives, FAR 0 without negatives (as the reference)."""
    pred = distances < threshold
    n_same = int(issame.sum())
    n_diff = len(issame) - n_same
    val = float(np.sum(pred & issame)) / n_same if n_same else math.nan
    far = float(np.sum(pred & ~issame)) / max(n_diff, 1)
    return val, far


def roc_curve(distances, issame):
    """Pooled ROC over every distinct distance: ``(fpr, tpr)`` from (0, 0) to (1, 1)."""
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(issame, dtype=bool)
    order = np.argsort(d, kind="stable")
    ds, ys = d[order], y[order]
    p, n = int(ys.sum()), int(len(ys) - ys.sum())
    last = np.r_[ds[1:] != ds[:-1], True] if len(ds) else np.zeros(0, dtype=bool)
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(~ys)[last]
    tpr = np.r_[0.0, tp / p] if p else np.r_[0.0, np.zeros(len(tp))]
    fpr = np.r_[0.0, fp / n] if n else np.r_[0.0, np.zeros(len(fp))]
    return fpr, tpr


def auc_eer(fpr: np.ndarray, tpr: np.ndarray):
    """Area under the ROC (trapezoids) and the equal error rate (FPR = 1 - TPR, interpolated)."""
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    gap = (1.0 - tpr) - fpr          # starts at 1, ends at -1 (or 0), non-increasing
    i = int(np.argmax(gap <= 0)) if np.any(gap <= 0) else len(gap) - 1
    if i == 0 or gap[i] == 0:
        eer = float(fpr[i])
    else:
        a = gap[i - 1] / (gap[i - 1] - gap[i])
        eer = float(fpr[i - 1] + a * (fpr[i] - fpr[i - 1]))
    return auc, eer


def _downsample(fpr, tpr, points: int):
    if points and len(fpr) > points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, points).round().astype(np.int64))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


def _num(x) -> Optional[float]:
    x = float(x)
    return None if math.isnan(x) else x


def _threshold_mode(thresholds):
    """``(mode, explicit thresholds sorted or None)`` from :func:`verification_metrics`' argument."""
    if isinstance(thresholds, str):
        if thresholds not in ("grid", "exact"):
            raise ValueError(f"thresholds must be 'grid' or 'exact', not {thresholds!r}")
        return thresholds, None
    custom = np.sort(np.asarray(thresholds, dtype=np.float64).ravel())
    if len(custom) == 0:
        raise ValueError("empty threshold list")
    return "custom", custom


def _score_fold(dtr, ytr, dte, yte, acc_t, val_t, far_target: float):
    """Thresholds chosen on the training folds, applied to the held-out one: ``(best, accuracy, VAL, FAR)``."""
    i = int(np.argmax(accuracy_curve(dtr, ytr, acc_t)))  # first best, as the reference
    best = acc_t[i]
    accuracy = np.mean((dte < best) == yte)
    neg = np.sort(dtr[~ytr])
    far_curve = _count_below(neg, val_t) / float(max(len(neg), 1))
    val, far = val_far(dte, yte, threshold_at_far(val_t, far_curve, far_target))
    return best, accuracy, val, far


def verification_metrics(distances, issame, folds=None, n_folds: int = 10,
                         thresholds: Union[str, Sequence[float]] = "grid", far_target: float = 1e-3,
                         roc_points: int = ROC_POINTS) -> dict:
    """10-fold accuracy (mean, std, per-fold threshold), VAL@FAR, ROC, AUC and EER.

    ``thresholds``: ``"grid"`` (the published protocol), ``"exact"`` (every
    distinct cut of the training distances, midpoints) or an explicit array.
    ``folds`` gives a fold id per pair (any labels, any sizes); without it the
    pairs are split into ``n_folds`` contiguous folds.  With a single fold the
    threshold is chosen on that same fold (an optimistic number, flagged by
    ``n_folds == 1``).  Undefined values (no positives, no negatives) are None.
    """
    d = np.asarray(distances, dtype=np.float64).ravel()
    y = np.asarray(issame).astype(bool).ravel()
    if len(d) != len(y):
        raise ValueError(f"{len(d)} distances but {len(y)} labels")
    if len(d) == 0:
        raise ValueError("no pairs to evaluate")
    d = np.where(np.isnan(d), np.inf, d)  # a NaN embedding never matches
    mode, custom = _threshold_mode(thresholds)
    fid = contiguous_folds(len(d), n_folds) if folds is None else _relabel_folds(folds, len(d))
    k = int(fid.max()) + 1

    fold_acc = np.zeros(k)
    best = np.zeros(k)
    vals = np.full(k, math.nan)
    fars = np.zeros(k)
    for f in range(k):
        test = fid == f
        train = ~test if k > 1 else test
        dtr, ytr, dte, yte = d[train], y[train], d[test], y[test]
        if mode == "grid":
            acc_t, val_t = GRID, VAL_GRID
        elif mode == "exact":
            acc_t = val_t = exact_thresholds(dtr)
        else:
            acc_t = val_t = custom
        best[f], fold_acc[f], vals[f], fars[f] = _score_fold(dtr, ytr, dte, yte, acc_t, val_t, far_target)

    fpr, tpr = roc_curve(d, y)
    has_both = bool(y.any() and (~y).any())
    auc, eer = auc_eer(fpr, tpr) if has_both else (math.nan, math.nan)
    fpr, tpr = _downsample(fpr, tpr, roc_points)
    defined = vals[~np.isnan(vals)]
    return {
        "accuracy": float(np.mean(fold_acc)),
        "accuracy_std": float(np.std(fold_acc)),
        "fold_accuracies": [float(a) for a in fold_acc],
        "best_thresholds": [float(t) for t in best],
        "val": _num(np.mean(defined)) if len(defined) else None,
        "val_std": _num(np.std(defined)) if len(defined) else None,
        "far": float(np.mean(fars)),
        "far_target": float(far_target),
        "auc": _num(auc),
        "eer": _num(eer),
        "n_folds": k,
        "thresholds": mode,
        "roc": {"fpr": [float(x) for x in fpr], "tpr": [float(x) for x in tpr]},
    }
