r"""Texture energy: filter bank -> nonlinearity -> Gaussian smoothing, per pixel.

The classic unsupervised texture segmenter (Jain & Farrokhnia 1991) filters
the image with a bank of even-symmetric Gabor filters, passes every response
through a saturating nonlinearity, smooths it with a Gaussian whose width
follows the filter's period, and clusters the stacked energies.
:class:`TextureEnergy` implements that recipe with minicae's own
:func:`~minicae.functional.conv2d`; the filters are either the Gabor bank of
:func:`gabor_bank` or the first convolution of an autoencoder's encoder
(the same energy with learned filters).

Even-symmetric Gabor filter of frequency f (cycles per pixel) and
orientation θ, with x' = x cos θ + y sin θ:

.. math:: g(x, y) = \exp\!\Big(-\frac{x^2 + y^2}{2\sigma^2}\Big)\cos(2\pi f x'),
          \qquad \sigma = \frac{\sqrt{2\ln 2}}{2\pi f}\,\frac{2^B + 1}{2^B - 1}

(B = 1 octave of bandwidth), made zero-mean and scaled to unit L2 norm.
Energy of response r: :math:`e = G_{s} * |\tanh(\alpha\, r / \sigma_r)|` with
:math:`\sigma_r` the response's standard deviation over the fitted images
and :math:`G_s` a Gaussian of width s = ``smooth`` x the filter's period.

References: A. K. Jain, F. Farrokhnia, "Unsupervised texture segmentation
using Gabor filters", Pattern Recognition 24(12), 1991.
"""

from __future__ import annotations

import numpy

from .._validation import check_choice, check_positive_float, check_positive_int
from ..backend import get_backend, to_device

__all__ = ["gabor_bank", "gaussian_smooth", "TextureEnergy", "GABOR_FREQUENCIES"]

# √2 spacing from 1/4 cycle per pixel down, as J&F's octave-and-a-half ladder
GABOR_FREQUENCIES = (0.25, 0.25 / 2 ** 0.5, 0.125, 0.125 / 2 ** 0.5)


def gabor_bank(frequencies=GABOR_FREQUENCIES, orientations=4, *, bandwidth=1.0,
               dtype=numpy.float32):
    r"""Even-symmetric Gabor filters, one (orientations, 1, k, k) array per frequency.

    The kernel spans ±2σ (odd size), so low frequencies get larger kernels.
    """
    check_positive_int(orientations, where="gabor_bank", name="orientations")
    banks = []
    for f in frequencies:
        if not 0 < f <= 0.5:
            raise ValueError(f"gabor_bank: expected frequencies in (0, 0.5] cycles per "
                             f"pixel, got {f}.")
        b = 2.0 ** bandwidth
        sigma = numpy.sqrt(2 * numpy.log(2)) / (2 * numpy.pi * f) * (b + 1) / (b - 1)
        r = int(numpy.ceil(2 * sigma))
        yy, xx = numpy.mgrid[-r:r + 1, -r:r + 1].astype(numpy.float64)
        out = []
        for theta in numpy.arange(orientations) * numpy.pi / orientations:
            xr = xx * numpy.cos(theta) + yy * numpy.sin(theta)
            g = numpy.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2)) * numpy.cos(2 * numpy.pi
                                                                               * f * xr)
            g -= g.mean()                                     # no response to flat regions
            out.append(g / numpy.sqrt((g * g).sum()))
        banks.append(numpy.stack(out)[:, None].astype(dtype))
    return banks


def _gauss1d(sigma):
    r = max(1, int(numpy.ceil(3 * sigma)))
    t = numpy.arange(-r, r + 1, dtype=numpy.float64)
    g = numpy.exp(-t * t / (2 * sigma * sigma))
    return g / g.sum()


def gaussian_smooth(x, sigma):
    r"""Gaussian blur of every channel of (N, C, H, W), normalised at the border.

    Separable: a (k, 1) then a (1, k) depthwise :func:`conv2d` (zero
    padding), divided by the blur of an all-ones image so that border pixels
    average only what lies inside.
    """
    from ..functional import conv2d

    c = x.shape[1]
    g = to_device(_gauss1d(sigma), x.dtype)
    k = g.shape[0]
    col = get_backend().xp.broadcast_to(g.reshape(1, 1, k, 1), (c, 1, k, 1)).copy()
    row = get_backend().xp.broadcast_to(g.reshape(1, 1, 1, k), (c, 1, 1, k)).copy()

    def blur(a, ch):
        a = conv2d(a, col[:ch], padding="same", groups=ch)
        return conv2d(a, row[:ch], padding="same", groups=ch)

    ones = get_backend().xp.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype)
    return blur(x, c) / blur(ones, 1)                         # y = G*x / G*1


