"""10-fold verification metrics: known answers, hand-worked folds, and the published protocol."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcbench.verification.protocol import (accuracy_curve, auc_eer, contiguous_folds, exact_thresholds, roc_curve,
                              threshold_at_far, verification_metrics)


def reference_fold_accuracies(d, y, n_folds=10):
    """The reference's calculate_roc, written as plainly as it is (loop over thresholds, np.less, argmax)."""
    thresholds = np.arange(0, 4, 0.01)
    idx = np.arange(len(d))
    folds = np.array_split(idx, n_folds)          # KFold(n_splits, shuffle=False)
    accs, best = [], []
    for test in folds:
        train = np.setdiff1d(idx, test)
        acc_train = np.zeros(len(thresholds))
        for i, t in enumerate(thresholds):
            pred = np.less(d[train], t)
            tp = np.sum(pred & y[train])
            tn = np.sum(~pred & ~y[train])
            acc_train[i] = float(tp + tn) / d[train].size
        b = thresholds[np.argmax(acc_train)]
        pred = np.less(d[test], b)
        accs.append(float(np.sum(pred & y[test]) + np.sum(~pred & ~y[test])) / d[test].size)
        best.append(b)
    return accs, best


def test_perfectly_separable():
    rng = np.random.default_rng(0)
    y = np.tile([True] * 30 + [False] * 30, 10)
    d = np.where(y, rng.uniform(0.2, 0.9, len(y)), rng.uniform(1.1, 1.9, len(y)))
    m = verification_metrics(d, y)
    assert m["accuracy"] == 1.0 and m["accuracy_std"] == 0.0
    assert m["auc"] == 1.0 and m["eer"] == 0.0
    # VAL's threshold is interpolated past the last FAR=0 grid point (towards the first negative), so
    # a test negative may just slip under it: at most one of a fold's 30 negatives here.
    assert m["val"] == 1.0 and m["far"] <= 1 / 30
    assert all(0.9 <= t <= 1.1 for t in m["best_thresholds"]) and len(m["best_thresholds"]) == 10
    assert m["n_folds"] == 10 and m["roc"]["fpr"][0] == 0.0 and m["roc"]["tpr"][-1] == 1.0
    inverted = verification_metrics(d, ~y)
    assert inverted["auc"] == 0.0 and inverted["eer"] == 1.0


def test_shuffled_labels_are_chance():
    rng = np.random.default_rng(1234)
    y = np.tile([True] * 300 + [False] * 300, 10)
    d = np.where(y, rng.normal(1.0, 0.2, len(y)), rng.normal(1.4, 0.2, len(y)))
    assert verification_metrics(d, y)["accuracy"] > 0.8
    m = verification_metrics(d, rng.permutation(y))
    assert abs(m["accuracy"] - 0.5) < 0.03
    assert abs(m["auc"] - 0.5) < 0.03 and abs(m["eer"] - 0.5) < 0.03


def test_hand_worked_two_folds():
    # fold 0: 0.205 S, 0.505 D, 0.805 S, 1.105 D ; fold 1: 0.305 S, 0.605 S, 0.905 D, 1.205 D
    d = [0.205, 0.505, 0.805, 1.105, 0.305, 0.605, 0.905, 1.205]
    y = [True, False, True, False, True, True, False, False]
    f = [0, 0, 0, 0, 1, 1, 1, 1]
    # Grid.  Testing fold 0, train on fold 1: perfect for t in (0.605, 0.905]; first grid point 0.61.
    #   fold 0 at 0.61: 0.205 S right, 0.505 D wrong, 0.805 S wrong, 1.105 D right -> 2/4.
    # Testing fold 1, train on fold 0: 3/4 on (0.205, 0.505] and again on (0.805, 1.105]; the first
    #   best wins (0.21, not 0.81): 0.305 S wrong, 0.605 S wrong, 0.905 D right, 1.205 D right -> 2/4.
    m = verification_metrics(d, y, folds=f)
    assert m["fold_accuracies"] == [0.5, 0.5]
    assert m["best_thresholds"] == pytest.approx([0.61, 0.21])
    assert (m["accuracy"], m["accuracy_std"], m["n_folds"]) == (0.5, 0.0, 2)
    # Exact.  Fold 1's training distances give cuts 0.205, 0.355, 0.655, 0.955, 2.105 with accuracies
    #   .5 .75 .5 .75 .5 -> 0.355; fold 1 at 0.355: right, wrong, right, right -> 3/4.
    # Fold 0 trains on 0.305 .. 1.205: cuts 0.305, 0.455, 0.755, 1.055, 2.205 -> best 0.755 (1.0);
    #   fold 0 at 0.755: right, wrong, wrong, right -> 2/4.  Mean 0.625, std 0.125.
    m = verification_metrics(d, y, folds=f, thresholds="exact")
    assert m["fold_accuracies"] == [0.5, 0.75]
    assert m["best_thresholds"] == pytest.approx([0.755, 0.355])
    assert (m["accuracy"], m["accuracy_std"]) == (0.625, 0.125)


