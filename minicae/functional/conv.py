r"""2-D convolution and transposed convolution, forward and backward: the reference.

Notation: ``n`` batch, ``c_in``/``c_out`` channels, ``g`` groups, ``kh``/``kw``
kernel, ``oh``/``ow`` output size, ``K = (c_in/g)*kh*kw`` the length of one
column, ``P = oh*ow`` the output pixels of one image.

Everything is built from one im2col/col2im pair and three matrix products:

* :func:`_forward`  y  = W · im2col(x)           (the convolution)
* :func:`_adjoint`  x' = col2im(Wᵀ · y)          (its adjoint, the transposed
  convolution)
* :func:`_weight_grad`  dW = Σ_n dOut_n · im2col(in_n)ᵀ

``conv2d_backward`` takes its input gradient from the adjoint and
``conv_transpose2d_backward`` takes its input gradient from the forward, so the
transposed convolution is the adjoint of the convolution by construction.
Derivations: docs/maths.md#convolution to #transposed-convolution.

This is what the NumPy backend runs, and the definition every registered fast
kernel (:mod:`minicae.kernels`) is tested against. Each public op checks its
call, then asks :mod:`minicae.dispatch` which function runs the call's
signature; the checks and the choice are made once per signature.
"""

from __future__ import annotations

from .. import dispatch
from ..kernels import ConvCall
from ._common import active
from ._conv_checks import check_grad, checked_conv2d, checked_conv_transpose2d

__all__ = ["conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
           "im2col", "col2im"]


def _taps(start, step, count):
    return slice(start, start + step * (count - 1) + 1, step)


def _padded_hw(g, h, w, oh, ow):
    """A padded plane that holds the input and every window."""
    return (max(h + g.pt + g.pb, (oh - 1) * g.sh + g.dil_h * (g.kh - 1) + 1),
            max(w + g.pl + g.pr, (ow - 1) * g.sw + g.dil_w * (g.kw - 1) + 1))


def im2col(x, g, oh, ow):
    """The columns (N, C, kh, kw, oh, ow) of x: one kernel window per output pixel."""
    xp = active().xp
    n, c, h, w = x.shape
    x_pad = xp.zeros((n, c, *_padded_hw(g, h, w, oh, ow)), dtype=x.dtype)
    x_pad[:, :, g.pt:g.pt + h, g.pl:g.pl + w] = x
    cols = xp.empty((n, c, g.kh, g.kw, oh, ow), dtype=x.dtype)
    for i in range(g.kh):
        for j in range(g.kw):
            # cols[n, c, i, j, p, q] = x_pad[n, c, p·sh + i·dh, q·sw + j·dw]
            cols[:, :, i, j] = x_pad[:, :, _taps(i * g.dil_h, g.sh, oh),
                                     _taps(j * g.dil_w, g.sw, ow)]
    return cols


