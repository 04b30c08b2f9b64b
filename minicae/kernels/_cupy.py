"""im2col_kn / col2im_kn as CuPy elementwise kernels (one GPU thread per output cell).

``col2im_kn`` gathers: each thread owns one input pixel and sums the column
entries that read it, so the result is deterministic and needs no atomics.
Written against CuPy's documented ``ElementwiseKernel`` API.
"""

from __future__ import annotations

import cupy

__all__ = ["im2col_kn", "col2im_kn"]

_IM2COL_KN = cupy.ElementwiseKernel(
    "raw T x, int32 n_img, int32 c, int32 h, int32 w, int32 kh, int32 kw, int32 oh, "
    "int32 ow, int32 sh, int32 sw, int32 pt, int32 pl, int32 dil_h, int32 dil_w",
    "T cols",
    """
    // i indexes cols of shape (C, kh, kw, N, oh, ow), C-contiguous
    int q = i % ow;
    int p = (i / ow) % oh;
    int b = (i / (ow * oh)) % n_img;
    int j = (i / (ow * oh * n_img)) % kw;
    int ki = (i / (ow * oh * n_img * kw)) % kh;
    int ch = i / (ow * oh * n_img * kw * kh);
    int row = p * sh - pt + ki * dil_h;
    int col = q * sw - pl + j * dil_w;
    if (row >= 0 && row < h && col >= 0 && col < w) {
        cols = x[((b * c + ch) * h + row) * w + col];
    } else {
        cols = (T)0;
    }
    """,
    "minicae_im2col_kn",
)

_COL2IM_KN = cupy.ElementwiseKernel(
    "raw T cols, int32 n_img, int32 c, int32 h, int32 w, int32 kh, int32 kw, int32 oh, "
    "int32 ow, int32 sh, int32 sw, int32 pt, int32 pl, int32 dil_h, int32 dil_w",
    "T x",
    """
    // i indexes x of shape (N, C, h, w); gather every (ki, j, p, q) that read it,
    // in a fixed order: deterministic, no atomics
    int s = i % w;
    int r = (i / w) % h;
    int ch = (i / (w * h)) % c;
    int b = i / (w * h * c);
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
            acc += cols[((((ch * kh + ki) * kw + j) * n_img + b) * oh + p) * ow + q];
        }
    }
    x = acc;
    """,
    "minicae_col2im_kn",
)


def _buffer(out, shape, dtype):
    if out is None:
        return cupy.empty(shape, dtype=dtype)
    assert out.flags.c_contiguous and out.dtype == dtype   # a reshape must be a view
    return out.reshape(shape)


def im2col_kn(x, kh, kw, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out=None):
    """im2col in GEMM layout (C, kh, kw, N, oh, ow); see kernels/_numpy.py."""
    n, c, h, w = x.shape
    oh = (h + pt + pb - dil_h * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dil_w * (kw - 1) - 1) // sw + 1
    x = cupy.ascontiguousarray(x)
    cols = _buffer(out, (c, kh, kw, n, oh, ow), x.dtype)
    _IM2COL_KN(x, n, c, h, w, kh, kw, oh, ow, sh, sw, pt, pl, dil_h, dil_w, cols)
    return cols


def col2im_kn(cols, h, w, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out=None):
    """The adjoint of :func:`im2col_kn`: x of shape (N, C, h, w)."""
    c, kh, kw, n, oh, ow = cols.shape
    cols = cupy.ascontiguousarray(cols)
    x = _buffer(out, (n, c, h, w), cols.dtype)
    _COL2IM_KN(cols, n, c, h, w, kh, kw, oh, ow, sh, sw, pt, pl, dil_h, dil_w, x)
    return x
