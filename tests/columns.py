"""The reference's im2col/col2im pair (functional/conv.py) in the kernels' signature and
GEMM layout (C, kh, kw, N, oh, ow), for the tests of the column kernels."""

from __future__ import annotations

from minicae.functional import ConvGeometry
from minicae.functional import conv as C


def im2col_kn(x, kh, kw, sh, sw, pt, pb, pl, pr, dil_h, dil_w):
    g = ConvGeometry(kh, kw, sh, sw, pt, pb, pl, pr, dil_h, dil_w, 1)
    oh, ow = g.output_hw(*x.shape[2:])
    return C.im2col(x, g, oh, ow).transpose(1, 2, 3, 0, 4, 5)


def col2im_kn(cols, h, w, sh, sw, pt, pb, pl, pr, dil_h, dil_w):
    kh, kw = cols.shape[1:3]
    g = ConvGeometry(kh, kw, sh, sw, pt, pb, pl, pr, dil_h, dil_w, 1)
    return C.col2im(cols.transpose(3, 0, 1, 2, 4, 5), h, w, g)
