"""The one place that normalises stride / padding / dilation and sizes outputs.

Output size of a convolution along one axis (input size ``h``, kernel ``k``,
stride ``s``, padding ``p_top``/``p_bottom``, dilation ``d``)::

    oh = floor((h + p_top + p_bottom - d*(k-1) - 1) / s) + 1

and of the transposed convolution (symmetric padding ``p``)::

    oh = (h - 1)*s - 2p + d*(k-1) + output_padding + 1
"""

from __future__ import annotations

from typing import NamedTuple

from .._validation import as_pair, check_positive_int
from ..errors import ShapeError

__all__ = ["ConvGeometry", "conv_geometry", "conv_output_size",
           "conv_transpose_output_size", "output_padding_for"]

PADDING_MODES = ("valid", "same", "full")


class ConvGeometry(NamedTuple):
    """Normalised hyperparameters of one 2-D convolution."""

    kh: int
    kw: int
    sh: int
    sw: int
    pt: int
    pb: int
    pl: int
    pr: int
    dil_h: int
    dil_w: int
    groups: int

    @property
    def span(self):
        """Rows and columns covered by one dilated kernel: d*(k-1) + 1."""
        return (self.dil_h * (self.kh - 1) + 1, self.dil_w * (self.kw - 1) + 1)

    def kernel_args(self):
        """The positional hyperparameters every im2col/col2im kernel takes."""
        return (self.sh, self.sw, self.pt, self.pb, self.pl, self.pr,
                self.dil_h, self.dil_w)

    def output_hw(self, h, w):
        """Output height and width for an (h, w) input (may be < 1)."""
        return (conv_output_size(h, self.kh, self.sh, self.pt, self.pb, self.dil_h),
                conv_output_size(w, self.kw, self.sw, self.pl, self.pr, self.dil_w))


def conv_output_size(size, k, s, p0, p1, dil):
    """floor((size + p0 + p1 - dil*(k-1) - 1) / s) + 1."""
    return (size + p0 + p1 - dil * (k - 1) - 1) // s + 1


def conv_transpose_output_size(size, k, s, p, dil, output_padding=0):
    """(size - 1)*s - 2p + dil*(k-1) + output_padding + 1."""
    return (size - 1) * s - 2 * p + dil * (k - 1) + output_padding + 1


def output_padding_for(size, kernel_size, stride=1, padding=0, dilation=1):
    """The output_padding that makes a transposed conv restore ``size``.

    A convolution maps ``size`` to ``m = conv_output_size(...)``; several
    input sizes map to the same ``m`` when the stride is > 1. The transposed
    convolution with the same hyperparameters maps ``m`` back to
    ``(m-1)*s - 2p + d*(k-1) + 1``; the difference to ``size`` is the
    output_padding (always in ``[0, s)``).
    """
    k, s, p, d = kernel_size, stride, padding, dilation
    m = conv_output_size(size, k, s, p, p, d)
    return size - conv_transpose_output_size(m, k, s, p, d)


def _padding(padding, kh, kw, sh, sw, dil_h, dil_w, where, allow_modes):
    if isinstance(padding, str):
        if padding not in allow_modes:
            raise ValueError(f"{where}: expected padding to be an int, a pair of ints "
                             f"or one of {', '.join(repr(m) for m in allow_modes)}, "
                             f"got {padding!r}.")
        if padding == "valid":
            return 0, 0, 0, 0
        total_h, total_w = dil_h * (kh - 1), dil_w * (kw - 1)
        if padding == "full":
            return total_h, total_h, total_w, total_w
        if sh != 1 or sw != 1:
            raise ValueError(f"{where}: padding='same' needs stride 1, got stride "
                             f"{(sh, sw)}. Use an explicit padding with strides.")
        # An odd total puts the extra row/column at the bottom/right (as PyTorch).
        return total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2
    ph, pw = as_pair(padding, where=where, name="padding", minimum=0)
    return ph, ph, pw, pw


_GEOMETRIES = {}          # repr of valid arguments -> their ConvGeometry


def conv_geometry(kernel_hw, stride, padding, dilation, groups, *, where,
                  allow_modes=PADDING_MODES):
    """Validate and normalise convolution hyperparameters into a ConvGeometry.

    Arguments that passed once are remembered by their ``repr`` (which tells
    ``True`` from ``1`` and a NumPy integer from an int), so that a layer's calls
    after the first skip the checks (a batch-32 CAE step spent 0.2 ms in them).
    """
    key = repr((kernel_hw, stride, padding, dilation, groups, allow_modes))
    g = _GEOMETRIES.get(key)
    if g is None:
        g = _conv_geometry(kernel_hw, stride, padding, dilation, groups, where,
                           allow_modes)
        if len(_GEOMETRIES) < 4096:
            _GEOMETRIES[key] = g
    return g


def _conv_geometry(kernel_hw, stride, padding, dilation, groups, where, allow_modes):
    kh, kw = as_pair(kernel_hw, where=where, name="kernel_size")
    sh, sw = as_pair(stride, where=where, name="stride")
    dil_h, dil_w = as_pair(dilation, where=where, name="dilation")
    groups = check_positive_int(groups, where=where, name="groups")
    pt, pb, pl, pr = _padding(padding, kh, kw, sh, sw, dil_h, dil_w, where, allow_modes)
    return ConvGeometry(kh, kw, sh, sw, pt, pb, pl, pr, dil_h, dil_w, groups)


def check_fits(geom, h, w, where):
    """Raise unless the dilated kernel fits inside the padded (h, w) input."""
    span_h, span_w = geom.span
    hp, wp = h + geom.pt + geom.pb, w + geom.pl + geom.pr
    if span_h > hp or span_w > wp:
        raise ShapeError(
            f"{where}: kernel {geom.kh}x{geom.kw} with dilation "
            f"{(geom.dil_h, geom.dil_w)} spans {span_h}x{span_w}, larger than the "
            f"padded input {hp}x{wp}. Reduce kernel_size or dilation, or increase "
            f"padding.")
