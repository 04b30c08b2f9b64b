r"""Unsupervised segmentation: k-means, label smoothing, cluster-to-class matching.

:class:`KMeans` runs on the active backend's arrays (NumPy or CuPy); the
random choices (k-means++ seeding, subsampling) come from a host
``numpy.random.Generator``. The assignment problem used to match clusters to
classes is solved by SciPy when it is importable and otherwise by the small
O(n³) Hungarian method below (both give an optimal matching).
"""

from __future__ import annotations

import numpy

from .._validation import (check_nonnegative_float, check_nonnegative_int,
                           check_positive_int)
from ..backend import get_backend, to_device, to_numpy

__all__ = ["KMeans", "kmeans_segment", "mean_field_segment", "majority_filter",
           "linear_sum_assignment", "match_labels"]


def _rng(seed):
    if isinstance(seed, numpy.random.Generator):
        return seed
    return numpy.random.default_rng(seed)


def _sq_distances(x, centers, x_sq):
    # ‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖², clipped at 0 against rounding
    d = x_sq[:, None] - 2.0 * (x @ centers.T) + (centers * centers).sum(axis=1)[None, :]
    return get_backend().xp.maximum(d, 0.0)


class KMeans:
    r"""Lloyd's k-means with k-means++ seeding and restarts (scikit-learn shaped).

    Parameters
    ----------
    n_clusters : int
    n_init : int, default 4
        Restarts from independent k-means++ seeds; the lowest inertia wins.
    max_iter : int, default 100
    tol : float, default 1e-4
        Stop when the centres move less than ``tol`` times the mean feature
        variance (summed squared shift), as scikit-learn's relative tolerance.
    max_samples : int, optional
        Fit on at most this many rows drawn at random (prediction is on all).
    seed : int or numpy.random.Generator, default 0

    Attributes
    ----------
    cluster_centers_ : array of shape (k, D) on the active backend
    inertia_ : float
        :math:`\sum_i \min_c \lVert x_i - \mu_c \rVert^2` on the fitted rows.
    n_iter_ : int

    Notes
    -----
    Lloyd's iteration alternates the two minimisations of the inertia:

    .. math:: l_i = \arg\min_c \lVert x_i - \mu_c\rVert^2, \qquad
              \mu_c = \frac{1}{|\{i: l_i = c\}|}\sum_{i: l_i = c} x_i

    k-means++ draws the first centre uniformly and each next one with
    probability proportional to :math:`D(x)^2`, the squared distance to the
    nearest centre chosen so far. An emptied cluster is re-seeded at the row
    farthest from its centre.
    """

    def __init__(self, n_clusters, *, n_init=4, max_iter=100, tol=1e-4, max_samples=None,
                 seed=0):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.max_samples = max_samples
        self.seed = seed

    def get_params(self):
        return {k: getattr(self, k) for k in
                ("n_clusters", "n_init", "max_iter", "tol", "max_samples")}

    def _check(self, x):
        where = "KMeans"
        check_positive_int(self.n_clusters, where=where, name="n_clusters")
        check_positive_int(self.n_init, where=where, name="n_init")
        check_positive_int(self.max_iter, where=where, name="max_iter")
        check_nonnegative_float(self.tol, where=where, name="tol")
        if x.ndim != 2:
            raise ValueError(f"{where}: expected features of shape (M, D), got "
                             f"{tuple(x.shape)}. Reshape per-pixel maps with "
                             f"x.transpose(0, 2, 3, 1).reshape(-1, D).")
        if x.shape[0] < self.n_clusters:
            raise ValueError(f"{where}: expected at least n_clusters={self.n_clusters} "
                             f"rows, got {x.shape[0]}.")

    def _plusplus(self, x, x_sq, rng):
        xp = get_backend().xp
        m = x.shape[0]
        centers = [x[int(rng.integers(m))]]
        d2 = _sq_distances(x, xp.stack(centers), x_sq)[:, 0]
        for _ in range(1, self.n_clusters):
            p = to_numpy(d2).astype(numpy.float64)
            total = p.sum()
            # P(x) ∝ D(x)²; all rows identical to the centres -> uniform
            idx = int(rng.choice(m, p=p / total)) if total > 0 else int(rng.integers(m))
            centers.append(x[idx])
            d2 = xp.minimum(d2, _sq_distances(x, x[idx][None], x_sq)[:, 0])
        return xp.stack(centers)

    def _lloyd(self, x, x_sq, centers, tol_abs):
        xp = get_backend().xp
        k = self.n_clusters
        n_iter = 0
        for _ in range(self.max_iter):
            n_iter += 1
            d = _sq_distances(x, centers, x_sq)
            labels = d.argmin(axis=1)
            onehot = (labels[:, None] == xp.arange(k)[None, :]).astype(x.dtype)
            counts = onehot.sum(axis=0)
            sums = onehot.T @ x
            new = sums / xp.maximum(counts, 1)[:, None]          # μ_c = mean of members
            empty = to_numpy(counts == 0)
            if empty.any():
                far = to_numpy(d.min(axis=1).argsort()[::-1])
                for j, c in enumerate(numpy.flatnonzero(empty)):
                    new[int(c)] = x[int(far[j])]
            shift = float(((new - centers) ** 2).sum())
            centers = new
            if shift <= tol_abs:
                break
        d = _sq_distances(x, centers, x_sq)
        labels = d.argmin(axis=1)
        inertia = float(d.min(axis=1).sum())
        return centers, labels, inertia, n_iter

    def fit(self, x):
        """Fit the centres to rows ``x`` of shape (M, D); return self."""
        x = to_device(x)
        self._check(x)
        rng = _rng(self.seed)
        if self.max_samples is not None:
            check_positive_int(self.max_samples, where="KMeans", name="max_samples")
            if x.shape[0] > self.max_samples:
                idx = numpy.sort(rng.choice(x.shape[0], self.max_samples, replace=False))
                x = x[to_device(idx)]
        x_sq = (x * x).sum(axis=1)
        tol_abs = self.tol * float(x.var(axis=0).mean())
        best = None
        for _ in range(self.n_init):
            start = self._plusplus(x, x_sq, rng)
            run = self._lloyd(x, x_sq, start, tol_abs)
            if best is None or run[2] < best[2]:
                best = run
        self.cluster_centers_, labels, self.inertia_, self.n_iter_ = best
        self.labels_ = labels if self.max_samples is None else None
        return self

    def predict(self, x):
        """Index of the nearest centre for each row of ``x`` (active backend)."""
        if not hasattr(self, "cluster_centers_"):
            raise RuntimeError("KMeans.predict: call fit first.")
        x = to_device(x)
        if x.ndim != 2 or x.shape[1] != self.cluster_centers_.shape[1]:
            raise ValueError(f"KMeans.predict: expected features of shape (M, "
                             f"{self.cluster_centers_.shape[1]}), got {tuple(x.shape)}.")
        return _sq_distances(x, self.cluster_centers_, (x * x).sum(axis=1)).argmin(axis=1)

    def fit_predict(self, x):
        return self.fit(x).predict(x)


