"""im2col / col2im as CuPy elementwise kernels (one GPU thread per output cell).

``col2im`` gathers: each thread owns one input pixel and sums the column
entries that read it, so the result is deterministic and needs no atomics.
Written against CuPy's documented ``ElementwiseKernel`` API.
"""

from __future__ import annotations

import cupy

__all__ = ["im2col", "col2im"]

_IM2COL = cupy.ElementwiseKernel(
    "raw T x, int32 c, int32 h, int32 w, int32 kh, int32 kw, int32 oh, int32 ow, "
    "int32 sh, int32 sw, int32 pt, int32 pl, int32 dil_h, int32 dil_w",
    "T cols",
    """
    // i indexes cols of shape (N, C, kh, kw, oh, ow), C-contiguous
    int q = i % ow;
    int p = (i / ow) % oh;
    int j = (i / (ow * oh)) % kw;
    int ki = (i / (ow * oh * kw)) % kh;
    int nc = i / (ow * oh * kw * kh);
    int row = p * sh - pt + ki * dil_h;
    int col = q * sw - pl + j * dil_w;
    if (row >= 0 && row < h && col >= 0 && col < w) {
        cols = x[(nc * h + row) * w + col];
    } else {
        cols = (T)0;
    }
    """,
    "minicae_im2col",
)

_COL2IM = cupy.ElementwiseKernel(
    "raw T cols, int32 h, int32 w, int32 kh, int32 kw, int32 oh, int32 ow, "
    "int32 sh, int32 sw, int32 pt, int32 pl, int32 dil_h, int32 dil_w",
    "T x",
    """
    // i indexes x of shape (N, C, h, w); gather every (ki, j, p, q) that read it
    int s = i % w;
    int r = (i / w) % h;
    int nc = i / (w * h);
    T acc = (T)0;
    for (int ki = 0; ki < kh; ++ki) {
        int y = r + pt - ki * dil_h;
        if (y < 0 || y % sh != 0) continue;
        int p = y / sh;
        if (p >= oh) continue;
        for (int j = 0; j < kw; ++j) {
            int z = s + pl - j * dil_w;
            if (z < 0 || z % sw != 0) continue;
            int q = z / sw;
            if (q >= ow) continue;
            acc += cols[(((nc * kh + ki) * kw + j) * oh + p) * ow + q];
        }
    }
    x = acc;
    """,
    "minicae_col2im",
)


def im2col(x, kh, kw, sh, sw, pt, pb, pl, pr, dil_h, dil_w):
    n, c, h, w = x.shape
    oh = (h + pt + pb - dil_h * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dil_w * (kw - 1) - 1) // sw + 1
    x = cupy.ascontiguousarray(x)
    cols = cupy.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    _IM2COL(x, c, h, w, kh, kw, oh, ow, sh, sw, pt, pl, dil_h, dil_w, cols)
    return cols


def col2im(cols, h, w, sh, sw, pt, pb, pl, pr, dil_h, dil_w):
    n, c, kh, kw, oh, ow = cols.shape
    cols = cupy.ascontiguousarray(cols)
    x = cupy.empty((n, c, h, w), dtype=cols.dtype)
    _COL2IM(cols, h, w, kh, kw, oh, ow, sh, sw, pt, pl, dil_h, dil_w, x)
    return x
