r"""Segmentation and anomaly-map metrics on host NumPy arrays.

Every metric takes integer label maps of one shape (any shape: a single
image (H, W), a batch (N, H, W), or flat pixels) and pools all pixels.
Each is checked against hand-computed cases in tests/test_metrics.py.

Notation: :math:`T_c` the set of pixels whose true class is c, :math:`P_c`
those predicted c, :math:`n_{ij}` the contingency table (true i, predicted
j), :math:`a_i = \sum_j n_{ij}`, :math:`b_j = \sum_i n_{ij}`, :math:`n` the
number of pixels.
"""

from __future__ import annotations

import numpy

__all__ = ["confusion_matrix", "pixel_accuracy", "iou_per_class", "mean_iou",
           "dice_per_class", "dice", "adjusted_rand_index", "roc_auc", "foreground",
           "segmentation_scores"]


def _labels(truth, pred, where):
    truth = numpy.asarray(truth)
    pred = numpy.asarray(pred)
    for name, a in (("truth", truth), ("pred", pred)):
        if a.dtype.kind not in "iub":
            raise TypeError(f"{where}: expected integer label maps, got {name} of dtype "
                            f"{a.dtype}. Convert with {name}.astype(numpy.int64).")
    if truth.shape != pred.shape:
        raise ValueError(f"{where}: expected truth and pred of the same shape, got "
                         f"{truth.shape} and {pred.shape}.")
    if truth.size == 0:
        raise ValueError(f"{where}: expected non-empty label maps, got shape "
                         f"{truth.shape}.")
    truth = truth.astype(numpy.int64).ravel()
    pred = pred.astype(numpy.int64).ravel()
    if truth.min() < 0 or pred.min() < 0:
        raise ValueError(f"{where}: expected labels >= 0, got a minimum of "
                         f"{min(truth.min(), pred.min())}.")
    return truth, pred


def confusion_matrix(truth, pred, *, n_classes=None):
    """Count pixels by (true class, predicted class).

    Returns
    -------
    table : int64 ndarray of shape (K, K)
        ``table[i, j]`` = number of pixels of true class i predicted j, with
        K = ``n_classes`` or 1 + the largest label seen.
    """
    truth, pred = _labels(truth, pred, "confusion_matrix")
    k = int(max(truth.max(), pred.max())) + 1
    if n_classes is not None:
        if n_classes < k:
            raise ValueError(f"confusion_matrix: expected labels < n_classes="
                             f"{n_classes}, got a label {k - 1}.")
        k = int(n_classes)
    # n_ij = #{pixels: truth = i, pred = j}
    return numpy.bincount(truth * k + pred, minlength=k * k).reshape(k, k)


def pixel_accuracy(truth, pred):
    r"""Fraction of pixels whose predicted label equals the true one.

    Notes
    -----
    .. math:: \mathrm{acc} = \frac{1}{n}\sum_c |T_c \cap P_c|
    """
    truth, pred = _labels(truth, pred, "pixel_accuracy")
    return float((truth == pred).mean())


def iou_per_class(truth, pred, *, n_classes=None):
    r"""Intersection over union of each class; NaN where a class is absent from both.

    Notes
    -----
    .. math:: \mathrm{IoU}_c = \frac{|T_c \cap P_c|}{|T_c \cup P_c|}
              = \frac{n_{cc}}{a_c + b_c - n_{cc}}
    """
    table = confusion_matrix(truth, pred, n_classes=n_classes)
    inter = numpy.diag(table).astype(numpy.float64)
    union = table.sum(axis=1) + table.sum(axis=0) - inter     # a_c + b_c − n_cc
    with numpy.errstate(invalid="ignore", divide="ignore"):
        return numpy.where(union > 0, inter / numpy.maximum(union, 1), numpy.nan)


def mean_iou(truth, pred, *, n_classes=None):
    """Mean of :func:`iou_per_class` over the classes present in truth or pred."""
    iou = iou_per_class(truth, pred, n_classes=n_classes)
    return float(numpy.nanmean(iou))


def dice_per_class(truth, pred, *, n_classes=None):
    r"""Dice coefficient of each class; NaN where a class is absent from both.

    Notes
    -----
    .. math:: \mathrm{Dice}_c = \frac{2|T_c \cap P_c|}{|T_c| + |P_c|}
              = \frac{2 n_{cc}}{a_c + b_c}
    """
    table = confusion_matrix(truth, pred, n_classes=n_classes)
    inter = numpy.diag(table).astype(numpy.float64)
    size = table.sum(axis=1) + table.sum(axis=0)               # a_c + b_c
    return numpy.where(size > 0, 2 * inter / numpy.maximum(size, 1), numpy.nan)


