"""Strided direct convolution with the channels in the SIMD lanes (Numba): the
middle layers of a strided CAE (16->32 14² -> 7², and its transposed twin),
where an output row is too short (7 pixels) to fill a vector along the image.

The lanes hold channels instead, so that a stride is only a different step
between the pixels read, and every vector is full whatever the image size.
With x zero-padded once (``_pad``):

Forward, 2 vectors of output channels x 7 output pixels = 14 accumulators;
per tap (c, i, j), 2 vector loads of W[o-block, c, i, j] and 7 broadcast
pixels x_pad[c, p·sh + i·dh, (q+k)·sw + j·dw] feed 14 FMAs. The finished
pixels go to NCHW by scattering each vector's lanes one plane apart.

    y[o, p, q] = b[o] + Σ_{c,i,j} W[o, c, i, j] · x_pad[c, p·sh + i·dh, q·sw + j·dw]

Weight gradient, 2 vectors of output channels x 7 taps = 14 accumulators,
every pixel of every image a step (dY transposed once to channels-last):

    dW[o, t] = Σ_{n,p,q} dY[n, o, p, q] · x_pad[n, c, p·sh + i·dh, q·sw + j·dw],  t = (c, i, j)

Adjoint (input gradient, transposed convolution), one vector of input
channels x 7 output pixels x 2 taps = 14 accumulators; per output channel o,
2 vector loads of W[o, c-block, tap] and 7 broadcasts of dY[o, p, q..q+6]:

    dx_pad[c, p·sh + i·dh, q·sw + j·dw] += Σ_o W[o, c, i, j] · dY[o, p, q]

added into a channels-last padded buffer, then scattered back to NCHW
(padding dropped, + bias, ReLU). Checked by tests/test_kernels_simd.py
against the column products.
"""

from __future__ import annotations

import numba
import numpy as np

from ._numba_ranges import (OFF, add_in_order, channel_sums_into, copy_into, image_range,
                             masked_range, team)
from ._simd import VECTOR_BYTES, lanes, vfma, vload, vrelu, vscatter, vsplat, vstore

__all__ = ["conv_cv", "conv_cv_adjoint", "conv_cv_backward", "conv_cv_t_backward"]

# output pixels (forward, adjoint) or taps (weight gradient) a block; 7 also where the
# CPU has 16 vector registers: 6 ran its forward ~20% slower with AVX2 code
_Q = 7


@numba.njit(inline="always")
def _padded_size(h, w, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw):
    """(hp, wp): a padded image that holds x and every read of whole 7-pixel blocks."""
    blocks = (ow + _Q - 1) // _Q
    hp = max(h + pt, (oh - 1) * sh + (kh - 1) * dh + 1)
    wp = max(w + pl, (blocks * _Q - 1) * sw + (kw - 1) * dw + 1)
    return hp, wp


@numba.njit(nogil=True, cache=True)
def _pad(x, pt, pl, hp, wp):
    """x (N, C, h, w) zero-padded to (N, C, hp, wp) at (pt, pl): each padded row
    written whole, a vector at a time, from a masked load that reads only the
    image's columns (the other lanes are the zeros), so nothing is zeroed twice."""
    n, c, h, w = x.shape
    xf = x.ravel()
    v = lanes(xf)
    out = np.empty(n * c * hp * wp, x.dtype)
    zero = vsplat(xf, 0.0)
    for t in range(n * c):
        for r in range(hp):
            dst = (t * hp + r) * wp
            inside = pt <= r < pt + h
            src = (t * h + r - pt) * w - pl
            for k in range(0, wp, v):
                row = vload(xf, src + k, pl - k, pl + w - k) if inside else zero
                vstore(out, dst + k, row, 0, wp - k)
    return out


@numba.njit(inline="always")
def _fma2(s, w0, w1, a0, a1):
    return vfma(s, w0, a0), vfma(s, w1, a1)


@numba.njit(inline="always")
def _bcast(xp, at):
    return vsplat(xp, xp[np.uintp(at)])


