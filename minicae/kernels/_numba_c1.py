"""Direct convolution with one input channel (Numba): the first encoder layer
and the last decoder layer of a CAE, where im2col's columns have K = kh*kw
rows and the GEMM is a thin memory-bound product.

Phase planes. With stride s, the padded image splits into s_h*s_w planes,
plane (a, c) holding ``x_pad[u*s_h + a, v*s_w + c]``. A tap (i, j) then reads
plane ((i*d_h) % s_h, (j*d_w) % s_w) at the shift
``off = ((i*d_h) // s_h) * pw + (j*d_w) // s_w``, so that over the flat index
``k = p*pw + q`` of the output (rows padded to width ``pw``, the extra
columns discarded) every tap is one contiguous, shifted read:

    y[p, q] = b + Σ_{i,j} W[i, j] · plane_ij[k + off_ij]          (forward)
    dW[i, j] = Σ_k dy_pw[k] · plane_ij[k + off_ij]                 (weight gradient)
    plane_ac[m] = Σ_{(i,j) in phase (a,c)} W[i, j] · dy_pw[m - off_ij]   (adjoint)

with ``dy_pw`` the output gradient in the same padded-row layout, zero in the
extra columns (and before its start, for the adjoint's negative shifts). The
loop over k is innermost and vectorizes; the taps are unrolled when their
count is a compile-time constant, which ``C1_GEOMETRIES`` provides for the
common 3x3 kernels (runtime geometries run the same loops, slower).
Derivation: docs/maths.md, "One input channel: phase planes"; checked by
tests/test_kernels_fast.py::test_numba_single_channel_conv_matches_the_column_products.
"""

from __future__ import annotations

import numba
import numpy as np

from ._numba_ranges import (OFF, add_in_order, channel_sums_into, image_range, masked_range,
                             team)

__all__ = ["conv_c1", "conv_c1_adjoint", "conv_c1_wgrad", "conv_c1_t_backward",
           "C1_GEOMETRIES"]

_FLAGS = {"contract"}               # FMA; no reassociation in forward and adjoint
_SUM_FLAGS = {"contract", "reassoc"}  # the weight gradient's sums over k vectorize


