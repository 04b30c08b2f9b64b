"""Segmentation metrics against small hand-computed cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from minicae.segment import (adjusted_rand_index, confusion_matrix, dice, dice_per_class,
                             foreground, iou_per_class, linear_sum_assignment, majority_filter,
                             match_labels, mean_iou, otsu_threshold, pixel_accuracy, roc_auc,
                             threshold_scores)

TRUTH = np.array([[0, 0, 1, 1]])
PRED = np.array([[0, 1, 1, 1]])


def test_confusion_and_accuracy_by_hand():
    # truth 0: one pixel predicted 0, one predicted 1; truth 1: both predicted 1
    np.testing.assert_array_equal(confusion_matrix(TRUTH, PRED), [[1, 1], [0, 2]])
    assert pixel_accuracy(TRUTH, PRED) == 0.75


def test_iou_and_dice_by_hand():
    # class 0: |T∩P| = 1, |T∪P| = 2; class 1: |T∩P| = 2, |T∪P| = 3
    assert_allclose(iou_per_class(TRUTH, PRED), [1 / 2, 2 / 3], rtol=1e-12)
    assert_allclose(mean_iou(TRUTH, PRED), (1 / 2 + 2 / 3) / 2, rtol=1e-12)
    # Dice_c = 2|T∩P| / (|T| + |P|): class 0: 2/3, class 1: 4/5
    assert_allclose(dice_per_class(TRUTH, PRED), [2 / 3, 4 / 5], rtol=1e-12)
    assert_allclose(dice(TRUTH, PRED), 4 / 5, rtol=1e-12)
    assert_allclose(dice(TRUTH, PRED, ignore_background=False), (2 / 3 + 4 / 5) / 2)


def test_absent_class_is_nan_and_skipped_by_the_mean():
    truth = np.array([0, 0, 2, 2])
    pred = np.array([0, 0, 2, 0])
    iou = iou_per_class(truth, pred, n_classes=3)
    assert np.isnan(iou[1])
    # class 0: 2/3, class 2: 1/2
    assert_allclose(mean_iou(truth, pred, n_classes=3), (2 / 3 + 1 / 2) / 2)


@pytest.mark.parametrize("truth, pred, expected", [
    ([0, 0, 1, 1], [0, 0, 1, 1], 1.0),
    ([0, 0, 1, 1], [1, 1, 0, 0], 1.0),                 # names do not matter
    ([0, 0, 1, 1], [0, 1, 0, 1], -0.5),                # by hand: (0 − 2/3)/(2 − 2/3)
    ([0, 0, 1, 1], [0, 0, 1, 2], 4 / 7),               # by hand: (1 − 1/3)/(3/2 − 1/3)
    ([0, 0, 0, 0], [0, 0, 0, 0], 1.0),                 # one cluster each: defined as 1
])
def test_adjusted_rand_index_by_hand(truth, pred, expected):
    assert_allclose(adjusted_rand_index(np.array(truth), np.array(pred)), expected,
                    rtol=1e-12, err_msg=f"truth={truth}, pred={pred}")


@pytest.mark.parametrize("truth, scores, expected", [
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),       # 3 of the 4 (pos, neg) pairs won
    ([0, 1], [0.5, 0.5], 0.5),                         # a tie counts one half
    ([0, 0, 1], [0.2, 0.5, 0.5], 0.75),                # (1 + ½) / 2
    ([1, 1, 0], [0.9, 0.8, 0.1], 1.0),
    ([1, 0], [0.1, 0.9], 0.0),
])
def test_roc_auc_by_hand(truth, scores, expected):
    assert_allclose(roc_auc(np.array(truth), np.array(scores)), expected, rtol=1e-12,
                    err_msg=f"truth={truth}, scores={scores}")


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 4)), min_size=2, max_size=30))
def test_roc_auc_equals_pair_counting(pairs):
    truth = np.array([p[0] for p in pairs])
    scores = np.array([p[1] for p in pairs], dtype=float)
    if truth.all() or not truth.any():
        truth[0] = not truth[0]
    pos, neg = scores[truth], scores[~truth]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert_allclose(roc_auc(truth, scores), wins / (len(pos) * len(neg)), rtol=1e-12,
                    err_msg=f"truth={truth}, scores={scores}")


def test_metric_errors():
    with pytest.raises(ValueError, match="same shape"):
        pixel_accuracy(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(TypeError, match="integer label maps"):
        mean_iou(np.zeros(3), np.zeros(3, int))
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.zeros(4, bool), np.arange(4.0))


def test_foreground_merges_classes():
    np.testing.assert_array_equal(foreground(np.array([0, 1, 2, 3])), [0, 1, 1, 1])


def test_otsu_separates_two_modes():
    values = np.r_[np.full(30, 0.2), np.full(10, 0.9)]
    t = otsu_threshold(values)
    assert 0.2 <= t < 0.9
    mask, t2 = threshold_scores(values, method="otsu")
    np.testing.assert_array_equal(mask, values > 0.5)
    assert t2 == t
    mask, t = threshold_scores(np.arange(100.0), method="percentile", percentile=90)
    assert mask.sum() == 10


def _brute_force(cost):
    n, m = cost.shape
    best = np.inf
    for cols in itertools.permutations(range(m), n):
        best = min(best, cost[np.arange(n), list(cols)].sum())
    return best


@given(st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_hungarian_is_optimal(n, m, seed):
    cost = np.random.default_rng(seed).integers(0, 10, size=(n, m)).astype(float)
    rows, cols = linear_sum_assignment(cost, use_scipy=False)
    assert len(rows) == min(n, m) and len(set(cols)) == len(cols)
    if n > m:
        total = _brute_force(cost.T)
    else:
        total = _brute_force(cost)
    assert_allclose(cost[rows, cols].sum(), total, err_msg=f"cost={cost.tolist()}")


def test_match_labels_renames_clusters():
    truth = np.array([[0, 0, 1, 1, 2, 2]])
    pred = np.array([[2, 2, 0, 0, 1, 1]])
    np.testing.assert_array_equal(match_labels(pred, truth, n_classes=3), truth)


def test_majority_filter_removes_a_lone_pixel():
    labels = np.zeros((5, 5), dtype=int)
    labels[2, 2] = 1
    labels[:, 4] = 1                      # a column of ones survives (3 of 6 neighbours)
    out = majority_filter(labels, 2)
    assert out[2, 2] == 0
    np.testing.assert_array_equal(out[1:4, 4], 1)