@numba.njit(inline="always")
def _scatter_pixel(yf, at, plane, a0, a1, v, live, relu):
    """Two vectors of channels of one pixel into NCHW, ``live`` lanes of them."""
    if relu:
        a0, a1 = vrelu(a0), vrelu(a1)
    vscatter(yf, at, plane, a0, live)
    vscatter(yf, at + v * plane, plane, a1, live - v)


@numba.njit(nogil=True, cache=True)
def _pack_out(w, block):
    """W (O, C, kh, kw) as (C·kh·kw, O padded to ``block``): a tap's output channels
    contiguous."""
    o_n, c_n, kh, kw = w.shape
    op = (o_n + block - 1) // block * block
    packed = np.zeros(c_n * kh * kw * op, w.dtype)
    wf = w.reshape(o_n, c_n * kh * kw)
    for t in range(c_n * kh * kw):          # writes in order (3x faster than reads in order)
        for o in range(o_n):
            packed[t * op + o] = wf[o, t]
    return packed, op


@numba.njit(nogil=True, cache=True)
def _forward(xp, packed, op, c_in, kh, kw, sh, sw, dh, dw, hp, wp, bias, relu, y):
    n, c_out, oh, ow = y.shape
    v = lanes(packed)
    yf = y.reshape(-1)
    b = np.zeros(op, y.dtype)
    if bias is not None:
        copy_into(bias, b[:c_out])
    plane = hp * wp
    taps = c_in * kh * kw
    reads = np.empty(taps, np.int64)        # tap (c, i, j) -> its offset in x_pad
    for c in range(c_in):
        for i in range(kh):
            for j in range(kw):
                reads[(c * kh + i) * kw + j] = c * plane + i * dh * wp + j * dw
    for img in range(n):
        for ob in range(0, op, 2 * v):
            b0, b1 = vload(b, ob, 0, v), vload(b, ob + v, 0, v)
            live = c_out - ob
            for p in range(oh):
                for q in range(0, ow, _Q):
                    a0 = a1 = a2 = a3 = a4 = a5 = a6 = b0
                    e0 = e1 = e2 = e3 = e4 = e5 = e6 = b1
                    row = img * c_in * plane + p * sh * wp + q * sw
                    for t in range(taps):
                        k = t * op + ob
                        w0, w1 = vload(packed, k, 0, v), vload(packed, k + v, 0, v)
                        at = row + reads[t]
                        a0, e0 = _fma2(_bcast(xp, at), w0, w1, a0, e0)
                        a1, e1 = _fma2(_bcast(xp, at + sw), w0, w1, a1, e1)
                        a2, e2 = _fma2(_bcast(xp, at + 2 * sw), w0, w1, a2, e2)
                        a3, e3 = _fma2(_bcast(xp, at + 3 * sw), w0, w1, a3, e3)
                        a4, e4 = _fma2(_bcast(xp, at + 4 * sw), w0, w1, a4, e4)
                        a5, e5 = _fma2(_bcast(xp, at + 5 * sw), w0, w1, a5, e5)
                        a6, e6 = _fma2(_bcast(xp, at + 6 * sw), w0, w1, a6, e6)
                    at = ((img * c_out + ob) * oh + p) * ow + q
                    out = oh * ow
                    # pixels past the row (the last block's) store no lane
                    _scatter_pixel(yf, at, out, a0, e0, v, live, relu)
                    _scatter_pixel(yf, at + 1, out, a1, e1, v, live * (q + 1 < ow), relu)
                    _scatter_pixel(yf, at + 2, out, a2, e2, v, live * (q + 2 < ow), relu)
                    _scatter_pixel(yf, at + 3, out, a3, e3, v, live * (q + 3 < ow), relu)
                    _scatter_pixel(yf, at + 4, out, a4, e4, v, live * (q + 4 < ow), relu)
                    _scatter_pixel(yf, at + 5, out, a5, e5, v, live * (q + 5 < ow), relu)
                    _scatter_pixel(yf, at + 6, out, a6, e6, v, live * (q + 6 < ow), relu)
    return y


@numba.njit(nogil=True, cache=True)
def _channels_last(dy, op):
    """dY (N, O, oh, ow) as (N, oh, ow, O padded to op), zeros in the padding."""
    n, c, oh, ow = dy.shape
    df = dy.ravel()
    v = lanes(df)
    size = oh * ow
    out = np.zeros(n * size * op, dy.dtype)
    for img in range(n):
        for o in range(c):
            src = (img * c + o) * size
            for k in range(0, size, v):
                vscatter(out, (img * size + k) * op + o, op, vload(df, src + k, 0, size - k),
                         size - k)
    return out


