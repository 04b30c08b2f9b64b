"""Layers with parameters or shape logic: Conv2d, ConvTranspose2d, Linear, ..."""

from __future__ import annotations

import numpy

from .. import functional as F
from .._validation import as_pair, check_positive_int
from ..errors import ShapeError
from .init import GAINS, default_rng, kaiming_uniform, uniform_bias
from .module import Module, Parameter

__all__ = ["Conv2d", "ConvTranspose2d", "Linear", "MaxPool2d", "Upsample", "Flatten",
           "Reshape"]


def _dtype(dtype, where):
    dtype = numpy.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"{where}: expected a floating dtype for the parameters, got "
                        f"{dtype}.")
    return dtype


def _check_forward_input(layer, x, channels):
    # the message (the layer's repr) is made only for an input that fails: a
    # forward would otherwise format it every call
    if not (isinstance(x, F.array_module().ndarray) and x.dtype.kind == "f"
            and x.ndim == 4 and x.shape[1] == channels):
        F._common.check_input(x, where=repr(layer), ndim=4,
                              shape_text=f"(N, {channels}, H, W)", channels=channels)
    if x.dtype != layer.weight.data.dtype:
        raise TypeError(f"{layer!r}: expected input of dtype {layer.weight.data.dtype} "
                        f"(the parameters'), got {x.dtype}. Convert with "
                        f"x.astype({layer.weight.data.dtype}) or layer.astype(...).")