def kmeans_segment(features, n_clusters, *, per_image=True, smooth=0, n_init=4,
                   max_iter=100, tol=1e-4, max_samples=20000, seed=0):
    """Cluster per-pixel features into label maps.

    Parameters
    ----------
    features : array of shape (N, D, H, W)
        From :func:`minicae.segment.pixel_features`.
    n_clusters : int
    per_image : bool, default True
        One k-means per image (labels are arbitrary per image), or one over
        the whole set (labels shared across images).
    smooth : int, default 0
        Passes of the 3x3 :func:`majority_filter` over each label map.
    n_init, max_iter, tol, max_samples, seed
        As in :class:`KMeans`; image i uses the stream ``[seed, i]``.

    Returns
    -------
    labels : int64 ndarray of shape (N, H, W), on the host
    """
    if getattr(features, "ndim", None) != 4:
        raise ValueError(f"kmeans_segment: expected features of shape (N, D, H, W), got "
                         f"{getattr(features, 'shape', type(features).__name__)}.")
    check_nonnegative_int(smooth, where="kmeans_segment", name="smooth")
    n, d, h, w = features.shape
    rows = features.transpose(0, 2, 3, 1).reshape(n, h * w, d)
    kw = dict(n_init=n_init, max_iter=max_iter, tol=tol, max_samples=max_samples)
    if per_image:
        out = numpy.stack([
            to_numpy(KMeans(n_clusters, seed=numpy.random.default_rng([seed, i]), **kw)
                     .fit_predict(rows[i])) for i in range(n)])
    else:
        flat = rows.reshape(n * h * w, d)
        out = to_numpy(KMeans(n_clusters, seed=seed, **kw).fit(flat).predict(flat))
    labels = out.reshape(n, h, w).astype(numpy.int64)
    return majority_filter(labels, n_clusters, iterations=smooth) if smooth else labels