def dice(truth, pred, *, n_classes=None, ignore_background=True):
    """Mean Dice over the foreground classes (1, 2, ...) present in truth or pred.

    With two classes this is the usual foreground Dice (F1 of class 1).
    ``ignore_background=False`` averages over every class, 0 included. If
    no foreground class occurs at all the result is 1.0 (nothing to find,
    nothing found).
    """
    per = dice_per_class(truth, pred, n_classes=n_classes)
    if ignore_background:
        per = per[1:]
    if per.size == 0 or numpy.all(numpy.isnan(per)):
        return 1.0
    return float(numpy.nanmean(per))


def _pairs(counts):
    counts = numpy.asarray(counts, dtype=numpy.float64)
    return (counts * (counts - 1) / 2).sum()                   # Σ C(m, 2)


def adjusted_rand_index(truth, pred):
    r"""Adjusted Rand index between two labelings (label names do not matter).

    Notes
    -----
    Hubert and Arabie's correction for chance:

    .. math:: \mathrm{ARI} = \frac{\sum_{ij}\binom{n_{ij}}{2} - E}
              {\tfrac12\big[\sum_i\binom{a_i}{2} + \sum_j\binom{b_j}{2}\big] - E},
              \qquad E = \frac{\sum_i\binom{a_i}{2}\sum_j\binom{b_j}{2}}{\binom{n}{2}}

    1 for identical partitions, about 0 for independent ones. When both
    labelings put every pixel in one cluster (or every pixel alone) the
    denominator is 0 and the result is 1.0, as scikit-learn's.
    """
    truth, pred = _labels(truth, pred, "adjusted_rand_index")
    _, t = numpy.unique(truth, return_inverse=True)
    _, p = numpy.unique(pred, return_inverse=True)
    kt, kp = int(t.max()) + 1, int(p.max()) + 1
    table = numpy.bincount(t * kp + p, minlength=kt * kp).reshape(kt, kp)
    n = truth.size
    sum_ij = _pairs(table)
    sum_a = _pairs(table.sum(axis=1))
    sum_b = _pairs(table.sum(axis=0))
    expected = sum_a * sum_b / (n * (n - 1) / 2) if n > 1 else 0.0   # E
    top = 0.5 * (sum_a + sum_b) - expected
    if top == 0:
        return 1.0
    return float((sum_ij - expected) / top)


def roc_auc(truth, scores):
    r"""Area under the ROC curve of ``scores`` for the binary ``truth``, by ranks.

    Parameters
    ----------
    truth : bool or {0, 1} ndarray
    scores : float ndarray of the same shape; higher means more anomalous

    Notes
    -----
    The Mann-Whitney form, with tied scores given their average rank
    (so a tie between a positive and a negative counts one half):

    .. math:: \mathrm{AUC} = \frac{R_+ - n_+(n_+ + 1)/2}{n_+ n_-}

    where :math:`R_+` is the sum of the positives' ranks (1 = lowest score).

    Raises
    ------
    ValueError
        If ``truth`` holds only one class (the AUC is undefined).
    """
    truth = numpy.asarray(truth)
    scores = numpy.asarray(scores, dtype=numpy.float64)
    if truth.shape != scores.shape:
        raise ValueError(f"roc_auc: expected truth and scores of the same shape, got "
                         f"{truth.shape} and {scores.shape}.")
    if truth.dtype.kind not in "biu" or (truth.dtype.kind != "b" and truth.size
                                         and not numpy.isin(truth, (0, 1)).all()):
        raise ValueError("roc_auc: expected a binary truth (bool or 0/1).")
    if not numpy.isfinite(scores).all():
        raise ValueError("roc_auc: expected finite scores, got NaN or infinite values.")
    pos = truth.ravel().astype(bool)
    s = scores.ravel()
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc: expected both classes in truth, got {n_pos} positive "
                         f"and {n_neg} negative pixels. The AUC is undefined.")
    order = numpy.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # average rank of each run of equal scores: (first + last) / 2, 1-based
    starts = numpy.flatnonzero(numpy.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = numpy.r_[starts[1:], s.size]
    run_rank = (starts + 1 + ends) / 2.0
    ranks = numpy.empty(s.size)
    ranks[order] = numpy.repeat(run_rank, ends - starts)
    r_pos = ranks[pos].sum()
    return float((r_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))   # AUC = U / (n₊n₋)


def foreground(labels):
    """Merge every class > 0 into class 1: the foreground/background task."""
    return (numpy.asarray(labels) > 0).astype(numpy.int64)


def segmentation_scores(truth, pred, *, n_classes=None):
    """The table's metrics: mean IoU, pixel accuracy, foreground Dice, ARI."""
    return {"miou": mean_iou(truth, pred, n_classes=n_classes),
            "pixel_accuracy": pixel_accuracy(truth, pred),
            "dice": dice(truth, pred, n_classes=n_classes),
            "ari": adjusted_rand_index(truth, pred)}