@numba.njit(inline="always")
def _put_tap(gf, at, taps, v, a0, a1, live):
    """One tap's two vectors of output channels into dW (C_out, taps): lanes a row of
    dW apart; ``live`` channels (0: a tap past the last, nothing stored)."""
    vscatter(gf, at, taps, a0, live)
    vscatter(gf, at + v * taps, taps, a1, live - v)


@numba.njit(nogil=True, cache=True)
def _wgrad(xp, dyt, n, c_out, op, c_in, kh, kw, sh, sw, dh, dw, oh, ow, hp, wp):
    v = lanes(xp)
    plane = hp * wp
    taps = c_in * kh * kw
    blocks = (taps + _Q - 1) // _Q
    reads = np.zeros(blocks * _Q, np.int64)        # past the last tap: reads x_pad[0]
    for c in range(c_in):
        for i in range(kh):
            for j in range(kw):
                reads[(c * kh + i) * kw + j] = c * plane + i * dh * wp + j * dw
    pixels = np.empty(oh * ow, np.int64)
    for p in range(oh):
        for q in range(ow):
            pixels[p * ow + q] = p * sh * wp + q * sw
    size = oh * ow
    grad = np.zeros((c_out, c_in, kh, kw), xp.dtype)
    gf = grad.reshape(-1)
    zero = vsplat(xp, 0.0)
    for ob in range(0, op, 2 * v):
        live = c_out - ob
        for tb in range(blocks):
            t = tb * _Q
            r0, r1, r2, r3 = reads[t], reads[t + 1], reads[t + 2], reads[t + 3]
            r4, r5, r6 = reads[t + 4], reads[t + 5], reads[t + 6]
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = zero
            e0 = e1 = e2 = e3 = e4 = e5 = e6 = zero
            for img in range(n):
                base = img * c_in * plane
                d = img * size * op + ob
                for k in range(size):
                    d0, d1 = vload(dyt, d, 0, v), vload(dyt, d + v, 0, v)
                    at = base + pixels[k]
                    a0, e0 = _fma2(_bcast(xp, at + r0), d0, d1, a0, e0)
                    a1, e1 = _fma2(_bcast(xp, at + r1), d0, d1, a1, e1)
                    a2, e2 = _fma2(_bcast(xp, at + r2), d0, d1, a2, e2)
                    a3, e3 = _fma2(_bcast(xp, at + r3), d0, d1, a3, e3)
                    a4, e4 = _fma2(_bcast(xp, at + r4), d0, d1, a4, e4)
                    a5, e5 = _fma2(_bcast(xp, at + r5), d0, d1, a5, e5)
                    a6, e6 = _fma2(_bcast(xp, at + r6), d0, d1, a6, e6)
                    d += op
            # dW[ob + l, t + k] for the live taps: lanes one tap row (taps) apart
            at = ob * taps + t
            _put_tap(gf, at, taps, v, a0, e0, live * (t < taps))
            _put_tap(gf, at + 1, taps, v, a1, e1, live * (t + 1 < taps))
            _put_tap(gf, at + 2, taps, v, a2, e2, live * (t + 2 < taps))
            _put_tap(gf, at + 3, taps, v, a3, e3, live * (t + 3 < taps))
            _put_tap(gf, at + 4, taps, v, a4, e4, live * (t + 4 < taps))
            _put_tap(gf, at + 5, taps, v, a5, e5, live * (t + 5 < taps))
            _put_tap(gf, at + 6, taps, v, a6, e6, live * (t + 6 < taps))
    return grad


@numba.njit(nogil=True, cache=True)
def _pack_in(w, v):
    """W (O, C, kh, kw) as (O, kh·kw + 1, C padded to v) (the extra tap all zeros:
    the partner of an odd last tap)."""
    o_n, c_n, kh, kw = w.shape
    cp = (c_n + v - 1) // v * v
    taps = kh * kw + 1
    packed = np.zeros(o_n * taps * cp, w.dtype)
    for o in range(o_n):
        for i in range(kh):
            for j in range(kw):
                for c in range(c_n):            # writes in order
                    packed[(o * taps + i * kw + j) * cp + c] = w[o, c, i, j]
    return packed, cp