class TextureEnergy:
    """Per-pixel texture energies from a filter bank (the extractor protocol).

    Parameters
    ----------
    filters : list of arrays of shape (F, C, k, k), optional
        Banks applied with 'same' padding; default :func:`gabor_bank`.
    model : Autoencoder, optional
        Use its first encoder convolution's weights as the bank instead
        (learned filters); ``periods`` then defaults to the kernel size.
    periods : sequence of float, optional
        Period (pixels) of each bank, which scales its smoothing; default
        1/f for the Gabor bank.
    alpha : float, default 1.0
        Slope of the tanh nonlinearity on standardised responses.
    smooth : float, default 0.5
        Gaussian width as a multiple of each bank's period (J&F: 0.5).
    nonlinearity : {'tanh', 'abs', 'square'}
    coords : bool
        Append the pixel's row and column in [−1, 1] (J&F's spatial features).
    standardize : bool
    batch_size : int

    Attributes
    ----------
    scale_ : list of arrays, the response standard deviation per bank
    mean_, std_ : arrays of shape (1, D, 1, 1)
    n_features_ : int
    """

    def __init__(self, filters=None, *, model=None, periods=None, alpha=1.0, smooth=0.5,
                 nonlinearity="tanh", coords=False, standardize=True, batch_size=32):
        self.filters = filters
        self.model = model
        self.periods = periods
        self.alpha = alpha
        self.smooth = smooth
        self.nonlinearity = nonlinearity
        self.coords = coords
        self.standardize = standardize
        self.batch_size = batch_size

    def _banks(self, dtype):
        if self.model is not None:
            conv = next(m for m in self.model.encoder.layers if hasattr(m, "weight"))
            w = numpy.asarray(conv.weight.data if not hasattr(conv.weight.data, "get")
                              else conv.weight.data.get())
            w = w - w.mean(axis=(1, 2, 3), keepdims=True)     # energy, not brightness
            return [w.astype(dtype)], list(self.periods or [float(w.shape[-1])])
        banks = self.filters if self.filters is not None else gabor_bank(dtype=dtype)
        periods = self.periods
        if periods is None:
            periods = [1.0 / f for f in GABOR_FREQUENCIES] if self.filters is None else \
                [float(b.shape[-1]) for b in banks]
        return [numpy.asarray(b, dtype) for b in banks], list(periods)

    def _check(self, x):
        where = "TextureEnergy"
        check_choice(self.nonlinearity, ("tanh", "abs", "square"), where=where,
                     name="nonlinearity")
        check_positive_float(self.alpha, where=where, name="alpha")
        check_positive_float(self.smooth, where=where, name="smooth")
        check_positive_int(self.batch_size, where=where, name="batch_size")
        if getattr(x, "ndim", None) != 4:
            raise ValueError(f"{where}: expected images of shape (N, C, H, W), got "
                             f"{getattr(x, 'shape', type(x).__name__)}.")

    def _responses(self, xb):
        from ..functional import conv2d

        xb = xb - xb.mean(axis=(2, 3), keepdims=True)
        return [conv2d(xb, to_device(b, xb.dtype), padding="same") for b in self.banks_]

    def _raw(self, xb):
        xp = get_backend().xp
        parts = []
        for r, s, period in zip(self._responses(xb), self.scale_, self.periods_):
            z = r / to_device(s, r.dtype)
            if self.nonlinearity == "tanh":
                e = abs(xp.tanh(self.alpha * z))              # |ψ(r)|, ψ = tanh(α r/σ_r)
            elif self.nonlinearity == "abs":
                e = abs(z)
            else:
                e = z * z
            parts.append(gaussian_smooth(e, self.smooth * period))
        if self.coords:
            n, _, h, w = xb.shape
            gy = (xp.arange(h, dtype=xb.dtype) + 0.5) / h * 2 - 1
            gx = (xp.arange(w, dtype=xb.dtype) + 0.5) / w * 2 - 1
            parts.append(xp.broadcast_to(gy[None, None, :, None], (n, 1, h, w)))
            parts.append(xp.broadcast_to(gx[None, None, None, :], (n, 1, h, w)))
        return xp.concatenate(parts, axis=1)

    def _batches(self, x):
        for start in range(0, x.shape[0], self.batch_size):
            yield to_device(x[start:start + self.batch_size])

    def fit(self, x):
        """Response scales and feature statistics over ``x``; return self."""
        self._check(x)
        xp = get_backend().xp
        self.banks_, self.periods_ = self._banks(x.dtype)
        sq = [0.0] * len(self.banks_)
        for xb in self._batches(x):
            for j, r in enumerate(self._responses(xb)):
                sq[j] = sq[j] + (r.astype(xp.float64) ** 2).mean(axis=(0, 2, 3))
        nb = -(-x.shape[0] // self.batch_size)
        self.scale_ = [xp.sqrt(s / nb).reshape(1, -1, 1, 1) + 1e-12 for s in sq]
        f = xp.concatenate([self._raw(xb) for xb in self._batches(x)], axis=0)
        f = f.astype(xp.float64)
        self.n_features_ = int(f.shape[1])
        self.mean_ = f.mean(axis=(0, 2, 3)).reshape(1, -1, 1, 1).astype(x.dtype)
        std = f.std(axis=(0, 2, 3))
        self.std_ = xp.where(std > 1e-12, std, 1.0).reshape(1, -1, 1, 1).astype(x.dtype)
        return self

    def transform(self, x, *, keep=False):
        """Energies of shape (N, D, H, W) on the active backend."""
        self._check(x)
        if not hasattr(self, "mean_"):
            raise RuntimeError("TextureEnergy.transform: call fit first.")
        if keep:
            raise ValueError("TextureEnergy: the filter bank is fixed; it cannot be "
                             "fine-tuned (finetune=False).")
        f = get_backend().xp.concatenate([self._raw(xb) for xb in self._batches(x)], axis=0)
        return (f - self.mean_) / self.std_ if self.standardize else f

    def fit_transform(self, x):
        return self.fit(x).transform(x)
