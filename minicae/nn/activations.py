"""Activation layers: ReLU, LeakyReLU, Sigmoid, Tanh."""

from __future__ import annotations

from .. import functional as F
from .._validation import check_nonnegative_float
from .module import Module

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "activation"]


class _Activation(Module):
    name = ""

    def __init__(self):
        self._cache = None

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward.")
        return self._cache


class ReLU(_Activation):
    """max(x, 0); ReLU′(0) = 0."""

    name = "relu"
    _fusable_relu = True         # nn.Sequential may fold it into the layer before

    def forward(self, x):
        self._cache = x
        return F.relu(x)

    def backward(self, dy):
        return F.relu_backward(dy, self._cached())


class LeakyReLU(_Activation):
    """x if x > 0 else negative_slope·x."""

    name = "leaky_relu"

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = check_nonnegative_float(negative_slope, where="LeakyReLU",
                                                      name="negative_slope")

    def forward(self, x):
        self._cache = x
        return F.leaky_relu(x, self.negative_slope)

    def backward(self, dy):
        return F.leaky_relu_backward(dy, self._cached(), self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(_Activation):
    """1 / (1 + e^{−x}), computed stably; backward uses the output."""

    name = "sigmoid"

    def forward(self, x):
        y = F.sigmoid(x)
        self._cache = y
        return y

    def backward(self, dy):
        return F.sigmoid_backward(dy, self._cached())


class Tanh(_Activation):
    """tanh(x); backward uses the output: 1 − y²."""

    name = "tanh"

    def forward(self, x):
        y = F.tanh(x)
        self._cache = y
        return y

    def backward(self, dy):
        return F.tanh_backward(dy, self._cached())


_BY_NAME = {"relu": ReLU, "leaky_relu": LeakyReLU, "sigmoid": Sigmoid, "tanh": Tanh}


def activation(name):
    """Build an activation layer from its name ('relu', 'leaky_relu', ...)."""
    if name not in _BY_NAME:
        raise ValueError(f"activation: expected one of {', '.join(map(repr, _BY_NAME))}, "
                         f"got {name!r}.")
    return _BY_NAME[name]()