def col2im(cols, h, w, g):
    """The adjoint of :func:`im2col`: each column entry added back to its pixel."""
    xp = active().xp
    n, c, kh, kw, oh, ow = cols.shape
    x_pad = xp.zeros((n, c, *_padded_hw(g, h, w, oh, ow)), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            # x_pad[n, c, p·sh + i·dh, q·sw + j·dw] += cols[n, c, i, j, p, q]
            x_pad[:, :, _taps(i * g.dil_h, g.sh, oh), _taps(j * g.dil_w, g.sw, ow)] += \
                cols[:, :, i, j]
    return xp.ascontiguousarray(x_pad[:, :, g.pt:g.pt + h, g.pl:g.pl + w])


def _forward(x, weight, g, oh, ow):
    """y (N, C_out, oh, ow) = W · im2col(x), per group."""
    n, c_out, k = x.shape[0], weight.shape[0], weight[0].size
    cols = im2col(x, g, oh, ow).reshape(n, g.groups, k, oh * ow)        # (N, g, K, P)
    w_mat = weight.reshape(g.groups, c_out // g.groups, k)               # (g, C_out/g, K)
    return active().xp.matmul(w_mat, cols).reshape(n, c_out, oh, ow)    # Y = W · cols


def _adjoint(y, weight, g, h, w):
    """x (N, C_in, h, w) = col2im(Wᵀ · y), per group: the transpose of :func:`_forward`."""
    n, c_out, oh, ow = y.shape
    w_mat = weight.reshape(g.groups, c_out // g.groups, weight[0].size)
    y_mat = y.reshape(n, g.groups, c_out // g.groups, oh * ow)
    dcols = active().xp.matmul(w_mat.transpose(0, 2, 1), y_mat)         # Wᵀ · Y
    return col2im(dcols.reshape(n, weight.shape[1] * g.groups, g.kh, g.kw, oh, ow), h, w, g)


def _weight_grad(dout, src, g):
    """dW (g, C_out/g, K) = Σ_n dOut_n · im2col(src_n)ᵀ, per group."""
    xp = active().xp
    n, c_out, oh, ow = dout.shape
    k = src.shape[1] // g.groups * g.kh * g.kw
    cols = im2col(src, g, oh, ow).reshape(n, g.groups, k, oh * ow)
    d_mat = dout.reshape(n, g.groups, c_out // g.groups, oh * ow)
    # dW_g = Σ_{n,p} dY[n, g, :, p] · cols[n, g, :, p]ᵀ: one product over n and p
    return xp.stack([xp.tensordot(d_mat[:, i], cols[:, i], axes=([0, 2], [0, 2]))
                     for i in range(g.groups)])


def _relu(y, relu):
    return active().xp.maximum(y, 0) if relu else y


def _masked(dy, relu_out):
    """dY of the op's own output: dL/d(ReLU output) ⊙ [ReLU output > 0] when fused."""
    return dy if relu_out is None else dy * (relu_out > 0)


def _conv2d_reference(g, oh, ow, relu):
    def run(x, weight, bias):
        y = _forward(x, weight, g, oh, ow)
        if bias is not None:
            y += bias.reshape(1, -1, 1, 1)                               # + b_o
        return _relu(y, relu)
    return run


def _conv2d_backward_reference(g, oh, ow):
    def run(dy, x, weight, relu_out, need_dx):
        dy = _masked(dy, relu_out)
        dx = _adjoint(dy, weight, g, x.shape[2], x.shape[3]) if need_dx else None
        dweight = _weight_grad(dy, x, g).reshape(weight.shape)          # Σ_n dY_n · colsᵀ
        return dx, dweight, dy.sum(axis=(0, 2, 3))                       # db = Σ dY
    return run


def _conv_transpose2d_reference(g, oh, ow, relu):
    def run(x, weight, bias):
        y = _adjoint(x, weight, g, oh, ow)                               # col2im(Wᵀ x)
        if bias is not None:
            y += bias.reshape(1, -1, 1, 1)
        return _relu(y, relu)
    return run


def _conv_transpose2d_backward_reference(g, oh, ow):
    def run(dy, x, weight, relu_out, need_dx):
        dy = _masked(dy, relu_out)
        h, w = x.shape[2:]
        dx = _forward(dy, weight, g, h, w) if need_dx else None         # conv2d(dY, W)
        dweight = _weight_grad(x, dy, g).reshape(weight.shape)          # Σ_n x_n · cols(dY_n)ᵀ
        return dx, dweight, dy.sum(axis=(0, 2, 3))
    return run


def _sig(a):
    """An array's part of a call signature: type, shape, dtype."""
    if a is None:
        return None
    return type(a), getattr(a, "shape", None), getattr(a, "dtype", None)


def _exact(hyper):
    """Whether hyperparameters are plain ints, strs or tuples of ints: only those are
    remembered, since 1 == 1.0 == True would let a float or a bool stride (which the
    checks reject) take an int's choice."""
    for v in hyper:
        if type(v) is tuple:
            if any(type(e) is not int for e in v):
                return False
        elif type(v) is not int and type(v) is not str:
            return False
    return True


def conv2d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1,
           relu=False):
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
    relu : bool
        Return max(y, 0): a following ReLU fused into the op (one pass fewer).

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
    hyper = (stride, padding, dilation, groups)
    key = ("conv2d", _sig(x), _sig(weight), _sig(bias), hyper, bool(relu))
    run = dispatch.lookup(key) if _exact(hyper) else None
    if run is None:
        g, oh, ow, _ = checked_conv2d(x, weight, bias, stride, padding, dilation, groups,
                                      "conv2d")
        call = ConvCall(x.shape, weight.shape, x.dtype, g, (oh, ow), bool(relu), 0)
        run = dispatch.choose(key, "conv2d", call, _conv2d_reference(g, oh, ow, relu),
                              (x, weight, bias))
    return run(x, weight, bias)


def conv2d_backward(dy, x, weight, *, stride=1, padding=0, dilation=1, groups=1,
                    need_dx=True, relu_out=None):
    r"""Gradients of :func:`conv2d` with respect to its input, weight and bias.

    ``relu_out``: the output of a forward with ``relu=True``; ``dy`` is then the
    gradient with respect to that output, and is first masked by [relu_out > 0].

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
    hyper = (stride, padding, dilation, groups)
    key = ("conv2d_backward", _sig(dy), _sig(x), _sig(weight), _sig(relu_out), hyper)
    run = dispatch.lookup(key) if _exact(hyper) else None
    if run is None:
        where = "conv2d_backward"
        g, oh, ow, c_out = checked_conv2d(x, weight, None, stride, padding, dilation,
                                          groups, where)
        check_grad(dy, relu_out, (x.shape[0], c_out, oh, ow), where, x)
        call = ConvCall(x.shape, weight.shape, x.dtype, g, (oh, ow), relu_out is not None,
                        0)
        run = dispatch.choose(key, where, call, _conv2d_backward_reference(g, oh, ow),
                              (dy, x, weight, relu_out, need_dx))
    return run(dy, x, weight, relu_out, need_dx)


def conv_transpose2d(x, weight, bias=None, *, stride=1, padding=0, output_padding=0,
                     dilation=1, groups=1, relu=False):
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
    relu : bool
        Return max(y, 0): a following ReLU fused into the op.

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
    hyper = (stride, padding, output_padding, dilation, groups)
    key = ("conv_transpose2d", _sig(x), _sig(weight), _sig(bias), hyper, bool(relu))
    run = dispatch.lookup(key) if _exact(hyper) else None
    if run is None:
        g, oh, ow, _ = checked_conv_transpose2d(x, weight, bias, stride, padding,
                                                output_padding, dilation, groups,
                                                "conv_transpose2d")
        call = ConvCall(x.shape, weight.shape, x.dtype, g, (oh, ow), bool(relu), 0)
        run = dispatch.choose(key, "conv_transpose2d", call,
                              _conv_transpose2d_reference(g, oh, ow, relu),
                              (x, weight, bias))
    return run(x, weight, bias)


def conv_transpose2d_backward(dy, x, weight, *, stride=1, padding=0, output_padding=0,
                              dilation=1, groups=1, need_dx=True, relu_out=None):
    r"""Gradients of :func:`conv_transpose2d` (input, weight, bias).

    ``relu_out``: as in :func:`conv2d_backward`.

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
    hyper = (stride, padding, output_padding, dilation, groups)
    key = ("conv_transpose2d_backward", _sig(dy), _sig(x), _sig(weight), _sig(relu_out),
           hyper)
    run = dispatch.lookup(key) if _exact(hyper) else None
    if run is None:
        where = "conv_transpose2d_backward"
        g, oh, ow, c_out = checked_conv_transpose2d(x, weight, None, stride, padding,
                                                    output_padding, dilation, groups,
                                                    where)
        check_grad(dy, relu_out, (x.shape[0], c_out, oh, ow), where, x)
        call = ConvCall(x.shape, weight.shape, x.dtype, g, (oh, ow), relu_out is not None,
                        0)
        run = dispatch.choose(key, where, call,
                              _conv_transpose2d_backward_reference(g, oh, ow),
                              (dy, x, weight, relu_out, need_dx))
    return run(dy, x, weight, relu_out, need_dx)
