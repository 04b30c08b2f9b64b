r"""Per-pixel features (hypercolumns) from an autoencoder's encoder.

Each chosen encoder layer's output (N, C_l, h_l, w_l) is brought to the
input's resolution (H, W) and the maps are stacked along channels:

- a map *larger* than the input (the 'full'-padding scheme grows each map
  by k−1) is centre-cropped: with odd k, output pixel p + (k−1)/2 of a 'full'
  convolution is centred on input pixel p, so the crop is exact;
- a map *smaller* than the input (strided or pooled encoders) is upsampled,
  nearest-neighbour or bilinear (PyTorch's ``align_corners=False``).

Both are linear along each axis, so the whole resampling is
:math:`Y = A_H\,X\,A_W^\top` with a crop or interpolation matrix per axis;
its adjoint :math:`A_H^\top\,dY\,A_W` is the backward used to fine-tune the
encoder through the features. Optional steps: pooling over a window (the
local mean, or the texture energy — the local mean absolute deviation
:math:`E = M_s\,|f - M_3 f|` with :math:`M_s` the s x s box mean, Laws'
measure, which turns phase-dependent responses into a per-region
statistic), pixel coordinates and intensity appended, and standardisation
of every feature to mean 0, variance 1.
"""

from __future__ import annotations

import numpy

from .._validation import check_choice, check_nonnegative_int, check_positive_int
from ..backend import get_backend, to_device

__all__ = ["PixelFeatures", "pixel_features", "resample_matrix", "box_mean",
           "ACTIVATION_NAMES"]

ACTIVATION_NAMES = ("relu", "leaky_relu", "sigmoid", "tanh")


def resample_matrix(n_out, n_in, mode="bilinear"):
    """The (n_out, n_in) matrix that crops (n_in > n_out) or upsamples one axis.

    Crop: the centred window, offset (n_in − n_out) // 2. Upsampling: source
    coordinate s = (i + ½)·n_in/n_out − ½ of output i; 'nearest' takes
    round-down of s + ½, 'bilinear' weights floor(s) and floor(s) + 1 by
    1 − f and f (f = s − floor(s)), clamped at the borders.
    """
    check_choice(mode, ("nearest", "bilinear"), where="resample_matrix", name="mode")
    a = numpy.zeros((n_out, n_in))
    rows = numpy.arange(n_out)
    if n_in >= n_out:
        a[rows, rows + (n_in - n_out) // 2] = 1.0
        return a
    s = (rows + 0.5) * n_in / n_out - 0.5                     # source coordinate
    if mode == "nearest":
        a[rows, numpy.clip(numpy.floor(s + 0.5), 0, n_in - 1).astype(int)] = 1.0
        return a
    s = numpy.clip(s, 0, n_in - 1)
    lo = numpy.floor(s).astype(int)
    hi = numpy.minimum(lo + 1, n_in - 1)
    f = s - lo
    numpy.add.at(a, (rows, lo), 1.0 - f)                      # (1 − f)·x[lo] + f·x[hi]
    numpy.add.at(a, (rows, hi), f)
    return a


def _box_sum(x, r):
    """Σ over the (2r+1)² window around each pixel, zeros outside (symmetric op)."""
    xp = get_backend().xp
    n, c, h, w = x.shape
    pad = xp.zeros((n, c, h + 2 * r + 1, w + 2 * r + 1), dtype=x.dtype)
    pad[:, :, r + 1:r + 1 + h, r + 1:r + 1 + w] = x
    s = pad.cumsum(axis=2).cumsum(axis=3)                     # integral image
    k = 2 * r + 1
    return s[:, :, k:, k:] - s[:, :, :-k, k:] - s[:, :, k:, :-k] + s[:, :, :-k, :-k]


def box_mean(x, size):
    r"""Mean of each (size x size) window, clipped at the image border.

    Notes
    -----
    .. math:: y = \frac{B x}{B \mathbb{1}}

    with B the zero-padded window sum; the denominator counts the window's
    pixels inside the image. ``size`` must be odd.
    """
    if size % 2 == 0:
        raise ValueError(f"box_mean: expected an odd window size, got {size}.")
    r = size // 2
    ones = get_backend().xp.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype)
    return _box_sum(x, r) / _box_sum(ones, r)                 # y = Bx / B1


