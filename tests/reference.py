"""Slow, obvious references for the convolution and pooling ops.

Written from the definitions with plain nested loops, on NumPy float64 host
arrays, and deliberately independent of ``minicae.functional._geometry``:
padding modes are resolved here and output sizes are found by counting the
window positions that fit, so a bug shared with the library cannot hide.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pair", "resolve_padding", "conv2d_ref", "conv_transpose2d_ref",
           "max_pool2d_ref", "upsample_ref", "count_positions"]


def pair(value):
    """An int or a 2-sequence as a tuple of two ints."""
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def resolve_padding(padding, kernel, dilation):
    """(pt, pb, pl, pr) for an int, a pair, 'valid', 'same' or 'full'."""
    (kh, kw), (dh, dw) = pair(kernel), pair(dilation)
    reach_h, reach_w = dh * (kh - 1), dw * (kw - 1)    # rows/cols beyond the first tap
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "full":
        return reach_h, reach_h, reach_w, reach_w
    if padding == "same":
        # the odd extra row/column goes to the bottom/right
        top, left = reach_h // 2, reach_w // 2
        return top, reach_h - top, left, reach_w - left
    ph, pw = pair(padding)
    return ph, ph, pw, pw


def count_positions(padded_size, span, stride):
    """Number of window starts 0, s, 2s, ... whose span fits in ``padded_size``."""
    count = 0
    start = 0
    while start + span <= padded_size:
        count += 1
        start += stride
    return count


def _padded(x, pt, pb, pl, pr, fill):
    n, c, h, w = x.shape
    out = np.full((n, c, h + pt + pb, w + pl + pr), fill, dtype=np.float64)
    for a in range(n):
        for b in range(c):
            for r in range(h):
                for s in range(w):
                    out[a, b, r + pt, s + pl] = x[a, b, r, s]
    return out


def conv2d_ref(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1):
    """y[n, o, p, q] = b[o] + Σ_{c, i, j} W[o, c, i, j] · x_pad[n, g*cg + c, p*sh + i*dh, ...]."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    n, c_in, _, _ = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    pt, pb, pl, pr = (padding if isinstance(padding, tuple) and len(padding) == 4
                      else resolve_padding(padding, (kh, kw), (dh, dw)))
    x_pad = _padded(x, pt, pb, pl, pr, 0.0)
    oh = count_positions(x_pad.shape[2], dh * (kh - 1) + 1, sh)
    ow = count_positions(x_pad.shape[3], dw * (kw - 1) + 1, sw)
    out_per_group = c_out // groups
    y = np.zeros((n, c_out, oh, ow))
    for a in range(n):
        for o in range(c_out):
            group = o // out_per_group
            for p in range(oh):
                for q in range(ow):
                    total = 0.0 if bias is None else float(bias[o])
                    for c in range(c_per_group):
                        for i in range(kh):
                            for j in range(kw):
                                total += (weight[o, c, i, j]
                                          * x_pad[a, group * c_per_group + c,
                                                  p * sh + i * dh, q * sw + j * dw])
                    y[a, o, p, q] = total
    return y


def conv_transpose2d_ref(x, weight, bias=None, *, stride=1, padding=0, output_padding=0,
                         dilation=1, groups=1):
    """Scatter definition: every input pixel adds ``x · W`` into the output.

    ``full[n, g*og + o, r*sh + i*dh, s*sw + j*dw] += x[n, ci, r, s] · W[ci, o, i, j]``
    on an uncropped canvas, extended by ``output_padding`` rows/columns at the
    bottom/right, then ``padding`` rows/columns are cropped from every side.
    """
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    n, c_in, h, w = x.shape
    _, out_per_group, kh, kw = weight.shape
    c_out = out_per_group * groups
    in_per_group = c_in // groups
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    ph, pw = (0, 0) if padding == "valid" else pair(padding)
    oph, opw = pair(output_padding)
    # the canvas reaches one past the last tap that any input pixel touches
    full_h = max(r * sh + i * dh for r in range(h) for i in range(kh)) + 1 + oph
    full_w = max(s * sw + j * dw for s in range(w) for j in range(kw)) + 1 + opw
    canvas = np.zeros((n, c_out, full_h, full_w))
    for a in range(n):
        for ci in range(c_in):
            group = ci // in_per_group
            for o in range(out_per_group):
                for r in range(h):
                    for s in range(w):
                        for i in range(kh):
                            for j in range(kw):
                                canvas[a, group * out_per_group + o,
                                       r * sh + i * dh, s * sw + j * dw] += (
                                    x[a, ci, r, s] * weight[ci, o, i, j])
    y = canvas[:, :, ph:full_h - ph, pw:full_w - pw].copy()
    if bias is not None:
        for o in range(c_out):
            y[:, o] += bias[o]
    return y


def max_pool2d_ref(x, kernel_size, stride=None, padding=0):
    """Max over each window of the -inf padded input; ties go to the first maximum.

    Returns ``(y, where)`` with ``where[n, c, p, q] = (row, col)`` the input
    pixel (unpadded coordinates) that holds the maximum.
    """
    x = np.asarray(x, dtype=np.float64)
    kh, kw = pair(kernel_size)
    sh, sw = pair(kernel_size if stride is None else stride)
    ph, pw = pair(padding)
    x_pad = _padded(x, ph, ph, pw, pw, -np.inf)
    n, c = x.shape[:2]
    oh = count_positions(x_pad.shape[2], kh, sh)
    ow = count_positions(x_pad.shape[3], kw, sw)
    y = np.zeros((n, c, oh, ow))
    where = np.zeros((n, c, oh, ow, 2), dtype=np.int64)
    for a in range(n):
        for b in range(c):
            for p in range(oh):
                for q in range(ow):
                    best, best_at = -np.inf, None
                    for i in range(kh):
                        for j in range(kw):
                            value = x_pad[a, b, p * sh + i, q * sw + j]
                            if best_at is None or value > best:    # strict: first max wins
                                best, best_at = value, (p * sh + i - ph, q * sw + j - pw)
                    y[a, b, p, q] = best
                    where[a, b, p, q] = best_at
    return y, where


def upsample_ref(x, scale_factor=2):
    """y[n, c, r, s] = x[n, c, r // fh, s // fw]."""
    x = np.asarray(x, dtype=np.float64)
    fh, fw = pair(scale_factor)
    n, c, h, w = x.shape
    y = np.zeros((n, c, h * fh, w * fw))
    for r in range(h * fh):
        for s in range(w * fw):
            y[:, :, r, s] = x[:, :, r // fh, s // fw]
    return y
