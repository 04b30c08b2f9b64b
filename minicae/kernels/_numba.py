"""im2col / col2im as Numba loops.

The loops run in parallel over the (image, channel) planes: each iteration
owns one plane of ``x`` (col2im) or of ``cols`` (im2col), so no two
iterations ever write the same cell and no atomics are needed. The GEMM-layout
kernels ``im2col_kn`` / ``col2im_kn`` each have a serial and a parallel driver
around one loop body and take the parallel one only for large arrays (see
``PARALLEL_MIN``).
"""

from __future__ import annotations

import numba
import numpy as np

from . import _numpy as _np_kernels


__all__ = ["im2col", "col2im", "im2col_kn", "col2im_kn"]

# Columns per chunk of images (functional/conv.py): 1 MiB stays in the 2 MiB
# L2 with the GEMM's other operands, where the 4 MiB of round 1 spilled
# (one thread: conv N128 16->32 14² s2 fwd+bwd 5.1 -> 4.7 ms, strided CAE
# step 13.6 -> 13.2 ms; benchmarks/README.md, round 2).
CHUNK_BYTES = 1 * 2**20


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


@numba.njit(inline="always")
def _q_range(c0, sw, w, ow):
    """Output columns q whose input column q*sw + c0 lies inside [0, w)."""
    q_lo = 0 if c0 >= 0 else min(ow, (-c0 + sw - 1) // sw)
    if w - 1 - c0 < 0:
        return q_lo, q_lo
    return q_lo, max(q_lo, min(ow, (w - 1 - c0) // sw + 1))


@numba.njit(inline="always")
def _im2col_slab(xf, cf, t, c, kh, kw, n, oh, ow, hp, wp, sh, sw, dil_h, dil_w):
    """Fill slab t = ((ch*kh + i)*kw + j)*n + b of the columns from the padded x.

    Every window lies inside the padded input, so the loop has no bounds
    tests and no zero-fill branches.
    """
    b = t % n
    r = t // n
    j = r % kw
    r = r // kw
    i = r % kh
    ch = r // kh
    src = (b * c + ch) * hp * wp + i * dil_h * wp + j * dil_w
    o = t * oh * ow
    for p in range(oh):
        row = src + p * sh * wp
        # cols[c, i, j, b, p, q] = x_pad[b, c, p*sh + i*dil_h, q*sw + j*dil_w]
        # (unsigned indices: no wraparound test, the loop vectorises)
        for q in range(ow):
            cf[np.uintp(o + q)] = xf[np.uintp(row + q * sw)]
        o += ow


@numba.njit(cache=True, nogil=True)
def _im2col_kn_serial(x_pad, cols, sh, sw, dil_h, dil_w):
    c, kh, kw, n, oh, ow = cols.shape
    xf, cf = x_pad.reshape(-1), cols.reshape(-1)
    for t in range(c * kh * kw * n):
        _im2col_slab(xf, cf, t, c, kh, kw, n, oh, ow, x_pad.shape[2], x_pad.shape[3],
                     sh, sw, dil_h, dil_w)


@numba.njit(parallel=True, cache=True, nogil=True)
def _im2col_kn_parallel(x_pad, cols, sh, sw, dil_h, dil_w):
    c, kh, kw, n, oh, ow = cols.shape
    xf, cf = x_pad.reshape(-1), cols.reshape(-1)
    # One iteration per (channel, tap, image) slab of the columns: it alone
    # writes that slab.
    for t in numba.prange(c * kh * kw * n):
        _im2col_slab(xf, cf, t, c, kh, kw, n, oh, ow, x_pad.shape[2], x_pad.shape[3],
                     sh, sw, dil_h, dil_w)


def _padded(x, pt, pb, pl, pr):
    """x zero-padded by (pt, pb) rows and (pl, pr) columns, C-contiguous."""
    if not (pt or pb or pl or pr):
        return np.ascontiguousarray(x)
    n, c, h, w = x.shape
    x_pad = np.zeros((n, c, h + pt + pb, w + pl + pr), dtype=x.dtype)
    x_pad[:, :, pt:pt + h, pl:pl + w] = x
    return x_pad


@numba.njit(inline="always")
def _col2im_plane(cf, xf, t, c, kh, kw, n, oh, ow, h, w, sh, sw, pt, pl, dil_h, dil_w):
    """Sum into plane t = b*c + ch of x (flat) every column entry that read it."""
    b = t // c
    ch = t % c
    xbase = t * h * w
    for k in range(h * w):
        xf[np.uintp(xbase + k)] = 0
    for i in range(kh):
        for j in range(kw):
            c0 = j * dil_w - pl
            q_lo, q_hi = _q_range(c0, sw, w, ow)
            cbase = (((ch * kh + i) * kw + j) * n + b) * oh * ow
            for p in range(oh):
                row = p * sh - pt + i * dil_h
                if row < 0 or row >= h:
                    continue
                xr = xbase + row * w + c0
                o = cbase + p * ow
                # x[row, q*sw + c0] += cols[c, i, j, b, p, q]. Unsigned indices
                # drop the negative-index wraparound test, so the loop vectorises
                # (2-3x NumPy's tap loop, benchmarks/README.md).
                for q in range(q_lo, q_hi):
                    xf[np.uintp(xr + q * sw)] += cf[np.uintp(o + q)]


@numba.njit(cache=True, nogil=True)
def _col2im_kn_serial(cols, x, sh, sw, pt, pl, dil_h, dil_w):
    c, kh, kw, n, oh, ow = cols.shape
    xf, cf = x.reshape(-1), cols.reshape(-1)
    for t in range(n * c):
        _col2im_plane(cf, xf, t, c, kh, kw, n, oh, ow, x.shape[2], x.shape[3], sh, sw,
                      pt, pl, dil_h, dil_w)


@numba.njit(parallel=True, cache=True, nogil=True)
def _col2im_kn_parallel(cols, x, sh, sw, pt, pl, dil_h, dil_w):
    c, kh, kw, n, oh, ow = cols.shape
    xf, cf = x.reshape(-1), cols.reshape(-1)
    # One iteration per (image, channel) plane of x: it alone writes that
    # plane, so the += never races and no atomics are needed.
    for t in numba.prange(n * c):
        _col2im_plane(cf, xf, t, c, kh, kw, n, oh, ow, x.shape[2], x.shape[3], sh, sw,
                      pt, pl, dil_h, dil_w)


# Column arrays at least this large go to the parallel loop. Below it the
# pool's wake-up and barrier cost more than they save, and on a shared machine
# a parallel region waits for a descheduled worker: N128 16ch 14² s2 measured
# 5.5 ms parallel vs 0.83 ms serial under load. The CPU chunks of
# functional/conv.py (4 MiB) keep most calls serial.
PARALLEL_MIN = 1 << 20


# Rows shorter than this are copied by NumPy's strided copy instead: with
# rows of 7 (N128 16ch 14² s2, the CAE's second layer) the loop's per-row
# set-up loses (conv row fwd+bwd 4.55 ms with NumPy's copy, 4.69 with the
# loop); from rows of 14 on the padded loop wins (conv N128 1->16 28² s2
# 1.67 -> 1.54 ms; benchmarks/README.md, round 2).
LOOP_MIN_ROW = 8


def im2col_kn(x, kh, kw, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out=None):
    """im2col in GEMM layout (C, kh, kw, N, oh, ow); see kernels/_numpy.py.

    The input is zero-padded once (a few % of the columns' size), then every
    row of the columns is a plain strided read: one thread, per 1 MiB chunk,
    N4 16ch 28² s1 0.096 -> 0.062 ms, N128 1ch 28² s2 0.136 -> 0.092 ms. Rows
    shorter than ``LOOP_MIN_ROW`` go to NumPy's strided copy.
    """
    n, c, h, w = x.shape
    oh = (h + pt + pb - dil_h * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dil_w * (kw - 1) - 1) // sw + 1
    if ow < LOOP_MIN_ROW:
        return _np_kernels.im2col_kn(x, kh, kw, sh, sw, pt, pb, pl, pr, dil_h, dil_w,
                                     out=out)
    x_pad = _padded(x, pt, pb, pl, pr)
    if out is None:
        cols = np.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
    else:
        assert out.flags.c_contiguous and out.dtype == x.dtype   # reshape is a view
        cols = out.reshape((c, kh, kw, n, oh, ow))
    kernel = _im2col_kn_parallel if cols.size >= PARALLEL_MIN else _im2col_kn_serial
    kernel(x_pad, cols, sh, sw, dil_h, dil_w)
    return cols


def col2im_kn(cols, h, w, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out=None):
    """The adjoint of :func:`im2col_kn`: x of shape (N, C, h, w)."""
    c, n = cols.shape[0], cols.shape[3]
    if out is None:
        x = np.empty((n, c, h, w), dtype=cols.dtype)
    else:
        assert out.flags.c_contiguous and out.dtype == cols.dtype  # reshape is a view
        x = out.reshape((n, c, h, w))
    kernel = _col2im_kn_parallel if cols.size >= PARALLEL_MIN and n * c > 1 \
        else _col2im_kn_serial
    kernel(np.ascontiguousarray(cols), x, sh, sw, pt, pl, dil_h, dil_w)
    return x
