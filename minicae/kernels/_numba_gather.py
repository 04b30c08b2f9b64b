"""A Linear layer's products from a top-k sparse input, reading k rows of Wᵀ per sample.

With ``wt`` = Wᵀ of shape (d, out), C-contiguous, and a code of k active units
per sample (``vals``, ``idx`` of shape (N, k)), the forward is
``y[n] = b + Σ_t vals[n, t]·wt[idx[n, t]]``: N·k·out multiply-adds on
contiguous rows instead of the dense N·d·out. The backward's input gradient
is the k dot products ``dvals[n, t] = ⟨dy[n], wt[idx[n, t]]⟩`` and its weight
gradient the k row updates ``dwt[idx[n, t]] += vals[n, t]·dy[n]`` (serial: two
samples may share a unit). Rows are taken four at a time where that saves passes
over y[n] or dy[n].
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["gather_linear", "gather_linear_backward", "sparse_rows"]


@numba.njit(parallel=True, cache=True)
def _scan(x, vals, idx):
    n, d = x.shape
    k = idx.shape[1]
    for i in numba.prange(n):
        m = 0
        for j in range(d):                  # the non-zeros, in index order
            if x[i, j] != 0 and m < k:
                idx[i, m] = j
                vals[i, m] = x[i, j]
                m += 1
        j = 0
        while m < k:                        # pad with zero-valued units not yet taken
            if x[i, j] == 0:
                idx[i, m] = j
                vals[i, m] = 0
                m += 1
            j += 1


def sparse_rows(x, k):
    """(vals, idx), each (N, k): the non-zeros of each row (at most k), zero-padded."""
    vals = np.empty((x.shape[0], k), dtype=x.dtype)
    idx = np.empty((x.shape[0], k), dtype=np.int64)
    _scan(np.ascontiguousarray(x), vals, idx)
    return vals, idx


@numba.njit(parallel=True, cache=True, fastmath={"contract"})
def _forward(vals, idx, wt, bias, y):
    n, k = vals.shape
    out = wt.shape[1]
    for i in numba.prange(n):
        yi = y[i]
        yi[:] = bias
        t = 0
        while t + 4 <= k:               # four rows per pass over y[n]: a quarter of the stores
            v0, v1, v2, v3 = vals[i, t], vals[i, t + 1], vals[i, t + 2], vals[i, t + 3]
            r0, r1 = wt[idx[i, t]], wt[idx[i, t + 1]]
            r2, r3 = wt[idx[i, t + 2]], wt[idx[i, t + 3]]
            for q in range(out):
                yi[q] += v0 * r0[q] + v1 * r1[q] + v2 * r2[q] + v3 * r3[q]
            t += 4
        for s in range(t, k):
            v, row = vals[i, s], wt[idx[i, s]]
            for q in range(out):
                yi[q] += v * row[q]            # y[n] += vals[n, t] · Wᵀ[idx[n, t]]


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _dvals(dy, idx, wt, dvals):
    n, k = idx.shape
    out = wt.shape[1]
    for i in numba.prange(n):
        di = dy[i]
        for t in range(k):
            row = wt[idx[i, t]]
            acc = di[0] * 0                 # the data's precision: the loop vectorises
            for q in range(out):
                acc += di[q] * row[q]          # dvals[n, t] = ⟨dy[n], Wᵀ[idx[n, t]]⟩
            dvals[i, t] = acc


@numba.njit(cache=True, fastmath={"contract"})
def _dwt(dy, vals, idx, dwt):
    n, k = vals.shape
    out = dwt.shape[1]
    for i in range(n):
        di = dy[i]
        t = 0
        while t + 4 <= k:                   # four rows per pass over dy[n]
            v0, v1, v2, v3 = vals[i, t], vals[i, t + 1], vals[i, t + 2], vals[i, t + 3]
            d0, d1 = dwt[idx[i, t]], dwt[idx[i, t + 1]]
            d2, d3 = dwt[idx[i, t + 2]], dwt[idx[i, t + 3]]
            for q in range(out):
                g = di[q]
                d0[q] += v0 * g
                d1[q] += v1 * g
                d2[q] += v2 * g
                d3[q] += v3 * g
            t += 4
        for s in range(t, k):
            v, drow = vals[i, s], dwt[idx[i, s]]
            for q in range(out):
                drow[q] += v * di[q]           # dWᵀ[idx[n, t]] += vals[n, t] · dy[n]


def gather_linear(vals, idx, wt, bias):
    """y (N, out) = bias + Σ_t vals[:, t]·wt[idx[:, t]]; ``bias`` may be None."""
    y = np.empty((vals.shape[0], wt.shape[1]), dtype=wt.dtype)
    b = np.zeros(wt.shape[1], dtype=wt.dtype) if bias is None else bias
    _forward(vals, idx, wt, b, y)
    return y


def gather_linear_backward(dy, vals, idx, wt):
    """(dvals (N, k), dwt (d, out)) of :func:`gather_linear`."""
    dvals = np.empty(vals.shape, dtype=wt.dtype)
    dwt = np.zeros(wt.shape, dtype=wt.dtype)
    dy = np.ascontiguousarray(dy)
    _dvals(dy, idx, wt, dvals)
    _dwt(dy, vals, idx, dwt)
    return dvals, dwt
