r"""Elementwise activations: value, derivative and backward side by side.

Each ``<act>_grad(a)`` is s′ as a function of the pre-activation ``a`` (the
contractive penalty needs s′ and s″); each ``<act>_backward(dy, ...)`` is the
chain rule dL/da = dL/dy ⊙ s′(a).
"""

from __future__ import annotations

import numpy

from .._validation import check_nonnegative_float
from ._common import active, check_input

__all__ = ["relu", "relu_backward", "relu_grad", "relu_grad2",
           "leaky_relu", "leaky_relu_backward", "leaky_relu_grad", "leaky_relu_grad2",
           "sigmoid", "sigmoid_backward", "sigmoid_grad", "sigmoid_grad2",
           "tanh", "tanh_backward", "tanh_grad", "tanh_grad2", "ACTIVATIONS"]


def relu(x):
    r"""ReLU(x) = max(x, 0); ReLU′(x) = 1 if x > 0 else 0 (ReLU′(0) = 0)."""
    check_input(x, where="relu")
    return active().xp.maximum(x, 0)


def relu_grad(a):
    """ReLU′(a) = [a > 0]."""
    return (a > 0).astype(a.dtype)


def relu_grad2(a):
    """ReLU″(a) = 0 everywhere (0 at the kink by convention)."""
    return active().xp.zeros_like(a)


def relu_backward(dy, x):
    """dL/dx = dL/dy ⊙ [x > 0]."""
    return dy * (x > 0)


def leaky_relu(x, negative_slope=0.01):
    r"""LeakyReLU(x) = x if x > 0 else αx; derivative 1 or α (α at 0)."""
    check_input(x, where="leaky_relu")
    check_nonnegative_float(negative_slope, where="leaky_relu", name="negative_slope")
    return active().xp.where(x > 0, x, x * x.dtype.type(negative_slope))


def leaky_relu_grad(a, negative_slope=0.01):
    """LeakyReLU′(a) = 1 if a > 0 else α."""
    xp = active().xp
    return xp.where(a > 0, a.dtype.type(1), a.dtype.type(negative_slope)).astype(a.dtype)


def leaky_relu_grad2(a, negative_slope=0.01):
    """LeakyReLU″ = 0."""
    return active().xp.zeros_like(a)


def leaky_relu_backward(dy, x, negative_slope=0.01):
    """dL/dx = dL/dy ⊙ (1 if x > 0 else α)."""
    return dy * leaky_relu_grad(x, negative_slope)


def sigmoid(x):
    r"""σ(x) = 1 / (1 + e^{-x}), computed without overflow warnings.

    Notes
    -----
    One exponential and three in-place passes. Where e^{-x} overflows to
    +inf (x < -88.7 in float32), 1/(1 + inf) = 0 is the correctly rounded
    limit (σ(x) < 3e-39 there), so NumPy's overflow warning is silenced for
    that one call. Against float64 this form is as accurate as the two-branch
    e^{-|x|} form and faster (no branch select). σ′ = σ(1 − σ), σ″ = σ′(1 − 2σ).
    """
    check_input(x, where="sigmoid")
    xp = active().xp
    with numpy.errstate(over="ignore"):       # e^{-x} = inf gives σ = 0, its limit
        y = xp.negative(x)
        xp.exp(y, out=y)
        y += 1
        xp.divide(1, y, out=y)                # σ = 1 / (1 + e^{-x})
    return y


def sigmoid_grad(a):
    """σ′(a) = σ(a)(1 − σ(a))."""
    s = sigmoid(a)
    d = active().xp.subtract(1, s)
    d *= s                                    # σ′ = σ(1 − σ)
    return d


def sigmoid_grad2(a):
    """σ″(a) = σ′(a)(1 − 2σ(a))."""
    xp = active().xp
    s = sigmoid(a)
    d = xp.subtract(1, s)
    d *= s                                    # σ′ = σ(1 − σ)
    xp.multiply(s, -2, out=s)
    s += 1
    d *= s                                    # σ″ = σ′(1 − 2σ)
    return d


def sigmoid_backward(dy, y):
    """dL/dx = dL/dy ⊙ y(1 − y), from the output y = σ(x)."""
    dx = active().xp.subtract(1, y)
    dx *= y
    dx *= dy                                  # dL/dx = dL/dy ⊙ y(1 − y)
    return dx


def tanh(x):
    r"""tanh(x); tanh′ = 1 − tanh², tanh″ = −2 tanh (1 − tanh²)."""
    check_input(x, where="tanh")
    return active().xp.tanh(x)


def tanh_grad(a):
    """tanh′(a) = 1 − tanh²(a)."""
    xp = active().xp
    d = xp.tanh(a)
    d *= d
    xp.subtract(1, d, out=d)                  # tanh′ = 1 − tanh²
    return d


def tanh_grad2(a):
    """tanh″(a) = −2 tanh(a)(1 − tanh²(a))."""
    xp = active().xp
    t = xp.tanh(a)
    d = xp.multiply(t, t)
    xp.subtract(1, d, out=d)
    t *= -2
    d *= t                                    # tanh″ = −2 tanh (1 − tanh²)
    return d


def tanh_backward(dy, y):
    """dL/dx = dL/dy ⊙ (1 − y²), from the output y = tanh(x)."""
    xp = active().xp
    dx = xp.multiply(y, y)
    xp.subtract(1, dx, out=dx)
    dx *= dy                                  # dL/dx = dL/dy ⊙ (1 − y²)
    return dx


# name -> (s, s′, s″) as functions of the pre-activation, for penalties.
ACTIVATIONS = {
    "relu": (relu, relu_grad, relu_grad2),
    "leaky_relu": (leaky_relu, leaky_relu_grad, leaky_relu_grad2),
    "sigmoid": (sigmoid, sigmoid_grad, sigmoid_grad2),
    "tanh": (tanh, tanh_grad, tanh_grad2),
}