def test_matches_the_reference_loop_on_lfw_sized_data():
    rng = np.random.default_rng(7)
    y = np.tile([True] * 300 + [False] * 300, 10)
    d = np.clip(np.where(y, rng.normal(0.95, 0.18, len(y)), rng.normal(1.38, 0.1, len(y))), 0, 2)
    accs, best = reference_fold_accuracies(d, y)
    m = verification_metrics(d, y, folds=np.repeat(np.arange(10), 600))
    assert m["fold_accuracies"] == accs
    assert m["best_thresholds"] == best
    assert m["accuracy"] == np.mean(accs) and m["accuracy_std"] == np.std(accs)
    assert verification_metrics(d, y)["fold_accuracies"] == accs   # folds=None: the same contiguous split


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.booleans()), min_size=10, max_size=60),
       st.integers(2, 10))
def test_matches_the_reference_loop_property(rows, n_folds):
    d = np.array([r[0] for r in rows], dtype=np.float64) / 100.0   # many ties, grid-aligned values
    y = np.array([r[1] for r in rows])
    accs, best = reference_fold_accuracies(d, y, n_folds)
    m = verification_metrics(d, y, n_folds=n_folds)
    assert m["fold_accuracies"] == accs and m["best_thresholds"] == best
    exact = verification_metrics(d, y, n_folds=n_folds, thresholds="exact")
    # the exact search sees every distinct cut, so on each training set it is at least as good as the grid
    fid = contiguous_folds(len(d), n_folds)
    for f, (tg, te) in enumerate(zip(best, exact["best_thresholds"])):
        tr = fid != f
        assert accuracy_curve(d[tr], y[tr], [te])[0] >= accuracy_curve(d[tr], y[tr], [tg])[0]


def test_exact_thresholds_are_the_distinct_cuts():
    t = exact_thresholds(np.array([0.5, 0.1, 0.5, np.inf, 0.3]))
    assert t.tolist() == pytest.approx([0.1, 0.2, 0.4, 1.5])
    assert accuracy_curve([0.1, 0.3, 0.5], [True, True, False], t).tolist() == pytest.approx([1 / 3, 2 / 3, 1, 2 / 3])


def test_unequal_and_few_folds():
    d = np.array([0.205, 1.505, 0.305, 1.405, 0.355, 1.605, 0.905])  # off the 0.01 grid
    y = np.array([1, 0, 1, 0, 1, 0, 0], dtype=bool)
    # Folds of 3 and 4 with any labels.  Test A=[0.205 S, 1.505 D, 0.305 S] with the first best of B's
    # training curve, 0.36: all right.  Test B=[1.405 D, 0.355 S, 1.605 D, 0.905 D] with A's first best,
    # 0.31: 0.355 S is missed -> 3/4.  The mean is unweighted over folds, as the reference: 0.875.
    m = verification_metrics(d, y, folds=[5, 5, 5, 9, 9, 9, 9])
    assert m["n_folds"] == 2 and m["fold_accuracies"] == [1.0, 0.75] and m["accuracy"] == 0.875
    assert m["best_thresholds"] == pytest.approx([0.36, 0.31])
    # 7 pairs without folds -> 7 folds of one (leave one out); only 0.355 S fails (trained cut 0.31).
    m = verification_metrics(d, y)
    assert m["n_folds"] == 7 and m["fold_accuracies"] == [1, 1, 1, 1, 0, 1, 1]
    one = verification_metrics(d, y, folds=np.zeros(7))             # one fold: trains on itself
    assert one["n_folds"] == 1 and one["accuracy"] == 1.0 and len(one["best_thresholds"]) == 1
    only_same = verification_metrics([0.1, 0.2, 0.3], [True] * 3)
    assert only_same["auc"] is None and only_same["eer"] is None and only_same["far"] == 0.0


