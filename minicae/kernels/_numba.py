"""im2col / col2im as parallel Numba loops.

Both loops run in parallel over the (image, channel) planes: each iteration
owns one plane of ``x`` (col2im) or of ``cols`` (im2col), so no two
iterations ever write the same cell and no atomics are needed.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["im2col", "col2im", "im2col_kn", "col2im_kn"]


@numba.njit(parallel=True, cache=True, nogil=True)
def _im2col(x, cols, kh, kw, sh, sw, pt, pl, dil_h, dil_w):
    n, c, h, w = x.shape
    oh, ow = cols.shape[4], cols.shape[5]
    for nc in numba.prange(n * c):
        b = nc // c
        ch = nc % c
        for i in range(kh):
            for j in range(kw):
                for p in range(oh):
                    row = p * sh - pt + i * dil_h
                    if row < 0 or row >= h:
                        for q in range(ow):
                            cols[b, ch, i, j, p, q] = 0
                        continue
                    for q in range(ow):
                        col = q * sw - pl + j * dil_w
                        if 0 <= col < w:
                            cols[b, ch, i, j, p, q] = x[b, ch, row, col]
                        else:
                            cols[b, ch, i, j, p, q] = 0


@numba.njit(parallel=True, cache=True, nogil=True)
def _col2im(cols, x, sh, sw, pt, pl, dil_h, dil_w):
    n, c, kh, kw, oh, ow = cols.shape
    h, w = x.shape[2], x.shape[3]
    for nc in numba.prange(n * c):
        b = nc // c
        ch = nc % c
        for r in range(h):
            for s in range(w):
                x[b, ch, r, s] = 0
        for i in range(kh):
            for j in range(kw):
                for p in range(oh):
                    row = p * sh - pt + i * dil_h
                    if row < 0 or row >= h:
                        continue
                    for q in range(ow):
                        col = q * sw - pl + j * dil_w
                        if 0 <= col < w:
                            x[b, ch, row, col] += cols[b, ch, i, j, p, q]


def im2col(x, kh, kw, sh, sw, pt, pb, pl, pr, dil_h, dil_w):
    n, c, h, w = x.shape
    oh = (h + pt + pb - dil_h * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dil_w * (kw - 1) - 1) // sw + 1
    x = np.ascontiguousarray(x)
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    _im2col(x, cols, kh, kw, sh, sw, pt, pl, dil_h, dil_w)
    return cols


def col2im(cols, h, w, sh, sw, pt, pb, pl, pr, dil_h, dil_w):
    n, c = cols.shape[:2]
    x = np.empty((n, c, h, w), dtype=cols.dtype)
    _col2im(np.ascontiguousarray(cols), x, sh, sw, pt, pl, dil_h, dil_w)
    return x


@numba.njit(parallel=True, cache=True, nogil=True)
def _im2col_kn(x, cols, sh, sw, pt, pl, dil_h, dil_w):
    c, kh, kw, n, oh, ow = cols.shape
    h, w = x.shape[2], x.shape[3]
    # One iteration per (channel, tap, image): it owns the slab cols[c, i, j, b].
    for t in numba.prange(c * kh * kw * n):
        b = t % n
        r = t // n
        j = r % kw
        r = r // kw
        i = r % kh
        ch = r // kh
        c0 = j * dil_w - pl
        # valid q: 0 <= q*sw + c0 < w
        q_lo = 0 if c0 >= 0 else min(ow, (-c0 + sw - 1) // sw)
        q_hi = max(q_lo, min(ow, (w - 1 - c0) // sw + 1)) if w - 1 - c0 >= 0 else q_lo
        for p in range(oh):
            row = p * sh - pt + i * dil_h
            if row < 0 or row >= h:
                for q in range(ow):
                    cols[ch, i, j, b, p, q] = 0
                continue
            for q in range(q_lo):
                cols[ch, i, j, b, p, q] = 0
            for q in range(q_lo, q_hi):
                cols[ch, i, j, b, p, q] = x[b, ch, row, q * sw + c0]
            for q in range(q_hi, ow):
                cols[ch, i, j, b, p, q] = 0


@numba.njit(parallel=True, cache=True, nogil=True)
def _col2im_kn(cols, x, sh, sw, pt, pl, dil_h, dil_w):
    c, kh, kw, n, oh, ow = cols.shape
    h, w = x.shape[2], x.shape[3]
    # One iteration per (image, channel) plane of x: no two iterations share a cell.
    for t in numba.prange(n * c):
        b = t // c
        ch = t % c
        for r in range(h):
            for s in range(w):
                x[b, ch, r, s] = 0
        for i in range(kh):
            for j in range(kw):
                c0 = j * dil_w - pl
                q_lo = 0 if c0 >= 0 else min(ow, (-c0 + sw - 1) // sw)
                q_hi = max(q_lo, min(ow, (w - 1 - c0) // sw + 1)) if w - 1 - c0 >= 0 \
                    else q_lo
                for p in range(oh):
                    row = p * sh - pt + i * dil_h
                    if row < 0 or row >= h:
                        continue
                    for q in range(q_lo, q_hi):
                        # x[row, q*sw + c0] += cols[c, i, j, b, p, q]
                        x[b, ch, row, q * sw + c0] += cols[ch, i, j, b, p, q]


def _buffer(out, shape, dtype):
    if out is None:
        return np.empty(shape, dtype=dtype)
    assert out.flags.c_contiguous and out.dtype == dtype   # a reshape must be a view
    return out.reshape(shape)


def im2col_kn(x, kh, kw, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out=None):
    """im2col in GEMM layout (C, kh, kw, N, oh, ow); see kernels/_numpy.py."""
    n, c, h, w = x.shape
    oh = (h + pt + pb - dil_h * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dil_w * (kw - 1) - 1) // sw + 1
    x = np.ascontiguousarray(x)
    cols = _buffer(out, (c, kh, kw, n, oh, ow), x.dtype)
    _im2col_kn(x, cols, sh, sw, pt, pl, dil_h, dil_w)
    return cols


def col2im_kn(cols, h, w, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out=None):
    """The adjoint of :func:`im2col_kn`: x of shape (N, C, h, w)."""
    c, n = cols.shape[0], cols.shape[3]
    x = _buffer(out, (n, c, h, w), cols.dtype)
    _col2im_kn(np.ascontiguousarray(cols), x, sh, sw, pt, pl, dil_h, dil_w)
    return x
