"""im2col_kn / col2im_kn (GEMM layout) and the one-output-channel direct convolution
as Numba loops.

im2col_kn and col2im_kn (the column candidates' operands, kernels/_columns.py) run
on one thread, with a row loop or, for short or strided rows (``LOOP_MIN_ROW``), a
gather/scatter through a table of window offsets. The direct convolution kernels
at the end loop over images serially; their ``_threads`` drivers split the images
over Numba's threads in contiguous ranges (``threads``, kernels/_numba_conv.py).
"""

from __future__ import annotations

import os
import sys

# Numba's OpenMP workers sleep between parallel regions instead of spinning (read
# when its OpenMP layer starts, at the first region): a spinning worker takes the
# core another process needs, and then every region waits for the descheduled
# straggler (benchmarks/README.md, decisions: busy core). A value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numba  # noqa: E402  (after the OpenMP setting above)
import numpy as np
from numba.core import event

from ._numba_c1 import (C1_GEOMETRIES, conv_c1, conv_c1_adjoint, conv_c1_t_backward,
                        conv_c1_wgrad)
from ._numba_cv import conv_cv, conv_cv_adjoint, conv_cv_backward, conv_cv_t_backward
from ._numba_optim import adam_update, adam_update_many
from ._numba_ranges import add_in_order, channel_sums_into, image_range, team
from ._numba_s1 import conv_s1, conv_s1_adjoint, conv_s1_backward


__all__ = ["im2col_kn", "col2im_kn", "conv_direct", "conv_direct_adjoint",
           "conv_direct_wgrad", "conv_c1", "conv_c1_adjoint",
           "conv_c1_wgrad", "C1_GEOMETRIES", "conv_s1", "conv_s1_adjoint", "conv_s1_backward",
           "conv_cv", "conv_cv_adjoint", "adam_update",
           "channel_sums", "conv_cv_backward", "conv_cv_t_backward",
           "conv_c1_t_backward", "adam_update_many"]

class _CompileNotice(event.Listener):
    """Says once per process, on the first kernel Numba must compile rather than load
    from its disk cache (a cache hit fires no compile event), that the wait is a
    one-off: a cold start compiles for tens of seconds, a cached one for none."""

    def __init__(self):
        self.said = False

    def on_start(self, ev):
        func = ev.data["dispatcher"]
        if self.said or not func.py_func.__module__.startswith(__package__):
            return
        self.said = True
        where = getattr(getattr(func, "_cache", None), "_cache_path", None)
        sys.stderr.write("compiling kernels for this machine (first run only, cached in "
                         f"{where or numba.config.CACHE_DIR or 'memory'})\n")
        sys.stderr.flush()

    def on_end(self, ev):
        pass


event.register("numba:compile", _CompileNotice())


