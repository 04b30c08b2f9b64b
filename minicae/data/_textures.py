r"""Stationary textures that share one mean and one variance.

Every texture here is drawn on the whole canvas and then standardised per
channel,

.. math:: t \leftarrow \mu + \sigma \, \frac{t - \bar t}{s_t},
          \qquad \mu = 0.5, \; \sigma = 0.16,

so that the first two moments of every region of a shapes image are the
same and only the *local* structure (orientation, frequency, grain) tells one
texture from another. Each generator takes a ``numpy.random.Generator``, the
pixel-centre grids ``yy, xx`` of shape (H, W) and a channel count, and returns
an array of shape (C, H, W); with C > 1 each channel gets its own phase or
draw, which reads as colour grain at the same mean intensity.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TEXTURE_MEAN", "TEXTURE_STD", "grating", "uniform_noise", "dots", "checker",
           "rings", "OBJECT_TEXTURES"]

TEXTURE_MEAN = 0.5
TEXTURE_STD = 0.16


def _standardise(t):
    mean = t.mean(axis=(-2, -1), keepdims=True)
    std = t.std(axis=(-2, -1), keepdims=True)
    # t <- 0.5 + 0.16·(t − mean t) / std t, per channel
    return TEXTURE_MEAN + TEXTURE_STD * (t - mean) / np.maximum(std, 1e-12)


def _rotate(yy, xx, angle):
    # (u, v) = R(−angle)·(x, y): coordinates along and across the texture axis
    c, s = np.cos(angle), np.sin(angle)
    return xx * c + yy * s, -xx * s + yy * c


def grating(rng, yy, xx, channels, *, period=(10.0, 16.0)):
    """Oriented sine grating sin(2π·u/p + φ_c), random angle, period and phase."""
    p = rng.uniform(*period)
    u, _ = _rotate(yy, xx, rng.uniform(0.0, np.pi))
    phase = rng.uniform(0.0, 2 * np.pi, size=(channels, 1, 1))
    return _standardise(np.sin(2 * np.pi * u / p + phase))


def uniform_noise(rng, yy, xx, channels):
    """Independent uniform values per pixel and channel (finest possible grain)."""
    return _standardise(rng.random((channels,) + yy.shape))


def dots(rng, yy, xx, channels):
    """Rotated square lattice of cone-shaped dots, max(0, 1 − d/r)."""
    p = rng.uniform(5.0, 8.0)
    radius = rng.uniform(0.3, 0.45) * p
    u, v = _rotate(yy, xx, rng.uniform(0.0, np.pi / 2))
    off_u, off_v = rng.uniform(0.0, p, size=(2, channels, 1, 1))
    du = (u + off_u) % p - p / 2
    dv = (v + off_v) % p - p / 2
    return _standardise(np.clip(1.0 - np.hypot(du, dv) / radius, 0.0, 1.0))


def checker(rng, yy, xx, channels):
    """Smooth checkerboard sin(π·u/c + φ)·sin(π·v/c + ψ) with cell size c."""
    cell = rng.uniform(2.5, 4.5)
    u, v = _rotate(yy, xx, rng.uniform(0.0, np.pi / 2))
    phi, psi = rng.uniform(0.0, 2 * np.pi, size=(2, channels, 1, 1))
    return _standardise(np.sin(np.pi * u / cell + phi) * np.sin(np.pi * v / cell + psi))


def rings(rng, yy, xx, channels, *, centre):
    """Concentric rings 0.5 + 0.3·sin(2π·d/p) around ``centre`` (a foreign texture).

    Not standardised on purpose: it is used only as a defect, whose contrast
    (std ≈ 0.21) and radial structure are outside the training textures.
    """
    p = rng.uniform(3.0, 5.0)
    d = np.hypot(yy - centre[0], xx - centre[1])
    phase = rng.uniform(0.0, 2 * np.pi, size=(channels, 1, 1))
    return TEXTURE_MEAN + 0.3 * np.sin(2 * np.pi * d / p + phase)


OBJECT_TEXTURES = (uniform_noise, dots, checker)