class _ConvBase(Module):
    """What Conv2d and ConvTranspose2d share: hyperparameters, init, grads, repr.

    A subclass names its pair of public functional ops (``_op``,
    ``_op_backward``) and its weight layout; everything else is common. Both ops
    take the fused ReLU's flag (``relu`` forward, ``relu_out`` backward):
    nn.Sequential may call ``forward(x, relu=True)`` for a layer followed by a
    ReLU, and backward then takes dL/d(that output).
    """

    _op = _op_backward = None

    def _common_init(self, where, in_channels, out_channels, kernel_size, stride,
                     dilation, groups):
        self.in_channels = check_positive_int(in_channels, where=where, name="in_channels")
        self.out_channels = check_positive_int(out_channels, where=where,
                                               name="out_channels")
        self.kernel_size = as_pair(kernel_size, where=where, name="kernel_size")
        self.stride = as_pair(stride, where=where, name="stride")
        self.dilation = as_pair(dilation, where=where, name="dilation")
        self.groups = check_positive_int(groups, where=where, name="groups")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{where}: groups={groups} must divide both in_channels="
                             f"{in_channels} and out_channels={out_channels}.")

    def _init_params(self, weight_shape, fan_in, bias, rng, dtype, gain, where):
        dtype = _dtype(dtype, where)
        gain = GAINS[gain] if isinstance(gain, str) else float(gain)
        rng = default_rng(rng)
        self.weight = Parameter(F.asarray(kaiming_uniform(rng, weight_shape, fan_in, gain),
                                          dtype=dtype))
        self.bias = (Parameter(F.asarray(uniform_bias(rng, self.out_channels, fan_in),
                                         dtype=dtype)) if bias else None)
        self._x = self._relu_out = None

    def forward(self, x, *, relu=False):
        """y = op(x) + b; with ``relu``, max(y, 0) (a following ReLU fused in)."""
        _check_forward_input(self, x, self.in_channels)
        self._x = x
        y = type(self)._op(x, self.weight.data, None if self.bias is None else self.bias.data,
                           relu=relu, **self._hyper)
        self._relu_out = y if relu else None
        return y

    def backward(self, dy, *, need_dx=True):
        """Add dL/dW, dL/db into the gradients; return dL/dx (None if not need_dx)."""
        if self._x is None:
            raise RuntimeError(f"{self!r}: backward called before forward.")
        dx, dweight, dbias = type(self)._op_backward(
            dy, self._x, self.weight.data, need_dx=need_dx, relu_out=self._relu_out,
            **self._hyper)
        self.weight.grad += dweight                  # accumulate, never assign
        if self.bias is not None:
            self.bias.grad += dbias
        return dx

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size},"
                f" stride={self.stride}, padding={self.padding!r}")
        if getattr(self, "output_padding", (0, 0)) != (0, 0):
            text += f", output_padding={self.output_padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class Conv2d(_ConvBase):
    """2-D convolution layer; weight (C_out, C_in/groups, kh, kw), as PyTorch.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, dilation : int or (int, int)
    padding : int, (int, int), 'valid', 'same' or 'full'
    groups : int
    bias : bool
    rng : numpy.random.Generator or int, optional
        Source of the initial weights (U(±1/sqrt(fan_in)), PyTorch's default).
    dtype : numpy dtype, default float32
    init_gain : float or str, optional
        Kaiming gain ('relu', 'tanh', ... or a number) instead of the default.
    """

    _op = staticmethod(F.conv2d)
    _op_backward = staticmethod(F.conv2d_backward)
    _fuses_relu = True           # this exact class: nn.Sequential may pass relu=True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, *, rng=None, dtype=numpy.float32,
                 init_gain="default"):
        where = "Conv2d"
        self._common_init(where, in_channels, out_channels, kernel_size, stride, dilation,
                          groups)
        # validates padding (modes, 'same' with stride) once, at construction
        F.conv_geometry(self.kernel_size, self.stride, padding, self.dilation,
                        self.groups, where=where)
        self.padding = padding if isinstance(padding, str) else as_pair(
            padding, where=where, name="padding", minimum=0)
        kh, kw = self.kernel_size
        self._init_params((out_channels, in_channels // groups, kh, kw),
                          in_channels // groups * kh * kw, bias, rng, dtype, init_gain,
                          where)
        self._hyper = dict(stride=self.stride, padding=self.padding,
                           dilation=self.dilation, groups=self.groups)

    def output_shape(self, h, w):
        """(oh, ow) for an (h, w) input."""
        g = F.conv_geometry(self.kernel_size, self.stride, self.padding, self.dilation,
                            self.groups, where=repr(self))
        return g.output_hw(h, w)


class ConvTranspose2d(_ConvBase):
    """2-D transposed convolution; weight (C_in, C_out/groups, kh, kw), as PyTorch.

    The output size is ``(H-1)*s - 2p + d*(k-1) + output_padding + 1``; use
    :func:`minicae.functional.output_padding_for` to restore the input size of
    the matching convolution.
    """

    _op = staticmethod(F.conv_transpose2d)
    _op_backward = staticmethod(F.conv_transpose2d_backward)
    _fuses_relu = True           # this exact class: nn.Sequential may pass relu=True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, dilation=1, groups=1, bias=True, *, rng=None,
                 dtype=numpy.float32, init_gain="default"):
        where = "ConvTranspose2d"
        self._common_init(where, in_channels, out_channels, kernel_size, stride, dilation,
                          groups)
        if isinstance(padding, str) and padding != "valid":
            raise ValueError(f"{where}: expected padding to be an int, a pair of ints or "
                             f"'valid', got {padding!r}.")
        self.padding = as_pair(0 if padding == "valid" else padding, where=where,
                               name="padding", minimum=0)
        self.output_padding = as_pair(output_padding, where=where, name="output_padding",
                                      minimum=0)
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= s and op >= d:
                raise ValueError(f"{where}: output_padding must be smaller than stride "
                                 f"or dilation, got output_padding="
                                 f"{self.output_padding}, stride={self.stride}, "
                                 f"dilation={self.dilation}.")
        kh, kw = self.kernel_size
        # PyTorch's fan-in for ConvTranspose2d is computed from weight.shape[1:]
        self._init_params((in_channels, out_channels // groups, kh, kw),
                          out_channels // groups * kh * kw, bias, rng, dtype, init_gain,
                          where)
        self._hyper = dict(stride=self.stride, padding=self.padding,
                           output_padding=self.output_padding, dilation=self.dilation,
                           groups=self.groups)


class Linear(Module):
    """Fully connected layer y = x Wᵀ + b; weight (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True, *, rng=None,
                 dtype=numpy.float32, init_gain="default"):
        where = "Linear"
        self.in_features = check_positive_int(in_features, where=where,
                                              name="in_features")
        self.out_features = check_positive_int(out_features, where=where,
                                               name="out_features")
        dtype = _dtype(dtype, where)
        rng = default_rng(rng)
        gain = GAINS[init_gain] if isinstance(init_gain, str) else float(init_gain)
        self.weight = Parameter(F.asarray(
            kaiming_uniform(rng, (out_features, in_features), in_features, gain),
            dtype=dtype))
        self.bias = (Parameter(F.asarray(uniform_bias(rng, out_features, in_features),
                                         dtype=dtype)) if bias else None)
        self._x = None

    def forward(self, x):
        F._common.check_input(x, where=repr(self), ndim=2,
                              shape_text=f"(N, {self.in_features})")
        if x.shape[1] != self.in_features:
            raise ShapeError(f"{self!r}: expected input of shape (N, {self.in_features}),"
                             f" got {tuple(x.shape)}.")
        if x.dtype != self.weight.data.dtype:
            raise TypeError(f"{self!r}: expected input of dtype {self.weight.data.dtype}"
                            f" (the parameters'), got {x.dtype}.")
        self._x = x
        return F.linear(x, self.weight.data, None if self.bias is None else self.bias.data)

    def backward(self, dy, *, need_dx=True):
        """Add dL/dW, dL/db into the gradients; return dL/dx (None if not need_dx)."""
        if self._x is None:
            raise RuntimeError(f"{self!r}: backward called before forward.")
        dx, dweight, dbias = F.linear_backward(dy, self._x, self.weight.data,
                                               need_dx=need_dx)
        self.weight.grad += dweight
        if self.bias is not None:
            self.bias.grad += dbias
        return dx

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}"
                + ("" if self.bias is not None else ", bias=False"))


class MaxPool2d(Module):
    """Max-pooling over (kernel_size) windows; backward routes to the argmax."""

    def __init__(self, kernel_size, stride=None, padding=0):
        where = "MaxPool2d"
        self.kernel_size = as_pair(kernel_size, where=where, name="kernel_size")
        self.stride = self.kernel_size if stride is None else as_pair(
            stride, where=where, name="stride")
        self.padding = as_pair(padding, where=where, name="padding", minimum=0)
        if 2 * self.padding[0] > self.kernel_size[0] or \
                2 * self.padding[1] > self.kernel_size[1]:
            raise ValueError(f"{where}: padding must be at most half the kernel size, "
                             f"got padding={self.padding}, kernel_size={self.kernel_size}.")
        self._cache = None

    def forward(self, x):
        y, argmax = F.max_pool2d(x, self.kernel_size, self.stride, self.padding,
                                 return_indices=True)
        self._cache = (x, argmax)
        return y

    def backward(self, dy):
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward.")
        x, argmax = self._cache
        return F.max_pool2d_backward(dy, x, argmax, self.kernel_size, self.stride,
                                     self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Upsample(Module):
    """Nearest-neighbour upsampling by an integer ``scale_factor``."""

    def __init__(self, scale_factor=2, mode="nearest"):
        if mode != "nearest":
            raise ValueError(f"Upsample: expected mode 'nearest', got {mode!r}.")
        self.scale_factor = as_pair(scale_factor, where="Upsample", name="scale_factor")
        self.mode = mode

    def forward(self, x):
        return F.upsample(x, self.scale_factor)

    def backward(self, dy):
        return F.upsample_backward(dy, self.scale_factor)

    def extra_repr(self):
        return f"scale_factor={self.scale_factor}, mode={self.mode!r}"


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...)."""

    def __init__(self):
        self._shape = None

    def forward(self, x):
        F._common.check_input(x, where="Flatten")
        if x.ndim < 2:
            raise ShapeError(f"Flatten: expected input with a batch axis (N, ...), got "
                             f"{tuple(x.shape)}.")
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._shape)


class Reshape(Module):
    """(N, ...) -> (N, *shape); backward restores the input shape."""

    def __init__(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        for s in shape:
            check_positive_int(s, where="Reshape", name="shape entries")
        self.shape = tuple(int(s) for s in shape)
        self._shape = None

    def forward(self, x):
        F._common.check_input(x, where=repr(self))
        size = int(numpy.prod(self.shape))
        if x.ndim < 1 or int(numpy.prod(x.shape[1:])) != size:
            raise ShapeError(f"{self!r}: expected input with {size} values per sample, "
                             f"got {tuple(x.shape)}.")
        self._shape = x.shape
        return x.reshape((x.shape[0],) + self.shape)

    def backward(self, dy):
        return dy.reshape(self._shape)

    def extra_repr(self):
        return ", ".join(str(s) for s in self.shape)
