"""The checks of a convolution call: raised at the public op, before any work.

Each takes the call's arrays and hyperparameters and returns what the maths
needs (the geometry, the output size, the output channels), or raises a
ShapeError, ValueError or TypeError that names the op, what was expected and
what arrived.
"""

from __future__ import annotations

from .._validation import as_pair
from ..errors import ShapeError
from ._common import check_input, check_same_dtype
from ._geometry import check_fits, conv_geometry, conv_transpose_output_size

__all__ = ["checked_conv2d", "checked_conv_transpose2d", "check_grad"]


def checked_conv2d(x, weight, bias, stride, padding, dilation, groups, where):
    """(g, oh, ow, c_out) of a conv2d call (``where``: the op, for the messages)."""
    check_input(weight, where=where, name="weight", ndim=4,
                shape_text="(C_out, C_in/groups, kh, kw)")
    g = conv_geometry(weight.shape[2:], stride, padding, dilation, groups, where=where)
    c_out = _check_conv_args(x, weight, bias, g, where, transposed=False)
    check_fits(g, x.shape[2], x.shape[3], where)
    return (g, *g.output_hw(x.shape[2], x.shape[3]), c_out)


def checked_conv_transpose2d(x, weight, bias, stride, padding, output_padding, dilation,
                             groups, where):
    """(g, oh, ow, c_out) of a conv_transpose2d call."""
    g, op = _transposed_geometry(x, weight, stride, padding, output_padding, dilation,
                                 groups, where)
    c_out = _check_conv_args(x, weight, bias, g, where, transposed=True)
    return (g, *_transposed_out_hw(x, g, op, where), c_out)


def check_grad(dy, relu_out, shape, where, x):
    """dY (and a fused ReLU's output, when given) of the forward's output ``shape``."""
    _check_grad(dy, shape, where, x)
    _check_relu_out(relu_out, dy, where)

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


def _check_grad(dy, shape, where, x):
    check_input(dy, where=where, name="dy", ndim=4)
    check_same_dtype(x, dy, where=where, names=("input", "dy"))
    if tuple(dy.shape) != tuple(shape):
        raise ShapeError(f"{where}: expected dy of shape {tuple(shape)} (the output's), "
                         f"got {tuple(dy.shape)}.")


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


def _check_relu_out(relu_out, dy, where):
    if relu_out is not None and (tuple(relu_out.shape) != tuple(dy.shape)
                                 or relu_out.dtype != dy.dtype):
        raise ShapeError(f"{where}: expected relu_out like dy {tuple(dy.shape)} "
                         f"{dy.dtype}, got {tuple(relu_out.shape)} {relu_out.dtype}.")
