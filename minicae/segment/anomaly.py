r"""Anomaly segmentation from reconstruction error, and thresholds (Otsu, percentile).

An autoencoder trained on clean images reconstructs what it has seen; a
region it has not seen (a pasted defect) is reconstructed worse. The
per-pixel error, summed over channels and optionally averaged over a
window,

.. math:: e_{n,h,w} = M_s\Big(\sum_c (x_{n,c,h,w} - \hat x_{n,c,h,w})^2\Big),

is the anomaly score; a threshold turns it into a mask.
"""

from __future__ import annotations

import numpy

from .._validation import check_nonnegative_int, check_positive_int
from ..backend import to_device, to_numpy
from .features import box_mean

__all__ = ["reconstruction_error_map", "otsu_threshold", "threshold_scores"]


def reconstruction_error_map(model, x, *, smooth=0, batch_size=64):
    """Per-pixel squared reconstruction error, (N, H, W) float64 on the host.

    Parameters
    ----------
    model : Autoencoder
        Any model whose ``model(x)`` has the shape of ``x``.
    x : ndarray of shape (N, C, H, W)
    smooth : int, default 0
        Odd window of a local mean over the error (0: none).
    """
    where = "reconstruction_error_map"
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"{where}: expected images of shape (N, C, H, W), got "
                         f"{getattr(x, 'shape', type(x).__name__)}.")
    check_nonnegative_int(smooth, where=where, name="smooth")
    check_positive_int(batch_size, where=where, name="batch_size")
    was = model.training
    model.eval()
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb = to_device(x[start:start + batch_size])
        x_hat = model(xb)
        if tuple(x_hat.shape) != tuple(xb.shape):
            model.train(was)
            raise ValueError(f"{where}: expected reconstructions of shape "
                             f"{tuple(xb.shape)}, got {tuple(x_hat.shape)}.")
        err = ((xb - x_hat) ** 2).sum(axis=1, keepdims=True)     # Σ_c (x − x̂)²
        if smooth:
            err = box_mean(err, smooth)                            # M_s(·)
        out.append(to_numpy(err[:, 0]).astype(numpy.float64))
    model.train(was)
    return numpy.concatenate(out, axis=0)


def otsu_threshold(values, *, bins=256):
    r"""Otsu's threshold: the cut that maximises the between-class variance.

    Parameters
    ----------
    values : array_like of floats
    bins : int, default 256
        Histogram bins over [min, max]; the threshold is a bin edge.

    Returns
    -------
    t : float
        Values ``> t`` are the upper class.

    Notes
    -----
    With :math:`\omega_0(t)`, :math:`\omega_1(t)` the fractions of values
    below and above the cut and :math:`\mu_0`, :math:`\mu_1` their means,

    .. math:: t^* = \arg\max_t\ \omega_0\,\omega_1\,(\mu_0 - \mu_1)^2

    (equivalently, the cut minimising the within-class variance). All-equal
    values return that value.
    """
    v = numpy.asarray(values, dtype=numpy.float64).ravel()
    if v.size == 0 or not numpy.isfinite(v).all():
        raise ValueError("otsu_threshold: expected a non-empty array of finite values.")
    check_positive_int(bins, where="otsu_threshold", name="bins")
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        return lo
    counts, edges = numpy.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    p = counts / v.size
    w0 = numpy.cumsum(p)[:-1]                          # ω₀ for a cut after bin i
    m0 = numpy.cumsum(p * centres)[:-1]                # ω₀ μ₀
    total = (p * centres).sum()
    w1 = 1.0 - w0
    valid = (w0 > 0) & (w1 > 0)
    mu0 = numpy.where(valid, m0 / numpy.where(valid, w0, 1), 0)
    mu1 = numpy.where(valid, (total - m0) / numpy.where(valid, w1, 1), 0)
    between = numpy.where(valid, w0 * w1 * (mu0 - mu1) ** 2, -1.0)   # ω₀ω₁(μ₀ − μ₁)²
    return float(edges[1 + int(between.argmax())])


def threshold_scores(scores, *, method="otsu", percentile=95.0, bins=256):
    """Binary mask ``scores > t`` with t from Otsu's method or a percentile.

    Parameters
    ----------
    scores : ndarray (any shape), e.g. from :func:`reconstruction_error_map`
    method : {'otsu', 'percentile'}
        The threshold is computed over all the scores given (the whole set).
    percentile : float in [0, 100]
        For ``method='percentile'``.

    Returns
    -------
    mask : int64 ndarray of the shape of ``scores`` (1 above the threshold)
    threshold : float
    """
    scores = numpy.asarray(scores, dtype=numpy.float64)
    if method == "otsu":
        t = otsu_threshold(scores, bins=bins)
    elif method == "percentile":
        if not 0 <= percentile <= 100:
            raise ValueError(f"threshold_scores: expected percentile in [0, 100], got "
                             f"{percentile!r}.")
        t = float(numpy.percentile(scores, percentile))
    else:
        raise ValueError(f"threshold_scores: expected method to be one of 'otsu', "
                         f"'percentile'; got {method!r}.")
    return (scores > t).astype(numpy.int64), t