def majority_filter(labels, n_labels, *, size=3, iterations=1):
    """Replace each label by the most frequent one in its ``size`` x ``size`` window.

    The window is clipped at the border (edge pixels vote with fewer
    neighbours). Ties keep the pixel's own label when it is among the most
    frequent, else the lowest label wins.

    Parameters
    ----------
    labels : int ndarray of shape (N, H, W) or (H, W)
    n_labels : int
        Labels are in [0, n_labels).
    size : odd int, default 3
    iterations : int, default 1
    """
    labels = numpy.asarray(labels)
    check_positive_int(n_labels, where="majority_filter", name="n_labels")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"majority_filter: expected an odd window size >= 1, got {size}.")
    single = labels.ndim == 2
    lab = labels[None] if single else labels
    r = size // 2
    onehot = (lab[:, None] == numpy.arange(n_labels)[None, :, None, None])
    for _ in range(iterations):
        padded = numpy.pad(onehot.astype(numpy.int32), ((0, 0), (0, 0), (r, r), (r, r)))
        h, w = lab.shape[1:]
        votes = sum(padded[:, :, i:i + h, j:j + w]
                    for i in range(size) for j in range(size))
        # own label gets +0.5: wins ties, never overturns a strict majority
        votes = votes + 0.5 * onehot
        lab = votes.argmax(axis=1)
        onehot = (lab[:, None] == numpy.arange(n_labels)[None, :, None, None])
    lab = lab.astype(numpy.int64)
    return lab[0] if single else lab


