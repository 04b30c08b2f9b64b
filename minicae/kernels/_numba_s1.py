"""Direct convolution at stride 1 with explicit SIMD vectors (Numba): the layers
with several input and output channels, where im2col + GEMM spends as long
copying columns as multiplying (16->16 and 64->64 3x3 convolutions).

Forward, register-blocked. One output row, ``NV·V`` columns wide (V lanes a
vector, NV = 2 vectors where the CPU has 32 vector registers, 1 where it has
16), for ``B = 8`` output channels at once is held in 8·NV vector
accumulators; every tap (i, j) of every input channel c contributes

    acc[o][v] += W[o, c, i, j] · x[c, r - pt + i·dh, q + v·V - pl + j·dw : +V]

one masked vector load of x (the lanes that fall in the padding or past the
row are not read, they count as 0) and one broadcast weight per output
channel: NV loads and 8 broadcasts for 8·NV FMAs, so the loop runs at the FMA
units' rate instead of the load ports'. No columns are built.

Input gradient. The adjoint of a stride-1 convolution is the same
convolution of dY with the kernel flipped and its channels swapped,

    dx[c, r, q] = Σ_{o,i,j} W[o, c, kh-1-i, kw-1-j] · dY_pad'[o, r + i·dh, q + j·dw]

with padding pt' = dh·(kh-1) - pt, pl' = dw·(kw-1) - pl: the forward kernel
runs it on re-packed weights.

Weight gradient. dW[o, c, i, j] = Σ_{n,r,q} dY[n, o, r, q] · x[n, c, r - pt + i·dh,
q - pl + j·dw]: for BW output channels (8 with 32 registers, 4 with 16) and 3
taps j of one row i of the kernel, 3·BW vector accumulators; per vector of
dY's row, BW loads of dY and 3 masked loads of x serve 3·BW FMAs. The
accumulators live in a scratch array between images (one load and store each
per image and channel pair), and their lanes are summed once at the end.

Derivation and checks: docs/maths.md, "Stride 1 without columns";
tests/test_kernels_fast.py.
"""

from __future__ import annotations

import numba
import numpy as np

from ._numba_ranges import (OFF, add_in_order, channel_sums_into, copy_into, image_range,
                             masked_range, team)
from ._simd import VECTOR_REGISTERS, lanes, vfma, vload, vrelu, vsplat, vstore, vsum

__all__ = ["conv_s1", "conv_s1_adjoint", "conv_s1_backward"]

# Blocks sized to the vector registers (AVX-512 and NEON have 32, AVX2 and SSE 16):
# the accumulators plus the loads they wait on must all fit, or each spills per FMA.
_B = 8      # output channels per forward block
_NV = 2 if VECTOR_REGISTERS >= 32 else 1   # row vectors per forward block (8 or 16 acc.)
_BW = 8 if VECTOR_REGISTERS >= 32 else 4   # output channels per weight-gradient block
_JW = 3     # kernel columns per weight-gradient block (_BW x 3 accumulators)
_SCRATCH_BYTES = 4 * 2**20   # the weight gradient's accumulators kept between images


@numba.njit(nogil=True, cache=True)
def _pack(w, flip):
    """W (C_out, C_in, kh, kw) as blocks (C_out/B, C_in, kh, kw, B), zero-padded to
    whole blocks; ``flip``: the adjoint's kernel, W[c, o, kh-1-i, kw-1-j] for
    output channel c and input channel o."""
    a, b, kh, kw = w.shape
    c_out, c_in = (b, a) if flip else (a, b)
    blocks = (c_out + _B - 1) // _B
    packed = np.zeros(blocks * c_in * kh * kw * _B, w.dtype)
    for blk in range(blocks):                   # writes in order
        for c in range(c_in):
            for i in range(kh):
                for j in range(kw):
                    for o in range(blk * _B, min(c_out, (blk + 1) * _B)):
                        v = w[c, o, kh - 1 - i, kw - 1 - j] if flip else w[o, c, i, j]
                        packed[(((blk * c_in + c) * kh + i) * kw + j) * _B + o % _B] = v
    return packed