@numba.njit(inline="always")
def _planes_shape(h, w, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw):
    """(ph, pw): phase planes that hold every input pixel and every tap's read."""
    ph = max(oh + ((kh - 1) * dh) // sh, (h + pt - 1) // sh + 1)
    pw = max(ow + ((kw - 1) * dw) // sw, (w + pl - 1) // sw + 1)
    return ph, pw


@numba.njit(inline="always")
def _shift(i, j, pw, psize, sh, sw, dh, dw):
    """Flat offset of tap (i, j): its plane's start plus its shift in that plane."""
    return ((((i * dh) % sh) * sw + (j * dw) % sw) * psize
            + ((i * dh) // sh) * pw + (j * dw) // sw)


@numba.njit(inline="always")
def _scatter(xf, base, h, w, planes, psize, pw, sh, sw, pt, pl):
    """Image pixels into their phase planes (the padding cells stay zero)."""
    for a in range(sh):
        for c in range(sw):
            start = (a * sw + c) * psize
            for r in range((a - pt) % sh, h, sh):
                row = start + ((r + pt) // sh) * pw
                for col in range((c - pl) % sw, w, sw):
                    planes[np.uintp(row + (col + pl) // sw)] = xf[np.uintp(base + r * w + col)]


@numba.njit(inline="always")
def _gather(planes, xf, base, h, w, psize, pw, sh, sw, pt, pl, b, relu):
    """The adjoint of _scatter: each pixel from its phase plane (+ b, then ReLU)."""
    zero = xf.dtype.type(0)
    for a in range(sh):
        for c in range(sw):
            start = (a * sw + c) * psize
            for r in range((a - pt) % sh, h, sh):
                row = start + ((r + pt) // sh) * pw
                for col in range((c - pl) % sw, w, sw):
                    v = planes[np.uintp(row + (col + pl) // sw)] + b
                    if relu:
                        v = v if (v > 0 or v != v) else zero   # = max(v, 0), NaN kept
                    xf[np.uintp(base + r * w + col)] = v


@numba.njit(inline="always")
def _to_padded_rows(dyf, base, oh, ow, pw, out, front):
    """dy[p, q] -> out[front + p*pw + q] (the extra columns stay zero)."""
    for p in range(oh):
        for q in range(ow):
            out[np.uintp(front + p * pw + q)] = dyf[np.uintp(base + p * ow + q)]


@numba.njit(inline="always")
def _to_padded_rows_masked(dyf, rf, base, oh, ow, pw, out):
    """dy[p, q] · [r[p, q] > 0] -> out[p*pw + q]: a fused ReLU's backward on the way
    (dy·1 or dy·0, the products of functional.relu_backward, so the same values)."""
    one, zero = dyf.dtype.type(1), dyf.dtype.type(0)
    for p in range(oh):
        for q in range(ow):
            i = np.uintp(base + p * ow + q)
            out[np.uintp(p * pw + q)] = dyf[i] * (one if rf[i] > 0 else zero)


@numba.njit(inline="always")
def _forward(x, w, bias, y, pt, pl, has_bias, relu, kh, kw, sh, sw, dh, dw):
    n, _, h, wd = x.shape
    c_out, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    ph, pw = _planes_shape(h, wd, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw)
    psize = ph * pw + pw                 # + one row: the extra columns' reads
    planes = np.zeros(sh * sw * psize, x.dtype)
    tmp = np.empty(oh * pw, x.dtype)
    xf, wf, yf = x.reshape(-1), w.reshape(-1), y.reshape(-1)
    zero = x.dtype.type(0)
    for b in range(n):
        _scatter(xf, b * h * wd, h, wd, planes, psize, pw, sh, sw, pt, pl)
        for o in range(c_out):
            bo = bias[o] if has_bias else zero
            for k in range(oh * pw):
                acc = bo
                for i in range(kh):
                    for j in range(kw):
                        # y[p, q] += W[o, 0, i, j] · x_pad[p·sh + i·dh, q·sw + j·dw]
                        acc += (wf[np.uintp((o * kh + i) * kw + j)]
                                * planes[np.uintp(k + _shift(i, j, pw, psize, sh, sw,
                                                             dh, dw))])
                tmp[np.uintp(k)] = acc
            dst = (b * c_out + o) * oh * ow
            for p in range(oh):
                for q in range(ow):
                    v = tmp[np.uintp(p * pw + q)]
                    if relu:
                        v = v if (v > 0 or v != v) else zero
                    yf[np.uintp(dst + p * ow + q)] = v


@numba.njit(inline="always")
def _adjoint(dy, w, bias, x, pt, pl, has_bias, relu, kh, kw, sh, sw, dh, dw):
    n, c_out, oh, ow = dy.shape
    h, wd = x.shape[2], x.shape[3]
    ph, pw = _planes_shape(h, wd, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw)
    psize = ph * pw + pw
    planes = np.empty(sh * sw * psize, x.dtype)
    front = ((kh - 1) * dh // sh) * pw + (kw - 1) * dw // sw
    rows = np.zeros(front + psize, x.dtype)
    dyf, wf, xf = dy.reshape(-1), w.reshape(-1), x.reshape(-1)
    b0 = bias[0] if has_bias else x.dtype.type(0)
    for b in range(n):
        planes[:] = 0
        for o in range(c_out):
            _to_padded_rows(dyf, (b * c_out + o) * oh * ow, oh, ow, pw, rows, front)
            for a in range(sh):
                for c in range(sw):
                    start = (a * sw + c) * psize
                    for m in range(ph * pw):
                        acc = planes[np.uintp(start + m)]
                        for i in range(kh):
                            for j in range(kw):
                                if (i * dh) % sh == a and (j * dw) % sw == c:
                                    # x_pad[p·sh + i·dh, q·sw + j·dw] += W[o, 0, i, j] · dy[o, p, q]
                                    acc += (wf[np.uintp((o * kh + i) * kw + j)]
                                            * rows[np.uintp(front + m - (
                                                ((i * dh) // sh) * pw + (j * dw) // sw))])
                        planes[np.uintp(start + m)] = acc
        _gather(planes, xf, b * h * wd, h, wd, psize, pw, sh, sw, pt, pl, b0, relu)


@numba.njit(inline="always")
def _wgrad(dy, relu_out, x, dw_out, db_out, pt, pl, kh, kw, sh, sw, dh, dw):
    n, c_out, oh, ow = dy.shape
    h, wd = x.shape[2], x.shape[3]
    ph, pw = _planes_shape(h, wd, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw)
    psize = ph * pw + pw
    planes = np.zeros(sh * sw * psize, x.dtype)
    rows = np.zeros(oh * pw, x.dtype)
    dyf, rf, xf = dy.reshape(-1), relu_out.reshape(-1), x.reshape(-1)
    masked = relu_out.size > 0
    dw_out[:] = 0
    db_out[:] = 0
    for b in range(n):
        _scatter(xf, b * h * wd, h, wd, planes, psize, pw, sh, sw, pt, pl)
        for o in range(c_out):
            base = (b * c_out + o) * oh * ow
            if masked:
                _to_padded_rows_masked(dyf, rf, base, oh, ow, pw, rows)
            else:
                _to_padded_rows(dyf, base, oh, ow, pw, rows, 0)
            total = dyf.dtype.type(0)
            for k in range(oh * pw):
                total += rows[np.uintp(k)]          # db[o] = Σ dy[o]
            db_out[o] += total
            for i0 in range(0, kh, 3):          # 3x3 taps a pass: dy read once for them
                for j0 in range(0, kw, 3):
                    _wgrad_block(rows, planes, dw_out, o, i0, j0, oh * pw, kh, kw, pw,
                                 psize, sh, sw, dh, dw)


@numba.njit(inline="always")
def _wgrad_block(rows, planes, dw_out, o, i0, j0, size, kh, kw, pw, psize, sh, sw, dh, dw):
    """dW[o, 0, i, j] += Σ_k dy_pw[k] · plane_ij[k + off_ij] for the taps i0..i0+2,
    j0..j0+2 (those past the kernel's edge repeat its last row/column and are not
    stored)."""
    i1, i2 = min(i0 + 1, kh - 1), min(i0 + 2, kh - 1)
    j1, j2 = min(j0 + 1, kw - 1), min(j0 + 2, kw - 1)
    o00 = _shift(i0, j0, pw, psize, sh, sw, dh, dw)
    o01 = _shift(i0, j1, pw, psize, sh, sw, dh, dw)
    o02 = _shift(i0, j2, pw, psize, sh, sw, dh, dw)
    o10 = _shift(i1, j0, pw, psize, sh, sw, dh, dw)
    o11 = _shift(i1, j1, pw, psize, sh, sw, dh, dw)
    o12 = _shift(i1, j2, pw, psize, sh, sw, dh, dw)
    o20 = _shift(i2, j0, pw, psize, sh, sw, dh, dw)
    o21 = _shift(i2, j1, pw, psize, sh, sw, dh, dw)
    o22 = _shift(i2, j2, pw, psize, sh, sw, dh, dw)
    zero = rows.dtype.type(0)
    a00 = a01 = a02 = a10 = a11 = a12 = a20 = a21 = a22 = zero
    # dW[o, 0, i, j] = Σ_{p,q} dy[o, p, q] · x_pad[p·sh + i·dh, q·sw + j·dw]
    for k in range(size):
        r = rows[np.uintp(k)]
        a00 += r * planes[np.uintp(k + o00)]
        a01 += r * planes[np.uintp(k + o01)]
        a02 += r * planes[np.uintp(k + o02)]
        a10 += r * planes[np.uintp(k + o10)]
        a11 += r * planes[np.uintp(k + o11)]
        a12 += r * planes[np.uintp(k + o12)]
        a20 += r * planes[np.uintp(k + o20)]
        a21 += r * planes[np.uintp(k + o21)]
        a22 += r * planes[np.uintp(k + o22)]
    block = ((a00, a01, a02), (a10, a11, a12), (a20, a21, a22))
    for di in range(3):
        for dj in range(3):
            if i0 + di < kh and j0 + dj < kw:
                dw_out[o, i0 + di, j0 + dj] += block[di][dj]


# One compiled function per kernel and geometry, each compiled on first use and
# cached on disk: the geometries of C1_GEOMETRIES get constant trip counts
# (unrolled taps), any other runs the same loops with its sizes at run time; one
# function per geometry so that a cold start compiles only the geometries it meets
# (benchmarks/README.md, decisions).
@numba.njit(cache=True, nogil=True, fastmath=_FLAGS)
def _forward_3x3_s1(x, w, bias, y, pt, pl, has_bias, relu, sh, sw, dh, dw):
    _forward(x, w, bias, y, pt, pl, has_bias, relu, 3, 3, 1, 1, 1, 1)


@numba.njit(cache=True, nogil=True, fastmath=_FLAGS)
def _forward_3x3_s2(x, w, bias, y, pt, pl, has_bias, relu, sh, sw, dh, dw):
    _forward(x, w, bias, y, pt, pl, has_bias, relu, 3, 3, 2, 2, 1, 1)


@numba.njit(cache=True, nogil=True, fastmath=_FLAGS)
def _forward_any(x, w, bias, y, pt, pl, has_bias, relu, sh, sw, dh, dw):
    _forward(x, w, bias, y, pt, pl, has_bias, relu, w.shape[2], w.shape[3], sh, sw, dh, dw)


@numba.njit(cache=True, nogil=True, fastmath=_FLAGS)
def _adjoint_3x3_s1(dy, w, bias, x, pt, pl, has_bias, relu, sh, sw, dh, dw):
    _adjoint(dy, w, bias, x, pt, pl, has_bias, relu, 3, 3, 1, 1, 1, 1)


@numba.njit(cache=True, nogil=True, fastmath=_FLAGS)
def _adjoint_3x3_s2(dy, w, bias, x, pt, pl, has_bias, relu, sh, sw, dh, dw):
    _adjoint(dy, w, bias, x, pt, pl, has_bias, relu, 3, 3, 2, 2, 1, 1)


@numba.njit(cache=True, nogil=True, fastmath=_FLAGS)
def _adjoint_any(dy, w, bias, x, pt, pl, has_bias, relu, sh, sw, dh, dw):
    _adjoint(dy, w, bias, x, pt, pl, has_bias, relu, w.shape[2], w.shape[3], sh, sw, dh,
             dw)


@numba.njit(cache=True, nogil=True, fastmath=_SUM_FLAGS)
def _wgrad_3x3_s1(dy, relu_out, x, dw_out, db_out, pt, pl, sh, sw, dh, dw):
    _wgrad(dy, relu_out, x, dw_out, db_out, pt, pl, 3, 3, 1, 1, 1, 1)


@numba.njit(cache=True, nogil=True, fastmath=_SUM_FLAGS)
def _wgrad_3x3_s2(dy, relu_out, x, dw_out, db_out, pt, pl, sh, sw, dh, dw):
    _wgrad(dy, relu_out, x, dw_out, db_out, pt, pl, 3, 3, 2, 2, 1, 1)


@numba.njit(cache=True, nogil=True, fastmath=_SUM_FLAGS)
def _wgrad_any(dy, relu_out, x, dw_out, db_out, pt, pl, sh, sw, dh, dw):
    _wgrad(dy, relu_out, x, dw_out, db_out, pt, pl, dw_out.shape[1], dw_out.shape[2], sh,
           sw, dh, dw)


# The same kernels with the images split over ``threads`` Numba threads (one
# contiguous range each, a prange over the ranges; see _numba_s1.py), one per
# compiled function above, so that each is cached on disk. The weight gradient
# adds its per-range partial sums in range order.

@numba.njit(cache=True, nogil=True, parallel=True)
def _forward_3x3_s1_threads(x, w, bias, y, pt, pl, has_bias, relu, sh, sw, dh, dw, threads):
    n = x.shape[0]
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        _forward_3x3_s1(x[a:b], w, bias, y[a:b], pt, pl, has_bias, relu, sh, sw, dh, dw)


@numba.njit(cache=True, nogil=True, parallel=True)
def _adjoint_3x3_s1_threads(dy, w, bias, x, pt, pl, has_bias, relu, sh, sw, dh, dw, threads):
    n = dy.shape[0]
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        _adjoint_3x3_s1(dy[a:b], w, bias, x[a:b], pt, pl, has_bias, relu, sh, sw, dh, dw)


@numba.njit(cache=True, nogil=True, parallel=True)
def _wgrad_3x3_s1_threads(dy, relu_out, x, dw_out, db_out, pt, pl, sh, sw, dh, dw, threads):
    n = dy.shape[0]
    dws = np.empty((threads,) + dw_out.shape, dw_out.dtype)
    dbs = np.empty((threads,) + db_out.shape, db_out.dtype)
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        mask = relu_out[a:b] if relu_out.shape[0] == n else relu_out
        _wgrad_3x3_s1(dy[a:b], mask, x[a:b], dws[t], dbs[t], pt, pl, sh, sw, dh, dw)
    add_in_order(dws, dw_out)
    add_in_order(dbs, db_out)


@numba.njit(cache=True, nogil=True, parallel=True)
def _forward_3x3_s2_threads(x, w, bias, y, pt, pl, has_bias, relu, sh, sw, dh, dw, threads):
    n = x.shape[0]
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        _forward_3x3_s2(x[a:b], w, bias, y[a:b], pt, pl, has_bias, relu, sh, sw, dh, dw)


@numba.njit(cache=True, nogil=True, parallel=True)
def _adjoint_3x3_s2_threads(dy, w, bias, x, pt, pl, has_bias, relu, sh, sw, dh, dw, threads):
    n = dy.shape[0]
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        _adjoint_3x3_s2(dy[a:b], w, bias, x[a:b], pt, pl, has_bias, relu, sh, sw, dh, dw)


@numba.njit(cache=True, nogil=True, parallel=True)
def _wgrad_3x3_s2_threads(dy, relu_out, x, dw_out, db_out, pt, pl, sh, sw, dh, dw, threads):
    n = dy.shape[0]
    dws = np.empty((threads,) + dw_out.shape, dw_out.dtype)
    dbs = np.empty((threads,) + db_out.shape, db_out.dtype)
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        mask = relu_out[a:b] if relu_out.shape[0] == n else relu_out
        _wgrad_3x3_s2(dy[a:b], mask, x[a:b], dws[t], dbs[t], pt, pl, sh, sw, dh, dw)
    add_in_order(dws, dw_out)
    add_in_order(dbs, db_out)


@numba.njit(cache=True, nogil=True, parallel=True)
def _forward_any_threads(x, w, bias, y, pt, pl, has_bias, relu, sh, sw, dh, dw, threads):
    n = x.shape[0]
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        _forward_any(x[a:b], w, bias, y[a:b], pt, pl, has_bias, relu, sh, sw, dh, dw)


@numba.njit(cache=True, nogil=True, parallel=True)
def _adjoint_any_threads(dy, w, bias, x, pt, pl, has_bias, relu, sh, sw, dh, dw, threads):
    n = dy.shape[0]
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        _adjoint_any(dy[a:b], w, bias, x[a:b], pt, pl, has_bias, relu, sh, sw, dh, dw)


@numba.njit(cache=True, nogil=True, parallel=True)
def _wgrad_any_threads(dy, relu_out, x, dw_out, db_out, pt, pl, sh, sw, dh, dw, threads):
    n = dy.shape[0]
    dws = np.empty((threads,) + dw_out.shape, dw_out.dtype)
    dbs = np.empty((threads,) + db_out.shape, db_out.dtype)
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        mask = relu_out[a:b] if relu_out.shape[0] == n else relu_out
        _wgrad_any(dy[a:b], mask, x[a:b], dws[t], dbs[t], pt, pl, sh, sw, dh, dw)
    add_in_order(dws, dw_out)
    add_in_order(dbs, db_out)


# The backward of a transposed convolution to one channel (a CAE's last layer) in
# one parallel region, as _numba_cv's: dY masked, dx = W ⋆ dY (the forward), dW =
# Σ x ⋆ dY (the weight gradient, x in dY's place), db = Σ dY, each thread on its
# images; one driver per geometry, as above. (One driver choosing the geometry's
# kernels by a flag compiled all six on first use: the strided CAE's first step on
# a cold cache 20 -> 34 s; passing the kernels as arguments made it uncachable.)
@numba.njit(inline="always")
def _t_backward_buffers(dy, x, dw_out, threads):
    """Per-thread partial dW and db, the weight gradient's unwanted Σ x, and the
    kernels' "no mask" and zero bias."""
    return (np.empty((threads,) + dw_out.shape, x.dtype), np.empty((threads, 1), x.dtype),
            np.empty((threads, x.shape[1]), x.dtype), np.zeros((0, 0, 0, 0), dy.dtype),
            np.zeros(1, dy.dtype))


@numba.njit(cache=True, nogil=True, parallel=True)
def _t_backward_3x3_s1_threads(dy, relu_out, x, w, dx, dw_out, db_out, pt, pl, sh, sw, dh,
                               dw, threads):
    n = dy.shape[0]
    dws, dbs, sums_x, no_mask, no_bias = _t_backward_buffers(dy, x, dw_out, threads)
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        d = masked_range(dy, relu_out, a, b)
        if dx.shape[0] == n:
            _forward_3x3_s1(d, w, no_bias, dx[a:b], pt, pl, OFF, OFF, sh, sw, dh, dw)
        _wgrad_3x3_s1(x[a:b], no_mask, d, dws[t], sums_x[t], pt, pl, sh, sw, dh, dw)
        channel_sums_into(d.reshape(-1), b - a, 1, d.shape[2] * d.shape[3], dbs[t])
    add_in_order(dws, dw_out)
    add_in_order(dbs, db_out)


@numba.njit(cache=True, nogil=True, parallel=True)
def _t_backward_3x3_s2_threads(dy, relu_out, x, w, dx, dw_out, db_out, pt, pl, sh, sw, dh,
                               dw, threads):
    n = dy.shape[0]
    dws, dbs, sums_x, no_mask, no_bias = _t_backward_buffers(dy, x, dw_out, threads)
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        d = masked_range(dy, relu_out, a, b)
        if dx.shape[0] == n:
            _forward_3x3_s2(d, w, no_bias, dx[a:b], pt, pl, OFF, OFF, sh, sw, dh, dw)
        _wgrad_3x3_s2(x[a:b], no_mask, d, dws[t], sums_x[t], pt, pl, sh, sw, dh, dw)
        channel_sums_into(d.reshape(-1), b - a, 1, d.shape[2] * d.shape[3], dbs[t])
    add_in_order(dws, dw_out)
    add_in_order(dbs, db_out)


@numba.njit(cache=True, nogil=True, parallel=True)
def _t_backward_any_threads(dy, relu_out, x, w, dx, dw_out, db_out, pt, pl, sh, sw, dh, dw,
                            threads):
    n = dy.shape[0]
    dws, dbs, sums_x, no_mask, no_bias = _t_backward_buffers(dy, x, dw_out, threads)
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        d = masked_range(dy, relu_out, a, b)
        if dx.shape[0] == n:
            _forward_any(d, w, no_bias, dx[a:b], pt, pl, OFF, OFF, sh, sw, dh, dw)
        _wgrad_any(x[a:b], no_mask, d, dws[t], sums_x[t], pt, pl, sh, sw, dh, dw)
        channel_sums_into(d.reshape(-1), b - a, 1, d.shape[2] * d.shape[3], dbs[t])
    add_in_order(dws, dw_out)
    add_in_order(dbs, db_out)


# (kh, kw, sh, sw, dil_h, dil_w) -> (forward, adjoint, weight gradient), serial and
# on threads
_COMPILED = {(3, 3, 1, 1, 1, 1): (_forward_3x3_s1, _adjoint_3x3_s1, _wgrad_3x3_s1),
             (3, 3, 2, 2, 1, 1): (_forward_3x3_s2, _adjoint_3x3_s2, _wgrad_3x3_s2)}
_ANY = (_forward_any, _adjoint_any, _wgrad_any)
_THREADED = {(3, 3, 1, 1, 1, 1): (_forward_3x3_s1_threads, _adjoint_3x3_s1_threads,
                                  _wgrad_3x3_s1_threads),
             (3, 3, 2, 2, 1, 1): (_forward_3x3_s2_threads, _adjoint_3x3_s2_threads,
                                  _wgrad_3x3_s2_threads)}
_ANY_THREADED = (_forward_any_threads, _adjoint_any_threads, _wgrad_any_threads)
_T_BACKWARD = {(3, 3, 1, 1, 1, 1): _t_backward_3x3_s1_threads,
               (3, 3, 2, 2, 1, 1): _t_backward_3x3_s2_threads}
C1_GEOMETRIES = tuple(_COMPILED)


def _kernel(geometry, which, threads):
    """The compiled kernel ``which`` (0 forward, 1 adjoint, 2 weight gradient) of this
    geometry, and the extra arguments it takes: (threads,) on threads, else ()."""
    if threads > 1:
        return _THREADED.get(geometry, _ANY_THREADED)[which], (threads,)
    return _COMPILED.get(geometry, _ANY)[which], ()


def _bias_arg(bias, dtype):
    if bias is None:
        return np.zeros(1, dtype), False
    return np.ascontiguousarray(bias), True


def conv_c1(x, weight, bias, sh, sw, pt, pl, dil_h, dil_w, out, relu=False, threads=1):
    """y = conv2d(x, W) + b (then max(·, 0) with ``relu``) into ``out`` (N, C_out, oh, ow)
    for x of shape (N, 1, H, W), contiguous; the bottom/right padding is implied by
    ``out``'s size. ``threads``: Numba threads to split the images over."""
    b, has_bias = _bias_arg(bias, x.dtype)
    kernel, extra = _kernel((*weight.shape[2:], sh, sw, dil_h, dil_w), 0,
                            team(min(threads, x.shape[0])))
    kernel(np.ascontiguousarray(x), np.ascontiguousarray(weight), b, out, pt, pl, has_bias,
           relu, sh, sw, dil_h, dil_w, *extra)
    return out


def conv_c1_adjoint(dy, weight, bias, sh, sw, pt, pl, dil_h, dil_w, out, relu=False,
                    threads=1):
    """out (N, 1, H, W) = conv2d's input gradient for dy (N, C_out, oh, ow) (+ b, then
    max(·, 0) with ``relu``): a transposed convolution to one channel."""
    b, has_bias = _bias_arg(bias, dy.dtype)
    kernel, extra = _kernel((*weight.shape[2:], sh, sw, dil_h, dil_w), 1,
                            team(min(threads, dy.shape[0])))
    kernel(np.ascontiguousarray(dy), np.ascontiguousarray(weight), b, out, pt, pl, has_bias,
           relu, sh, sw, dil_h, dil_w, *extra)
    return out


def conv_c1_wgrad(dy, x, kh, kw, sh, sw, pt, pl, dil_h, dil_w, relu_out=None, threads=1):
    """(dW of shape (C_out, 1, kh, kw), db of shape (C_out,)) of y = conv2d(x, W) + b;
    with ``relu_out`` (the output of a fused ReLU), dy ⊙ [relu_out > 0] in their place."""
    c_out = dy.shape[1]
    dw = np.empty((c_out, kh, kw), dtype=x.dtype)
    db = np.empty(c_out, dtype=x.dtype)
    # no mask: an empty array of the same type (one compiled signature for both)
    mask = (np.zeros((0, 0, 0, 0), dy.dtype) if relu_out is None
            else np.ascontiguousarray(relu_out))
    kernel, extra = _kernel((kh, kw, sh, sw, dil_h, dil_w), 2, team(min(threads, dy.shape[0])))
    kernel(np.ascontiguousarray(dy), mask, np.ascontiguousarray(x), dw, db, pt, pl, sh, sw,
           dil_h, dil_w, *extra)
    return dw.reshape(c_out, 1, kh, kw), db


def conv_c1_t_backward(dy, x, weight, sh, sw, pt, pl, dil_h, dil_w, relu_out=None, dx=None,
                       threads=1):
    """(dW, db) of the transposed convolution y = conv_c1_adjoint(x, W) (+ b) to one
    channel, from dY (N, 1, H, W), first masked by [relu_out > 0] when given, and dx =
    conv_c1(dY, W) into ``dx`` when given: one parallel region over the images."""
    c_in, _, kh, kw = weight.shape
    dw, db = np.empty((c_in, kh, kw), x.dtype), np.empty(1, x.dtype)
    no_images = np.empty((0,) + dy.shape[1:], dy.dtype)
    _T_BACKWARD.get((kh, kw, sh, sw, dil_h, dil_w), _t_backward_any_threads)(
        np.ascontiguousarray(dy),
        no_images if relu_out is None else np.ascontiguousarray(relu_out),
        np.ascontiguousarray(x), np.ascontiguousarray(weight),
        np.empty((0,) + x.shape[1:], x.dtype) if dx is None else dx, dw, db, pt, pl, sh, sw,
        dil_h, dil_w, team(min(threads, dy.shape[0])))
    return dw.reshape(c_in, 1, kh, kw), db
