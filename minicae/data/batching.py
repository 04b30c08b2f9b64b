"""Index bookkeeping: a seeded train/validation split and minibatch indices."""

from __future__ import annotations

import numpy as np

from .._validation import check_positive_int

__all__ = ["train_val_split", "iterate_minibatches"]


def _as_generator(seed, where):
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        return np.random.default_rng(int(seed))
    raise TypeError(f"{where}: expected seed to be an integer >= 0 or a "
                    f"numpy.random.Generator, got {seed!r}.")


def train_val_split(n, val_fraction, *, seed):
    """Split ``range(n)`` into sorted training and validation indices.

    Parameters
    ----------
    n : int
        Number of samples, >= 1.
    val_fraction : float in [0, 1)
        Share of samples for validation; ``round(n · val_fraction)``, but at
        least one when ``val_fraction > 0``. The training part must keep at
        least one sample.
    seed : int or numpy.random.Generator
        The split is a function of the seed only (a Generator is consumed).

    Returns
    -------
    train_idx, val_idx : ndarray of int64
        Disjoint, sorted, together exactly ``0 .. n−1``.

    Examples
    --------
    >>> train_idx, val_idx = train_val_split(10, 0.2, seed=0)
    >>> len(train_idx), len(val_idx)
    (8, 2)
    """
    where = "train_val_split"
    n = check_positive_int(n, where=where, name="n")
    if (not isinstance(val_fraction, (int, float, np.floating)) or isinstance(val_fraction, bool)
            or not 0.0 <= val_fraction < 1.0):
        raise ValueError(f"{where}: expected val_fraction in [0, 1), got {val_fraction!r}.")
    rng = _as_generator(seed, where)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0:
        n_val = max(n_val, 1)
    if n_val >= n:
        raise ValueError(f"{where}: expected val_fraction to leave at least one training "
                         f"sample, got {n_val} of {n} samples for validation. Lower "
                         f"val_fraction or use more data.")
    order = rng.permutation(n)
    return np.sort(order[n_val:]).astype(np.int64), np.sort(order[:n_val]).astype(np.int64)


def iterate_minibatches(n, batch_size, *, rng, shuffle=True, drop_last=False):
    """Return an iterator over minibatch index arrays covering ``range(n)``.

    Parameters
    ----------
    n : int
        Number of samples, >= 1.
    batch_size : int
        >= 1. The last batch is smaller when ``batch_size`` does not divide
        ``n``, unless ``drop_last``.
    rng : numpy.random.Generator or None
        Shuffles the order once per call; may be None when ``shuffle=False``.
    shuffle : bool, default True
    drop_last : bool, default False
        Skip the final incomplete batch.

    Returns
    -------
    iterator of ndarray of int64
        Each index appears at most once (exactly once unless dropped).
        Arguments are checked when this is called, not on the first batch.

    Examples
    --------
    >>> [b.tolist() for b in iterate_minibatches(5, 2, rng=None, shuffle=False)]
    [[0, 1], [2, 3], [4]]
    """
    where = "iterate_minibatches"
    n = check_positive_int(n, where=where, name="n")
    batch_size = check_positive_int(batch_size, where=where, name="batch_size")
    if shuffle and not isinstance(rng, np.random.Generator):
        raise TypeError(f"{where}: expected rng to be a numpy.random.Generator when "
                        f"shuffle=True, got {rng!r}. Pass numpy.random.default_rng(seed).")
    if drop_last and batch_size > n:
        raise ValueError(f"{where}: expected batch_size <= n with drop_last=True, got "
                         f"batch_size={batch_size} for n={n}, which yields no batch.")
    order = rng.permutation(n) if shuffle else np.arange(n, dtype=np.int64)
    stop = n - n % batch_size if drop_last else n
    return (order[i:i + batch_size] for i in range(0, stop, batch_size))