@numba.njit(inline="always")
def _tap2(xf, packed, k, x0, x1, a, b):
    """a, b += W · x0, W · x1 with W = packed[k] broadcast (one output channel);
    b only with two row vectors a block."""
    s = vsplat(xf, packed[k])
    if _NV == 1:
        return vfma(s, x0, a), b
    return vfma(s, x0, a), vfma(s, x1, b)


@numba.njit(inline="always")
def _store(yf, at, first, second, v, hi0, hi1, live):
    """One output row block of two vectors (``hi0``/``hi1`` lanes), if ``live``."""
    if live:
        vstore(yf, at, first, 0, hi0)
        if _NV == 2:
            vstore(yf, at + v, second, 0, hi1)


@numba.njit(nogil=True, cache=True)
def _forward(x, packed, c_out, kh, kw, bias, pt, pl, dh, dw, relu, y):
    """y = W ⋆ x (+ b, then max(·, 0)) at stride 1 from ``_pack``'s blocks."""
    n, c_in, h, wd = x.shape
    oh, ow = y.shape[2], y.shape[3]
    xf = x.ravel()
    yf = y.reshape(-1)
    v = lanes(xf)
    blocks = (c_out + _B - 1) // _B
    b = np.zeros(blocks * _B, x.dtype)
    if bias is not None:
        copy_into(bias, b[:c_out])
    taps = kh * kw
    plane = oh * ow
    for img in range(n):
        for blk in range(blocks):
            o = blk * _B
            last = min(c_out - o, _B)
            for r in range(oh):
                for q in range(0, ow, _NV * v):
                    width = min(ow - q, _NV * v)
                    a0 = vsplat(xf, b[o])
                    a1 = vsplat(xf, b[o + 1])
                    a2 = vsplat(xf, b[o + 2])
                    a3 = vsplat(xf, b[o + 3])
                    a4 = vsplat(xf, b[o + 4])
                    a5 = vsplat(xf, b[o + 5])
                    a6 = vsplat(xf, b[o + 6])
                    a7 = vsplat(xf, b[o + 7])
                    b0, b1, b2, b3, b4, b5, b6, b7 = a0, a1, a2, a3, a4, a5, a6, a7
                    for j in range(kw):
                        col = q - pl + j * dw      # input column under lane 0
                        lo0, hi0 = -col, min(wd - col, width)
                        lo1, hi1 = lo0 - v, hi0 - v
                        for c in range(c_in):
                            for i in range(kh):
                                rr = r - pt + i * dh
                                if rr < 0 or rr >= h:
                                    continue
                                at = ((img * c_in + c) * h + rr) * wd + col
                                x0 = vload(xf, at, lo0, hi0)
                                x1 = vload(xf, at + v, lo1, hi1) if _NV == 2 else x0
                                k = ((blk * c_in + c) * taps + i * kw + j) * _B
                                # output channel o+u: 2 FMAs with its broadcast weight
                                a0, b0 = _tap2(xf, packed, k, x0, x1, a0, b0)
                                a1, b1 = _tap2(xf, packed, k + 1, x0, x1, a1, b1)
                                a2, b2 = _tap2(xf, packed, k + 2, x0, x1, a2, b2)
                                a3, b3 = _tap2(xf, packed, k + 3, x0, x1, a3, b3)
                                a4, b4 = _tap2(xf, packed, k + 4, x0, x1, a4, b4)
                                a5, b5 = _tap2(xf, packed, k + 5, x0, x1, a5, b5)
                                a6, b6 = _tap2(xf, packed, k + 6, x0, x1, a6, b6)
                                a7, b7 = _tap2(xf, packed, k + 7, x0, x1, a7, b7)
                    if relu:
                        a0, a1, a2, a3 = vrelu(a0), vrelu(a1), vrelu(a2), vrelu(a3)
                        a4, a5, a6, a7 = vrelu(a4), vrelu(a5), vrelu(a6), vrelu(a7)
                        b0, b1, b2, b3 = vrelu(b0), vrelu(b1), vrelu(b2), vrelu(b3)
                        b4, b5, b6, b7 = vrelu(b4), vrelu(b5), vrelu(b6), vrelu(b7)
                    at = ((img * c_out + o) * oh + r) * ow + q
                    hi0, hi1 = min(width, v), width - v
                    # channels past c_out (a partial block) store nothing
                    _store(yf, at, a0, b0, v, hi0, hi1, last > 0)
                    _store(yf, at + plane, a1, b1, v, hi0, hi1, last > 1)
                    _store(yf, at + 2 * plane, a2, b2, v, hi0, hi1, last > 2)
                    _store(yf, at + 3 * plane, a3, b3, v, hi0, hi1, last > 3)
                    _store(yf, at + 4 * plane, a4, b4, v, hi0, hi1, last > 4)
                    _store(yf, at + 5 * plane, a5, b5, v, hi0, hi1, last > 5)
                    _store(yf, at + 6 * plane, a6, b6, v, hi0, hi1, last > 6)
                    _store(yf, at + 7 * plane, a7, b7, v, hi0, hi1, last > 7)
    return y