@numba.njit(inline="always")
def _add_at(buf, at, a):
    vstore(buf, at, vfma(vsplat(buf, 1.0), vload(buf, at, 0, lanes(buf)), a), 0, lanes(buf))


@numba.njit(inline="always")
def _add_pair(buf, r0, r1, a, e, two, live):
    """One pixel's sums for the tap pair into dx_pad (the second tap if it exists)."""
    if live:
        _add_at(buf, r0, a)
        if two:
            _add_at(buf, r1, e)


@numba.njit(nogil=True, cache=True)
def _adjoint(dy, packed, cp, kh, kw, sh, sw, pt, pl, dh, dw, hp, wp, bias, relu, x):
    n, c_out, oh, ow = dy.shape
    c_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    df = dy.ravel()
    xf = x.reshape(-1)
    v = lanes(df)
    taps = kh * kw
    stride = taps + 1                           # packed taps per output channel
    buf = np.zeros(n * hp * wp * cp, x.dtype)   # dx_pad, channels last
    for img in range(n):
        for cb in range(0, cp, v):
            for p in range(oh):
                for q in range(0, ow, _Q):
                    # pixels past the row read its last pixel; their sums are dropped
                    last = ow - 1 - q
                    for t in range(0, taps, 2):
                        a0 = a1 = a2 = a3 = a4 = a5 = a6 = vsplat(df, 0.0)
                        e0 = e1 = e2 = e3 = e4 = e5 = e6 = a0
                        d = ((img * c_out) * oh + p) * ow + q
                        k = t * cp + cb
                        for _ in range(c_out):
                            w0 = vload(packed, k, 0, v)
                            w1 = vload(packed, k + cp, 0, v)
                            a0, e0 = _fma2(_bcast(df, d), w0, w1, a0, e0)
                            a1, e1 = _fma2(_bcast(df, d + min(1, last)), w0, w1, a1, e1)
                            a2, e2 = _fma2(_bcast(df, d + min(2, last)), w0, w1, a2, e2)
                            a3, e3 = _fma2(_bcast(df, d + min(3, last)), w0, w1, a3, e3)
                            a4, e4 = _fma2(_bcast(df, d + min(4, last)), w0, w1, a4, e4)
                            a5, e5 = _fma2(_bcast(df, d + min(5, last)), w0, w1, a5, e5)
                            a6, e6 = _fma2(_bcast(df, d + min(6, last)), w0, w1, a6, e6)
                            d += oh * ow
                            k += stride * cp
                        i0, j0 = t // kw, t % kw
                        i1, j1 = (t + 1) // kw, (t + 1) % kw
                        r0 = ((img * hp + p * sh + i0 * dh) * wp + q * sw + j0 * dw) * cp + cb
                        r1 = ((img * hp + p * sh + i1 * dh) * wp + q * sw + j1 * dw) * cp + cb
                        s = sw * cp
                        two = t + 1 < taps
                        _add_pair(buf, r0, r1, a0, e0, two, True)
                        _add_pair(buf, r0 + s, r1 + s, a1, e1, two, last >= 1)
                        _add_pair(buf, r0 + 2 * s, r1 + 2 * s, a2, e2, two, last >= 2)
                        _add_pair(buf, r0 + 3 * s, r1 + 3 * s, a3, e3, two, last >= 3)
                        _add_pair(buf, r0 + 4 * s, r1 + 4 * s, a4, e4, two, last >= 4)
                        _add_pair(buf, r0 + 5 * s, r1 + 5 * s, a5, e5, two, last >= 5)
                        _add_pair(buf, r0 + 6 * s, r1 + 6 * s, a6, e6, two, last >= 6)
    b = np.zeros(cp, x.dtype)
    if bias is not None:
        copy_into(bias, b[:c_in])
    plane = h * w
    for img in range(n):
        for cb in range(0, cp, v):
            bv = vload(b, cb, 0, v)
            for r in range(h):
                for t in range(w):
                    val = vfma(vsplat(buf, 1.0), bv, vload(
                        buf, ((img * hp + r + pt) * wp + t + pl) * cp + cb, 0, v))
                    if relu:
                        val = vrelu(val)
                    vscatter(xf, ((img * c_in + cb) * h + r) * w + t, plane, val, c_in - cb)
    return x


