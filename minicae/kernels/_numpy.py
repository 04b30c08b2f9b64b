"""im2col_kn / col2im_kn in plain NumPy: stride tricks, loops over kernel taps only."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = ["im2col_kn", "col2im_kn"]

# Columns are built and consumed 4 MiB at a time (functional/conv.py chunks
# the batch): smaller chunks measured no faster here, since the strided copy
# re-pads every chunk (benchmarks/history.md, round 2).
CHUNK_BYTES = 4 * 2**20


def _out_size(size, k, s, p0, p1, dil):
    return (size + p0 + p1 - dil * (k - 1) - 1) // s + 1


def _fill(out, shape, dtype):
    """``out`` reshaped to ``shape`` when given (a reused work buffer), else new."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    assert out.flags.c_contiguous and out.dtype == dtype   # a reshape must be a view
    return out.reshape(shape)


def im2col_kn(x, kh, kw, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out=None):
    """im2col in GEMM layout: cols of shape (C, kh, kw, N, oh, ow).

    ``cols[c, i, j, n, p, q] = x_pad[n, c, p*sh + i*dil_h, q*sw + j*dil_w]``:
    reshaped to (C*kh*kw, N*oh*ow) it is the right operand of one matrix
    product for the whole batch. ``out`` (any array of that size) is filled
    instead of allocating.
    """
    n, c, h, w = x.shape
    oh = _out_size(h, kh, sh, pt, pb, dil_h)
    ow = _out_size(w, kw, sw, pl, pr, dil_w)
    if pt or pb or pl or pr:
        x_pad = np.zeros((n, c, h + pt + pb, w + pl + pr), dtype=x.dtype)
        x_pad[:, :, pt:pt + h, pl:pl + w] = x
    else:
        x_pad = x
    s_n, s_c, s_h, s_w = x_pad.strides
    view = as_strided(x_pad, shape=(c, kh, kw, n, oh, ow),
                      strides=(s_c, dil_h * s_h, dil_w * s_w, s_n, sh * s_h, sw * s_w),
                      writeable=False)
    cols = _fill(out, (c, kh, kw, n, oh, ow), x.dtype)
    cols[...] = view                   # one strided copy makes every column
    return cols


def col2im_kn(cols, h, w, sh, sw, pt, pb, pl, pr, dil_h, dil_w, out=None):
    """The adjoint of :func:`im2col_kn`: x of shape (N, C, h, w)."""
    c, kh, kw, n, oh, ow = cols.shape
    hp = max(h + pt + pb, (oh - 1) * sh + (kh - 1) * dil_h + 1)
    wp = max(w + pl + pr, (ow - 1) * sw + (kw - 1) * dil_w + 1)
    # Accumulate in the columns' own (C, N) order: each tap adds one strided slab.
    x_pad = np.zeros((c, n, hp, wp), dtype=cols.dtype)
    for i in range(kh):
        r0 = i * dil_h
        for j in range(kw):
            c0 = j * dil_w
            # x_pad[p*sh + i*dil_h, q*sw + j*dil_w] += cols[i, j, p, q]
            x_pad[:, :, r0:r0 + sh * (oh - 1) + 1:sh, c0:c0 + sw * (ow - 1) + 1:sw] += \
                cols[:, i, j]
    x = _fill(out, (n, c, h, w), cols.dtype)
    x[...] = x_pad[:, :, pt:pt + h, pl:pl + w].transpose(1, 0, 2, 3)
    return x