@numba.njit(inline="always")
def _fma3(d, x0, x1, x2, a0, a1, a2):
    """One output channel's row against three taps: a_j += d · x_j."""
    return vfma(d, x0, a0), vfma(d, x1, a1), vfma(d, x2, a2)


@numba.njit(inline="always")
def _load3(acc, at, v):
    return vload(acc, at, 0, v), vload(acc, at + v, 0, v), vload(acc, at + 2 * v, 0, v)


@numba.njit(inline="always")
def _store3(acc, at, v, a0, a1, a2):
    vstore(acc, at, a0, 0, v)
    vstore(acc, at + v, a1, 0, v)
    vstore(acc, at + 2 * v, a2, 0, v)


@numba.njit(nogil=True, cache=True)
def _wgrad(dy, x, kh, kw, pt, pl, dh, dw, scratch):
    """dW (C_out, C_in, kh, kw) = Σ_n dY ⋆ x at stride 1 (see the module docstring)."""
    n, c_out, oh, ow = dy.shape
    c_in, h, wd = x.shape[1], x.shape[2], x.shape[3]
    xf = x.ravel()
    df = dy.ravel()
    v = lanes(xf)
    blocks = (c_out + _BW - 1) // _BW
    jblocks = (kw + _JW - 1) // _JW
    # 24 accumulators of v lanes per (block, c, i, j-block), kept between images;
    # as many blocks at a time as fit ``scratch`` bytes (all of them up to ~100 channels)
    span = _BW * _JW * v
    per_block = c_in * kh * jblocks * span
    group = max(1, scratch // (per_block * xf.itemsize))
    acc = np.empty(min(blocks, group) * per_block, x.dtype)
    grad = np.zeros((c_out, c_in, kh, kw), x.dtype)
    plane = oh * ow
    for b0 in range(0, blocks, group):
        acc[:] = 0
        _wgrad_blocks(df, xf, acc, b0, min(blocks, b0 + group), n, c_out, c_in, h, wd, oh,
                      ow, kh, kw, pt, pl, dh, dw, v, jblocks, span, plane)
        for o in range(b0 * _BW, min(c_out, (b0 + group) * _BW)):
            for c in range(c_in):
                for i in range(kh):
                    for j in range(kw):
                        at = ((((((o // _BW) - b0) * c_in + c) * kh + i) * jblocks
                               + j // _JW) * _BW + o % _BW) * _JW + j % _JW
                        grad[o, c, i, j] = vsum(vload(acc, at * v, 0, v))
    return grad


@numba.njit(inline="always")
def _wgrad_blocks(df, xf, acc, b0, b1, n, c_out, c_in, h, wd, oh, ow, kh, kw, pt, pl, dh,
                  dw, v, jblocks, span, plane):
    """The accumulators of output-channel blocks b0..b1-1 over every image."""
    for img in range(n):
        for blk in range(b0, b1):
            o = blk * _BW
            last = min(c_out - o, _BW)
            for c in range(c_in):
                for i in range(kh):
                    r0 = max(0, pt - i * dh)               # output rows whose
                    r1 = min(oh, h + pt - i * dh)          # input row exists
                    for jb in range(jblocks):
                        at = ((((blk - b0) * c_in + c) * kh + i) * jblocks + jb) * span
                        a00, a01, a02 = _load3(acc, at, v)
                        a10, a11, a12 = _load3(acc, at + 3 * v, v)
                        a20, a21, a22 = _load3(acc, at + 6 * v, v)
                        a30, a31, a32 = _load3(acc, at + 9 * v, v)
                        if _BW == 8:
                            a40, a41, a42 = _load3(acc, at + 12 * v, v)
                            a50, a51, a52 = _load3(acc, at + 15 * v, v)
                            a60, a61, a62 = _load3(acc, at + 18 * v, v)
                            a70, a71, a72 = _load3(acc, at + 21 * v, v)
                        else:       # never used: 4 channels a block
                            a40 = a41 = a42 = a50 = a51 = a52 = a00
                            a60 = a61 = a62 = a70 = a71 = a72 = a00
                        j0 = jb * _JW
                        for q in range(0, ow, v):
                            width = min(ow - q, v)
                            # lanes of x under each tap column: inside the row and
                            # under an output lane; a tap past kw reads nothing
                            col0 = q - pl + j0 * dw
                            col1 = col0 + dw
                            col2 = col1 + dw
                            hi0 = min(wd - col0, width)
                            hi1 = min(wd - col1, width) if j0 + 1 < kw else 0
                            hi2 = min(wd - col2, width) if j0 + 2 < kw else 0
                            w1 = width if last > 1 else 0
                            w2 = width if last > 2 else 0
                            w3 = width if last > 3 else 0
                            w4 = width if last > 4 else 0
                            w5 = width if last > 5 else 0
                            w6 = width if last > 6 else 0
                            w7 = width if last > 7 else 0
                            for r in range(r0, r1):
                                d = ((img * c_out + o) * oh + r) * ow + q
                                t = ((img * c_in + c) * h + r - pt + i * dh) * wd
                                x0 = vload(xf, t + col0, -col0, hi0)
                                x1 = vload(xf, t + col1, -col1, hi1)
                                x2 = vload(xf, t + col2, -col2, hi2)
                                a00, a01, a02 = _fma3(vload(df, d, 0, width), x0, x1, x2,
                                                      a00, a01, a02)
                                a10, a11, a12 = _fma3(vload(df, d + plane, 0, w1), x0, x1,
                                                      x2, a10, a11, a12)
                                a20, a21, a22 = _fma3(vload(df, d + 2 * plane, 0, w2), x0,
                                                      x1, x2, a20, a21, a22)
                                a30, a31, a32 = _fma3(vload(df, d + 3 * plane, 0, w3), x0,
                                                      x1, x2, a30, a31, a32)
                                if _BW == 8:
                                    a40, a41, a42 = _fma3(vload(df, d + 4 * plane, 0, w4),
                                                          x0, x1, x2, a40, a41, a42)
                                    a50, a51, a52 = _fma3(vload(df, d + 5 * plane, 0, w5),
                                                          x0, x1, x2, a50, a51, a52)
                                    a60, a61, a62 = _fma3(vload(df, d + 6 * plane, 0, w6),
                                                          x0, x1, x2, a60, a61, a62)
                                    a70, a71, a72 = _fma3(vload(df, d + 7 * plane, 0, w7),
                                                          x0, x1, x2, a70, a71, a72)
                        _store3(acc, at, v, a00, a01, a02)
                        _store3(acc, at + 3 * v, v, a10, a11, a12)
                        _store3(acc, at + 6 * v, v, a20, a21, a22)
                        _store3(acc, at + 9 * v, v, a30, a31, a32)
                        if _BW == 8:
                            _store3(acc, at + 12 * v, v, a40, a41, a42)
                            _store3(acc, at + 15 * v, v, a50, a51, a52)
                            _store3(acc, at + 18 * v, v, a60, a61, a62)
                            _store3(acc, at + 21 * v, v, a70, a71, a72)


# The images split over ``threads`` Numba threads (one contiguous range each, a
# prange over the ranges): one fork-join of ~2 us where a hand-off to a Python
# thread costs ~75 (benchmarks/bench_handoff.py). The weights are packed inside
# the drivers (a call of _pack from Python costs ~3 us).

@numba.njit(nogil=True, cache=True, parallel=True)
def _forward_threads(x, weight, flip, bias, pt, pl, dh, dw, relu, y, threads):
    n = x.shape[0]
    packed = _pack(weight, flip)
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        _forward(x[a:b], packed, y.shape[1], weight.shape[2], weight.shape[3], bias, pt, pl,
                 dh, dw, relu, y[a:b])
    return y


# A whole backward in one parallel region, as _numba_cv's: each thread masks dY on
# its images, runs the input gradient (the forward kernel: the flipped weights for
# a convolution, the weights for a transposed one) and its partial dW and db; the
# partial sums are added in range order. ``transposed``: dW = Σ x ⋆ dY (the
# weight gradient with x in dY's place), else Σ dY ⋆ x.
@numba.njit(nogil=True, cache=True, parallel=True)
def _backward_threads(dy, relu_out, x, weight, transposed, pt, pl, dh, dw, dx, scratch,
                      threads):
    n, c_out = dy.shape[:2]
    kh, kw = weight.shape[2], weight.shape[3]
    # the input gradient's padding: the adjoint's of a convolution, the layer's own
    # for a transposed one (whose input gradient is the convolution)
    fpt, fpl = (pt, pl) if transposed else (dh * (kh - 1) - pt, dw * (kw - 1) - pl)
    packed = _pack(weight if dx.shape[0] == n else weight[:0], not transposed)
    no_bias = np.zeros(x.shape[1], x.dtype)     # zeros and OFF, not None and False:
    dws = np.empty((threads,) + weight.shape, x.dtype)    # _forward's own types
    dbs = np.empty((threads, c_out), x.dtype)
    for t in numba.prange(threads):
        a, b = image_range(t, n, threads)
        d = masked_range(dy, relu_out, a, b)
        if dx.shape[0] == n:
            _forward(d, packed, x.shape[1], kh, kw, no_bias, fpt, fpl, dh, dw, OFF, dx[a:b])
        if transposed:
            copy_into(_wgrad(x[a:b], d, kh, kw, pt, pl, dh, dw, scratch), dws[t])
        else:
            copy_into(_wgrad(d, x[a:b], kh, kw, pt, pl, dh, dw, scratch), dws[t])
        channel_sums_into(d.reshape(-1), b - a, c_out, d.shape[2] * d.shape[3], dbs[t])
    return (add_in_order(dws, np.empty(weight.shape, x.dtype)),
            add_in_order(dbs, np.empty(c_out, x.dtype)))


def conv_s1(x, weight, bias, pt, pl, dil_h, dil_w, out, relu=False, threads=1):
    """out = W ⋆ x (+ b, then max(·, 0)) at stride 1, groups 1; ``out`` (N, C_out,
    oh, ow) fixes the output size (so the bottom and right padding)."""
    return _forward_threads(x, weight, False, bias, pt, pl, dil_h, dil_w, relu, out,
                            team(min(threads, x.shape[0])))


def conv_s1_adjoint(dy, weight, pt, pl, dil_h, dil_w, out, bias=None, relu=False,
                    threads=1):
    """out = the transposed convolution of dY at stride 1 (the input gradient of
    ``conv_s1``), (+ b, then max(·, 0)): ``out`` (N, C_in, h, w)."""
    _, _, kh, kw = weight.shape
    return _forward_threads(dy, weight, True, bias, dil_h * (kh - 1) - pt,
                            dil_w * (kw - 1) - pl, dil_h, dil_w, relu, out,
                            team(min(threads, dy.shape[0])))


def conv_s1_backward(dy, x, weight, pt, pl, dil_h, dil_w, relu_out=None, dx=None,
                     threads=1, transposed=False):
    """(dW, db) of ``conv_s1`` (``transposed``: of ``conv_s1_adjoint``, W of the same
    shape) from dY, first masked by [relu_out > 0] when a fused ReLU's output is
    given, and the input gradient into ``dx`` when given; the images split over
    ``threads`` Numba threads in one parallel region."""
    c = np.ascontiguousarray            # masked_range reshapes dY's images flat
    none = np.empty((0,) + dy.shape[1:], dy.dtype)
    return _backward_threads(c(dy), none if relu_out is None else c(relu_out), c(x),
                             c(weight), transposed, pt, pl, dil_h, dil_w,
                             np.empty((0,) + x.shape[1:], x.dtype) if dx is None else dx,
                             _SCRATCH_BYTES, team(min(threads, dy.shape[0])))
