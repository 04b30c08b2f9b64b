r"""Max-pooling and nearest-neighbour upsampling, forward and backward."""

from __future__ import annotations

from .._validation import as_pair, check_positive_int
from ..errors import ShapeError
from ._common import active, check_input, check_same_dtype
from ._geometry import check_fits, conv_geometry
from .conv import col2im, im2col

__all__ = ["max_pool2d", "max_pool2d_backward", "upsample", "upsample_backward"]


def _pool_geometry(kernel_size, stride, padding, where):
    g = conv_geometry(kernel_size, kernel_size if stride is None else stride, padding,
                      1, 1, where=where, allow_modes=("valid",))
    if 2 * g.pt > g.kh or 2 * g.pl > g.kw:
        raise ValueError(f"{where}: padding must be at most half the kernel size, got "
                         f"padding {(g.pt, g.pl)} for kernel {(g.kh, g.kw)}.")
    return g


def _windows(x, g):
    """Windows of x padded with -inf: (N, C, kh*kw, oh, ow)."""
    xp = active().xp
    n, c, h, w = x.shape
    if g.pt or g.pl:
        x_pad = xp.full((n, c, h + g.pt + g.pb, w + g.pl + g.pr), -xp.inf, dtype=x.dtype)
        x_pad[:, :, g.pt:g.pt + h, g.pl:g.pl + w] = x
    else:
        x_pad = x
    unpadded = g._replace(pt=0, pb=0, pl=0, pr=0)
    oh, ow = unpadded.output_hw(*x_pad.shape[2:])
    return im2col(x_pad, unpadded, oh, ow).reshape(n, c, g.kh * g.kw, oh, ow)


def max_pool2d(x, kernel_size, stride=None, padding=0, *, return_indices=False):
    r"""Take the maximum over each window (padding counts as -inf).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), default ``kernel_size``
    padding : int or (int, int), at most half the kernel
    return_indices : bool
        Also return the argmax tap of each window (what backward needs).

    Notes
    -----
    .. math:: y_{n,c,p,q} = \max_{i,j} x^{pad}_{n,c,p s_h + i, q s_w + j}

    Ties route to the first maximum in row-major window order.
    Checked by tests/test_functional_pool.py.
    """
    where = "max_pool2d"
    check_input(x, where=where, ndim=4, shape_text="(N, C, H, W)")
    g = _pool_geometry(kernel_size, stride, padding, where)
    check_fits(g, x.shape[2], x.shape[3], where)
    windows = _windows(x, g)                        # (N, C, kh*kw, oh, ow)
    argmax = windows.argmax(axis=2)                 # first maximum on ties
    y = active().xp.take_along_axis(windows, argmax[:, :, None], axis=2)[:, :, 0]
    return (y, argmax) if return_indices else y


def max_pool2d_backward(dy, x, argmax, kernel_size, stride=None, padding=0):
    r"""Route each output gradient to the input pixel that was the maximum.

    Notes
    -----
    .. math:: \frac{\partial L}{\partial x_{n,c,r,s}} =
              \sum_{(p,q):\ \arg\max = (r,s)} dY_{n,c,p,q}

    Computed as col2im of a column array that is zero except at the argmax.
    """
    where = "max_pool2d_backward"
    check_input(x, where=where, ndim=4)
    g = _pool_geometry(kernel_size, stride, padding, where)
    xp = active().xp
    n, c, h, w = x.shape
    oh, ow = argmax.shape[2:]
    check_input(dy, where=where, name="dy", ndim=4)
    check_same_dtype(x, dy, where=where, names=("input", "dy"))
    if tuple(dy.shape) != (n, c, oh, ow):
        raise ShapeError(f"{where}: expected dy of shape {(n, c, oh, ow)}, got "
                         f"{tuple(dy.shape)}.")
    # Columns (N, C, kh*kw, oh, ow): dy at the argmax tap, 0 elsewhere.
    cols = xp.zeros((n, c, g.kh * g.kw, oh, ow), dtype=dy.dtype)
    xp.put_along_axis(cols, argmax[:, :, None], dy[:, :, None], axis=2)
    return col2im(cols.reshape(n, c, g.kh, g.kw, oh, ow), h, w, g)


def upsample(x, scale_factor=2):
    r"""Nearest-neighbour upsampling by an integer factor per axis.

    Notes
    -----
    .. math:: y_{n,c,r,s} = x_{n,c,\lfloor r/s_h \rfloor,\lfloor s/s_w \rfloor}
    """
    where = "upsample"
    check_input(x, where=where, ndim=4, shape_text="(N, C, H, W)")
    fh, fw = as_pair(scale_factor, where=where, name="scale_factor")
    return x.repeat(fh, axis=2).repeat(fw, axis=3)


def upsample_backward(dy, scale_factor=2):
    r"""Sum the gradient over each block: dx = Σ over the (s_h, s_w) copies.

    Notes
    -----
    .. math:: \frac{\partial L}{\partial x_{n,c,r,s}} =
              \sum_{a<s_h,\,b<s_w} dY_{n,c,r s_h + a, s s_w + b}
    """
    where = "upsample_backward"
    check_input(dy, where=where, name="dy", ndim=4)
    fh, fw = as_pair(scale_factor, where=where, name="scale_factor")
    n, c, h, w = dy.shape
    if h % fh or w % fw:
        raise ShapeError(f"{where}: expected dy height and width divisible by "
                         f"{(fh, fw)}, got {tuple(dy.shape)}.")
    check_positive_int(fh, where=where, name="scale_factor")
    return dy.reshape(n, c, h // fh, fh, w // fw, fw).sum(axis=(3, 5))