@numba.njit(inline="always")
def _q_range(c0, sw, w, ow):
    """Output columns q whose input column q*sw + c0 lies inside [0, w)."""
    q_lo = 0 if c0 >= 0 else min(ow, (-c0 + sw - 1) // sw)
    if w - 1 - c0 < 0:
        return q_lo, q_lo
    return q_lo, max(q_lo, min(ow, (w - 1 - c0) // sw + 1))


@numba.njit(inline="always")
def _fill_plane(xf, buf, t, h, w, wp, pt, pl):
    """Copy plane t of x (flat) into the interior of the zero-bordered scratch
    plane ``buf`` (hp x wp). The border is never written, so it stays zero."""
    for r in range(h):
        src, dst = (t * h + r) * w, (r + pt) * wp + pl
        for q in range(w):
            buf[np.uintp(dst + q)] = xf[np.uintp(src + q)]


@numba.njit(inline="always")
def _plane_rows(buf, cf, t, c, kh, kw, n, oh, ow, wp, sh, sw, dil_h, dil_w):
    """Every tap's slab of plane t = b*c + ch, row by row from the scratch plane."""
    b = t // c
    ch = t % c
    for i in range(kh):
        for j in range(kw):
            o = (((ch * kh + i) * kw + j) * n + b) * oh * ow
            for p in range(oh):
                src = (p * sh + i * dil_h) * wp + j * dil_w
                # cols[c, i, j, b, p, q] = x_pad[b, c, p*sh + i*dil_h, q*sw + j*dil_w]
                # (unsigned indices: no wraparound test, the loop vectorises)
                for q in range(ow):
                    cf[np.uintp(o + q)] = buf[np.uintp(src + q * sw)]
                o += ow


@numba.njit(inline="always")
def _scratch_hw(h, w, oh, ow, kh, kw, sh, sw, pt, pl, dil_h, dil_w):
    """Height and width of a padded plane that holds every window."""
    return (max(h + pt, (oh - 1) * sh + (kh - 1) * dil_h + 1),
            max(w + pl, (ow - 1) * sw + (kw - 1) * dil_w + 1))


@numba.njit(inline="always")
def _window_offsets(oh, ow, sh, sw, wp):
    """Offset of each output pixel's window corner in a scratch plane of width wp."""
    off = np.empty(oh * ow, np.intp)
    for p in range(oh):
        for q in range(ow):
            off[p * ow + q] = p * sh * wp + q * sw
    return off


@numba.njit(cache=True, nogil=True)
def _im2col_kn_serial(x, cols, sh, sw, pt, pl, dil_h, dil_w):
    """im2col plane by plane: each (image, channel) plane is copied into a small
    zero-bordered scratch plane (no padded copy of the whole input), then every
    tap's slab is read from it row by row."""
    c, kh, kw, n, oh, ow = cols.shape
    h, w = x.shape[2], x.shape[3]
    hp, wp = _scratch_hw(h, w, oh, ow, kh, kw, sh, sw, pt, pl, dil_h, dil_w)
    xf, cf = x.reshape(-1), cols.reshape(-1)
    buf = np.zeros(hp * wp, cols.dtype)
    for t in range(n * c):
        _fill_plane(xf, buf, t, h, w, wp, pt, pl)
        _plane_rows(buf, cf, t, c, kh, kw, n, oh, ow, wp, sh, sw, dil_h, dil_w)


@numba.njit(cache=True, nogil=True)
def _im2col_kn_gather(x, cols, sh, sw, pt, pl, dil_h, dil_w):
    """The same columns as :func:`_im2col_kn_serial`, each tap's slab one gather
    from the scratch plane through a table of the oh*ow window offsets: no per-row
    set-up, for short or strided rows."""
    c, kh, kw, n, oh, ow = cols.shape
    h, w = x.shape[2], x.shape[3]
    hp, wp = _scratch_hw(h, w, oh, ow, kh, kw, sh, sw, pt, pl, dil_h, dil_w)
    xf, cf = x.reshape(-1), cols.reshape(-1)
    off = _window_offsets(oh, ow, sh, sw, wp)
    buf = np.zeros(hp * wp, cols.dtype)
    for t in range(n * c):
        _fill_plane(xf, buf, t, h, w, wp, pt, pl)
        b = t // c
        ch = t % c
        for i in range(kh):
            for j in range(kw):
                tap = i * dil_h * wp + j * dil_w
                o = (((ch * kh + i) * kw + j) * n + b) * oh * ow
                # cols[c, i, j, b, p, q] = x_pad[b, c, p*sh + i*dil_h, q*sw + j*dil_w]
                for k in range(oh * ow):
                    cf[np.uintp(o + k)] = buf[np.uintp(tap + off[k])]


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
                # (2-3x NumPy's tap loop, benchmarks/history.md).
                for q in range(q_lo, q_hi):
                    xf[np.uintp(xr + q * sw)] += cf[np.uintp(o + q)]


@numba.njit(cache=True, nogil=True)
def _col2im_kn_serial(cols, x, sh, sw, pt, pl, dil_h, dil_w):
    c, kh, kw, n, oh, ow = cols.shape
    xf, cf = x.reshape(-1), cols.reshape(-1)
    for t in range(n * c):
        _col2im_plane(cf, xf, t, c, kh, kw, n, oh, ow, x.shape[2], x.shape[3], sh, sw,
                      pt, pl, dil_h, dil_w)


@numba.njit(cache=True, nogil=True)
def _col2im_kn_scatter(cols, x, sh, sw, pt, pl, dil_h, dil_w):
    """The same sums as :func:`_col2im_kn_serial`, in the same tap order, for short or
    strided rows: each plane is summed into a zeroed padded scratch plane through
    a table of the oh*ow window offsets (no bounds tests, no per-row set-up),
    then its interior is copied out."""
    c, kh, kw, n, oh, ow = cols.shape
    h, w = x.shape[2], x.shape[3]
    hp, wp = _scratch_hw(h, w, oh, ow, kh, kw, sh, sw, pt, pl, dil_h, dil_w)
    xf, cf = x.reshape(-1), cols.reshape(-1)
    off = _window_offsets(oh, ow, sh, sw, wp)
    buf = np.empty(hp * wp, cols.dtype)
    for t in range(n * c):
        buf[:] = 0
        for i in range(kh):
            for j in range(kw):
                tap = i * dil_h * wp + j * dil_w
                cbase = ((((t % c) * kh + i) * kw + j) * n + t // c) * oh * ow
                # x_pad[p*sh + i*dil_h, q*sw + j*dil_w] += cols[c, i, j, b, p, q]
                for k in range(oh * ow):
                    buf[np.uintp(tap + off[k])] += cf[np.uintp(cbase + k)]
        for r in range(h):
            src, dst = (r + pt) * wp + pl, (t * h + r) * w
            for q in range(w):
                xf[np.uintp(dst + q)] = buf[np.uintp(src + q)]


# Rows shorter than this, or strided, go through an offset table (im2col_kn's
# gather, col2im_kn's scatter): a short row's loop set-up costs more than its copy.
LOOP_MIN_ROW = 8


def im2col_kn(x, kh, kw, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out=None):
    """im2col in GEMM layout (C, kh, kw, N, oh, ow); see kernels/_columns.py.

    Plane by plane: each (image, channel) plane is copied into a small
    zero-bordered scratch plane that stays in L1 (no padded copy of the whole
    input), and every tap's slab is read from it without bounds tests. Rows
    shorter than ``LOOP_MIN_ROW``, or strided, are gathered (see above).
    """
    n, c, h, w = x.shape
    oh = (h + pt + pb - dil_h * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dil_w * (kw - 1) - 1) // sw + 1
    if out is None:
        cols = np.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
    else:
        assert out.flags.c_contiguous and out.dtype == x.dtype   # reshape is a view
        cols = out.reshape((c, kh, kw, n, oh, ow))
    kernel = _im2col_kn_gather if ow < LOOP_MIN_ROW or sw > 1 else _im2col_kn_serial
    kernel(np.ascontiguousarray(x), cols, sh, sw, pt, pl, dil_h, dil_w)
    return cols


def col2im_kn(cols, h, w, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out=None):
    """The adjoint of :func:`im2col_kn`: x of shape (N, C, h, w)."""
    c, n = cols.shape[0], cols.shape[3]
    if out is None:
        x = np.empty((n, c, h, w), dtype=cols.dtype)
    else:
        assert out.flags.c_contiguous and out.dtype == cols.dtype  # reshape is a view
        x = out.reshape((n, c, h, w))
    short = cols.shape[5] < LOOP_MIN_ROW or sw > 1
    kernel = _col2im_kn_scatter if short else _col2im_kn_serial
    kernel(np.ascontiguousarray(cols), x, sh, sw, pt, pl, dil_h, dil_w)
    return x


# Direct convolution, without columns, for one output channel (where the GEMM
# degenerates to a matrix-vector product: the 'full' CAE's 16->1 decoder). Each
# loop's innermost index is the output column q, with unsigned flat indices so that
# it vectorises; no fastmath: the weight gradient sums per column q first.


@numba.njit(inline="always")
def _direct_image(xf, wf, bf, yf, b, c_in, c_out, hp, wp, kh, kw, oh, ow, sh, sw, dil_h,
                  dil_w, has_bias):
    for o in range(c_out):
        ybase = (b * c_out + o) * oh * ow
        init = bf[o] if has_bias else 0.0
        for k in range(oh * ow):
            yf[np.uintp(ybase + k)] = init
        for c in range(c_in):
            xbase = (b * c_in + c) * hp * wp
            for i in range(kh):
                for j in range(kw):
                    wv = wf[np.uintp(((o * c_in + c) * kh + i) * kw + j)]
                    for p in range(oh):
                        src = xbase + (p * sh + i * dil_h) * wp + j * dil_w
                        dst = ybase + p * ow
                        # y[b, o, p, q] += W[o, c, i, j] · x_pad[b, c, p·sh + i·dh, q·sw + j·dw]
                        for q in range(ow):
                            yf[np.uintp(dst + q)] += wv * xf[np.uintp(src + q * sw)]


@numba.njit(cache=True, nogil=True)
def _conv_direct(x_pad, w, bias, y, sh, sw, dil_h, dil_w, has_bias):
    n, c_in, hp, wp = x_pad.shape
    c_out, _, kh, kw = w.shape
    oh, ow = y.shape[2], y.shape[3]
    xf, wf, yf = x_pad.reshape(-1), w.reshape(-1), y.reshape(-1)
    for b in range(n):
        _direct_image(xf, wf, bias, yf, b, c_in, c_out, hp, wp, kh, kw, oh, ow, sh, sw,
                      dil_h, dil_w, has_bias)


@numba.njit(cache=True, nogil=True)
def _conv_direct_adjoint(dy, w, x_pad, sh, sw, dil_h, dil_w):
    n, c_in, hp, wp = x_pad.shape
    c_out, _, kh, kw = w.shape
    oh, ow = dy.shape[2], dy.shape[3]
    dyf, wf, xf = dy.reshape(-1), w.reshape(-1), x_pad.reshape(-1)
    for b in range(n):
        for k in range(c_in * hp * wp):
            xf[np.uintp(b * c_in * hp * wp + k)] = 0
        for o in range(c_out):
            ybase = (b * c_out + o) * oh * ow
            for c in range(c_in):
                xbase = (b * c_in + c) * hp * wp
                for i in range(kh):
                    for j in range(kw):
                        wv = wf[np.uintp(((o * c_in + c) * kh + i) * kw + j)]
                        for p in range(oh):
                            dst = xbase + (p * sh + i * dil_h) * wp + j * dil_w
                            src = ybase + p * ow
                            # x_pad[b, c, p·sh + i·dh, q·sw + j·dw]
                            #     += W[o, c, i, j] · dy[b, o, p, q]
                            for q in range(ow):
                                xf[np.uintp(dst + q * sw)] += wv * dyf[np.uintp(src + q)]


@numba.njit(cache=True, nogil=True)
def _conv_direct_wgrad(dy, x_pad, dw, sh, sw, dil_h, dil_w):
    n, c_in, hp, wp = x_pad.shape
    c_out, _, kh, kw = dw.shape
    oh, ow = dy.shape[2], dy.shape[3]
    dyf, xf, dwf = dy.reshape(-1), x_pad.reshape(-1), dw.reshape(-1)
    for t in range(c_out * c_in * kh * kw):
        j = t % kw
        i = (t // kw) % kh
        c = (t // (kw * kh)) % c_in
        o = t // (kw * kh * c_in)
        acc = np.zeros(ow, dtype=dw.dtype)
        for b in range(n):
            ybase = (b * c_out + o) * oh * ow
            xbase = (b * c_in + c) * hp * wp + i * dil_h * wp + j * dil_w
            for p in range(oh):
                src = xbase + p * sh * wp
                dst = ybase + p * ow
                # dW[o, c, i, j] = Σ_{b,p,q} dy[b, o, p, q] · x_pad[b, c, p·sh + i·dh, q·sw + j·dw]
                for q in range(ow):
                    acc[q] += dyf[np.uintp(dst + q)] * xf[np.uintp(src + q * sw)]
        total = acc[0] * 0
        for q in range(ow):
            total += acc[q]
        dwf[t] = total


# The three direct kernels with the images split over ``threads`` Numba threads
# (one contiguous range each; see _numba_s1.py), the weight gradient's partial sums
# added in range order.

@numba.njit(cache=True, nogil=True, parallel=True)
def _conv_direct_threads(x_pad, w, bias, y, sh, sw, dil_h, dil_w, has_bias, threads):
    n = x_pad.shape[0]
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        _conv_direct(x_pad[a:b], w, bias, y[a:b], sh, sw, dil_h, dil_w, has_bias)


@numba.njit(cache=True, nogil=True, parallel=True)
def _conv_direct_adjoint_threads(dy, w, x_pad, sh, sw, dil_h, dil_w, threads):
    n = dy.shape[0]
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        _conv_direct_adjoint(dy[a:b], w, x_pad[a:b], sh, sw, dil_h, dil_w)


@numba.njit(cache=True, nogil=True, parallel=True)
def _conv_direct_wgrad_threads(dy, x_pad, dw, sh, sw, dil_h, dil_w, threads):
    n = dy.shape[0]
    dws = np.empty((threads,) + dw.shape, dw.dtype)
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        _conv_direct_wgrad(dy[a:b], x_pad[a:b], dws[t], sh, sw, dil_h, dil_w)
    add_in_order(dws, dw)


def conv_direct(x, weight, bias, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out, threads=1):
    """y = conv2d(x, W) + b (groups 1) into ``out`` (N, C_out, oh, ow), without columns;
    ``threads``: Numba threads to split the images over."""
    has_bias = bias is not None
    b = np.ascontiguousarray(bias) if has_bias else np.zeros(1, dtype=x.dtype)
    args = (_padded(x, pt, pb, pl, pr), np.ascontiguousarray(weight), b, out, sh, sw,
            dil_h, dil_w, has_bias)
    threads = team(min(threads, x.shape[0]))
    if threads > 1:
        _conv_direct_threads(*args, threads)
    else:
        _conv_direct(*args)
    return out


def conv_direct_adjoint(dy, weight, h, w, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out=None,
                        threads=1):
    """dx = conv2d's input gradient for dy (N, C_out, oh, ow): x of shape (N, C_in, h, w),
    into ``out`` when given (the padded sums are copied once, straight there)."""
    n, c_in = dy.shape[0], weight.shape[1]
    oh, ow = dy.shape[2], dy.shape[3]
    hp = max(h + pt + pb, (oh - 1) * sh + (weight.shape[2] - 1) * dil_h + 1)
    wp = max(w + pl + pr, (ow - 1) * sw + (weight.shape[3] - 1) * dil_w + 1)
    x_pad = np.empty((n, c_in, hp, wp), dtype=dy.dtype)
    args = (np.ascontiguousarray(dy), np.ascontiguousarray(weight), x_pad, sh, sw, dil_h,
            dil_w)
    threads = team(min(threads, n))
    if threads > 1:
        _conv_direct_adjoint_threads(*args, threads)
    else:
        _conv_direct_adjoint(*args)
    if out is None:
        return np.ascontiguousarray(x_pad[:, :, pt:pt + h, pl:pl + w])
    out[...] = x_pad[:, :, pt:pt + h, pl:pl + w]
    return out


def conv_direct_wgrad(dy, x, kh, kw, sh, sw, pt, pb, pl, pr, dil_h, dil_w, threads=1):
    """dW (C_out, C_in, kh, kw) = Σ_{n,p,q} dy · the window of x it saw."""
    dw = np.empty((dy.shape[1], x.shape[1], kh, kw), dtype=x.dtype)
    args = (np.ascontiguousarray(dy), _padded(x, pt, pb, pl, pr), dw, sh, sw, dil_h, dil_w)
    threads = team(min(threads, dy.shape[0]))
    if threads > 1:
        _conv_direct_wgrad_threads(*args, threads)
    else:
        _conv_direct_wgrad(*args)
    return dw


def channel_sums(dy):
    """Σ_{n,p,q} dy[n, c, p, q] per channel c (a bias gradient) of a C-contiguous
    float32/float64 dy, one vector sum per (image, channel) plane."""
    n, c = dy.shape[:2]
    return channel_sums_into(dy.reshape(-1), n, c, dy[0, 0].size, np.empty(c, dy.dtype))