def test_nan_distances_never_match():
    m = verification_metrics([0.2, float("nan"), 1.5, 1.6], [True, True, False, False], folds=[0, 0, 1, 1])
    assert m["auc"] == pytest.approx(0.5)
    assert math.isfinite(m["accuracy"])


def test_threshold_at_far_with_repeated_far_values():
    # The FAR curve is a step function: runs of equal values broke interp1d(far, thresholds).
    thr = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    far = np.array([0.0, 0.0, 0.5, 0.5, 1.0])
    assert threshold_at_far(thr, far, 0.25) == 1.5       # between last FAR<=.25 (1.0) and first >.25 (2.0)
    assert threshold_at_far(thr, far, 0.5) == 3.0        # largest threshold still at the target
    assert threshold_at_far(thr, far, 0.0) == 1.0
    assert threshold_at_far(thr, far, 0.75) == 3.5
    assert threshold_at_far(thr, np.full(5, 0.9), 0.1) == 0.0


def test_val_at_far_hand_worked():
    # 2 folds; each: 4 positives, 4 negatives.  Target FAR 0.25.
    d = np.array([0.1005, 0.3005, 0.5005, 0.9005, 0.4005, 0.6005, 0.8005, 1.2005] * 2)
    y = np.array([True] * 4 + [False] * 4 + [True] * 4 + [False] * 4)
    # Training negatives 0.4005 0.6005 0.8005 1.2005: FAR = .25 on (0.4005, 0.6005], > .25 after;
    # the last 0.001-grid point at FAR .25 is 0.600, the next (0.601) has FAR .5 -> threshold 0.600.
    # Test fold at 0.600: positives below: 0.1005 0.3005 0.5005 -> VAL 3/4; negatives below: 0.4005 -> FAR 1/4.
    m = verification_metrics(d, y, folds=[0] * 8 + [1] * 8, far_target=0.25)
    assert m["val"] == 0.75 and m["val_std"] == 0.0 and m["far"] == 0.25


def test_val_at_far_on_lfw_sized_data_does_not_crash():
    rng = np.random.default_rng(3)
    y = np.tile([True] * 300 + [False] * 300, 10)
    d = np.round(np.where(y, rng.normal(0.9, 0.2, len(y)), rng.normal(1.4, 0.1, len(y))), 2)  # heavy ties
    m = verification_metrics(d, y)
    assert 0.0 < m["val"] < 1.0 and 0.0 <= m["far"] <= 0.01
    m2 = verification_metrics(d, y, thresholds="exact")
    assert 0.0 < m2["val"] <= 1.0


def test_roc_auc_eer_known_answer():
    fpr, tpr = roc_curve([0.1, 0.2, 0.3, 0.4], [True, False, True, False])
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1] and tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    auc, eer = auc_eer(fpr, tpr)
    assert auc == 0.75 and eer == 0.5       # AUC = P(same closer than different) = 3/4
    # ties between a same and a different pair count half
    fpr, tpr = roc_curve([0.5, 0.5], [True, False])
    assert auc_eer(fpr, tpr) == (0.5, 0.5)


def test_roc_is_downsampled_but_auc_is_not():
    rng = np.random.default_rng(5)
    y = rng.random(5000) < 0.5
    d = rng.random(5000) + 0.3 * ~y
    m = verification_metrics(d, y, roc_points=200)
    assert len(m["roc"]["fpr"]) <= 200 and m["roc"]["fpr"][0] == 0.0 and m["roc"]["fpr"][-1] == 1.0
    full_auc, _ = auc_eer(*roc_curve(d, y))
    assert m["auc"] == full_auc


def test_bad_inputs():
    with pytest.raises(ValueError):
        verification_metrics([0.1], [True, False])
    with pytest.raises(ValueError):
        verification_metrics([], [])
    with pytest.raises(ValueError):
        verification_metrics([0.1, 0.2], [True, False], thresholds="fine")