def _hungarian(cost):
    """Minimum-cost assignment of rows to columns of an (n, m) cost, n <= m.

    The shortest-augmenting-path form of the Hungarian method with row and
    column potentials u, v (reduced cost c_ij − u_i − v_j >= 0): O(n²m).
    """
    n, m = cost.shape
    inf = numpy.inf
    u = numpy.zeros(n + 1)
    v = numpy.zeros(m + 1)
    match = numpy.zeros(m + 1, dtype=numpy.int64)   # match[j] = row (1-based) of column j
    way = numpy.zeros(m + 1, dtype=numpy.int64)
    for i in range(1, n + 1):
        match[0] = i
        j0 = 0
        minv = numpy.full(m + 1, inf)
        used = numpy.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = match[j0]
            delta, j1 = inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = cost[i0 - 1, j - 1] - u[i0] - v[j]    # reduced cost
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[match[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:                                    # flip the augmenting path
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    rows, cols = [], []
    for j in range(1, m + 1):
        if match[j]:
            rows.append(match[j] - 1)
            cols.append(j - 1)
    order = numpy.argsort(rows)
    return numpy.asarray(rows)[order], numpy.asarray(cols)[order]


def linear_sum_assignment(cost, *, use_scipy=True):
    """Rows and columns of a minimum-cost one-to-one assignment (SciPy's contract).

    Parameters
    ----------
    cost : array of shape (n, m)
    use_scipy : bool, default True
        Use ``scipy.optimize.linear_sum_assignment`` when SciPy is importable;
        False forces the built-in Hungarian method.

    Returns
    -------
    rows, cols : int ndarrays of length min(n, m), rows sorted
    """
    cost = numpy.asarray(cost, dtype=numpy.float64)
    if cost.ndim != 2:
        raise ValueError(f"linear_sum_assignment: expected a 2-D cost, got shape "
                         f"{cost.shape}.")
    if not numpy.isfinite(cost).all():
        raise ValueError("linear_sum_assignment: expected a finite cost matrix.")
    if use_scipy:
        try:
            from scipy.optimize import linear_sum_assignment as scipy_lsa
        except ImportError:
            pass
        else:
            rows, cols = scipy_lsa(cost)
            return numpy.asarray(rows), numpy.asarray(cols)
    if cost.shape[0] <= cost.shape[1]:
        return _hungarian(cost)
    cols, rows = _hungarian(cost.T)
    order = numpy.argsort(rows)
    return rows[order], cols[order]


def match_labels(pred, truth, *, n_classes=None, per_image=True, use_scipy=True):
    """Rename cluster ids to the classes they overlap most, one to one.

    The renaming maximises the number of pixels whose renamed cluster equals
    their class (a Hungarian assignment on the negated contingency table).
    Clusters left over when there are more clusters than classes take the
    class they overlap most.

    Parameters
    ----------
    pred : int ndarray of shape (N, H, W)
        Cluster ids.
    truth : int ndarray of shape (N, H, W)
        Class ids in [0, n_classes).
    per_image : bool, default True
        Match each image on its own (clusters of a per-image k-means) or the
        whole set at once (one k-means over the set).

    Returns
    -------
    mapped : int64 ndarray of the shape of ``pred``
    """
    pred = numpy.asarray(pred, dtype=numpy.int64)
    truth = numpy.asarray(truth, dtype=numpy.int64)
    if pred.shape != truth.shape:
        raise ValueError(f"match_labels: expected pred and truth of the same shape, got "
                         f"{pred.shape} and {truth.shape}.")
    if per_image and pred.ndim >= 3:
        return numpy.stack([match_labels(p, t, n_classes=n_classes, per_image=False,
                                         use_scipy=use_scipy)
                            for p, t in zip(pred, truth)])
    k_pred = int(pred.max()) + 1
    k_true = int(truth.max()) + 1 if n_classes is None else int(n_classes)
    table = numpy.bincount(pred.ravel() * k_true + truth.ravel(),
                           minlength=k_pred * k_true).reshape(k_pred, k_true)
    rows, cols = linear_sum_assignment(-table, use_scipy=use_scipy)
    mapping = table.argmax(axis=1)                   # leftover clusters: best overlap
    mapping[rows] = cols
    return mapping[pred]


def mean_field_segment(features, labels, n_clusters, *, beta=4.0, window=5, iterations=10):
    r"""Refine per-image cluster labels with a Potts prior by mean-field updates.

    Each image is a Gaussian mixture over its pixel features with a Potts
    smoothness prior on the labels (an HMRF, Zhang, Brady & Smith 2001);
    starting from ``labels`` (e.g. k-means), mean-field iterations alternate

    .. math:: q_c(p) \propto \exp\Big(-\frac{\lVert f_p - \mu_c\rVert^2}{\tau}
              + \beta\,\bar q_c(p)\Big), \qquad
              \mu_c = \frac{\sum_p q_c(p) f_p}{\sum_p q_c(p)}

    with :math:`\bar q_c` the mean of :math:`q_c` over the ``window`` x
    ``window`` neighbourhood and τ the image's mean squared distance to the
    nearest centre.

    Parameters
    ----------
    features : array of shape (N, D, H, W)
    labels : int array of shape (N, H, W), values in [0, n_clusters)
    beta : float, default 4.0
        Weight of the neighbourhood agreement (0: soft k-means).
    window : odd int, default 5
    iterations : int, default 10

    Returns
    -------
    labels : int64 ndarray of shape (N, H, W), on the host
    """
    from .features import box_mean

    check_positive_int(n_clusters, where="mean_field_segment", name="n_clusters")
    check_nonnegative_float(beta, where="mean_field_segment", name="beta")
    check_nonnegative_int(iterations, where="mean_field_segment", name="iterations")
    xp = get_backend().xp
    f = to_device(features)
    lab = to_device(numpy.asarray(labels, numpy.int64))
    if f.ndim != 4 or tuple(lab.shape) != (f.shape[0],) + tuple(f.shape[2:]):
        raise ValueError(f"mean_field_segment: expected features (N, D, H, W) and labels "
                         f"(N, H, W) of the same N, H, W, got {tuple(f.shape)} and "
                         f"{tuple(lab.shape)}.")
    k = n_clusters
    q = (lab[:, None] == xp.arange(k)[None, :, None, None]).astype(f.dtype)
    f_sq = (f * f).sum(axis=1)[:, None]                            # (N, 1, H, W)
    for _ in range(iterations):
        mass = q.sum(axis=(2, 3)) + 1e-6                           # (N, K)
        mu = xp.einsum("nkhw,ndhw->nkd", q, f) / mass[:, :, None]  # μ_c = Σ q f / Σ q
        cross = xp.einsum("nkd,ndhw->nkhw", mu, f)
        d = xp.maximum(f_sq - 2 * cross + (mu * mu).sum(axis=2)[:, :, None, None], 0)
        tau = d.min(axis=1).mean(axis=(1, 2))[:, None, None, None] + 1e-6
        logits = -d / tau + beta * box_mean(q, window)
        logits -= logits.max(axis=1, keepdims=True)
        q = xp.exp(logits)
        q /= q.sum(axis=1, keepdims=True)                          # softmax over c
    return to_numpy(q.argmax(axis=1)).astype(numpy.int64)
