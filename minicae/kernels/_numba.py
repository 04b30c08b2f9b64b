"""im2col / col2im as parallel Numba loops.

Both loops run in parallel over the (image, channel) planes: each iteration
owns one plane of ``x`` (col2im) or of ``cols`` (im2col), so no two
iterations ever write the same cell and no atomics are needed.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["im2col", "col2im"]


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