# The images split over ``threads`` Numba threads, as in _numba_s1.py: one
# contiguous range each, every range padded / made channels-last on its own
# thread. The weights are packed and the padded size found inside each driver: as
# calls from Python they cost ~3 us each, a layer's call (strided CAE, round 11).

@numba.njit(nogil=True, cache=True, parallel=True)
def _forward_threads(x, weight, bias, sh, sw, pt, pl, dh, dw, relu, y, block, threads):
    n, c_in, h, w = x.shape
    kh, kw = weight.shape[2], weight.shape[3]
    hp, wp = _padded_size(h, w, y.shape[2], y.shape[3], kh, kw, sh, sw, pt, pl, dh, dw)
    packed, op = _pack_out(weight, block)
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        _forward(_pad(x[a:b], pt, pl, hp, wp), packed, op, c_in, kh, kw, sh, sw, dh, dw,
                 hp, wp, bias, relu, y[a:b])
    return y


@numba.njit(nogil=True, cache=True, parallel=True)
def _adjoint_threads(dy, weight, bias, sh, sw, pt, pl, dh, dw, relu, x, block, threads):
    n, _, oh, ow = dy.shape
    kh, kw = weight.shape[2], weight.shape[3]
    hp, wp = _padded_size(x.shape[2], x.shape[3], oh, ow, kh, kw, sh, sw, pt, pl, dh, dw)
    packed, cp = _pack_in(weight, block)
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        _adjoint(dy[a:b], packed, cp, kh, kw, sh, sw, pt, pl, dh, dw, hp, wp, bias, relu,
                 x[a:b])
    return x


# A whole backward in one parallel region: each thread masks dY on its images, runs
# the products on them and sums its partial dW and db, so that dY stays in its
# core's cache and there is one fork-join, not four with Python between
# (benchmarks/README.md, decisions). The partial sums are added in range order.

@numba.njit(nogil=True, cache=True, parallel=True)
def _backward_threads(dy, relu_out, x, weight, sh, sw, pt, pl, dh, dw, dx, block, threads):
    n, c_out, oh, ow = dy.shape
    c_in, kh, kw = x.shape[1], weight.shape[2], weight.shape[3]
    hp, wp = _padded_size(x.shape[2], x.shape[3], oh, ow, kh, kw, sh, sw, pt, pl, dh, dw)
    op = (c_out + 2 * block - 1) // (2 * block) * 2 * block
    packed, cp = _pack_in(weight if dx.shape[0] == n else weight[:0], block)
    no_bias = np.zeros(c_in, x.dtype)       # zeros, not None: see OFF
    dws = np.empty((threads, c_out, c_in, kh, kw), x.dtype)
    dbs = np.empty((threads, c_out), x.dtype)
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        d = masked_range(dy, relu_out, a, b)
        if dx.shape[0] == n:                            # dx = Wᵀ ⋆ dY
            _adjoint(d, packed, cp, kh, kw, sh, sw, pt, pl, dh, dw, hp, wp, no_bias, OFF,
                     dx[a:b])
        copy_into(_wgrad(_pad(x[a:b], pt, pl, hp, wp), _channels_last(d, op), b - a, c_out,
                         op, c_in, kh, kw, sh, sw, dh, dw, oh, ow, hp, wp), dws[t])
        channel_sums_into(d.reshape(-1), b - a, c_out, oh * ow, dbs[t])
    return (add_in_order(dws, np.empty(dws.shape[1:], x.dtype)),
            add_in_order(dbs, np.empty(c_out, x.dtype)))