def _box_mean_backward(dy, size):
    r = size // 2
    ones = get_backend().xp.ones((1, 1) + tuple(dy.shape[2:]), dtype=dy.dtype)
    return _box_sum(dy / _box_sum(ones, r), r)                # dx = Bᵀ(dy / B1), B = Bᵀ


class PixelFeatures:
    """Turn images into per-pixel feature maps at the input resolution.

    Parameters
    ----------
    model : Autoencoder or None
        Its ``encoder`` layers give the maps; None uses the raw pixels.
    layers : sequence of int, optional
        Indices into ``model.encoder.layers`` whose outputs are stacked;
        default: every activation layer (one map per encoder stage).
    resize : {'bilinear', 'nearest'}
        Upsampling of maps smaller than the input.
    pool : {None, 'mean', 'energy'}
        Pooling of every map (encoder maps and intensity) over ``smooth``:
        the box mean, or the texture energy :math:`M_s|f - M_3 f|`.
    smooth : int, default 0
        Odd pooling window (0: no pooling).
    intensity : bool
        Append the input channels; always on for ``model=None``.
    coords : bool
        Append the pixel's row and column in [−1, 1].
    standardize : bool
        Scale each feature to mean 0, variance 1 with statistics from
        :meth:`fit`.
    batch_size : int

    Attributes
    ----------
    mean_, std_ : arrays of shape (1, D, 1, 1)
    n_features_ : int
    """

    def __init__(self, model=None, *, layers=None, resize="bilinear", pool=None, smooth=0,
                 intensity=False, coords=False, standardize=True, batch_size=32):
        self.model = model
        self.layers = layers
        self.resize = resize
        self.pool = pool
        self.smooth = smooth
        self.intensity = intensity
        self.coords = coords
        self.standardize = standardize
        self.batch_size = batch_size

    def _layer_indices(self):
        if self.model is None:
            return []
        enc = self.model.encoder.layers
        if self.layers is None:
            idx = [i for i, m in enumerate(enc) if getattr(m, "name", "") in ACTIVATION_NAMES]
            return idx or [len(enc) - 1]
        out = []
        for i in self.layers:
            if not -len(enc) <= int(i) < len(enc):
                raise ValueError(f"PixelFeatures: expected layer indices in "
                                 f"[{-len(enc)}, {len(enc)}), got {i}.")
            out.append(int(i) % len(enc))
        return sorted(set(out))

    def _check(self, x):
        where = "PixelFeatures"
        check_choice(self.resize, ("nearest", "bilinear"), where=where, name="resize")
        check_choice(self.pool, (None, "mean", "energy"), where=where, name="pool")
        check_nonnegative_int(self.smooth, where=where, name="smooth")
        if self.smooth and self.smooth % 2 == 0:
            raise ValueError(f"{where}: expected an odd smooth window, got {self.smooth}.")
        check_positive_int(self.batch_size, where=where, name="batch_size")
        if getattr(x, "ndim", None) != 4:
            raise ValueError(f"{where}: expected images of shape (N, C, H, W), got "
                             f"{getattr(x, 'shape', type(x).__name__)}.")

    def _raw(self, xb, keep=False):
        """Unstandardised features of one device batch (and the cache for backward)."""
        xp = get_backend().xp
        n, _, h, w = xb.shape
        parts, cache = [], []
        chosen = self._layer_indices()
        if chosen:
            out = xb
            for i, layer in enumerate(self.model.encoder.layers[:chosen[-1] + 1]):
                out = layer(out)
                if i not in chosen:
                    continue
                if out.ndim != 4:
                    raise ValueError(f"PixelFeatures: encoder layer {i} ({layer!r}) gives "
                                     f"shape {tuple(out.shape)}; per-pixel features need "
                                     f"(N, C, h, w) maps, i.e. a convolutional encoder.")
                a_h = to_device(resample_matrix(h, out.shape[2], self.resize), out.dtype)
                a_w = to_device(resample_matrix(w, out.shape[3], self.resize), out.dtype)
                y = a_h @ out @ a_w.T                         # Y = A_H X A_Wᵀ
                y, dev = self._pool(y)
                parts.append(y)
                cache.append((i, a_h, a_w, out.shape[1], dev))
        if self.intensity or self.model is None:
            parts.append(self._pool(xb)[0])
        if self.coords:
            grid = (xp.arange(h, dtype=xb.dtype) + 0.5) / h * 2 - 1
            gcol = (xp.arange(w, dtype=xb.dtype) + 0.5) / w * 2 - 1
            parts.append(xp.broadcast_to(grid[None, None, :, None], (n, 1, h, w)))
            parts.append(xp.broadcast_to(gcol[None, None, None, :], (n, 1, h, w)))
        if keep:
            self._cache = cache
        return xp.concatenate(parts, axis=1)

    def _pool(self, y):
        if not (self.pool and self.smooth):
            return y, None
        if self.pool == "mean":
            return box_mean(y, self.smooth), None
        dev = y - box_mean(y, 3)                              # u = f − M₃ f
        return box_mean(abs(dev), self.smooth), dev           # E = M_s |u|

    def _pool_backward(self, g, dev):
        if not (self.pool and self.smooth):
            return g
        g = _box_mean_backward(g, self.smooth)
        if self.pool == "energy":
            du = get_backend().xp.sign(dev) * g               # d|u|/du = sign u (0 at 0)
            g = du - _box_mean_backward(du, 3)                # df = du − M₃ᵀ du
        return g

    def _batches(self, x):
        for start in range(0, x.shape[0], self.batch_size):
            yield to_device(x[start:start + self.batch_size])

    def fit(self, x):
        """Compute the per-feature mean and standard deviation over ``x``; return self."""
        self._check(x)
        xp = get_backend().xp
        model = self.model
        was = model.training if model is not None else None
        if model is not None:
            model.eval()
        total = total_sq = None
        count = 0
        for xb in self._batches(x):
            f = self._raw(xb).astype(xp.float64)
            s, s2 = f.sum(axis=(0, 2, 3)), (f * f).sum(axis=(0, 2, 3))
            total = s if total is None else total + s
            total_sq = s2 if total_sq is None else total_sq + s2
            count += f.shape[0] * f.shape[2] * f.shape[3]
        if model is not None:
            model.train(was)
        mean = total / count
        var = xp.maximum(total_sq / count - mean * mean, 0.0)
        dtype = x.dtype
        self.n_features_ = int(mean.shape[0])
        self.mean_ = mean.astype(dtype).reshape(1, -1, 1, 1)
        # constant features (std 0) are left unscaled rather than divided by 0
        self.std_ = xp.where(var > 1e-12, xp.sqrt(var), 1.0).astype(dtype).reshape(1, -1, 1, 1)
        return self

    def transform(self, x, *, keep=False):
        """Features of shape (N, D, H, W) on the active backend.

        ``keep=True`` (one batch only, model in training mode) keeps what
        :meth:`backward` needs to fine-tune the encoder.
        """
        self._check(x)
        if not hasattr(self, "mean_"):
            raise RuntimeError("PixelFeatures.transform: call fit first.")
        xp = get_backend().xp
        if keep:
            f = self._raw(to_device(x), keep=True)
        else:
            model = self.model
            was = model.training if model is not None else None
            if model is not None:
                model.eval()
            f = xp.concatenate([self._raw(xb) for xb in self._batches(x)], axis=0)
            if model is not None:
                model.train(was)
        if self.standardize:
            f = (f - self.mean_) / self.std_                  # z = (f − μ) / σ
        return f

    def fit_transform(self, x):
        return self.fit(x).transform(x)

    def backward(self, dfeatures):
        """Backpropagate d loss / d features into the encoder's parameter gradients.

        Runs the adjoints of standardisation, smoothing and resampling, then
        the encoder layers in reverse, each receiving the gradient of its own
        feature map plus that of the layer above.
        """
        if getattr(self, "_cache", None) is None:
            raise RuntimeError("PixelFeatures.backward: call transform(x, keep=True) "
                               "first.")
        d = dfeatures / self.std_ if self.standardize else dfeatures
        extra, start = {}, 0
        for i, a_h, a_w, c, dev in self._cache:
            g = self._pool_backward(d[:, start:start + c], dev)
            start += c
            extra[i] = a_h.T @ g @ a_w                        # dX = A_Hᵀ dY A_W
        layers = self.model.encoder.layers
        grad = None
        for i in range(max(extra), -1, -1):
            if i in extra:
                grad = extra[i] if grad is None else grad + extra[i]
            grad = layers[i].backward(layers[i].penalty_backward(grad))
        self._cache = None
        return grad


def pixel_features(model, x, **kwargs):
    """``PixelFeatures(model, **kwargs).fit_transform(x)``: (N, D, H, W) features."""
    return PixelFeatures(model, **kwargs).fit_transform(x)
