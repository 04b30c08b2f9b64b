r"""2-D convolution and transposed convolution, forward and backward.

Notation: ``n`` batch, ``c_in``/``c_out`` channels, ``g`` groups,
``kh``/``kw`` kernel, ``oh``/``ow`` output size, ``K = (c_in/g)*kh*kw`` the
length of one column, ``P = oh*ow`` the number of output pixels.

Everything here is built from three products on one im2col/col2im pair:

* ``_correlate``   y  = W · im2col(x)                (the convolution)
* ``_correlate_t`` x' = col2im(Wᵀ · y)               (its adjoint, the
  transposed convolution)
* ``_weight_grad`` dW = Σ_n dY · im2col(x)ᵀ

``conv2d_backward`` takes its input gradient from ``_correlate_t`` and
``conv_transpose2d_backward`` takes its input gradient from ``_correlate``,
so the transposed convolution is the adjoint of the convolution by
construction, not by a second copy of the index maths.

The columns of a batch are built in chunks of images so that they never take
more than :func:`get_workspace_limit` bytes (results are identical).
"""

from __future__ import annotations

from .._validation import as_pair, check_positive_int
from ..errors import ShapeError
from ._common import active, check_input, check_same_dtype
from ._geometry import (ConvGeometry, check_fits, conv_geometry,
                        conv_transpose_output_size)

__all__ = ["conv2d", "conv2d_backward", "conv_transpose2d",
           "conv_transpose2d_backward", "set_workspace_limit", "get_workspace_limit"]

_WORKSPACE_LIMIT = [256 * 2**20]


def set_workspace_limit(nbytes):
    """Bound the im2col columns of one call to ``nbytes`` (default 256 MiB).

    A batch whose columns would be larger is processed in chunks of images;
    the results are identical. Returns the previous limit.
    """
    previous = _WORKSPACE_LIMIT[0]
    _WORKSPACE_LIMIT[0] = check_positive_int(nbytes, where="set_workspace_limit",
                                             name="nbytes")
    return previous


def get_workspace_limit():
    """The current bound, in bytes, on one call's im2col columns."""
    return _WORKSPACE_LIMIT[0]