@numba.njit(nogil=True, cache=True, parallel=True)
def _t_backward_threads(dy, relu_out, x, weight, sh, sw, pt, pl, dh, dw, dx, block,
                        threads):
    n, c_out, hy, wy = dy.shape             # the transposed convolution's output
    c_in, h, w = x.shape[1:]                # and input: the convolution's output
    kh, kw = weight.shape[2], weight.shape[3]
    hp, wp = _padded_size(hy, wy, h, w, kh, kw, sh, sw, pt, pl, dh, dw)
    packed, op = _pack_out(weight, 2 * block)
    no_bias = np.zeros(c_in, x.dtype)       # zeros, not None: see OFF
    dws = np.empty((threads, c_in, c_out, kh, kw), x.dtype)
    dbs = np.empty((threads, c_out), x.dtype)
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        d = masked_range(dy, relu_out, a, b)
        d_pad = _pad(d, pt, pl, hp, wp)                 # read by both products
        if dx.shape[0] == n:                            # dx = W ⋆ dY
            _forward(d_pad, packed, op, c_out, kh, kw, sh, sw, dh, dw, hp, wp, no_bias, OFF,
                     dx[a:b])
        copy_into(_wgrad(d_pad, _channels_last(x[a:b], op), b - a, c_in, op, c_out, kh,
                         kw, sh, sw, dh, dw, h, w, hp, wp), dws[t])   # dW = Σ x ⋆ dY
        channel_sums_into(d.reshape(-1), b - a, c_out, hy * wy, dbs[t])
    return (add_in_order(dws, np.empty(dws.shape[1:], x.dtype)),
            add_in_order(dbs, np.empty(c_out, x.dtype)))


def _c(a):
    """``a`` C-contiguous (the drivers' loops and reshapes assume it), None kept."""
    return None if a is None else np.ascontiguousarray(a)


def _images(a, like):
    """``_c(a)``, or for None an array of ``like``'s type with no images (a "none")."""
    return _c(a) if a is not None else np.empty((0,) + like.shape[1:], like.dtype)


def conv_cv(x, weight, bias, sh, sw, pt, pl, dil_h, dil_w, out, relu=False, threads=1):
    """out = W ⋆ x (+ b, then max(·, 0)) at any stride, groups 1, channels in lanes;
    the images split over ``threads`` Numba threads."""
    return _forward_threads(_c(x), _c(weight), _c(bias), sh, sw, pt, pl, dil_h, dil_w, relu,
                            out, 2 * (VECTOR_BYTES // x.dtype.itemsize),
                            team(min(threads, x.shape[0])))


def conv_cv_adjoint(dy, weight, bias, sh, sw, pt, pl, dil_h, dil_w, out, relu=False,
                    threads=1):
    """out (N, C_in, h, w) = the transposed convolution of dY (+ b, then max(·, 0)):
    the input gradient of ``conv_cv``."""
    return _adjoint_threads(_c(dy), _c(weight), _c(bias), sh, sw, pt, pl, dil_h, dil_w,
                            relu, out, VECTOR_BYTES // dy.dtype.itemsize,
                            team(min(threads, dy.shape[0])))


def conv_cv_backward(dy, x, weight, sh, sw, pt, pl, dil_h, dil_w, relu_out=None, dx=None,
                     threads=1):
    """(dW, db) of ``conv_cv`` from dY, first masked by [relu_out > 0] when a fused
    ReLU's output is given, and its input gradient into ``dx`` when given; the
    images split over ``threads`` Numba threads in one parallel region."""
    return _backward_threads(_c(dy), _images(relu_out, dy), _c(x), _c(weight), sh, sw, pt,
                             pl, dil_h, dil_w, _images(dx, x), VECTOR_BYTES // x.dtype.itemsize,
                             team(min(threads, dy.shape[0])))


def conv_cv_t_backward(dy, x, weight, sh, sw, pt, pl, dil_h, dil_w, relu_out=None, dx=None,
                       threads=1):
    """(dW, db) of the transposed convolution y = conv_cv_adjoint(x, W) (+ b) from dY,
    first masked by [relu_out > 0] when given, and dx = conv_cv(dY, W) into ``dx`` when
    given; one parallel region, as :func:`conv_cv_backward`."""
    return _t_backward_threads(_c(dy), _images(relu_out, dy), _c(x), _c(weight), sh, sw,
                               pt, pl, dil_h, dil_w, _images(dx, x),
                               VECTOR_BYTES // x.dtype.itemsize,
                               team(min(threads, dy.shape[0])))
