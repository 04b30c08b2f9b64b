r"""Fan-in scaled initialisers drawing from a ``numpy.random.Generator``.

``kaiming_uniform(rng, shape, fan_in, gain)`` draws from U(−b, b) with
``b = gain·sqrt(3 / fan_in)`` so that Var = gain² / fan_in (He et al. 2015;
gain √2 for ReLU). PyTorch's default for Conv2d/Linear is gain
``sqrt(1/3)``, i.e. ``b = 1/sqrt(fan_in)``, used here as the default too.
Arrays are drawn on the host in float64 and cast, so a seed gives the same
weights on every backend.
"""

from __future__ import annotations

import math

import numpy

__all__ = ["default_rng", "kaiming_uniform", "uniform_bias", "GAINS"]

GAINS = {"linear": 1.0, "sigmoid": 1.0, "tanh": 5.0 / 3.0, "relu": math.sqrt(2.0),
         "leaky_relu": math.sqrt(2.0 / (1 + 0.01**2)), "default": math.sqrt(1.0 / 3.0)}


def default_rng(rng):
    """Return ``rng`` if it is a Generator, a new one seeded by it if an int."""
    if isinstance(rng, numpy.random.Generator):
        return rng
    if rng is None or isinstance(rng, int):
        return numpy.random.default_rng(rng)
    raise TypeError(f"expected rng to be a numpy.random.Generator, an int seed or "
                    f"None, got {type(rng).__name__}.")


def kaiming_uniform(rng, shape, fan_in, gain=GAINS["default"]):
    """U(−b, b) with b = gain·sqrt(3/fan_in)."""
    bound = gain * math.sqrt(3.0 / fan_in)
    return rng.uniform(-bound, bound, size=shape)


def uniform_bias(rng, size, fan_in):
    """U(−1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's bias default."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=size)