def _chunks(n, bytes_per_image):
    step = max(1, _WORKSPACE_LIMIT[0] // max(1, bytes_per_image))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def _columns(x, g: ConvGeometry, oh, ow):
    """im2col(x) as (n, groups, K, oh*ow), cropped to (oh, ow) output pixels."""
    cols = active().kernels.im2col(x, g.kh, g.kw, *g.kernel_args())
    if cols.shape[4] != oh or cols.shape[5] != ow:
        cols = cols[..., :oh, :ow]
    n = x.shape[0]
    return cols.reshape(n, g.groups, -1, oh * ow)


def _correlate(x, weight, g: ConvGeometry, oh, ow):
    """y[n, o] = Σ_k W[o, k] · cols[n, k]  (one product per group)."""
    xp = active().xp
    n, c_in = x.shape[:2]
    c_out = weight.shape[0]
    w_mat = weight.reshape(g.groups, c_out // g.groups, -1)     # (g, c_out/g, K)
    y = xp.empty((n, c_out, oh, ow), dtype=x.dtype)
    per_image = c_in * g.kh * g.kw * oh * ow * x.dtype.itemsize
    for part in _chunks(n, per_image):
        cols = _columns(x[part], g, oh, ow)                     # (m, g, K, P)
        # Y = W · cols, per group
        y[part] = xp.matmul(w_mat, cols).reshape(-1, c_out, oh, ow)
    return y


def _correlate_t(y, weight, g: ConvGeometry, h, w):
    """x[n] = col2im(Wᵀ · y[n]): the adjoint of ``_correlate``."""
    xp = active().xp
    kernels = active().kernels
    n, c_out, oh, ow = y.shape
    c_in = weight.shape[1] * g.groups
    w_t = weight.reshape(g.groups, c_out // g.groups, -1).transpose(0, 2, 1)
    x = xp.empty((n, c_in, h, w), dtype=y.dtype)
    per_image = c_in * g.kh * g.kw * oh * ow * y.dtype.itemsize
    for part in _chunks(n, per_image):
        y_g = y[part].reshape(-1, g.groups, c_out // g.groups, oh * ow)
        # dcols = Wᵀ · dY, per group
        cols = xp.matmul(w_t, y_g).reshape(-1, c_in, g.kh, g.kw, oh, ow)
        x[part] = kernels.col2im(cols, h, w, *g.kernel_args())
    return x


def _weight_grad(dy, x, g: ConvGeometry, weight_shape):
    """dW = Σ_n dY[n] · cols[n]ᵀ, per group."""
    xp = active().xp
    n, c_out, oh, ow = dy.shape
    c_in = x.shape[1]
    c_out_g = c_out // g.groups
    dweight = xp.zeros((g.groups, c_out_g, c_in // g.groups * g.kh * g.kw),
                       dtype=dy.dtype)
    per_image = c_in * g.kh * g.kw * oh * ow * x.dtype.itemsize
    for part in _chunks(n, per_image):
        cols = _columns(x[part], g, oh, ow)                     # (m, g, K, P)
        dy_g = dy[part].reshape(-1, g.groups, c_out_g, oh * ow)
        for gi in range(g.groups):
            # dL/dW_g += Σ_n dY_g[n] · cols_g[n]ᵀ
            dweight[gi] += xp.tensordot(dy_g[:, gi], cols[:, gi], axes=([0, 2], [0, 2]))
    return dweight.reshape(weight_shape)


def _check_conv_args(x, weight, bias, g, where, transposed):
    check_input(x, where=where, ndim=4, shape_text="(N, C_in, H, W)")
    check_input(weight, where=where, name="weight", ndim=4)
    check_same_dtype(x, weight, where=where)
    c_in = x.shape[1]
    if transposed:
        c_out = weight.shape[1] * g.groups
        want_in, layout = weight.shape[0], "(C_in, C_out/groups, kh, kw)"
    else:
        c_out = weight.shape[0]
        want_in, layout = weight.shape[1] * g.groups, "(C_out, C_in/groups, kh, kw)"
    if weight.shape[2:] != (g.kh, g.kw):
        raise ShapeError(f"{where}: expected weight of shape {layout} with kernel "
                         f"{g.kh}x{g.kw}, got {tuple(weight.shape)}.")
    if c_in % g.groups or c_out % g.groups:
        raise ValueError(f"{where}: groups={g.groups} must divide both C_in={c_in} "
                         f"and C_out={c_out}.")
    if c_in != want_in:
        raise ShapeError(f"{where}: expected input of shape (N, {want_in}, H, W) for "
                         f"weight {tuple(weight.shape)} with groups={g.groups}, got "
                         f"{tuple(x.shape)}.")
    if bias is not None:
        check_input(bias, where=where, name="bias", ndim=1)
        if bias.shape[0] != c_out:
            raise ShapeError(f"{where}: expected bias of shape ({c_out},), got "
                             f"{tuple(bias.shape)}.")
        check_same_dtype(x, bias, where=where, names=("input", "bias"))
    return c_out


def _check_grad(dy, shape, where):
    check_input(dy, where=where, name="dy", ndim=4)
    if tuple(dy.shape) != tuple(shape):
        raise ShapeError(f"{where}: expected dy of shape {tuple(shape)} (the output's), "
                         f"got {tuple(dy.shape)}.")


def conv2d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1):
    r"""Apply a 2-D convolution (cross-correlation, as in PyTorch).

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    weight : ndarray of shape (C_out, C_in/groups, kh, kw)
    bias : ndarray of shape (C_out,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int), 'valid', 'same' or 'full'
        'same' keeps H and W at stride 1 (an odd total pads the extra row and
        column at the bottom/right); 'full' pads ``d*(k-1)`` on each side.
    groups : int
        Channels split into ``groups`` independent convolutions.

    Returns
    -------
    y : ndarray of shape (N, C_out, oh, ow)

    Notes
    -----
    .. math:: y_{n,o,p,q} = b_o + \sum_{c,i,j} W_{o,c,i,j}\,
              x^{pad}_{n,\,c,\,p s_h + i d_h,\,q s_w + j d_w}

    with ``oh = floor((H + p_t + p_b - d_h (kh-1) - 1)/s_h) + 1``. Computed as
    one matrix product per group, ``Y = W · im2col(x)``.
    Derivation: docs/maths.md#convolution; checked by
    tests/test_functional_conv.py::test_conv2d_matches_loop_reference.

    Examples
    --------
    >>> import numpy as np
    >>> from minicae import functional as F
    >>> F.conv2d(np.ones((1, 1, 5, 5)), np.ones((2, 1, 3, 3)), padding='same').shape
    (1, 2, 5, 5)
    """
    where = "conv2d"
    check_input(weight, where=where, name="weight", ndim=4,
                shape_text="(C_out, C_in/groups, kh, kw)")
    g = conv_geometry(weight.shape[2:], stride, padding, dilation, groups, where=where)
    _check_conv_args(x, weight, bias, g, where, transposed=False)
    check_fits(g, x.shape[2], x.shape[3], where)
    oh, ow = g.output_hw(x.shape[2], x.shape[3])
    y = _correlate(x, weight, g, oh, ow)
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    return y


def conv2d_backward(dy, x, weight, *, stride=1, padding=0, dilation=1, groups=1,
                    need_dx=True):
    r"""Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Returns
    -------
    dx : ndarray of shape (N, C_in, H, W), or None when ``need_dx`` is False
    dweight : ndarray of shape (C_out, C_in/groups, kh, kw)
    dbias : ndarray of shape (C_out,)

    Notes
    -----
    .. math:: \frac{\partial L}{\partial W} = \sum_n dY_n\,\mathrm{cols}(x_n)^T
    .. math:: \frac{\partial L}{\partial x} = \mathrm{col2im}(W^T dY)
              = \mathrm{conv\_transpose2d}(dY, W)
    .. math:: \frac{\partial L}{\partial b_o} = \sum_{n,p,q} dY_{n,o,p,q}

    Derivation: docs/maths.md#convolution-backward; checked by
    tests/test_functional_conv.py::test_conv2d_grad.
    """
    where = "conv2d_backward"
    check_input(weight, where=where, name="weight", ndim=4,
                shape_text="(C_out, C_in/groups, kh, kw)")
    g = conv_geometry(weight.shape[2:], stride, padding, dilation, groups, where=where)
    c_out = _check_conv_args(x, weight, None, g, where, transposed=False)
    check_fits(g, x.shape[2], x.shape[3], where)
    oh, ow = g.output_hw(x.shape[2], x.shape[3])
    _check_grad(dy, (x.shape[0], c_out, oh, ow), where)
    dx = _correlate_t(dy, weight, g, x.shape[2], x.shape[3]) if need_dx else None
    dweight = _weight_grad(dy, x, g, weight.shape)
    dbias = dy.sum(axis=(0, 2, 3))
    return dx, dweight, dbias


def _transposed_geometry(x, weight, stride, padding, output_padding, dilation,
                         groups, where):
    check_input(weight, where=where, name="weight", ndim=4,
                shape_text="(C_in, C_out/groups, kh, kw)")
    g = conv_geometry(weight.shape[2:], stride, padding, dilation, groups, where=where,
                      allow_modes=("valid",))
    oph, opw = as_pair(output_padding, where=where, name="output_padding", minimum=0)
    for op, s, d, axis in ((oph, g.sh, g.dil_h, "height"), (opw, g.sw, g.dil_w, "width")):
        if op >= s and op >= d:
            raise ValueError(f"{where}: output_padding must be smaller than stride or "
                             f"dilation, got output_padding={op} with stride={s} and "
                             f"dilation={d} along the {axis}.")
    return g, (oph, opw)


def _transposed_out_hw(x, g, op, where):
    h, w = x.shape[2], x.shape[3]
    oh = conv_transpose_output_size(h, g.kh, g.sh, g.pt, g.dil_h, op[0])
    ow = conv_transpose_output_size(w, g.kw, g.sw, g.pl, g.dil_w, op[1])
    if oh < 1 or ow < 1:
        raise ShapeError(f"{where}: output size {(oh, ow)} is not positive for input "
                         f"{(h, w)} with kernel {(g.kh, g.kw)}, stride {(g.sh, g.sw)}, "
                         f"padding {(g.pt, g.pl)}. Reduce the padding.")
    return oh, ow


def conv_transpose2d(x, weight, bias=None, *, stride=1, padding=0, output_padding=0,
                     dilation=1, groups=1):
    r"""Apply a 2-D transposed convolution: the adjoint of :func:`conv2d`.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    weight : ndarray of shape (C_in, C_out/groups, kh, kw)
    bias : ndarray of shape (C_out,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int) or 'valid'
    output_padding : int or (int, int)
        Extra rows/columns at the bottom/right of the output; must be smaller
        than the stride or the dilation.

    Returns
    -------
    y : ndarray of shape (N, C_out, oh, ow)
        ``oh = (H-1)*s - 2p + d*(kh-1) + output_padding + 1``.

    Notes
    -----
    .. math:: y = \mathrm{col2im}(W^T x) + b

    i.e. exactly the input gradient of the convolution with the same weight,
    which maps (oh, ow) to (H, W). Derivation: docs/maths.md#transposed-convolution;
    checked by tests/test_functional_conv.py::test_adjoint_identity.

    Examples
    --------
    >>> import numpy as np
    >>> from minicae import functional as F
    >>> F.conv_transpose2d(np.ones((1, 4, 7, 7)), np.ones((4, 2, 3, 3)),
    ...                    stride=2, padding=1, output_padding=1).shape
    (1, 2, 14, 14)
    """
    where = "conv_transpose2d"
    g, op = _transposed_geometry(x, weight, stride, padding, output_padding, dilation,
                                 groups, where)
    _check_conv_args(x, weight, bias, g, where, transposed=True)
    oh, ow = _transposed_out_hw(x, g, op, where)
    y = _correlate_t(x, weight, g, oh, ow)
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    return y


def conv_transpose2d_backward(dy, x, weight, *, stride=1, padding=0, output_padding=0,
                              dilation=1, groups=1, need_dx=True):
    r"""Gradients of :func:`conv_transpose2d` (input, weight, bias).

    Notes
    -----
    The transposed convolution is ``y = T x`` with ``T = Cᵀ`` (C the
    convolution), so ``dx = C dY`` is a plain convolution of ``dY`` and the
    weight gradient is the convolution's weight gradient with the roles of
    input and output exchanged:

    .. math:: \frac{\partial L}{\partial x} = \mathrm{conv2d}(dY, W),\quad
              \frac{\partial L}{\partial W} = \sum_n x_n\,\mathrm{cols}(dY_n)^T

    Derivation: docs/maths.md#transposed-convolution; checked by
    tests/test_functional_conv.py::test_conv_transpose2d_grad.
    """
    where = "conv_transpose2d_backward"
    g, op = _transposed_geometry(x, weight, stride, padding, output_padding, dilation,
                                 groups, where)
    c_out = _check_conv_args(x, weight, None, g, where, transposed=True)
    oh, ow = _transposed_out_hw(x, g, op, where)
    _check_grad(dy, (x.shape[0], c_out, oh, ow), where)
    h, w = x.shape[2], x.shape[3]
    dx = _correlate(dy, weight, g, h, w) if need_dx else None
    dweight = _weight_grad(x, dy, g, weight.shape)
    dbias = dy.sum(axis=(0, 2, 3))
    return dx, dweight, dbias

